"""Results of the core, mirrored one to one by the messages in msg/.

The nodes fill messages from these dataclasses; the core never sees a message type.
"""
from __future__ import annotations

from dataclasses import dataclass, field

METHOD_RULE = 'rule'
METHOD_ML = 'ml'
METHOD_HYBRID = 'hybrid'


@dataclass(frozen=True)
class DefectRegion:
    """A localised defect: pixel box in the color image and size on the part [mm]."""

    defect_class: str
    confidence: float
    x_px: int
    y_px: int
    width_px: int
    height_px: int
    length_mm: float = 0.0
    width_mm: float = 0.0
    position_along_seam_mm: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """Defect verdict for one frame; `probabilities` is aligned with `class_names`."""

    defect_class: str
    confidence: float
    class_names: tuple[str, ...]
    probabilities: tuple[float, ...]
    method: str
    model_version: str = ''
    latency_ms: float = 0.0
    regions: tuple[DefectRegion, ...] = ()


@dataclass(frozen=True)
class BeadMeasurement:
    """Bead geometry for one frame [mm]; `reason` says why when `valid` is False."""

    valid: bool
    reason: str = ''
    width_mm: float = 0.0
    width_std_mm: float = 0.0
    width_min_mm: float = 0.0
    width_max_mm: float = 0.0
    height_mm: float = 0.0
    height_max_mm: float = 0.0
    undercut_depth_mm: float = 0.0
    seam_length_mm: float = 0.0
    seam_angle_deg: float = 0.0
    within_tolerance: bool = False
    score: float = 0.0

    @classmethod
    def invalid(cls, reason: str) -> 'BeadMeasurement':
        return cls(valid=False, reason=reason)


@dataclass(frozen=True)
class GroundTruth:
    """Known truth of a synthetic frame."""

    defect_class: str
    width_mm: float
    width_std_mm: float
    height_mm: float
    undercut_depth_mm: float
    seam_angle_deg: float
    plate_distance_m: float
    weld_id: str = ''
    regions: tuple[DefectRegion, ...] = field(default_factory=tuple)
