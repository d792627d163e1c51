"""Tunable fields of the core's frozen configs, each documented once beside its default.

    plane_inlier_mm: float = tunable(0.6, 'RANSAC inlier band around the plate plane', 'mm', 0.05, 10.0)

declares the field's default and, in the dataclass field metadata, its description, unit
and range. The nodes build their ROS parameters (ParameterDescriptor with description,
unit and range) from it (ros.params.specs_for), config/weld_cell.yaml's comments are
generated from those, and `config_from_values` builds a config from flat parameter values.
No rclpy here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

META_KEY = 'weld_param'


@dataclass(frozen=True)
class FieldDoc:
    """What a parameter of this field says about itself: description, unit, [min, max]."""

    description: str
    unit: str = ''
    min_value: Optional[float] = None
    max_value: Optional[float] = None


def tunable(default: Any, description: str, unit: str = '', min_value: Optional[float] = None,
            max_value: Optional[float] = None) -> Any:
    """A dataclass field with its default and its documentation (see the module docstring)."""
    return dataclasses.field(default=default, metadata={META_KEY: FieldDoc(description, unit, min_value,
                                                                           max_value)})


def tunable_fields(cls: type) -> list[tuple[str, Any, FieldDoc]]:
    """(name, default, doc) of every tunable field of the dataclass `cls`, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        doc = f.metadata.get(META_KEY)
        if doc is not None:
            out.append((f.name, f.default, doc))
    return out


def config_from_values(cls: type, values: Mapping[str, Any], prefix: str, **extra: Any) -> Any:
    """`cls(...)` from the flat values named `<prefix>.<field>` (other names are ignored);
    integer fields get ints (a parameter set may carry 3.0 for 3). `extra` are further
    constructor arguments (nested configs). The config's own checks raise ValueError."""
    kinds = {f.name: f.type for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith(prefix + '.'):
            name = key[len(prefix) + 1:]
            kwargs[name] = int(value) if kinds.get(name) in (int, 'int') else value
    return cls(**kwargs, **extra)
