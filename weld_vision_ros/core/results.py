"""Results of the core, mirrored one to one by the messages in msg/.

The nodes fill messages from these dataclasses; the core never sees a message type.
"""
from __future__ import annotations

from dataclasses import dataclass, field

METHOD_RULE = 'rule'
METHOD_ML = 'ml'
METHOD_HYBRID = 'hybrid'

# Inspection status of a verdict (WeldDefect.status). A frame either was inspected, or the
# verdict says that it was not and why; a frame that was not inspected is never passed as
# good. Status and reason are fields beside the class, not extra classes, so class_names
# and probabilities stay aligned with the model's outputs.
STATUS_INSPECTED = 'inspected'
STATUS_NOT_INSPECTED = 'not_inspected'
STATUSES = (STATUS_INSPECTED, STATUS_NOT_INSPECTED)
# Why a frame was not inspected (WeldDefect.status_reason), one token each:
REASON_NO_BEAD = 'no_bead'                        # no weld bead found in view
REASON_NO_DEPTH = 'no_depth'                      # too little valid depth (dropouts, NaN/zero)
REASON_DEPTH_UNRESOLVED = 'depth_unresolved'      # the depth's resolution cannot resolve the bead
REASON_UNKNOWN_APPEARANCE = 'unknown_appearance'  # unlike anything the inspector knows (anomaly)
REASON_BAD_FRAME = 'bad_frame'                    # unusable image (black, noise, too small)
NOT_INSPECTED_REASONS = (REASON_NO_BEAD, REASON_NO_DEPTH, REASON_DEPTH_UNRESOLVED,
                         REASON_UNKNOWN_APPEARANCE, REASON_BAD_FRAME)
# defect_class of a not-inspected verdict: empty, so that no consumer can read it as a class.
NOT_INSPECTED_CLASS = ''


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
    """Defect verdict for one frame; `probabilities` is aligned with `class_names`.

    status: STATUS_INSPECTED, or STATUS_NOT_INSPECTED with `status_reason` (one of
    NOT_INSPECTED_REASONS) and a human-readable `status_detail`; a not-inspected verdict has
    defect_class NOT_INSPECTED_CLASS and confidence 0. checks_not_made: checks an inspected
    verdict could not make (e.g. 'undercut' where the depth cannot resolve it).
    """

    defect_class: str
    confidence: float
    class_names: tuple[str, ...]
    probabilities: tuple[float, ...]
    method: str
    model_version: str = ''
    latency_ms: float = 0.0
    regions: tuple[DefectRegion, ...] = ()
    status: str = STATUS_INSPECTED
    status_reason: str = ''
    status_detail: str = ''
    checks_not_made: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f'status must be one of {", ".join(STATUSES)}; got {self.status!r}')
        if self.status == STATUS_NOT_INSPECTED:
            if self.status_reason not in NOT_INSPECTED_REASONS:
                raise ValueError(f'a not-inspected verdict needs a status_reason in '
                                 f'{", ".join(NOT_INSPECTED_REASONS)}; got {self.status_reason!r}')
            if self.defect_class != NOT_INSPECTED_CLASS:
                raise ValueError(f'a not-inspected verdict carries no class; got {self.defect_class!r}')

    @property
    def inspected(self) -> bool:
        return self.status == STATUS_INSPECTED

    @classmethod
    def not_inspected(cls, reason: str, detail: str, class_names: tuple[str, ...], method: str,
                      **fields) -> 'Verdict':
        """A verdict that says the frame was not inspected, and why (`reason` a token of
        NOT_INSPECTED_REASONS, `detail` for people). Probabilities are all zero unless given."""
        fields.setdefault('probabilities', tuple(0.0 for _ in class_names))
        return cls(NOT_INSPECTED_CLASS, 0.0, tuple(class_names), method=method,
                   status=STATUS_NOT_INSPECTED, status_reason=reason, status_detail=detail, **fields)


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
    # Position along the seam, from the seam's start in view, of the point where the optical
    # axis meets the plate [mm]: ties the frame's seam coordinate to the camera pose.
    axis_along_seam_mm: float = 0.0

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
