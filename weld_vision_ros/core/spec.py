"""Weld procedure specification check: is the measured bead within tolerance, and how close.

A weld spec names the target toe-to-toe width and reinforcement height with their
tolerances and the largest acceptable undercut depth (the numbers a WPS is written in).
`evaluate_spec` turns a measurement into `within_tolerance` and a 0-100 score: 100 on
target, falling linearly to 50 at the edge of a tolerance band and to 0 at twice the
tolerance; the score of a bead is that of its worst quantity.
"""
from __future__ import annotations

from dataclasses import dataclass

from .fields import tunable


class WeldSpecError(ValueError):
    """A weld spec whose numbers cannot describe a bead."""


@dataclass(frozen=True)
class WeldSpec:
    """Target bead geometry [mm] and tolerances [mm] (symmetric: target +- tolerance)."""

    target_width_mm: float = tunable(8.0, 'Weld spec: target toe-to-toe bead width', 'mm', 0.1, 100.0)
    width_tolerance_mm: float = tunable(
        3.0, 'Weld spec: width tolerance (target +- tolerance)',
        'mm', 0.01, 100.0)
    target_height_mm: float = tunable(2.0, 'Weld spec: target reinforcement height', 'mm', 0.05, 50.0)
    height_tolerance_mm: float = tunable(
        1.5, 'Weld spec: height tolerance (target +- tolerance)',
        'mm', 0.01, 50.0)
    max_undercut_mm: float = tunable(0.5, 'Weld spec: deepest acceptable undercut', 'mm', 0.0, 10.0)

    def __post_init__(self) -> None:
        if not (self.target_width_mm > 0 and self.target_height_mm > 0):
            raise WeldSpecError(f'target width and height must be > 0 mm, got '
                                f'{self.target_width_mm} and {self.target_height_mm}')
        if not (self.width_tolerance_mm > 0 and self.height_tolerance_mm > 0):
            raise WeldSpecError(f'tolerances must be > 0 mm, got {self.width_tolerance_mm} and '
                                f'{self.height_tolerance_mm}')
        if self.max_undercut_mm < 0:
            raise WeldSpecError(f'max_undercut_mm must be >= 0, got {self.max_undercut_mm}')


@dataclass(frozen=True)
class SpecResult:
    within_tolerance: bool
    score: float                 # 0 (worst) .. 100 (on target)
    worst: str                   # the quantity that set the score


def _band_score(deviation_mm: float, tolerance_mm: float) -> float:
    """100 at 0, 50 at the tolerance, 0 at twice the tolerance (linear)."""
    return max(0.0, 100.0 - 50.0 * abs(deviation_mm) / tolerance_mm)


def evaluate_spec(spec: WeldSpec, width_mm: float, height_mm: float,
                  undercut_depth_mm: float) -> SpecResult:
    """Check a measured bead against `spec`.

    Width and height score by their distance from target in tolerance units. Undercut
    scores 100 with no undercut, 50 at `max_undercut_mm`, 0 at twice that (a zero
    allowance makes any undercut score 0).
    """
    scores = {
        'width': _band_score(width_mm - spec.target_width_mm, spec.width_tolerance_mm),
        'height': _band_score(height_mm - spec.target_height_mm, spec.height_tolerance_mm),
    }
    if spec.max_undercut_mm > 0:
        scores['undercut'] = _band_score(max(undercut_depth_mm, 0.0), spec.max_undercut_mm)
    else:
        scores['undercut'] = 100.0 if undercut_depth_mm <= 0 else 0.0
    within = (abs(width_mm - spec.target_width_mm) <= spec.width_tolerance_mm
              and abs(height_mm - spec.target_height_mm) <= spec.height_tolerance_mm
              and undercut_depth_mm <= spec.max_undercut_mm)
    worst = min(scores, key=scores.get)
    return SpecResult(within_tolerance=bool(within), score=float(scores[worst]), worst=worst)
