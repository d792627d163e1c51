"""Synthetic RGB-D frames of a weld bead on a steel plate, with their geometric truth.

This is the renderer behind the simulated camera, the sample datasets and the tests:
everything downstream (rules, training, benchmarks, the demo) runs on its frames before a
real cell exists. It is plain numpy/OpenCV and vectorised; a 640x480 frame takes a few
milliseconds.

Scene model
    A pinhole camera (`Intrinsics`) looks roughly down at a flat steel plate; the plate
    crosses the optical axis at `plate_distance_m` and is tilted by `tilt_deg` about an
    axis in direction `tilt_azimuth_deg`. One straight weld seam crosses the whole image.
    The plate frame has its origin on the seam's nominal centre line near the image
    centre: s [mm] runs along the seam, t [mm] across it in the plate plane, e [mm] is the
    elevation above the plate, toward the camera.

    The bead is a cap e = H(s) * (1 - u^2)^p * ripple(s, u) with u = (t - c(s)) / (W(s)/2):
    c(s) is the meander of the centre line, W(s) the toe-to-toe width, H(s) the crown
    height, p the profile exponent, and the ripple term models the chevron-shaped solidified
    weld ripples (multiplicative, so the toes sit exactly at c(s) +- W(s)/2).

Rendering model
    Each pixel's ray meets the plate at (s, t); the relief elevation e(s, t) there sets the
    depth as the point on the same ray at elevation e (no occlusion, no parallax). Every
    pixel therefore sees the relief of the plate point behind it, exactly: elevations, toe
    positions (e = 0) and hence widths and heights are true when measured in the plate
    coordinates of the pixel rays, or per cross-section from the toes. The back-projected
    3D point of an elevated pixel sits e * tan(ray angle) closer to the optical axis than
    that plate point (at most about 2 mm, on the crown, in the image corners), so methods
    that bin back-projected points along the seam see the crown compressed by about e / D.

Truth (`GroundTruth`), over the visible length of the seam
    width_mm, width_std_mm: mean and standard deviation of W(s), the toe-to-toe width
        measured in the plate plane perpendicular to the nominal seam direction.
    height_mm: mean over s of the crown height, the maximum elevation of the cross-section
        (pits and cracks included).
    For class 'gap' the gap segment and its tapers are left out of these statistics: they
        describe the bead where it is present.
    undercut_depth_mm: depth of the deepest undercut groove below the plate (0 unless the
        class is 'undercut').
    seam_angle_deg: direction of the projected nominal centre line in the image, measured
        from the +x (column) axis toward +y (down the rows), in [-90, 90).
    regions: one `DefectRegion` per defect instance (pit, droplet, undercut segment, gap,
        crack): a pixel box, its extent along and across the seam [mm] and the position of
        its centre along the visible seam [mm].

Randomness: `sample_scene` draws every choice of a scene into a frozen `SceneParams`;
`render` uses its own generator only for per-frame sensor effects (noise offsets, dropout
jitter). The same seeds give identical arrays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Mapping, Optional

import cv2
import numpy as np

from weld_vision_ros.core.camera import Intrinsics
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES, check_class_name
from weld_vision_ros.core.results import DefectRegion, GroundTruth


class SceneError(ValueError):
    """Scene parameters or sampling options the renderer cannot use."""


# --- Scene description -------------------------------------------------------------------

@dataclass(frozen=True)
class Pit:
    """A pore on the bead: a spherical dip into the surface, dark in the image."""

    along_fraction: float   # position along the visible seam, 0 (start) .. 1 (end)
    offset_mm: float        # across the seam, from the bead centre line
    radius_mm: float
    depth_mm: float


@dataclass(frozen=True)
class Droplet:
    """A spatter droplet on the plate beside the bead: a flattened hemisphere."""

    along_fraction: float
    offset_mm: float        # across the seam from the bead centre line (beyond a toe)
    radius_mm: float
    height_mm: float
    brightness: float       # albedo factor relative to the plate


@dataclass(frozen=True)
class UndercutSegment:
    """A groove melted into the plate along one toe, below the plate surface."""

    side: int               # +1: toe at +t, -1: toe at -t
    start_fraction: float
    length_fraction: float
    depth_mm: float         # deepest point below the plate
    width_mm: float         # groove width, from the toe outward


@dataclass(frozen=True)
class GapSegment:
    """A stretch of seam where the bead is missing (fill 0) or under-filled."""

    center_fraction: float
    length_mm: float        # length at full effect; `taper_mm` ramps on either side
    fill_fraction: float    # 0: no bead (the root gap shows) .. <1: thinner, lower bead
    root_gap_mm: float      # width of the open joint where the bead is missing
    taper_mm: float


@dataclass(frozen=True)
class Crack:
    """A thin crack on the bead: a narrow groove with one side stepped down."""

    center_fraction: float
    offset_mm: float        # across the seam, from the bead centre line
    angle_deg: float        # relative to the seam: ~0 longitudinal, ~90 transverse
    length_mm: float
    width_mm: float         # opening of the groove
    depth_mm: float         # groove depth below the surface
    step_mm: float          # one side of the crack sits this much lower
    wiggle_mm: float        # sideways zig-zag amplitude
    wiggle_phase: float


@dataclass(frozen=True)
class SceneParams:
    """Every random choice of one synthetic frame (lengths in mm unless named otherwise)."""

    defect_class: str
    # View.
    seam_angle_deg: float           # requested image direction of the seam
    seam_offset_mm: float           # seam centre line offset from the image centre
    plate_distance_m: float         # plate distance along the optical axis
    tilt_deg: float
    tilt_azimuth_deg: float
    # Bead geometry.
    bead_width_mm: float
    bead_height_mm: float
    profile_exponent: float         # 1: parabolic cap, <1 fuller, >1 more pointed
    width_variation_mm: float       # amplitude of the slow width variation
    width_wavelength_mm: float
    width_phase: float
    toe_ripple_mm: float            # width modulation at the ripple pitch
    height_variation: float         # relative amplitude of the slow height variation
    height_wavelength_mm: float
    height_phase: float
    ripple_amplitude: float         # relative height modulation of the weld ripples
    ripple_pitch_mm: float
    ripple_chevron_mm: float        # how far the ripples bow back toward the toes
    ripple_phase: float
    meander_amplitude_mm: float
    meander_wavelength_mm: float
    meander_phase: float
    # Sensor.
    noise_mm: float                 # depth noise standard deviation
    dropout_fraction: float         # fraction of bead pixels lost to specular glare
    rgb_noise: float                # colour noise standard deviation [8-bit levels]
    # Light and materials.
    lighting_gain: float
    ambient: float
    light_azimuth_deg: float
    light_elevation_deg: float
    vignetting: float
    exposure_gradient: float
    exposure_gradient_deg: float
    plate_albedo: float
    plate_texture_strength: float
    plate_tint: tuple[float, float, float]
    texture_seed: int
    texture_transposed: bool
    bead_albedo: float
    bead_tint: tuple[float, float, float]
    bead_specular: float
    bead_shininess: float
    heat_tint_strength: float
    heat_tint_width_mm: float
    # Defects (only the tuple of the scene's class is filled).
    pits: tuple[Pit, ...] = ()
    droplets: tuple[Droplet, ...] = ()
    undercuts: tuple[UndercutSegment, ...] = ()
    gaps: tuple[GapSegment, ...] = ()
    cracks: tuple[Crack, ...] = ()
    # Depth format (see `d4xx_16uc1`): 0 renders continuous depth (32FC1); > 0 rounds the
    # depth to whole units of this size [m], as a 16UC1 driver publishes it.
    depth_unit_m: float = 0.0
    depth_noise_corr_px: float = 0.0  # spatial correlation of the depth noise (Gaussian sigma)

    def __post_init__(self) -> None:
        check_class_name(self.defect_class)
        if not 0.05 <= self.plate_distance_m <= 2.0:
            raise SceneError(f'plate_distance_m must be in [0.05, 2.0] m, got {self.plate_distance_m}')
        if not 0.0 <= self.tilt_deg < 60.0:
            raise SceneError(f'tilt_deg must be in [0, 60) deg, got {self.tilt_deg}')
        if not (self.bead_width_mm > 0 and self.bead_height_mm > 0):
            raise SceneError(f'bead width and height must be positive, got '
                             f'{self.bead_width_mm} mm and {self.bead_height_mm} mm')
        if self.noise_mm < 0 or not 0.0 <= self.dropout_fraction <= 1.0 or self.rgb_noise < 0:
            raise SceneError(f'noise_mm and rgb_noise must be >= 0 and dropout_fraction in [0, 1], got '
                             f'{self.noise_mm}, {self.rgb_noise}, {self.dropout_fraction}')
        if not (self.depth_unit_m >= 0 and self.depth_noise_corr_px >= 0):
            raise SceneError(f'depth_unit_m and depth_noise_corr_px must be >= 0, got '
                             f'{self.depth_unit_m} and {self.depth_noise_corr_px}')


# Fields that belong to the weld rather than to one view of it: `sample_scene(weld=...)`
# keeps them, so frames of one weld share the bead and its materials.
WELD_LEVEL_FIELDS: tuple[str, ...] = (
    'defect_class', 'bead_width_mm', 'bead_height_mm', 'profile_exponent',
    'width_variation_mm', 'width_wavelength_mm', 'toe_ripple_mm', 'height_variation',
    'height_wavelength_mm', 'ripple_amplitude', 'ripple_pitch_mm', 'ripple_chevron_mm',
    'meander_amplitude_mm', 'meander_wavelength_mm', 'noise_mm', 'rgb_noise',
    'plate_albedo', 'plate_texture_strength', 'plate_tint', 'texture_seed',
    'texture_transposed', 'bead_albedo', 'bead_tint', 'bead_specular', 'bead_shininess',
    'heat_tint_strength', 'heat_tint_width_mm')


@dataclass(frozen=True)
class SyntheticFrame:
    """One rendered frame and its truth.

    rgb: uint8 (H, W, 3) RGB. depth_m: float32 (H, W) metres along the optical axis, NaN
    where the simulated sensor has no return. elevation_mm: float32 (H, W) noise-free
    relief above the plate at each pixel (the truth behind the depth). seam_line_px: the
    two image points where the nominal seam centre line enters and leaves the image
    ((x, y), (x, y)); seam_length_mm: its visible length on the plate.
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    intrinsics: Intrinsics
    truth: GroundTruth
    scene: SceneParams
    elevation_mm: np.ndarray
    seam_line_px: tuple[tuple[float, float], tuple[float, float]]
    seam_length_mm: float


