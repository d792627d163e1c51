"""A scanned seam: one continuous synthetic weld with imperfections at known positions, seen
by overlapping frames as the camera travels along it.

The renderer (`simulator.renderer`) draws one view of a weld; here successive views are
windows onto the same weld. The weld is a straight seam in a *part frame*: x along the
weld from its start [m], y across it, z the plate normal toward the camera, the plate at
z = 0. Every function of the bead that varies along the seam (width, height, meander,
ripples) is a sinusoid of the seam coordinate, so a view centred at position S sees the
same bead as its neighbours when each phase is advanced by 2 pi S / wavelength; each
imperfection sits at its absolute position and appears in every view that covers it.

Each `ScanFrame` carries the camera pose in the part frame (what a robot driver publishes
for a camera on the arm), the position along the weld of the point where the optical axis
meets the plate (the view's centre), and the truth of the imperfections in view.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterator, Optional

import numpy as np

from weld_vision_ros.core.camera import Intrinsics
from weld_vision_ros.simulator.renderer import (Crack, Droplet, GapSegment, Pit, SceneError, SceneParams,
                                                SyntheticFrame, UndercutSegment, _Geometry,
                                                default_intrinsics, render, sample_scene)

POROSITY, UNDERCUT, CRACK, SPATTER, GAP = 'porosity', 'undercut', 'crack', 'spatter', 'gap'
FEATURE_KINDS = (POROSITY, UNDERCUT, CRACK, SPATTER, GAP)


@dataclass(frozen=True)
class SeamFeature:
    """One imperfection of the weld at a known place.

    position_mm: its centre along the weld from the weld start. size_mm: pore diameter,
    undercut or gap length, crack length, spatter droplet diameter. depth_mm: pore or
    undercut depth, crack depth (ignored for spatter and gap). offset_mm: across the seam
    from the bead centre line (pores, cracks), or the side (+1/-1) for an undercut; for
    spatter the distance beyond the toe.
    """

    kind: str
    position_mm: float
    size_mm: float
    depth_mm: float = 0.5
    offset_mm: float = 0.0
    width_mm: float = 1.2          # undercut groove width, crack opening

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise SceneError(f'feature kind must be one of {", ".join(FEATURE_KINDS)}; got {self.kind!r}')
        if not (self.size_mm > 0 and math.isfinite(self.position_mm)):
            raise SceneError(f'{self.kind} at {self.position_mm} mm: size must be positive, got {self.size_mm}')

    @property
    def extent_mm(self) -> tuple[float, float]:
        """Along-seam interval the feature occupies [mm]."""
        half = 0.5 * self.size_mm
        return self.position_mm - half, self.position_mm + half


@dataclass(frozen=True)
class ScanPlan:
    """One weld and the camera's pass over it.

    weld_length_mm: the seam, from 0 (weld start) to weld_length_mm. The camera's view
    centre starts at `first_view_mm` and advances `step_mm` per frame up to `last_view_mm`;
    views whose centre falls inside one of `skip_mm` (start, end) are not taken (a stretch the
    camera never saw). distance_m, tilt_deg, seam_angle_deg: the camera's stand-off, tilt and
    the seam's direction in the image (held for the pass, as a robot scanning a seam does).
    """

    weld_length_mm: float
    features: tuple[SeamFeature, ...]
    step_mm: float = 30.0
    first_view_mm: float = 0.0
    last_view_mm: Optional[float] = None
    skip_mm: tuple[tuple[float, float], ...] = ()
    distance_m: float = 0.18
    tilt_deg: float = 2.0
    tilt_azimuth_deg: float = 30.0
    seam_angle_deg: float = 8.0
    noise_scale: float = 1.0
    bead_width_mm: Optional[float] = None      # None: drawn from the seed
    bead_height_mm: Optional[float] = None
    plate_thickness_mm: float = 8.0            # announced with the weld's start
    quality_level: str = ''

    def view_centres(self) -> list[float]:
        last = self.weld_length_mm if self.last_view_mm is None else self.last_view_mm
        n = int(math.floor((last - self.first_view_mm) / self.step_mm + 1e-9)) + 1
        centres = [self.first_view_mm + i * self.step_mm for i in range(max(n, 0))]
        return [c for c in centres if not any(a <= c <= b for a, b in self.skip_mm)]


@dataclass(frozen=True)
class ScanFrame:
    """One view of the scanned weld.

    view_mm: position along the weld of the optical axis' plate point, projected onto the
    seam. position_m, orientation_xyzw: the camera optical frame's pose in the part frame
    (ROS optical convention: z forward, x right, y down). seen_mm: the stretch of the weld
    (start, end) inside the image, clipped to the weld.
    """

    index: int
    frame: SyntheticFrame
    view_mm: float
    position_m: tuple[float, float, float]
    orientation_xyzw: tuple[float, float, float, float]
    seen_mm: tuple[float, float]


def _quaternion_xyzw(rot: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w) of a proper rotation matrix."""
    m = rot
    tr = float(np.trace(m))
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w], dtype=np.float64)
    q /= np.linalg.norm(q)
    return tuple(float(v) for v in q)


