"""Per-weld report: the frames of one weld placed along its seam and added up.

A cell is judged per weld. Between the start and the end of a weld the camera sees
overlapping stretches of the seam; each frame's rule inspection gives the bead geometry and
the imperfections in view, located along the seam *of that frame* (from the seam's start in
view). This module places every frame on the weld, merges what overlapping frames saw (one
pore seen by five frames is one pore), and builds one report: coverage (seen and unseen
stretches), per-segment geometry, findings with position +- uncertainty and size, and the
values an acceptance table grades (`core.grading`).

Placing a frame (`SeamPlacement`): the weld position of its view centre (the point where
the optical axis meets the plate, projected onto the seam) and the direction in which the
frame's seam coordinate runs along the weld. From the camera pose in the part frame
(`placement_from_pose`: what a robot driver publishes for a camera on the arm), or, with no
pose, from the travel speed and the time since the weld started (`placement_from_travel`,
whose uncertainty grows with time). The frame's own measurement gives the view centre's
position in its seam coordinate (`BeadMeasurement.axis_along_seam_mm`).

Pure numpy; the report node (nodes/weld_report_node.py) feeds it from topics.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

from .grading import AcceptanceTable, Grade, grade
from .results import BeadMeasurement, Verdict
from .rules import CRACK, GAP, POROSITY, SPATTER, UNDERCUT

POINT_CLASSES = (POROSITY, SPATTER)          # merged by position
EXTENDED_CLASSES = (UNDERCUT, GAP, CRACK)    # merged by overlapping extent
# Localisation of a finding within one frame by the rules [mm, 1 sigma]: about a pixel on
# the plate plus the finding's own extent uncertainty.
FRAME_LOCALISATION_MM = 0.5


class WeldReportError(ValueError):
    """Inputs a weld report cannot use."""


# --- placing frames ------------------------------------------------------------------------

@dataclass(frozen=True)
class SeamPlacement:
    """Where a frame lies on the weld: view centre [mm from the weld start], its 1-sigma
    uncertainty [mm], and +1/-1: whether the frame's seam coordinate runs along the weld."""

    view_mm: float
    sigma_mm: float
    direction: int = 1


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Rotation matrix of a quaternion (normalised here); raises on a zero quaternion."""
    q = np.array([x, y, z, w], dtype=np.float64)
    n = float(np.linalg.norm(q))
    if not (math.isfinite(n) and n > 1e-9):
        raise WeldReportError(f'orientation is not a rotation (quaternion norm {n})')
    x, y, z, w = q / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def placement_from_pose(position_m: Sequence[float], orientation_xyzw: Sequence[float],
                        seam_angle_deg: float, sigma_mm: float,
                        seam_origin_m: Sequence[float] = (0.0, 0.0, 0.0),
                        seam_direction: Sequence[float] = (1.0, 0.0, 0.0),
                        plate_normal: Sequence[float] = (0.0, 0.0, 1.0)) -> SeamPlacement:
    """Place a frame from the camera optical frame's pose in the part frame.

    The seam is the line seam_origin + s * seam_direction on the plate through seam_origin
    with normal plate_normal (part frame, metres). The view centre is where the optical axis
    (+z of the optical frame) meets the plate, projected onto the seam. seam_angle_deg is the
    seam's direction in the image as the frame's measurement found it; comparing it with the
    seam direction seen from the camera gives the frame's direction along the weld.
    """
    p = np.asarray(position_m, dtype=np.float64)
    o = np.asarray(seam_origin_m, dtype=np.float64)
    d = np.asarray(seam_direction, dtype=np.float64)
    nrm = np.asarray(plate_normal, dtype=np.float64)
    if not (np.isfinite(p).all() and np.linalg.norm(d) > 0 and np.linalg.norm(nrm) > 0):
        raise WeldReportError(f'pose position {p.tolist()} or seam direction {d.tolist()} is not usable')
    d, nrm = d / np.linalg.norm(d), nrm / np.linalg.norm(nrm)
    rot = quaternion_matrix(*orientation_xyzw)
    axis = rot[:, 2]
    facing = float(axis @ nrm)
    if abs(facing) < 0.2:
        raise WeldReportError(f'the camera looks along the plate (axis . normal = {facing:.2f}): '
                              'its view centre is not on the plate')
    lam = -float((p - o) @ nrm) / facing
    if lam <= 0:
        raise WeldReportError('the plate is behind the camera for this pose')
    hit = p + lam * axis
    view_mm = 1000.0 * float((hit - o) @ d)
    d_cam = rot.T @ d
    a = math.radians(seam_angle_deg)
    dot = d_cam[0] * math.cos(a) + d_cam[1] * math.sin(a)
    return SeamPlacement(view_mm, float(sigma_mm), 1 if dot >= 0 else -1)


def placement_from_travel(elapsed_s: float, speed_mm_s: float, start_mm: float, sigma0_mm: float,
                          sigma_per_s_mm: float, direction: int = 1) -> SeamPlacement:
    """Place a frame by dead reckoning: the view centre advances at the travel speed from
    `start_mm` at the weld start; the uncertainty grows linearly with the time travelled."""
    t = max(float(elapsed_s), 0.0)
    return SeamPlacement(start_mm + speed_mm_s * t, sigma0_mm + sigma_per_s_mm * t, 1 if direction >= 0 else -1)


# --- observations --------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameRecord:
    """One frame of the weld: its stamp, placement, rule measurement and rule verdict
    (None when the bead could not be measured)."""

    stamp_ns: int
    placement: Optional[SeamPlacement]
    bead: BeadMeasurement
    verdict: Optional[Verdict]

    @property
    def inspected(self) -> bool:
        return (self.placement is not None and self.bead.valid and self.verdict is not None
                and self.verdict.inspected)

    def to_weld(self, along_mm: float) -> float:
        """Weld position [mm] of a point at `along_mm` from the frame's seam start."""
        pl = self.placement
        return pl.view_mm + pl.direction * (along_mm - self.bead.axis_along_seam_mm)

    def seen_mm(self) -> tuple[float, float]:
        a, b = self.to_weld(0.0), self.to_weld(self.bead.seam_length_mm)
        return (a, b) if a <= b else (b, a)