# --- Sampling ----------------------------------------------------------------------------

def default_intrinsics(width: int = 640, height: int = 480) -> Intrinsics:
    """RealSense D435-like color intrinsics: about 69 deg horizontal field of view."""
    if width <= 0 or height <= 0:
        raise SceneError(f'image size must be positive, got {width}x{height}')
    fx = 0.5 * width / math.tan(math.radians(69.4) / 2.0)
    # Real units have the principal point a few pixels off centre.
    return Intrinsics(fx=fx, fy=fx, cx=0.5 * width + 1.7 * width / 640.0,
                      cy=0.5 * height - 1.3 * height / 480.0, width=int(width), height=int(height))


def _pick_class(rng: np.random.Generator, class_weights: Optional[Mapping[str, float]]) -> str:
    if class_weights is None:
        return DEFAULT_CLASS_NAMES[int(rng.integers(len(DEFAULT_CLASS_NAMES)))]
    names = list(DEFAULT_CLASS_NAMES)
    weights = np.zeros(len(names))
    for name, weight in class_weights.items():
        check_class_name(name)
        weight = float(weight)
        if not (math.isfinite(weight) and weight >= 0):
            raise SceneError(f'class weight of {name!r} must be a finite number >= 0, got {weight}')
        weights[names.index(name)] = weight
    if weights.sum() <= 0:
        raise SceneError('class_weights must give at least one class a positive weight')
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _palette(rng: np.random.Generator, colors: tuple[tuple[float, float, float], ...],
             jitter: float) -> tuple[float, float, float]:
    base = np.asarray(colors[int(rng.integers(len(colors)))])
    return tuple(float(v) for v in base * (1.0 + rng.uniform(-jitter, jitter, 3)))


def _sample_defects(rng: np.random.Generator, defect_class: str, width_mm: float,
                    height_mm: float) -> dict:
    half = 0.5 * width_mm
    if defect_class == 'porosity':
        n = int(rng.integers(1, 7))
        clustered = rng.random() < 0.5
        centre = rng.uniform(0.15, 0.85)
        pits = []
        for _ in range(n):
            frac = centre + rng.normal(0.0, 0.02) if clustered else rng.uniform(0.08, 0.92)
            radius = float(rng.uniform(0.5, min(1.3, 0.3 * width_mm)))
            pits.append(Pit(along_fraction=float(np.clip(frac, 0.03, 0.97)),
                            offset_mm=float(rng.uniform(-0.55, 0.55) * (half - radius)),
                            radius_mm=radius,
                            depth_mm=float(rng.uniform(0.4, min(1.3, 0.8 * height_mm + 0.2)))))
        return {'pits': tuple(pits)}
    if defect_class == 'spatter':
        n = int(rng.integers(8, 41))
        drops = []
        for _ in range(n):
            # Mostly small balls, a few large ones.
            radius = float(min(0.4 + rng.exponential(0.3), 1.5))
            beyond = 1.2 + radius + min(float(rng.exponential(7.0)), 28.0)
            side = 1.0 if rng.random() < 0.5 else -1.0
            drops.append(Droplet(along_fraction=float(rng.uniform(0.02, 0.98)),
                                 offset_mm=float(side * (half + beyond)), radius_mm=radius,
                                 height_mm=float(radius * rng.uniform(0.5, 0.9)),
                                 brightness=float(rng.uniform(0.55, 1.35))))
        return {'droplets': tuple(drops)}
    if defect_class == 'undercut':
        sides = [1, -1] if rng.random() < 0.25 else [1 if rng.random() < 0.5 else -1]
        segs = []
        for side in sides:
            length = float(rng.uniform(0.3, 0.9))
            segs.append(UndercutSegment(side=side, start_fraction=float(rng.uniform(0.0, 1.0 - length)),
                                        length_fraction=length, depth_mm=float(rng.uniform(0.3, 1.0)),
                                        width_mm=float(rng.uniform(0.8, 2.0))))
        return {'undercuts': tuple(segs)}
    if defect_class == 'gap':
        missing = rng.random() < 0.5
        return {'gaps': (GapSegment(center_fraction=float(rng.uniform(0.3, 0.7)),
                                    length_mm=float(rng.uniform(8.0, 35.0)),
                                    fill_fraction=0.0 if missing else float(rng.uniform(0.1, 0.45)),
                                    root_gap_mm=float(rng.uniform(0.6, 2.0)),
                                    taper_mm=float(rng.uniform(1.5, 4.0))),)}
    if defect_class == 'crack':
        longitudinal = rng.random() < 0.5
        if longitudinal:
            angle = float(rng.uniform(-12.0, 12.0))
            length = float(rng.uniform(6.0, 25.0))
            offset = float(rng.uniform(-0.25, 0.25) * half)
        else:
            angle = float(rng.uniform(75.0, 105.0))
            length = float(rng.uniform(0.6, 0.9) * width_mm)
            offset = float(rng.uniform(-0.1, 0.1) * half)
        return {'cracks': (Crack(center_fraction=float(rng.uniform(0.2, 0.8)), offset_mm=offset,
                                 angle_deg=angle, length_mm=length,
                                 width_mm=float(rng.uniform(0.3, 0.55)),
                                 depth_mm=float(rng.uniform(0.3, min(0.8, 0.6 * height_mm))),
                                 step_mm=float(rng.uniform(0.1, 0.3)),
                                 wiggle_mm=float(rng.uniform(0.08, 0.25)),
                                 wiggle_phase=float(rng.uniform(0, 2 * math.pi))),)}
    return {}