class SeamScanner:
    """Renders the frames of a `ScanPlan`: same seed, same frames."""

    def __init__(self, plan: ScanPlan, seed: int = 0, intrinsics: Intrinsics | None = None) -> None:
        self.plan = plan
        self.intrinsics = intrinsics or default_intrinsics()
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        base = sample_scene(rng, 'good', noise_scale=plan.noise_scale)
        # The pass holds the view; the bead stays within what the rules are built for.
        bead = {}
        if plan.bead_width_mm is not None:
            bead['bead_width_mm'] = float(plan.bead_width_mm)
        if plan.bead_height_mm is not None:
            bead['bead_height_mm'] = float(plan.bead_height_mm)
        self.base = replace(base, seam_angle_deg=plan.seam_angle_deg, seam_offset_mm=0.0,
                            plate_distance_m=plan.distance_m, tilt_deg=plan.tilt_deg,
                            tilt_azimuth_deg=plan.tilt_azimuth_deg, **bead)
        self._rng = rng

    def _scene_at(self, view_mm: float, s_start: float, s_end: float) -> SceneParams:
        b = self.base
        two_pi = 2.0 * math.pi
        span = s_end - s_start

        def frac(s_abs: float) -> float:
            return (s_abs - view_mm - s_start) / span

        def phase(p: float, wavelength: float) -> float:
            return (p + two_pi * view_mm / wavelength) % two_pi

        pits, drops, undercuts, gaps, cracks = [], [], [], [], []
        lo, hi = view_mm + s_start, view_mm + s_end
        for f in self.plan.features:
            a, z = f.extent_mm
            if z < lo - 5.0 or a > hi + 5.0:
                continue
            if f.kind == POROSITY:
                pits.append(Pit(frac(f.position_mm), f.offset_mm, 0.5 * f.size_mm, f.depth_mm))
            elif f.kind == SPATTER:
                side = 1.0 if f.offset_mm >= 0 else -1.0
                beyond = 0.5 * b.bead_width_mm + max(abs(f.offset_mm), 1.2) + 0.5 * f.size_mm
                drops.append(Droplet(frac(f.position_mm), side * beyond, 0.5 * f.size_mm,
                                     0.35 * f.size_mm, 1.0))
            elif f.kind == CRACK:
                cracks.append(Crack(frac(f.position_mm), f.offset_mm, 0.0, f.size_mm, f.width_mm,
                                    f.depth_mm, 0.15, 0.12, 0.0))
            elif f.kind == UNDERCUT:
                side = 1 if f.offset_mm >= 0 else -1
                a_c, z_c = max(a, lo), min(z, hi)
                if z_c > a_c:
                    undercuts.append(UndercutSegment(side, frac(a_c), (z_c - a_c) / span, f.depth_mm,
                                                     f.width_mm))
            elif f.kind == GAP:
                gaps.append(GapSegment(frac(f.position_mm), f.size_mm, 0.0, 1.2, 2.0))
        return replace(
            b, width_phase=phase(b.width_phase, b.width_wavelength_mm),
            height_phase=phase(b.height_phase, b.height_wavelength_mm),
            ripple_phase=phase(b.ripple_phase, b.ripple_pitch_mm),
            meander_phase=phase(b.meander_phase, b.meander_wavelength_mm),
            texture_seed=int(self._rng.integers(0, 2**31 - 1)),
            pits=tuple(pits), droplets=tuple(drops), undercuts=tuple(undercuts), gaps=tuple(gaps),
            cracks=tuple(cracks))

    def frames(self) -> Iterator[ScanFrame]:
        for i, view in enumerate(self.plan.view_centres()):
            yield self.render_view(i, view)

    def render_view(self, index: int, view_mm: float) -> ScanFrame:
        geo = _Geometry(self.base, self.intrinsics)
        s_start, s_end = geo.visible_seam()
        scene = self._scene_at(view_mm, s_start, s_end)
        frame = render(scene, self.intrinsics, self._rng)
        # Part frame axes in camera coordinates: x = seam direction g, y = b, z = plate normal n.
        rows = np.stack([geo.g, geo.b, geo.n])          # camera vector -> part coordinates
        origin_cam = geo.origin - view_mm * geo.g       # the weld start, in camera coordinates [mm]
        cam_part_mm = rows @ (-origin_cam)
        seen = (max(view_mm + s_start, 0.0), min(view_mm + s_end, self.plan.weld_length_mm))
        return ScanFrame(index=index, frame=frame, view_mm=view_mm,
                         position_m=tuple(float(v) * 1e-3 for v in cam_part_mm),
                         orientation_xyzw=_quaternion_xyzw(rows), seen_mm=seen)


_PLAN_KEYS = {'weld_length_mm', 'features', 'step_mm', 'first_view_mm', 'last_view_mm', 'skip_mm',
              'distance_m', 'tilt_deg', 'tilt_azimuth_deg', 'seam_angle_deg', 'noise_scale',
              'bead_width_mm', 'bead_height_mm', 'plate_thickness_mm', 'quality_level'}


def load_scan_plan(path: str) -> ScanPlan:
    """A ScanPlan from YAML: the ScanPlan fields, `features` a list of SeamFeature mappings."""
    import yaml
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise SceneError(f'{path}: cannot read the scan plan ({str(exc).splitlines()[0]})') from None
    if not isinstance(data, dict) or 'weld_length_mm' not in data:
        raise SceneError(f'{path}: a scan plan is a mapping with weld_length_mm and features')
    unknown = set(data) - _PLAN_KEYS
    if unknown:
        raise SceneError(f'{path}: unknown scan plan keys: {", ".join(sorted(unknown))}')
    try:
        feats = tuple(SeamFeature(**f) for f in data.get('features') or ())
        values = {k: v for k, v in data.items() if k != 'features'}
        if 'skip_mm' in values:
            values['skip_mm'] = tuple(tuple(float(x) for x in pair) for pair in values['skip_mm'])
        return ScanPlan(features=feats, **values)
    except (TypeError, ValueError) as exc:
        raise SceneError(f'{path}: {exc}') from None
