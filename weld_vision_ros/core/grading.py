"""Grading a weld against an acceptance table of quality levels (ISO 5817 style).

The table is the user's: a YAML file listing, for each imperfection the product measures,
its reference number in the standard the drawing names and the limit at each quality level
as a formula of the plate thickness `t` [mm] and the measured bead width `b` [mm]. The
product ships an example table (config/acceptance/iso5817_example.yaml) whose numbers must
be checked against the standard the user holds; it is never the standard itself.

    levels: [B, C, D]                 # strictest first
    rows:
      - imperfection: surface pore
        reference: '1.3 (2017)'
        measure: pore_diameter_mm     # one of MEASURES
        limits: {B: not permitted, C: 'min(0.2 * t, 2.0)', D: 'min(0.3 * t, 3.0)'}

A row passes at a level when the measured value is at most the limit; `not permitted` fails
on any occurrence (a measured value above zero). A weld meets the strictest level at which
every row passes. Formulas are parsed once, with a small expression grammar (numbers, t, b,
+ - * /, min, max, parentheses); nothing is evaluated as Python.
"""
from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml

NOT_PERMITTED = 'not permitted'

# What the weld report provides to a table; each maps to one number per weld [mm or count].
MEASURES = {
    'pore_diameter_mm': 'largest surface pore diameter',
    'undercut_depth_mm': 'deepest undercut',
    'excess_weld_metal_mm': 'largest reinforcement height above the plate',
    'incomplete_fill_mm': 'deepest incompletely filled groove (missing or under-filled bead)',
    'crack_count': 'number of cracks',
    'spatter_count': 'number of spatter droplets',
    'width_variation_mm': 'largest minus smallest segment width',
}
VARIABLES = ('t', 'b')


class AcceptanceTableError(ValueError):
    """An acceptance table that cannot be used; the message names the file and the row."""


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_FUNCS = {'min': min, 'max': max}


def _compile(node: ast.AST, where: str) -> Callable[[Mapping[str, float]], float]:
    if isinstance(node, ast.Expression):
        return _compile(node.body, where)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        value = float(node.value)
        return lambda env: value
    if isinstance(node, ast.Name) and node.id in VARIABLES:
        name = node.id
        return lambda env: float(env[name])
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        op, left, right = _BINARY[type(node.op)], _compile(node.left, where), _compile(node.right, where)
        return lambda env: op(left(env), right(env))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _compile(node.operand, where)
        return lambda env: -inner(env)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and node.args and not node.keywords):
        fn, args = _FUNCS[node.func.id], [_compile(a, where) for a in node.args]
        return lambda env: fn(a(env) for a in args)
    raise AcceptanceTableError(f'{where}: only numbers, t, b, + - * /, min() and max() are allowed; '
                               f'found {ast.dump(node)[:60]}')


@dataclass(frozen=True)
class Limit:
    """One cell of the table: a formula, or not permitted."""

    text: str
    fn: Optional[Callable[[Mapping[str, float]], float]]    # None: not permitted

    @classmethod
    def parse(cls, value: Any, where: str) -> 'Limit':
        if isinstance(value, str) and value.strip().lower() == NOT_PERMITTED:
            return cls(NOT_PERMITTED, None)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise AcceptanceTableError(f'{where}: a limit is a number, a formula or "{NOT_PERMITTED}"; '
                                       f'got {value!r}')
        text = str(value)
        try:
            tree = ast.parse(text, mode='eval')
        except SyntaxError as exc:
            raise AcceptanceTableError(f'{where}: cannot read the formula {text!r} ({exc.msg})') from None
        return cls(text, _compile(tree, where))

    def value(self, env: Mapping[str, float]) -> Optional[float]:
        return None if self.fn is None else float(self.fn(env))


@dataclass(frozen=True)
class AcceptanceRow:
    imperfection: str
    reference: str
    measure: str
    limits: Mapping[str, Limit]