# The uniform ranges `sample_scene` draws these fields from (units as in SceneParams; the
# noise fields before `noise_scale`). `sample_scene(ranges=...)` replaces any of them: wider
# ones randomise a training set's domain, ranges outside these test a model beyond it.
SCENE_RANGES: dict[str, tuple[float, float]] = {
    'plate_distance_m': (0.15, 0.30),
    'tilt_deg': (0.0, 6.0),
    'bead_width_mm': (5.0, 12.0),
    'profile_exponent': (0.6, 1.4),
    'width_variation_mm': (0.03, 0.3),
    'toe_ripple_mm': (0.0, 0.12),
    'height_variation': (0.0, 0.06),
    'ripple_amplitude': (0.01, 0.06),
    'ripple_pitch_mm': (1.0, 3.0),
    'ripple_chevron_mm': (0.0, 2.0),
    'meander_amplitude_mm': (0.0, 1.2),
    'noise_mm': (0.02, 0.2),
    'dropout_fraction': (0.0, 0.1),
    'rgb_noise': (1.0, 4.0),
    'lighting_gain': (0.6, 1.4),
    'ambient': (0.25, 0.5),
    'light_elevation_deg': (35.0, 80.0),
    'vignetting': (0.0, 0.4),
    'exposure_gradient': (0.0, 0.25),
    'plate_albedo': (0.35, 0.6),
    'plate_texture_strength': (0.04, 0.16),
    'bead_albedo': (0.45, 0.8),
    'bead_specular': (0.15, 0.5),
    'bead_shininess': (8.0, 40.0),
    'heat_tint_strength': (0.2, 1.0),
    'heat_tint_width_mm': (4.0, 14.0),
}


def scene_ranges(ranges: Mapping[str, tuple[float, float]] | None = None) -> dict[str, tuple[float, float]]:
    """SCENE_RANGES with `ranges` replacing some of them; unknown names and empty ranges raise."""
    out = dict(SCENE_RANGES)
    for name, value in (ranges or {}).items():
        if name not in SCENE_RANGES:
            raise SceneError(f'no scene range named {name!r}; valid: {", ".join(SCENE_RANGES)}')
        lo, hi = (float(v) for v in value)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise SceneError(f'scene range {name} must be (low, high) with low <= high, got {value!r}')
        out[name] = (lo, hi)
    return out


def sample_scene(rng: np.random.Generator, defect_class: str | None = None,
                 class_weights: Mapping[str, float] | None = None, noise_scale: float = 1.0,
                 weld: SceneParams | None = None,
                 ranges: Mapping[str, tuple[float, float]] | None = None) -> SceneParams:
    """Draw a random scene.

    defect_class: force the class; otherwise it is drawn from `class_weights` (class name
    -> relative weight; unnamed classes get 0; None: uniform over the default classes).
    noise_scale: multiplies depth noise, glare dropouts and colour noise (0: clean frames).
    weld: another view of this weld: its class, bead and materials are kept
    (`WELD_LEVEL_FIELDS`); the view, light and defect instances are drawn anew.
    ranges: field name -> (low, high) replacing its range in SCENE_RANGES.
    """
    if not (math.isfinite(noise_scale) and noise_scale >= 0):
        raise SceneError(f'noise_scale must be a finite number >= 0, got {noise_scale}')
    if weld is not None:
        defect_class = weld.defect_class
    elif defect_class is not None:
        check_class_name(defect_class)
    else:
        defect_class = _pick_class(rng, class_weights)
    span = scene_ranges(ranges)
    u = rng.uniform
    distance_m = float(u(*span['plate_distance_m']))
    width_mm = float(u(*span['bead_width_mm']))
    height_mm = float(u(1.0, min(3.5, 0.5 * width_mm)))
    two_pi = 2.0 * math.pi
    values = dict(
        defect_class=defect_class,
        seam_angle_deg=float(u(-90.0, 90.0)),
        seam_offset_mm=float(u(-0.12, 0.12) * distance_m * 1000.0),
        plate_distance_m=distance_m,
        tilt_deg=float(u(*span['tilt_deg'])),
        tilt_azimuth_deg=float(u(0.0, 360.0)),
        bead_width_mm=width_mm,
        bead_height_mm=height_mm,
        profile_exponent=float(u(*span['profile_exponent'])),
        width_variation_mm=float(u(*span['width_variation_mm'])),
        width_wavelength_mm=float(u(25.0, 120.0)),
        width_phase=float(u(0, two_pi)),
        toe_ripple_mm=float(u(*span['toe_ripple_mm'])),
        height_variation=float(u(*span['height_variation'])),
        height_wavelength_mm=float(u(25.0, 120.0)),
        height_phase=float(u(0, two_pi)),
        ripple_amplitude=float(u(*span['ripple_amplitude'])),
        ripple_pitch_mm=float(u(*span['ripple_pitch_mm'])),
        ripple_chevron_mm=float(u(*span['ripple_chevron_mm'])),
        ripple_phase=float(u(0, two_pi)),
        meander_amplitude_mm=float(u(*span['meander_amplitude_mm'])),
        meander_wavelength_mm=float(u(40.0, 200.0)),
        meander_phase=float(u(0, two_pi)),
        noise_mm=float(u(*span['noise_mm']) * noise_scale),
        dropout_fraction=float(min(1.0, u(*span['dropout_fraction']) * noise_scale)),
        rgb_noise=float(u(*span['rgb_noise']) * noise_scale),
        lighting_gain=float(u(*span['lighting_gain'])),
        ambient=float(u(*span['ambient'])),
        light_azimuth_deg=float(u(0.0, 360.0)),
        light_elevation_deg=float(u(*span['light_elevation_deg'])),
        vignetting=float(u(*span['vignetting'])),
        exposure_gradient=float(u(*span['exposure_gradient'])),
        exposure_gradient_deg=float(u(0.0, 360.0)),
        plate_albedo=float(u(*span['plate_albedo'])),
        plate_texture_strength=float(u(*span['plate_texture_strength'])),
        plate_tint=_palette(rng, ((1.0, 1.0, 1.0), (0.97, 0.99, 1.04), (1.03, 1.0, 0.95)), 0.02),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        texture_transposed=bool(rng.random() < 0.5),
        bead_albedo=float(u(*span['bead_albedo'])),
        bead_tint=_palette(rng, ((1.0, 1.0, 1.02), (1.06, 0.98, 0.84), (0.9, 0.96, 1.1),
                                 (1.02, 0.9, 0.92)), 0.03),
        bead_specular=float(u(*span['bead_specular'])),
        bead_shininess=float(u(*span['bead_shininess'])),
        heat_tint_strength=float(u(*span['heat_tint_strength'])),
        heat_tint_width_mm=float(u(*span['heat_tint_width_mm'])),
    )
    if weld is not None:
        for name in WELD_LEVEL_FIELDS:
            values[name] = getattr(weld, name)
        width_mm, height_mm = weld.bead_width_mm, weld.bead_height_mm
    values.update(_sample_defects(rng, defect_class, width_mm, height_mm))
    return SceneParams(**values)


