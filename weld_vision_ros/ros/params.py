"""Declared, described, range-checked parameters with a live-swapped frozen config.

Each node lists its parameters once as `ParamSpec`s. `LiveParameters` declares them with
a full ParameterDescriptor (description, unit, range or allowed values), builds the
node's frozen config dataclass from their values, and on every later set re-validates
the whole proposed config: a bad value is refused with a reason
(`SetParametersResult(successful=False)`) and the running config stays as it was.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Mapping, Optional, Sequence, TypeVar

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.node import Node
from rclpy.parameter import Parameter

C = TypeVar('C')

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, default (its type is the parameter's type), and its contract."""

    name: str
    default: Any
    description: str
    unit: str = ''
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    choices: tuple[str, ...] = ()
    read_only: bool = False

    @property
    def param_type(self) -> int:
        if isinstance(self.default, (list, tuple)):
            if all(isinstance(v, str) for v in self.default):
                return ParameterType.PARAMETER_STRING_ARRAY
            if all(isinstance(v, float) for v in self.default):
                return ParameterType.PARAMETER_DOUBLE_ARRAY
            if all(isinstance(v, int) and not isinstance(v, bool) for v in self.default):
                return ParameterType.PARAMETER_INTEGER_ARRAY
            raise TypeError(f'parameter {self.name}: mixed or empty list default {self.default!r}')
        return _TYPES[type(self.default)]

    def descriptor(self) -> ParameterDescriptor:
        text = self.description + (f' [{self.unit}]' if self.unit else '')
        d = ParameterDescriptor(name=self.name, type=self.param_type, description=text,
                                read_only=self.read_only)
        if self.choices:
            d.additional_constraints = 'one of: ' + ', '.join(self.choices)
        if self.min_value is not None and self.max_value is not None:
            if d.type == ParameterType.PARAMETER_INTEGER:
                d.integer_range = [IntegerRange(from_value=int(self.min_value),
                                                to_value=int(self.max_value), step=1)]
            elif d.type == ParameterType.PARAMETER_DOUBLE:
                d.floating_point_range = [FloatingPointRange(from_value=float(self.min_value),
                                                             to_value=float(self.max_value), step=0.0)]
        return d

    def check(self, value: Any) -> Optional[str]:
        """Why `value` is not acceptable, or None."""
        if self.choices and value not in self.choices:
            return f'{self.name} must be one of {", ".join(self.choices)}; got {value!r}'
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.min_value is not None and value < self.min_value:
                return f'{self.name} must be >= {self.min_value}{self.unit and " " + self.unit}; got {value}'
            if self.max_value is not None and value > self.max_value:
                return f'{self.name} must be <= {self.max_value}{self.unit and " " + self.unit}; got {value}'
        return None


# Two switches every inference node has, declared alike everywhere.
DIAGNOSTICS_PERIOD = ParamSpec('diagnostics_period_s', 1.0, 'Period of the /diagnostics status', unit='s',
                               min_value=0.1, max_value=60.0, read_only=True)
OPENCV_THREADS = ParamSpec('opencv_threads', 1, 'OpenCV worker threads of the node process (1 keeps the '
                           'latency steady beside other nodes), fixed at start', unit='threads',
                           min_value=1, max_value=64, read_only=True)


class LiveParameters(Generic[C]):
    """Parameters of one node (or one part of it) and the frozen config built from them.

    build: values by name -> config; raises ValueError for combinations that do not make
    sense (its message becomes the refusal reason). prepare(config, changed_names), when
    given, runs on a proposed config before it is accepted, for work a set needs first
    (e.g. loading and validating the model it names): a ValueError it raises refuses the
    set with its message; what it returns is handed to on_change. on_change runs after a
    set was accepted: on_change(config, changed_names), or with `prepare`
    on_change(config, changed_names, prepared). Parameters not in `specs` are left to
    other callbacks.
    """

    def __init__(self, node: Node, specs: Sequence[ParamSpec],
                 build: Callable[[Mapping[str, Any]], C],
                 on_change: Optional[Callable[..., None]] = None,
                 prepare: Optional[Callable[[C, frozenset], Any]] = None) -> None:
        self._node = node
        self._specs = {s.name: s for s in specs}
        self._build = build
        self._on_change = on_change
        self._prepare = prepare
        self._values: dict[str, Any] = {}
        for spec in specs:
            value = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
            problem = spec.check(value)
            if problem:
                raise ValueError(f'parameter {problem}')
            self._values[spec.name] = _plain(value)
        self.config: C = build(dict(self._values))
        node.add_on_set_parameters_callback(self._on_set)

    @property
    def values(self) -> dict[str, Any]:
        return dict(self._values)

    def _on_set(self, params: Iterable[Parameter]) -> SetParametersResult:
        proposed = dict(self._values)
        changed = set()
        for p in params:
            spec = self._specs.get(p.name)
            if spec is None:
                continue
            if spec.read_only:
                return SetParametersResult(successful=False, reason=f'{p.name} is read-only')
            value = _plain(p.value)
            problem = spec.check(value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            proposed[p.name] = value
            changed.add(p.name)
        if not changed:
            return SetParametersResult(successful=True)
        try:
            config = self._build(proposed)
            prepared = self._prepare(config, frozenset(changed)) if self._prepare is not None else None
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._values, self.config = proposed, config
        if self._on_change is not None:
            if self._prepare is not None:
                self._on_change(config, frozenset(changed), prepared)
            else:
                self._on_change(config, frozenset(changed))
        return SetParametersResult(successful=True)


def _plain(value: Any) -> Any:
    """Parameter arrays arrive as array.array or numpy arrays: make them lists."""
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        return value
    try:
        return list(value)
    except TypeError:
        return value


def specs_for(prefix: str, config_cls: type) -> tuple[ParamSpec, ...]:
    """A ParamSpec `<prefix>.<field>` for every tunable field of a core config dataclass, with
    the default, description, unit and range declared beside the field (core.fields)."""
    from weld_vision_ros.core.fields import tunable_fields
    return tuple(ParamSpec(f'{prefix}.{name}', default, doc.description, unit=doc.unit,
                           min_value=doc.min_value, max_value=doc.max_value)
                 for name, default, doc in tunable_fields(config_cls))
