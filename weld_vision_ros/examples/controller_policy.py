"""What a robot controller does with a verdict: continue, rework, or stop the line.

An example policy for integrators, kept pure so that it is tested without ROS; the
controller example node wraps it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

CONTINUE, REWORK, STOP, RESCAN = 'continue', 'rework', 'stop', 'rescan'
NOT_INSPECTED = 'not_inspected'  # WeldDefect.status of a frame nobody could inspect

# Defects a repair pass can fix (re-run the torch over the seam) versus defects that
# make the part scrap or point at a process fault that must be fixed before going on.
REWORKABLE = frozenset({'undercut', 'gap', 'spatter'})
STOPPING = frozenset({'crack', 'porosity'})


@dataclass(frozen=True)
class PolicyConfig:
    """min_confidence: below it a defect verdict only asks for rework (a second look).
    min_score: bead score [0-100] under which an otherwise good weld is reworked."""

    min_confidence: float = 0.6
    min_score: float = 50.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f'min_confidence must be in [0, 1], got {self.min_confidence}')
        if not 0.0 <= self.min_score <= 100.0:
            raise ValueError(f'min_score must be in [0, 100], got {self.min_score}')


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str


def decide(defect_class: str, confidence: float, bead_valid: Optional[bool] = None,
           within_tolerance: Optional[bool] = None, score: Optional[float] = None,
           config: PolicyConfig = PolicyConfig(), status: str = 'inspected',
           status_reason: str = '') -> Decision:
    """Decision for one frame from its verdict and (when known) its bead measurement.

    A frame that was not inspected (status 'not_inspected': no bead in view, no depth, an
    unusable image) is never passed: the controller asks for a re-scan of that stretch."""
    if status == NOT_INSPECTED:
        return Decision(RESCAN, f'not inspected: {status_reason or "no reason given"}')
    if defect_class in STOPPING and confidence >= config.min_confidence:
        return Decision(STOP, f'{defect_class} ({confidence:.2f})')
    if defect_class != 'good':
        kind = 'reworkable' if defect_class in REWORKABLE else 'unsure'
        return Decision(REWORK, f'{defect_class} ({confidence:.2f}, {kind})')
    if bead_valid is False:
        return Decision(REWORK, 'bead not measurable')
    if within_tolerance is False or (score is not None and score < config.min_score):
        return Decision(REWORK, f'bead out of tolerance (score {score if score is not None else float("nan"):.0f})')
    return Decision(CONTINUE, 'good')