def resample_bead(scene: SceneParams, rng: np.random.Generator, width_mm: float,
                  height_mm: float) -> SceneParams:
    """`scene` with another bead size and its defect instances drawn anew for that bead."""
    defects = {'pits': (), 'droplets': (), 'undercuts': (), 'gaps': (), 'cracks': ()}
    defects.update(_sample_defects(rng, scene.defect_class, width_mm, height_mm))
    return replace(scene, bead_width_mm=float(width_mm), bead_height_mm=float(height_mm), **defects)


# A machined bar's profile: (1 - u^2)^0.05 is flat on top and falls to 0 at the edges
# within 1 % of the half-width (above half height out to u = 0.9999).
GAUGE_PROFILE_EXPONENT = 0.05


def gauge_scene(rng: np.random.Generator, width_mm: float, height_mm: float) -> SceneParams:
    """A commissioning gauge in view: a straight machined bar of `width_mm` x `height_mm`
    on the plate (no ripples, no width or height variation, no meander), in a random view
    and light, with the sensor effects of an ordinary scene."""
    scene = sample_scene(rng, 'good')
    return replace(scene, bead_width_mm=float(width_mm), bead_height_mm=float(height_mm),
                   profile_exponent=GAUGE_PROFILE_EXPONENT, width_variation_mm=0.0, toe_ripple_mm=0.0,
                   height_variation=0.0, ripple_amplitude=0.0, meander_amplitude_mm=0.0)


# --- Cached image banks (fixed seeds: deterministic) --------------------------------------

@lru_cache(maxsize=4)
def _texture_bank(size: int) -> np.ndarray:
    """Brushed, mottled steel texture (zero mean, unit std), square `size` px."""
    bank_rng = np.random.default_rng(20251122)
    white = bank_rng.standard_normal((size, size), dtype=np.float32)
    streaks = cv2.blur(white, (61, 1)) * 8.0
    fine = cv2.GaussianBlur(bank_rng.standard_normal((size, size), dtype=np.float32), (0, 0), 0.8)
    coarse = cv2.resize(bank_rng.standard_normal((12, 12), dtype=np.float32), (size, size),
                        interpolation=cv2.INTER_CUBIC)
    tex = streaks + 0.5 * fine + 0.8 * coarse
    tex -= tex.mean()
    tex /= tex.std()
    return tex


@lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    """Standard normal noise, square `size` px; frames take random crops of it."""
    return np.random.default_rng(7411).standard_normal((size, size), dtype=np.float32)


@lru_cache(maxsize=4)
def _blob_bank(size: int) -> np.ndarray:
    """Smooth noise (unit std, about 3 px blobs): glare dropouts come in patches, not pixels."""
    blobs = cv2.GaussianBlur(_noise_bank(size), (0, 0), 1.5)
    return blobs / blobs.std()


def _bank_size(width: int, height: int) -> int:
    return int(64 * math.ceil((max(width, height) + 192) / 64))