@dataclass(frozen=True)
class AcceptanceTable:
    name: str
    levels: tuple[str, ...]          # strictest first
    rows: tuple[AcceptanceRow, ...]
    note: str = ''
    source: str = ''

    @classmethod
    def load(cls, path: str | Path) -> 'AcceptanceTable':
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding='utf-8'))
        except OSError as exc:
            raise AcceptanceTableError(f'{path}: cannot read the acceptance table ({exc.strerror})') from None
        except yaml.YAMLError as exc:
            raise AcceptanceTableError(f'{path}: not YAML ({str(exc).splitlines()[0]})') from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = '<table>') -> 'AcceptanceTable':
        if not isinstance(data, dict):
            raise AcceptanceTableError(f'{source}: an acceptance table is a mapping with levels and rows')
        levels = data.get('levels')
        if (not isinstance(levels, list) or not levels or len(set(map(str, levels))) != len(levels)):
            raise AcceptanceTableError(f'{source}: levels must be a list of distinct names, strictest first')
        levels = tuple(str(v) for v in levels)
        rows_in = data.get('rows')
        if not isinstance(rows_in, list) or not rows_in:
            raise AcceptanceTableError(f'{source}: rows must be a non-empty list')
        rows = []
        for i, r in enumerate(rows_in):
            where = f'{source}: row {i + 1}'
            if not isinstance(r, dict):
                raise AcceptanceTableError(f'{where}: a row is a mapping')
            name = str(r.get('imperfection', '')).strip()
            where = f'{source}: row {i + 1} ({name or "unnamed"})'
            measure = r.get('measure')
            if measure not in MEASURES:
                raise AcceptanceTableError(f'{where}: measure must be one of {", ".join(MEASURES)}; '
                                           f'got {measure!r}')
            limits = r.get('limits')
            if not isinstance(limits, dict) or set(map(str, limits)) != set(levels):
                raise AcceptanceTableError(f'{where}: limits must give exactly the levels {", ".join(levels)}')
            parsed = {str(k): Limit.parse(v, f'{where}, level {k}') for k, v in limits.items()}
            rows.append(AcceptanceRow(name or measure, str(r.get('reference', '')), measure, parsed))
        return cls(str(data.get('name', 'acceptance table')), levels, tuple(rows),
                   str(data.get('note', '')), source)


@dataclass(frozen=True)
class RowResult:
    imperfection: str
    reference: str
    measure: str
    measured: float
    limit: Optional[float]           # None: not permitted
    passed: bool

    @property
    def excess(self) -> float:
        """How far the measured value is beyond the limit (0 when it passes)."""
        if self.passed:
            return 0.0
        return self.measured if self.limit is None else self.measured - self.limit

    def describe(self) -> str:
        lim = NOT_PERMITTED if self.limit is None else f'limit {self.limit:.2f}'
        state = 'ok' if self.passed else f'fails by {self.excess:.2f}'
        return f'{self.imperfection} [{self.reference}]: {self.measure} {self.measured:.2f} ({lim}): {state}'


@dataclass(frozen=True)
class Grade:
    """The weld against every level: which level it meets ('' for none) and, for the level
    asked for, each row's result."""

    requested_level: str
    met_level: str
    passed: bool                     # meets the requested level
    rows: tuple[RowResult, ...]      # at the requested level
    by_level: Mapping[str, bool]
    plate_thickness_mm: float

    @property
    def failures(self) -> tuple[RowResult, ...]:
        return tuple(r for r in self.rows if not r.passed)


def grade(table: AcceptanceTable, measured: Mapping[str, float], plate_thickness_mm: float,
          requested_level: str, bead_width_mm: float) -> Grade:
    """Grade measured values (MEASURES -> number) at every level of `table`."""
    if requested_level not in table.levels:
        raise AcceptanceTableError(f'{table.source}: quality level {requested_level!r} is not in the table '
                                   f'({", ".join(table.levels)})')
    if not (math.isfinite(plate_thickness_mm) and plate_thickness_mm > 0):
        raise AcceptanceTableError(f'plate thickness must be a positive number of mm, got {plate_thickness_mm}')
    env = {'t': float(plate_thickness_mm), 'b': float(bead_width_mm)}

    def results(level: str) -> tuple[RowResult, ...]:
        out = []
        for row in table.rows:
            value = float(measured.get(row.measure, 0.0))
            limit = row.limits[level].value(env)
            ok = value <= 0.0 if limit is None else value <= limit + 1e-9
            out.append(RowResult(row.imperfection, row.reference, row.measure, value, limit, ok))
        return tuple(out)

    by_level = {level: all(r.passed for r in results(level)) for level in table.levels}
    met = next((lv for lv in table.levels if by_level[lv]), '')
    rows = results(requested_level)
    return Grade(requested_level, met, all(r.passed for r in rows), rows, by_level, float(plate_thickness_mm))