@dataclass(frozen=True)
class ReportConfig:
    """How frames are added up.

    segment_mm: length of a report segment. merge_mm: two sightings of a point imperfection
    closer than this (plus their placement uncertainty) are one; extended ones merge when
    their extents overlap or are closer than it. min_frames / min_detection_ratio: a finding
    must be seen by at least this many frames and this share of the frames that covered its
    position (others are listed as unconfirmed, not graded). min_unseen_mm: shorter holes in
    coverage are ignored. uncertainty_k: the +- stated with a position is k sigma.
    """

    segment_mm: float = 20.0
    merge_mm: float = 4.0
    min_frames: int = 2
    min_detection_ratio: float = 0.3
    min_unseen_mm: float = 1.0
    uncertainty_k: float = 2.0

    def __post_init__(self) -> None:
        if not (self.segment_mm > 0 and self.merge_mm >= 0 and self.min_frames >= 1
                and 0 <= self.min_detection_ratio <= 1 and self.min_unseen_mm >= 0 and self.uncertainty_k > 0):
            raise WeldReportError(f'report settings out of range: {self}')


@dataclass(frozen=True)
class Finding:
    """One imperfection of the weld, merged over the frames that saw it."""

    defect_class: str
    position_mm: float
    position_uncertainty_mm: float     # +- (uncertainty_k sigma)
    start_mm: float
    end_mm: float
    size_mm: float                     # pore/droplet diameter, or length along the seam
    width_mm: float                    # across the seam
    depth_mm: float                    # undercut depth (0 where not measured)
    frames: tuple[int, ...]            # stamps [ns] of the frames that saw it
    frames_covering: int               # frames whose view covered its position
    confirmed: bool


@dataclass(frozen=True)
class Segment:
    start_mm: float
    end_mm: float
    seen: bool
    frames: int
    width_mm: float = 0.0
    width_min_mm: float = 0.0
    width_max_mm: float = 0.0
    height_mm: float = 0.0
    height_max_mm: float = 0.0
    undercut_depth_mm: float = 0.0


@dataclass(frozen=True)
class WeldReport:
    weld_id: str
    weld_length_mm: float
    plate_thickness_mm: float
    started_ns: int
    ended_ns: int
    frames_total: int
    frames_inspected: int
    frames_not_inspected: dict[str, int]
    seen: tuple[tuple[float, float], ...]
    unseen: tuple[tuple[float, float], ...]
    coverage_fraction: float
    segments: tuple[Segment, ...]
    findings: tuple[Finding, ...]           # confirmed
    unconfirmed: tuple[Finding, ...]
    measures: dict[str, float]
    grade: Optional[Grade] = None
    table_name: str = ''
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def complete(self) -> bool:
        """Every stretch of the weld was seen by an inspected frame."""
        return not self.unseen and self.frames_inspected > 0

    def to_dict(self) -> dict:
        out = asdict(self)
        out['complete'] = self.complete
        g = self.grade
        out['grade'] = None if g is None else {
            'requested_level': g.requested_level, 'met_level': g.met_level, 'passed': g.passed,
            'plate_thickness_mm': g.plate_thickness_mm, 'by_level': dict(g.by_level),
            'rows': [{**asdict(r), 'excess': r.excess, 'text': r.describe()} for r in g.rows],
            'failures': [r.describe() for r in g.failures]}
        return out