def _crop(bank: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    y = int(rng.integers(0, bank.shape[0] - height + 1))
    x = int(rng.integers(0, bank.shape[1] - width + 1))
    view = bank[y:y + height, x:x + width]
    flips = int(rng.integers(4))
    if flips & 1:
        view = view[::-1]
    if flips & 2:
        view = view[:, ::-1]
    return view


# Temper colours outward from the toe (hotter to cooler): grey oxide, blue, purple,
# bronze, straw, bare steel. Multiplicative on the plate colour; x in heat-tint widths.
_TINT_X = np.array([0.0, 0.12, 0.3, 0.5, 0.75, 1.0, 1.25])
_TINT_RGB = np.array([[0.55, 0.55, 0.6], [0.55, 0.68, 1.2], [0.85, 0.6, 1.05], [1.1, 0.82, 0.6],
                      [1.18, 1.06, 0.68], [1.05, 1.02, 0.92], [1.0, 1.0, 1.0]])
_TINT_LUT_SIZE = 256
_TINT_LUT_RANGE = 1.25
_TINT_LUT = np.stack([np.interp(np.linspace(0.0, _TINT_LUT_RANGE, _TINT_LUT_SIZE), _TINT_X,
                                _TINT_RGB[:, c]) for c in range(3)], axis=1).astype(np.float32)
_TINT_LUT_T = np.ascontiguousarray(_TINT_LUT.T)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# --- Geometry ----------------------------------------------------------------------------

class _Geometry:
    """Camera, plate plane and seam frame of one scene; plate <-> pixel mappings."""

    def __init__(self, scene: SceneParams, intr: Intrinsics) -> None:
        self.intr = intr
        tau = math.radians(scene.tilt_deg)
        phi = math.radians(scene.tilt_azimuth_deg)
        # Plate normal, pointing toward the camera (camera looks along +z).
        self.n = np.array([math.sin(tau) * math.cos(phi), math.sin(tau) * math.sin(phi), -math.cos(tau)])
        self.d_mm = scene.plate_distance_m * 1000.0
        self.dc = self.d_mm * math.cos(tau)       # -n . P0 with P0 = (0, 0, d_mm)
        theta = math.radians(scene.seam_angle_deg)
        g = np.array([math.cos(theta), math.sin(theta), 0.0])
        g = g - g.dot(self.n) * self.n
        self.g = g / np.linalg.norm(g)
        b = np.cross(self.n, self.g)
        self.b = b / np.linalg.norm(b)
        self.origin = np.array([0.0, 0.0, self.d_mm]) + scene.seam_offset_mm * self.b
        xn = (np.arange(intr.width, dtype=np.float64) - intr.cx) / intr.fx
        yn = (np.arange(intr.height, dtype=np.float64) - intr.cy) / intr.fy
        # Ray d = (xn, yn, 1): plate hit at z0 = dc / q; s = Ns / q, t = Nt / q, with q, Ns and
        # Nt affine in (xn, yn): separable row + column terms.
        nx, ny, nz = self.n
        self.q_col = (-nx * xn).astype(np.float32)
        self.q_row = (-nz - ny * yn).astype(np.float32)
        og, ob = float(self.origin.dot(self.g)), float(self.origin.dot(self.b))
        self.ns_col = (self.dc * self.g[0] * xn + og * nx * xn).astype(np.float32)
        self.ns_row = (self.dc * (self.g[1] * yn + self.g[2]) - og * (-nz - ny * yn)).astype(np.float32)
        self.nt_col = (self.dc * self.b[0] * xn + ob * nx * xn).astype(np.float32)
        self.nt_row = (self.dc * (self.b[1] * yn + self.b[2]) - ob * (-nz - ny * yn)).astype(np.float32)
        self.inv_q = 1.0 / (self.q_row[:, None] + self.q_col[None, :])
        self.mm_per_px = self.d_mm / (0.5 * (intr.fx + intr.fy))

    def project(self, s: np.ndarray, t: np.ndarray, e: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (x, y) of plate points (s, t, e) [mm]."""
        s, t = np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64)
        p = (self.origin[:, None] + np.outer(self.g, s.ravel()) + np.outer(self.b, t.ravel())
             + np.outer(self.n, np.broadcast_to(e, s.shape).ravel()))
        x = self.intr.fx * p[0] / p[2] + self.intr.cx
        y = self.intr.fy * p[1] / p[2] + self.intr.cy
        return x.reshape(s.shape), y.reshape(s.shape)

    def st_of_slice(self, ys: slice, xs: slice) -> tuple[np.ndarray, np.ndarray]:
        inv_q = self.inv_q[ys, xs]
        s = (self.ns_row[ys, None] + self.ns_col[None, xs]) * inv_q
        t = (self.nt_row[ys, None] + self.nt_col[None, xs]) * inv_q
        return s, t

    def st_of_pixels(self, iy: np.ndarray, ix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inv_q = self.inv_q[iy, ix]
        return (self.ns_row[iy] + self.ns_col[ix]) * inv_q, (self.nt_row[iy] + self.nt_col[ix]) * inv_q

    def t_full(self) -> np.ndarray:
        return (self.nt_row[:, None] + self.nt_col[None, :]) * self.inv_q

    def visible_seam(self) -> tuple[float, float]:
        """s range [mm] of the nominal centre line inside the image."""
        reach = 4.0 * self.d_mm
        s = np.arange(-reach, reach, 0.25)
        x, y = self.project(s, np.zeros_like(s))
        inside = (x >= -0.5) & (x <= self.intr.width - 0.5) & (y >= -0.5) & (y <= self.intr.height - 0.5)
        if not inside.any():
            raise SceneError('the seam does not cross the image; reduce seam_offset_mm or tilt_deg')
        return float(s[inside].min()), float(s[inside].max())

    def box(self, s0: float, s1: float, t0: float, t1: float) -> Optional[tuple[int, int, int, int]]:
        """Pixel box (x, y, w, h) of a plate rectangle, clipped to the image; None if outside."""
        x, y = self.project(np.array([s0, s0, s1, s1]), np.array([t0, t1, t0, t1]))
        x0, x1 = int(math.floor(x.min() + 0.5)), int(math.floor(x.max() + 0.5))
        y0, y1 = int(math.floor(y.min() + 0.5)), int(math.floor(y.max() + 0.5))
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.intr.width - 1), min(y1, self.intr.height - 1)
        if x1 < x0 or y1 < y0:
            return None
        return x0, y0, x1 - x0 + 1, y1 - y0 + 1


# --- Relief ------------------------------------------------------------------------------

@dataclass
class _Relief:
    """Elevation [mm], albedo factor and bead coverage for a set of plate points."""

    elevation: np.ndarray
    albedo: np.ndarray
    toe_mm: np.ndarray       # distance beyond the nearer toe (negative on the bead)
    bead: np.ndarray         # 0..1 bead coverage (anti-aliased at the toes)
    slot: np.ndarray         # True in an open root gap


class _Bead:
    """The bead and the seam-long defects (undercut, gap) as functions of (s, t)."""

    def __init__(self, scene: SceneParams, s_start: float, s_end: float) -> None:
        self.sc = scene
        self.s_start, self.s_end = s_start, s_end
        span = s_end - s_start
        self.undercuts = [(u.side, s_start + u.start_fraction * span,
                           s_start + (u.start_fraction + u.length_fraction) * span, u.depth_mm, u.width_mm)
                          for u in scene.undercuts]
        self.gaps = [(s_start + g.center_fraction * span - 0.5 * g.length_mm,
                      s_start + g.center_fraction * span + 0.5 * g.length_mm, g) for g in scene.gaps]
        sc = scene
        self.max_half_mm = (0.5 * sc.bead_width_mm + sc.width_variation_mm + sc.toe_ripple_mm
                            + sc.meander_amplitude_mm)

    def centre(self, s: np.ndarray) -> np.ndarray:
        sc = self.sc
        return (sc.meander_amplitude_mm
                * np.sin(s * np.float32(2 * math.pi / sc.meander_wavelength_mm) + np.float32(sc.meander_phase)))

    def width_height(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Toe-to-toe width W(s) and crown height H(s) before ripples [mm]."""
        sc = self.sc
        width = (sc.bead_width_mm
                 + sc.width_variation_mm * np.sin(s * np.float32(2 * math.pi / sc.width_wavelength_mm)
                                                  + np.float32(sc.width_phase))
                 + sc.toe_ripple_mm * np.cos(s * np.float32(2 * math.pi / sc.ripple_pitch_mm)
                                             + np.float32(sc.ripple_phase)))
        height = sc.bead_height_mm * (1.0 + sc.height_variation * np.sin(
            s * np.float32(2 * math.pi / sc.height_wavelength_mm) + np.float32(sc.height_phase)))
        for g0, g1, gap in self.gaps:
            w = self.gap_window(s, g0, g1, gap.taper_mm)
            height = height * (1.0 - (1.0 - gap.fill_fraction) * w)
            width = width * (1.0 - (1.0 - (0.4 + 0.6 * gap.fill_fraction)) * w)
        return width, height

    @staticmethod
    def gap_window(s: np.ndarray, g0: float, g1: float, taper: float) -> np.ndarray:
        return _smoothstep((s - (g0 - taper)) / taper) * _smoothstep(((g1 + taper) - s) / taper)

    def excluded(self, s: np.ndarray) -> np.ndarray:
        """True where the bead statistics leave the seam out (gap segments with tapers)."""
        out = np.zeros(s.shape, dtype=bool)
        for g0, g1, gap in self.gaps:
            out |= (s > g0 - gap.taper_mm) & (s < g1 + gap.taper_mm)
        return out

    def evaluate(self, s: np.ndarray, t: np.ndarray, mm_per_px: float) -> _Relief:
        sc = self.sc
        width, height = self.width_height(s)
        half = 0.5 * width
        dt = t - self.centre(s)
        u = dt / half
        u2 = u * u
        cap = np.maximum(1.0 - u2, 0.0)
        if sc.profile_exponent != 1.0:
            cap = cap ** np.float32(sc.profile_exponent)
        ripple = 1.0 + sc.ripple_amplitude * np.cos(
            (s - np.float32(sc.ripple_chevron_mm) * u2) * np.float32(2 * math.pi / sc.ripple_pitch_mm)
            + np.float32(sc.ripple_phase))
        elevation = (height * cap * ripple).astype(np.float32)
        abs_dt = np.abs(dt)
        toe = abs_dt - half
        present = np.clip(height / 0.3, 0.0, 1.0)
        bead = np.clip(0.5 - toe / mm_per_px, 0.0, 1.0) * present
        albedo = np.ones_like(elevation)
        slot = np.zeros(elevation.shape, dtype=bool)
        for side, s0, s1, depth, groove_w in self.undercuts:
            v = side * dt - half
            along = _smoothstep((s - s0) / 3.0) * _smoothstep((s1 - s) / 3.0)
            inside = (v > 0) & (v < groove_w)
            groove = np.where(inside, np.sin(np.clip(v / groove_w, 0, 1) * np.float32(math.pi)), 0.0) * along
            elevation -= (depth * groove).astype(np.float32)
            albedo *= (1.0 - 0.55 * groove).astype(np.float32)
        for g0, g1, gap in self.gaps:
            if gap.fill_fraction > 0:
                continue
            w = self.gap_window(s, g0, g1, gap.taper_mm)
            open_ = (abs_dt < 0.5 * gap.root_gap_mm * w) & (w > 0.05)
            elevation = np.where(open_, np.float32(-4.0), elevation)
            albedo = np.where(open_, np.float32(0.12), albedo)
            slot |= open_
        return _Relief(elevation, albedo, toe, bead.astype(np.float32), slot)


def _pit_relief(s: np.ndarray, t: np.ndarray, sp: float, tp: float, pit: Pit,
                mm_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    r2 = ((s - sp) ** 2 + (t - tp) ** 2) / (pit.radius_mm ** 2)
    dip = -pit.depth_mm * np.maximum(1.0 - r2, 0.0)
    r = np.sqrt(r2) * pit.radius_mm
    cover = np.clip((pit.radius_mm - r) / mm_per_px + 0.5, 0.0, 1.0)
    albedo = 1.0 - cover * (0.8 - 0.45 * np.minimum(r2, 1.0))
    return dip.astype(np.float32), albedo.astype(np.float32)


def _droplet_relief(s: np.ndarray, t: np.ndarray, sp: float, tp: float, drop: Droplet,
                    mm_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    r2 = ((s - sp) ** 2 + (t - tp) ** 2) / (drop.radius_mm ** 2)
    bump = drop.height_mm * np.sqrt(np.maximum(1.0 - r2, 0.0))
    r = np.sqrt(r2) * drop.radius_mm
    cover = np.clip((drop.radius_mm - r) / mm_per_px + 0.5, 0.0, 1.0)
    # A dark oxide rim where the droplet meets the plate.
    rim = np.clip(1.0 - np.abs(r - drop.radius_mm) / (0.5 * mm_per_px + 0.15), 0.0, 1.0)
    albedo = (1.0 + cover * (drop.brightness - 1.0)) * (1.0 - 0.35 * rim)
    return bump.astype(np.float32), albedo.astype(np.float32)


def _crack_relief(s: np.ndarray, t: np.ndarray, sc_: float, tc_: float, crack: Crack,
                  mm_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    a = math.radians(crack.angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    ds, dt = s - sc_, t - tc_
    along = ds * ca + dt * sa
    across = -ds * sa + dt * ca
    across = across - crack.wiggle_mm * np.sin(along * np.float32(2 * math.pi / 2.7) + crack.wiggle_phase)
    half_len = 0.5 * crack.length_mm
    # Tips taper over 1 mm; the groove is a parabola `width_mm` wide.
    ends = _smoothstep((half_len - np.abs(along)) / 1.0)
    groove = np.maximum(1.0 - (across / (0.5 * crack.width_mm)) ** 2, 0.0) * ends
    # The stepped-down side: full drop just past the groove, fading out 1 to 2.5 mm away.
    step = (np.where(across > 0, _smoothstep(across / (0.5 * crack.width_mm)), 0.0)
            * (1.0 - _smoothstep((across - 1.0) / 1.5))
            * _smoothstep((half_len + 1.0 - np.abs(along)) / 2.0))
    relief = -crack.depth_mm * groove - crack.step_mm * step
    dark = np.clip(1.0 - (np.abs(across) - 0.5 * crack.width_mm) / mm_per_px, 0.0, 1.0) * ends
    albedo = 1.0 - 0.8 * dark
    return relief.astype(np.float32), albedo.astype(np.float32)


@dataclass(frozen=True)
class _Local:
    """A local defect placed on the plate: its footprint and its relief function."""

    defect_class: str
    s_mm: float
    t_mm: float
    reach_mm: float           # half size of the square footprint that holds the relief
    along_mm: float           # extent along the seam (truth)
    across_mm: float          # extent across the seam (truth)
    item: object


def _place_locals(scene: SceneParams, bead: _Bead) -> list[_Local]:
    span = bead.s_end - bead.s_start
    out = []
    for pit in scene.pits:
        s = bead.s_start + pit.along_fraction * span
        t = float(bead.centre(np.float32(s))) + pit.offset_mm
        out.append(_Local('porosity', s, t, pit.radius_mm, 2 * pit.radius_mm, 2 * pit.radius_mm, pit))
    for drop in scene.droplets:
        s = bead.s_start + drop.along_fraction * span
        t = float(bead.centre(np.float32(s))) + drop.offset_mm
        out.append(_Local('spatter', s, t, drop.radius_mm + 0.2, 2 * drop.radius_mm, 2 * drop.radius_mm, drop))
    for crack in scene.cracks:
        s = bead.s_start + crack.center_fraction * span
        t = float(bead.centre(np.float32(s))) + crack.offset_mm
        a = math.radians(crack.angle_deg)
        extent = crack.length_mm + 2 * crack.wiggle_mm
        along = abs(extent * math.cos(a)) + crack.width_mm
        across = abs(extent * math.sin(a)) + crack.width_mm
        out.append(_Local('crack', s, t, 0.5 * crack.length_mm + 2.0, along, across, crack))
    return out


def _local_relief(local: _Local, s: np.ndarray, t: np.ndarray, mm_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(local.item, Pit):
        return _pit_relief(s, t, local.s_mm, local.t_mm, local.item, mm_per_px)
    if isinstance(local.item, Droplet):
        return _droplet_relief(s, t, local.s_mm, local.t_mm, local.item, mm_per_px)
    return _crack_relief(s, t, local.s_mm, local.t_mm, local.item, mm_per_px)


# --- Truth -------------------------------------------------------------------------------

_TRUTH_STEP_MM = 0.5
_TRUTH_T_SAMPLES = 33


def _bead_truth(bead: _Bead, locals_: list[_Local], mm_per_px: float) -> tuple[float, float, float]:
    """Mean width, width std and mean crown height [mm] over the visible seam."""
    s = np.arange(bead.s_start, bead.s_end + 1e-9, _TRUTH_STEP_MM, dtype=np.float32)
    s = s[~bead.excluded(s)]
    if s.size == 0:
        raise SceneError('no bead left in view outside the gap; the gap is longer than the visible seam')
    width, _ = bead.width_height(s)
    # Crown: the maximum of each cross-section, on a t grid across the bead.
    frac = np.linspace(-1.0, 1.0, _TRUTH_T_SAMPLES, dtype=np.float32)
    ss = np.repeat(s[:, None], frac.size, axis=1)
    tt = bead.centre(s)[:, None] + 0.5 * width[:, None] * frac[None, :]
    elevation = bead.evaluate(ss, tt, mm_per_px).elevation
    for local in locals_:
        if local.defect_class == 'spatter':
            continue
        rows = np.abs(s - local.s_mm) <= local.reach_mm
        if rows.any():
            relief, _ = _local_relief(local, ss[rows], tt[rows], mm_per_px)
            elevation[rows] += relief
    crown = elevation.max(axis=1)
    return float(width.mean()), float(width.std()), float(crown.mean())


# --- Rendering ---------------------------------------------------------------------------

def _light_vectors(scene: SceneParams) -> tuple[np.ndarray, np.ndarray]:
    az, el = math.radians(scene.light_azimuth_deg), math.radians(scene.light_elevation_deg)
    light = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    half = light + np.array([0.0, 0.0, 1.0])
    return light, half / np.linalg.norm(half)


def render(scene: SceneParams, intrinsics: Intrinsics, rng: np.random.Generator) -> SyntheticFrame:
    """Render `scene` as seen through `intrinsics`; `rng` drives the per-frame sensor noise."""
    geo = _Geometry(scene, intrinsics)
    h_px, w_px = intrinsics.height, intrinsics.width
    mmpx = geo.mm_per_px
    s_start, s_end = geo.visible_seam()
    bead = _Bead(scene, s_start, s_end)
    locals_ = _place_locals(scene, bead)

    # Band around the seam that holds the bead, undercut and heat tint.
    undercut_w = max((u.width_mm for u in scene.undercuts), default=0.0)
    band_half = bead.max_half_mm + undercut_w + 1.3 * scene.heat_tint_width_mm + 2.0 * mmpx
    t_full = geo.t_full()
    idx = np.flatnonzero(np.abs(t_full) < band_half)
    iy, ix = np.divmod(idx, w_px)
    s_b, t_b = geo.st_of_pixels(iy, ix)
    relief = bead.evaluate(s_b, t_b, mmpx)

    elevation = np.zeros((h_px, w_px), dtype=np.float32)
    albedo = np.ones((h_px, w_px), dtype=np.float32)
    elevation.ravel()[idx] = relief.elevation
    albedo.ravel()[idx] = relief.albedo

    regions: list[DefectRegion] = []
    for local in locals_:
        r = local.reach_mm + mmpx
        box = geo.box(local.s_mm - r, local.s_mm + r, local.t_mm - r, local.t_mm + r)
        if box is not None:
            x0, y0, bw, bh = box
            ys, xs = slice(y0, y0 + bh), slice(x0, x0 + bw)
            s_l, t_l = geo.st_of_slice(ys, xs)
            relief_l, albedo_l = _local_relief(local, s_l, t_l, mmpx)
            elevation[ys, xs] += relief_l
            albedo[ys, xs] *= albedo_l
        half_along, half_across = 0.5 * local.along_mm, 0.5 * local.across_mm
        truth_box = geo.box(local.s_mm - half_along, local.s_mm + half_along,
                            local.t_mm - half_across, local.t_mm + half_across)
        if truth_box is not None:
            regions.append(DefectRegion(local.defect_class, 1.0, *truth_box, length_mm=local.along_mm,
                                        width_mm=local.across_mm,
                                        position_along_seam_mm=local.s_mm - s_start))
    regions.extend(_segment_regions(scene, bead, geo))

    # Shading from the relief normals: key light (Lambert + Blinn) and the camera's
    # coaxial glare, which is what blinds the depth sensor on the crown.
    sobel_scale = 1.0 / (8.0 * mmpx)
    gx = cv2.Sobel(elevation, cv2.CV_32F, 1, 0, ksize=3, scale=sobel_scale)
    gy = cv2.Sobel(elevation, cv2.CV_32F, 0, 1, ksize=3, scale=sobel_scale)
    inv_norm = 1.0 / np.sqrt(1.0 + gx * gx + gy * gy)
    light, half_vec = _light_vectors(scene)
    diffuse = np.maximum((light[2] - light[0] * gx - light[1] * gy) * inv_norm, 0.0)
    intensity = scene.ambient + (1.0 - scene.ambient) * diffuse

    tex = _crop(_texture_bank(_bank_size(w_px, h_px)), w_px if scene.texture_transposed else h_px,
                h_px if scene.texture_transposed else w_px,
                np.random.default_rng(scene.texture_seed))
    if scene.texture_transposed:
        tex = tex.T
    plate = scene.plate_albedo * (1.0 + scene.plate_texture_strength * tex)
    gray = plate * intensity * albedo
    for local in locals_:
        if isinstance(local.item, Droplet):
            _droplet_highlight(gray, geo, local, gx, gy, inv_norm, half_vec, scene)

    # Band pixels: heat tint on the plate beside the toes, the bead's own colour and glare.
    # Colour is built per channel: numpy broadcasts over a trailing axis of 3 slowly.
    toe = relief.toe_mm
    lut_i = np.clip(toe * (_TINT_LUT_SIZE / (_TINT_LUT_RANGE * scene.heat_tint_width_mm)), 0,
                    _TINT_LUT_SIZE - 1).astype(np.intp)
    inv_n_b = np.take(inv_norm, idx)
    n_dot_h = np.maximum((half_vec[2] - half_vec[0] * np.take(gx, idx) - half_vec[1] * np.take(gy, idx))
                         * inv_n_b, 0.0)
    glare = inv_n_b ** 24
    albedo_b = albedo.ravel()[idx]
    spec = scene.bead_specular * (n_dot_h ** np.float32(scene.bead_shininess) + 0.7 * glare)
    bead_tex = 1.0 + 0.5 * scene.plate_texture_strength * np.take(tex, idx)
    bead_gray = (scene.bead_albedo * bead_tex * np.take(intensity, idx) + spec) * albedo_b
    # Exposure: gain, vignetting and a gentle gradient across the frame.
    xn = (np.arange(w_px, dtype=np.float32) - intrinsics.cx) / (0.5 * w_px)
    yn = (np.arange(h_px, dtype=np.float32) - intrinsics.cy) / (0.5 * h_px)
    ga = math.radians(scene.exposure_gradient_deg)
    col_gain = 1.0 - scene.vignetting * 0.5 * xn * xn + scene.exposure_gradient * 0.5 * math.cos(ga) * xn
    row_gain = 1.0 - scene.vignetting * 0.5 * yn * yn + scene.exposure_gradient * 0.5 * math.sin(ga) * yn
    exposure = (255.0 * scene.lighting_gain) * row_gain[:, None] * col_gain[None, :]
    cover = relief.bead
    exposure_b = np.take(exposure, idx)
    plate_b = np.take(gray, idx) * (1.0 - cover) * exposure_b
    bead_b = bead_gray * cover * exposure_b
    gray *= exposure
    noise_bank = _noise_bank(_bank_size(w_px, h_px))
    channels = []
    for c in range(3):
        plane = gray * np.float32(scene.plate_tint[c])
        tint_c = scene.plate_tint[c] * (1.0 + scene.heat_tint_strength * (_TINT_LUT_T[c][lut_i] - 1.0))
        plane.ravel()[idx] = plate_b * tint_c + bead_b * np.float32(scene.bead_tint[c])
        if scene.rgb_noise > 0:
            plane += np.float32(scene.rgb_noise) * _crop(noise_bank, h_px, w_px, rng)
        np.clip(plane, 0.0, 255.0, out=plane)
        channels.append(plane.astype(np.uint8))
    rgb_u8 = cv2.merge(channels)

    # Depth: the point on each ray at the relief elevation, plus noise and dropouts.
    depth_mm = (geo.dc - elevation) * geo.inv_q
    if scene.noise_mm > 0:
        noise = _crop(_noise_bank(_bank_size(w_px, h_px)), h_px, w_px, rng)
        if scene.depth_noise_corr_px > 0:
            # Stereo matching correlates the noise over its window; the blur keeps its sigma.
            sigma = scene.depth_noise_corr_px
            noise = cv2.GaussianBlur(noise, (0, 0), sigma) * np.float32(2.0 * math.sqrt(math.pi) * sigma)
        depth_mm += scene.noise_mm * noise
    if scene.depth_unit_m > 0:
        unit_mm = 1000.0 * scene.depth_unit_m
        depth_mm = np.round(depth_mm / unit_mm) * unit_mm
    depth_m = (depth_mm * 1e-3).astype(np.float32)
    _apply_dropouts(depth_m, idx, relief, glare, scene, rng)

    width_mm, width_std_mm, height_mm = _bead_truth(bead, locals_, mmpx)
    x_line, y_line = geo.project(np.array([s_start, s_end]), np.zeros(2))
    angle = math.degrees(math.atan2(y_line[1] - y_line[0], x_line[1] - x_line[0]))
    angle = (angle + 90.0) % 180.0 - 90.0
    truth = GroundTruth(
        defect_class=scene.defect_class, width_mm=width_mm, width_std_mm=width_std_mm,
        height_mm=height_mm,
        undercut_depth_mm=max((u.depth_mm for u in scene.undercuts), default=0.0),
        seam_angle_deg=angle, plate_distance_m=scene.plate_distance_m, regions=tuple(regions))
    return SyntheticFrame(rgb=rgb_u8, depth_m=depth_m, intrinsics=intrinsics, truth=truth, scene=scene,
                          elevation_mm=elevation,
                          seam_line_px=((float(x_line[0]), float(y_line[0])), (float(x_line[1]), float(y_line[1]))),
                          seam_length_mm=s_end - s_start)


def _droplet_highlight(gray: np.ndarray, geo: _Geometry, local: _Local, gx: np.ndarray,
                       gy: np.ndarray, inv_norm: np.ndarray, half_vec: np.ndarray,
                       scene: SceneParams) -> None:
    """Metallic highlight on a spatter droplet (its diffuse shading is already in `gray`)."""
    r = local.reach_mm
    box = geo.box(local.s_mm - r, local.s_mm + r, local.t_mm - r, local.t_mm + r)
    if box is None:
        return
    x0, y0, bw, bh = box
    ys, xs = slice(y0, y0 + bh), slice(x0, x0 + bw)
    n_dot_h = np.maximum((half_vec[2] - half_vec[0] * gx[ys, xs] - half_vec[1] * gy[ys, xs])
                         * inv_norm[ys, xs], 0.0)
    tilted = inv_norm[ys, xs] < 0.999      # only the droplet's curved surface
    gray[ys, xs] += tilted * (0.8 * n_dot_h ** 12 + 0.3 * scene.bead_specular)


def _apply_dropouts(depth_m: np.ndarray, idx: np.ndarray, relief: _Relief, glare: np.ndarray,
                    scene: SceneParams, rng: np.random.Generator) -> None:
    """Blank the sensor where glare blinds it (mostly the bead crown) and in open root gaps."""
    on_bead = relief.bead > 0.5
    n_bead = int(np.count_nonzero(on_bead))
    n_drop = int(round(scene.dropout_fraction * n_bead))
    if n_drop > 0:
        bead_idx = idx[on_bead]
        jitter = _crop(_blob_bank(_bank_size(depth_m.shape[1], depth_m.shape[0])),
                       depth_m.shape[0], depth_m.shape[1], rng)
        jitter = np.take(jitter, bead_idx)
        score = glare[on_bead] + 0.3 * jitter
        chosen = np.argpartition(-score, n_drop - 1)[:n_drop]
        depth_m.ravel()[bead_idx[chosen]] = np.nan
    if relief.slot.any():
        slot_idx = idx[relief.slot]
        depth_m.ravel()[slot_idx[rng.random(slot_idx.size) < 0.6]] = np.nan


def _segment_regions(scene: SceneParams, bead: _Bead, geo: _Geometry) -> list[DefectRegion]:
    """Truth regions of the seam-long defects: undercut segments and gaps."""
    regions = []
    for side, s0, s1, _depth, groove_w in bead.undercuts:
        s = np.linspace(s0, s1, 64, dtype=np.float32)
        width, _ = bead.width_height(s)
        inner = bead.centre(s) + side * 0.5 * width
        outer = inner + side * groove_w
        x, y = geo.project(np.concatenate([s, s]), np.concatenate([inner, outer]))
        box = _clip_box(x, y, geo.intr)
        if box is not None:
            regions.append(DefectRegion('undercut', 1.0, *box, length_mm=float(s1 - s0),
                                        width_mm=float(groove_w),
                                        position_along_seam_mm=float(0.5 * (s0 + s1) - bead.s_start)))
    for g0, g1, gap in bead.gaps:
        s = np.linspace(g0, g1, 32, dtype=np.float32)
        half = 0.5 * scene.bead_width_mm + scene.width_variation_mm
        c = bead.centre(s)
        x, y = geo.project(np.concatenate([s, s]), np.concatenate([c - half, c + half]))
        box = _clip_box(x, y, geo.intr)
        if box is not None:
            regions.append(DefectRegion('gap', 1.0, *box, length_mm=float(g1 - g0),
                                        width_mm=float(2 * half),
                                        position_along_seam_mm=float(0.5 * (g0 + g1) - bead.s_start)))
    return regions


def _clip_box(x: np.ndarray, y: np.ndarray, intr: Intrinsics) -> Optional[tuple[int, int, int, int]]:
    x0, x1 = max(int(math.floor(x.min() + 0.5)), 0), min(int(math.floor(x.max() + 0.5)), intr.width - 1)
    y0, y1 = max(int(math.floor(y.min() + 0.5)), 0), min(int(math.floor(y.max() + 0.5)), intr.height - 1)
    if x1 < x0 or y1 < y0:
        return None
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


# A RealSense D4xx-like stereo depth camera: depth RMS error z^2 * subpixel / (f * baseline).
D4XX_FOCAL_PX = 425.0           # depth imager focal length at 848x480 [px]
D4XX_BASELINE_M = 0.050
D4XX_SUBPIXEL = 0.08            # typical subpixel RMS of the stereo match [px]
D4XX_NOISE_CORR_PX = 1.5        # noise correlation length (the matching window) [px]


def d4xx_noise_mm(distance_m: float, subpixel: float = D4XX_SUBPIXEL, focal_px: float = D4XX_FOCAL_PX,
                  baseline_m: float = D4XX_BASELINE_M) -> float:
    """Depth noise [mm, RMS] of a stereo camera at `distance_m`: z^2 * subpixel / (f * B).

    At 0.2 m with the defaults: 0.15 mm; at 0.3 m: 0.34 mm.
    """
    if not (distance_m > 0 and subpixel >= 0 and focal_px > 0 and baseline_m > 0):
        raise SceneError('distance, focal length and baseline must be > 0 and subpixel >= 0')
    return 1000.0 * distance_m ** 2 * subpixel / (focal_px * baseline_m)


def d4xx_16uc1(scene: SceneParams, subpixel: float = D4XX_SUBPIXEL, depth_unit_m: float = 0.001) -> SceneParams:
    """`scene` as a D4xx camera with its default 16UC1 depth sees it: stereo noise for the
    plate distance (d4xx_noise_mm), correlated over the matching window, rounded to whole
    `depth_unit_m` units (1 mm, the RealSense and Orbbec default)."""
    return replace(scene, noise_mm=d4xx_noise_mm(scene.plate_distance_m, subpixel),
                   depth_noise_corr_px=D4XX_NOISE_CORR_PX, depth_unit_m=depth_unit_m)


def render_random(rng: np.random.Generator, intrinsics: Intrinsics | None = None,
                  defect_class: str | None = None) -> SyntheticFrame:
    """Sample a scene (of `defect_class` if given) and render it."""
    intrinsics = intrinsics or default_intrinsics()
    return render(sample_scene(rng, defect_class), intrinsics, rng)


_VIEW_ATTEMPTS = 5


class SyntheticWeldStream:
    """Frames of successive synthetic welds, as a camera travelling along a line sees them.

    Each weld draws its class (from `class_weights`) and its bead once; its
    `frames_per_weld` frames are different views of it (`sample_scene(weld=...)`), and
    their truth carries the weld's id; `ranges` replaces scene ranges (see SCENE_RANGES).
    The same seed gives the same sequence. The options
    are plain attributes: a node may change them between frames (the next weld uses them;
    a new size applies from the next frame).
    """

    def __init__(self, seed: int, intrinsics: Intrinsics | None = None,
                 class_weights: Mapping[str, float] | None = None, noise_scale: float = 1.0,
                 frames_per_weld: int = 10, weld_prefix: str = 'sim',
                 ranges: Mapping[str, tuple[float, float]] | None = None) -> None:
        if frames_per_weld < 1:
            raise SceneError(f'frames_per_weld must be >= 1, got {frames_per_weld}')
        self.seed = int(seed)
        self.intrinsics = intrinsics or default_intrinsics()
        self.class_weights = dict(class_weights) if class_weights is not None else None
        self.noise_scale = float(noise_scale)
        self.frames_per_weld = int(frames_per_weld)
        self.weld_prefix = weld_prefix
        self.ranges = scene_ranges(ranges)  # checked here, not at the first frame
        self._rng = np.random.default_rng(self.seed)
        self._weld: Optional[SceneParams] = None
        self._weld_id = ''
        self._frames_left = 0
        self.welds = 0
        self.frames = 0

    @property
    def weld_id(self) -> str:
        """Id of the weld of the latest frame ('' before the first)."""
        return self._weld_id

    def next_frame(self) -> tuple[SyntheticFrame, bool]:
        """The next frame, and whether it starts a new weld (its label changed)."""
        new_weld = self._frames_left <= 0
        if new_weld:
            self._weld = sample_scene(self._rng, class_weights=self.class_weights,
                                      noise_scale=self.noise_scale, ranges=self.ranges)
            self._weld_id = f'{self.weld_prefix}-{self.seed}-{self.welds:05d}'
            self._frames_left = self.frames_per_weld
            self.welds += 1
            scene = self._weld
        else:
            scene = sample_scene(self._rng, weld=self._weld, ranges=self.ranges)
        self._frames_left -= 1
        self.frames += 1
        for attempt in range(_VIEW_ATTEMPTS):
            try:
                frame = render(scene, self.intrinsics, self._rng)
                break
            except SceneError:
                # A view that shows too little seam (extreme aspect ratios): draw another view.
                if attempt == _VIEW_ATTEMPTS - 1:
                    raise
                scene = sample_scene(self._rng, weld=self._weld, ranges=self.ranges)
        return replace(frame, truth=replace(frame.truth, weld_id=self._weld_id)), new_weld