def _union(intervals: Sequence[tuple[float, float]], join_mm: float = 0.0) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + join_mm:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


@dataclass
class _Sighting:
    stamp_ns: int
    position_mm: float
    start_mm: float
    end_mm: float
    length_mm: float
    width_mm: float
    depth_mm: float
    sigma_mm: float


def _cluster(sightings: list[_Sighting], extended: bool, merge_mm: float) -> list[list[_Sighting]]:
    if extended:
        order = sorted(sightings, key=lambda s: s.start_mm)
        groups: list[list[_Sighting]] = []
        end = -math.inf
        for s in order:
            if groups and s.start_mm <= end + merge_mm:
                groups[-1].append(s)
                end = max(end, s.end_mm)
            else:
                groups.append([s])
                end = s.end_mm
        return groups
    order = sorted(sightings, key=lambda s: s.position_mm)
    groups = []
    for s in order:
        if groups:
            g = groups[-1]
            centre = float(np.median([x.position_mm for x in g]))
            if abs(s.position_mm - centre) <= merge_mm + 2.0 * max(s.sigma_mm, g[0].sigma_mm):
                g.append(s)
                continue
        groups.append([s])
    return groups


def build_report(weld_id: str, frames: Sequence[FrameRecord], weld_length_mm: float = 0.0,
                 plate_thickness_mm: float = 0.0, config: ReportConfig = ReportConfig(),
                 table: Optional[AcceptanceTable] = None, quality_level: str = '',
                 started_ns: int = 0, ended_ns: int = 0) -> WeldReport:
    """Add up the frames of one weld. weld_length_mm 0: the length is unknown, coverage is
    judged between the first and the last stretch seen. The weld is graded when a table,
    a quality level and a plate thickness are given."""
    notes: list[str] = []
    inspected = [f for f in frames if f.inspected]
    not_inspected: Counter[str] = Counter()
    for f in frames:
        if f.inspected:
            continue
        if f.placement is None:
            not_inspected['not_placed'] += 1
        elif not f.bead.valid or f.verdict is None:
            not_inspected[(f.bead.reason or 'no bead').split(':')[0]] += 1
        else:
            not_inspected[f.verdict.status_reason or 'not_inspected'] += 1

    raw_seen = [f.seen_mm() for f in inspected]
    if weld_length_mm > 0:
        lo_w, hi_w = 0.0, float(weld_length_mm)
    elif raw_seen:
        lo_w, hi_w = min(a for a, _ in raw_seen), max(b for _, b in raw_seen)
        notes.append('weld length not given: coverage judged between the first and last stretch seen')
    else:
        lo_w, hi_w = 0.0, 0.0
    clipped = [(max(a, lo_w), min(b, hi_w)) for a, b in raw_seen if min(b, hi_w) > max(a, lo_w)]
    seen = _union(clipped)
    unseen: list[tuple[float, float]] = []
    cursor = lo_w
    for a, b in seen:
        if a - cursor > config.min_unseen_mm:
            unseen.append((cursor, a))
        cursor = max(cursor, b)
    if hi_w - cursor > config.min_unseen_mm:
        unseen.append((cursor, hi_w))
    length = hi_w - lo_w
    coverage = (sum(b - a for a, b in seen) / length) if length > 0 else 0.0
    if not inspected:
        notes.append('no frame of this weld was inspected')

    # Sightings of each class, in weld coordinates.
    by_class: dict[str, list[_Sighting]] = {}
    for f in inspected:
        for r in f.verdict.regions:
            pos = f.to_weld(r.position_along_seam_mm)
            half = 0.5 * r.length_mm
            depth = f.bead.undercut_depth_mm if r.defect_class == UNDERCUT else 0.0
            by_class.setdefault(r.defect_class, []).append(
                _Sighting(f.stamp_ns, pos, pos - half, pos + half, r.length_mm, r.width_mm, depth,
                          f.placement.sigma_mm))

    def covering(pos: float) -> int:
        return sum(1 for a, b in raw_seen if a <= pos <= b)

    findings: list[Finding] = []
    for cls_name, sightings in sorted(by_class.items()):
        extended = cls_name in EXTENDED_CLASSES
        for group in _cluster(sightings, extended, config.merge_mm):
            stamps = tuple(sorted({s.stamp_ns for s in group}))
            sig_place = float(np.median([s.sigma_mm for s in group]))
            if extended:
                start, end = min(s.start_mm for s in group), max(s.end_mm for s in group)
                pos = 0.5 * (start + end)
                size = end - start
                spread = float(np.std([s.start_mm for s in group] + [s.end_mm for s in group])) if len(group) > 1 else 0.0
                spread = min(spread, 0.25 * size)
            else:
                positions = np.array([s.position_mm for s in group])
                pos = float(np.median(positions))
                size = float(np.median([max(s.length_mm, s.width_mm) for s in group]))
                start, end = pos - 0.5 * size, pos + 0.5 * size
                spread = float(positions.std()) if len(group) > 1 else 0.0
            n = len(stamps)
            sigma = math.sqrt(sig_place ** 2 + (spread ** 2 + FRAME_LOCALISATION_MM ** 2) / max(n, 1))
            width = float(np.median([s.width_mm for s in group]))
            depth = float(np.median([s.depth_mm for s in group])) if cls_name == UNDERCUT else 0.0
            cover = max(covering(pos), n)
            confirmed = n >= config.min_frames and n / cover >= config.min_detection_ratio
            findings.append(Finding(cls_name, pos, config.uncertainty_k * sigma, start, end, size, width,
                                    depth, stamps, cover, confirmed))
    confirmed = tuple(sorted((f for f in findings if f.confirmed), key=lambda f: f.position_mm))
    unconfirmed = tuple(sorted((f for f in findings if not f.confirmed), key=lambda f: f.position_mm))

    # Segments: the geometry of the frames that cover each one.
    segments: list[Segment] = []
    n_seg = int(math.ceil(length / config.segment_mm - 1e-9)) if length > 0 else 0
    for i in range(n_seg):
        a = lo_w + i * config.segment_mm
        b = min(a + config.segment_mm, hi_w)
        mid = a + 0.5 * (b - a)
        cov = [f for f, (lo, hi) in zip(inspected, raw_seen) if lo <= mid <= hi]
        uc = max((x.depth_mm for x in confirmed if x.defect_class == UNDERCUT
                  and x.start_mm < b and x.end_mm > a), default=0.0)
        if not cov:
            segments.append(Segment(a, b, False, 0))
            continue
        w = np.array([f.bead.width_mm for f in cov])
        segments.append(Segment(a, b, True, len(cov), float(np.median(w)),
                                float(np.median([f.bead.width_min_mm for f in cov])),
                                float(np.median([f.bead.width_max_mm for f in cov])),
                                float(np.median([f.bead.height_mm for f in cov])),
                                float(np.median([f.bead.height_max_mm for f in cov])), uc))
    seen_segs = [s for s in segments if s.seen]

    def largest(cls_name: str, attr: str) -> float:
        return max((getattr(f, attr) for f in confirmed if f.defect_class == cls_name), default=0.0)

    heights = [s.height_mm for s in seen_segs]
    measures = {
        'pore_diameter_mm': largest(POROSITY, 'size_mm'),
        'undercut_depth_mm': largest(UNDERCUT, 'depth_mm'),
        'excess_weld_metal_mm': max((s.height_max_mm for s in seen_segs), default=0.0),
        # a missing bead leaves the groove unfilled by at least the bead's height beside it
        'incomplete_fill_mm': (float(np.median(heights)) if heights else 0.0)
        if any(f.defect_class == GAP for f in confirmed) else 0.0,
        'crack_count': float(sum(1 for f in confirmed if f.defect_class == CRACK)),
        'spatter_count': float(sum(1 for f in confirmed if f.defect_class == SPATTER)),
        'width_variation_mm': (max(s.width_mm for s in seen_segs) - min(s.width_mm for s in seen_segs))
        if seen_segs else 0.0,
    }
    bead_width = float(np.median([s.width_mm for s in seen_segs])) if seen_segs else 0.0
    result: Optional[Grade] = None
    if table is not None and quality_level and plate_thickness_mm > 0 and inspected:
        result = grade(table, measures, plate_thickness_mm, quality_level, bead_width)
        if unseen:
            notes.append('graded on the stretches seen only: part of the weld was not inspected')
    elif table is not None:
        notes.append('not graded: ' + ('no inspected frame' if not inspected else
                                       'quality level or plate thickness not given'))
    return WeldReport(weld_id, float(hi_w - lo_w if weld_length_mm <= 0 else weld_length_mm),
                      float(plate_thickness_mm), int(started_ns), int(ended_ns), len(frames), len(inspected),
                      dict(not_inspected), tuple(seen), tuple(unseen), float(coverage), tuple(segments),
                      confirmed, unconfirmed, measures, result, table.name if table else '', tuple(notes))
