"""Bead geometry in millimetres from one RGB-D frame.

The measurement works in four steps, all vectorised:

1. **Plate.** A robust plane fit (RANSAC on a subsample, then iteratively trimmed least
   squares) to the back-projected depth at reduced resolution. The plate may be tilted;
   the elevation of any depth sample above it follows from one multiply-add per pixel.
2. **Seam.** Pixels raised above the plate form the bead; the largest elongated blob and
   the blobs on its line (a gap splits the bead) are kept, and a principal-axis fit in
   the plate plane gives the seam direction at any angle.
3. **Seam frame.** One perspective warp samples depth and gray level on a metric grid
   in the plate plane aligned with the seam: columns run along the seam (`s` [mm]),
   rows across it (`t` [mm]). Every column is a cross-section profile; elevations are
   exact perpendicular heights above the fitted plate.
4. **Profiles.** Columns are averaged in short chunks along the seam. On each chunk the
   bead crown and the crossings of several height levels are found with sub-sample
   interpolation; a cap model `e = H (1 - u^2)^p` (u = 2 (t - centre) / width) fitted to
   those crossings gives toe-to-toe width, centre and crown height per chunk. The width
   at the toe comes from the model, so a flat-toed bead is not measured short.

Only NumPy and OpenCV are used; nothing here knows about ROS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Optional

import cv2
import numpy as np

from .camera import Intrinsics
from .fields import tunable
from .frames import RGBDFrame
from .resolution import DepthResolution, detect_depth_step_m, sensor_noise_mm


class MeasurementError(ValueError):
    """The frame holds no measurable bead (no plate, no bead, too little valid depth).

    resolution: what the depth resolved, when the plate was found (core.resolution).
    lifted_threshold_mm: the bead segmentation threshold when the depth's noise or rounding
    lifted it above `bead_min_elevation_mm` (0 otherwise): a bead lower than that cannot be
    told from the plate at this resolution.
    """

    def __init__(self, text: str, resolution: Optional[DepthResolution] = None,
                 lifted_threshold_mm: float = 0.0) -> None:
        super().__init__(text)
        self.resolution = resolution
        self.lifted_threshold_mm = lifted_threshold_mm


class MeasureConfigError(ValueError):
    """Measurement settings that cannot work together."""


@dataclass(frozen=True)
class MeasureConfig:
    """Settings of the bead measurement (lengths in mm unless named otherwise)."""

    lowres_width_px: int = tunable(
        160, 'Working width of the plate fit and bead segmentation',
        'px', 32, 1920)
    plane_inlier_mm: float = tunable(0.6, 'RANSAC inlier band around the plate plane', 'mm', 0.05, 10.0)
    plane_iterations: int = tunable(32, 'RANSAC plane hypotheses', '', 1, 1000)
    min_plate_fraction: float = tunable(
        0.3, 'Fraction of valid depth that must lie on the plate',
        '', 0.01, 1.0)
    bead_min_elevation_mm: float = tunable(
        0.35, 'Lowest elevation above the plate segmented as bead',
        'mm', 0.05, 10.0)
    bead_noise_factor: float = tunable(
        4.0, 'Bead segmentation threshold in plate-noise sigmas (if above the minimum)',
        '', 0.0, 50.0)
    min_bead_area_mm2: float = tunable(60.0, 'Smallest raised blob accepted as a bead', 'mm^2', 1.0, 100000.0)
    min_seam_length_mm: float = tunable(15.0, 'Shortest bead accepted', 'mm', 1.0, 10000.0)
    along_step_mm: float = tunable(
        0.5, 'Spacing of the cross-section profiles along the seam',
        'mm', 0.05, 10.0)
    across_step_mm: float = tunable(0.25, 'Sample spacing across the seam', 'mm', 0.02, 5.0)
    max_profiles: int = tunable(1200, 'Most profiles per frame (the spacing grows beyond)', '', 16, 20000)
    window_margin_mm: float = tunable(4.5, 'Profile reach beyond the coarse bead edge', 'mm', 0.5, 100.0)
    chunk_mm: float = tunable(4.0, 'Seam length averaged into one cross-section', 'mm', 0.1, 100.0)
    gap_height_ratio: float = tunable(
        0.6, 'A stretch whose crown is below this fraction of the median crown is under-filled (gap)',
        '', 0.01, 0.99)
    gap_margin_mm: float = tunable(
        5.0, 'Bead left out of the width/height statistics beside a gap',
        'mm', 0.0, 100.0)

    def __post_init__(self) -> None:
        checks = (
            (self.lowres_width_px >= 32, 'lowres_width_px must be >= 32'),
            (self.plane_inlier_mm > 0, 'plane_inlier_mm must be > 0'),
            (self.plane_iterations >= 1, 'plane_iterations must be >= 1'),
            (0.0 < self.min_plate_fraction <= 1.0, 'min_plate_fraction must be in (0, 1]'),
            (self.bead_min_elevation_mm > 0, 'bead_min_elevation_mm must be > 0'),
            (self.bead_noise_factor >= 0, 'bead_noise_factor must be >= 0'),
            (self.min_bead_area_mm2 > 0, 'min_bead_area_mm2 must be > 0'),
            (self.min_seam_length_mm > 0, 'min_seam_length_mm must be > 0'),
            (self.along_step_mm > 0 and self.across_step_mm > 0, 'profile steps must be > 0'),
            (self.max_profiles >= 16, 'max_profiles must be >= 16'),
            (self.window_margin_mm > 0, 'window_margin_mm must be > 0'),
            (self.chunk_mm >= self.along_step_mm, 'chunk_mm must be >= along_step_mm'),
            (0.0 < self.gap_height_ratio < 1.0, 'gap_height_ratio must be in (0, 1)'),
            (self.gap_margin_mm >= 0, 'gap_margin_mm must be >= 0'),
        )
        for ok, text in checks:
            if not ok:
                raise MeasureConfigError(text)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors (np.cross costs tens of microseconds per call)."""
    a0, a1, a2 = a.tolist()
    b0, b1, b2 = b.tolist()
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def _principal_axis(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unit major axis of 2-D points (N, 2)."""
    centre = points.mean(axis=0)
    d = points - centre
    sxx, syy, sxy = float(d[:, 0] @ d[:, 0]), float(d[:, 1] @ d[:, 1]), float(d[:, 0] @ d[:, 1])
    angle = 0.5 * math.atan2(2.0 * sxy, sxx - syy)
    return centre, np.array([math.cos(angle), math.sin(angle)])


# --- Plate ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plate:
    """The plate plane n . p = distance (camera frame, metres), n pointing away from the camera.

    Elevation of a point p toward the camera is `distance - n . p`. noise_mm is the robust
    standard deviation of the plate's depth samples about the plane, residual_mm their RMS
    deviation within the final inlier band (what core.resolution reads).
    """

    normal: np.ndarray
    distance_m: float
    noise_mm: float
    inlier_fraction: float
    residual_mm: float = 0.0

    def elevation_mm(self, depth_m: np.ndarray, xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
        """Elevation [mm] of depth samples at normalised image coordinates (xn, yn)."""
        nx, ny, nz = (float(v) for v in self.normal)
        q = nx * xn + ny * yn + nz
        return (1000.0 * self.distance_m - 1000.0 * depth_m * q).astype(np.float32)

    def intersect(self, xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
        """Points [m] where the rays through (xn, yn) meet the plate: (..., 3)."""
        nx, ny, nz = (float(v) for v in self.normal)
        z = self.distance_m / (nx * xn + ny * yn + nz)
        return np.stack([xn * z, yn * z, z], axis=-1)


@lru_cache(maxsize=8)
def _ransac_draws(seed: int, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed pseudo-random draws (fractions in [0, 1)): the fit is deterministic and cheap."""
    rng = np.random.default_rng(seed)
    return rng.random(600), rng.random((iterations, 3))


def fit_plate(points_m: np.ndarray, inlier_mm: float = 0.6, iterations: int = 32,
              seed: int = 0, step_mm: float = 0.0) -> Plate:
    """Robust plane through camera-frame points [m], shape (N, 3).

    RANSAC picks the plane with most points within `inlier_mm`; three rounds of least
    squares on the points within max(3 sigma, 0.25 mm, 1.5 step) of it refine it. The
    least-squares residual 1 - p . n / d is the elevation divided by d, so the fit
    minimises elevation. step_mm: quantization step of the depth (0: continuous); the
    band never shrinks below one and a half steps, so quantized samples one step off the
    plane stay in the fit and in its noise (otherwise a plate whose samples mostly round
    to one value would report no noise at all).
    """
    n = points_m.shape[0]
    if n < 16:
        raise MeasurementError(f'only {n} valid depth samples: cannot fit the plate')
    floor_mm = max(0.25, 1.5 * step_mm)
    pick, tri_u = _ransac_draws(seed, iterations)
    sample = points_m[(pick * n).astype(np.intp)]
    tri = (tri_u * sample.shape[0]).astype(np.intp)
    p1, p2, p3 = sample[tri[:, 0]], sample[tri[:, 1]], sample[tri[:, 2]]
    a, b = p2 - p1, p3 - p1
    normals = np.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1], a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                        a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], axis=1)
    norms = np.linalg.norm(normals, axis=1)
    usable = norms > 1e-12
    normals = normals / np.where(usable, norms, 1.0)[:, None]
    dist = np.einsum('ij,ij->i', normals, p1)
    sign = np.where(dist < 0, -1.0, 1.0)
    normals *= sign[:, None]
    dist *= sign
    resid_mm = 1000.0 * (dist[:, None] - normals @ sample.T)
    score = np.count_nonzero(np.abs(resid_mm) < max(inlier_mm, floor_mm), axis=1)
    score[~usable | (dist <= 0)] = -1
    best = int(np.argmax(score))
    normal, distance = normals[best], float(dist[best])
    band_mm = max(inlier_mm, floor_mm)
    sigma_mm = inlier_mm / 3.0
    rms_mm = sigma_mm
    pts_t = np.ascontiguousarray(points_m.T)
    count = n
    for _ in range(3):
        elev = (1000.0 * distance) - (1000.0 * normal) @ pts_t
        absd = np.abs(elev)
        w = (absd < band_mm).astype(np.float64)
        count = int(w.sum())
        if count < 16:
            raise MeasurementError('no plane supports enough depth samples: no plate in view')
        c = np.linalg.solve((pts_t * w) @ pts_t.T, pts_t @ w)
        distance = 1.0 / float(np.linalg.norm(c))
        normal = c * distance
        # Gaussian sigma from the mean absolute deviation inside the band (no sort needed).
        sigma_mm = 1.2533 * float(absd @ w) / count
        rms_mm = math.sqrt(float((absd * absd) @ w) / count)
        band_mm = max(3.0 * sigma_mm, floor_mm)
    return Plate(normal=normal, distance_m=distance, noise_mm=sigma_mm,
                 inlier_fraction=count / n, residual_mm=rms_mm)


# --- Seam frame ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SeamFrame:
    """Seam-aligned metric grid on the plate.

    A grid sample (row i, column j) is the plate point origin + s_j * along + t_i * across
    [mm, camera frame] with s_j = s0 + j * ds and t_i = t0 + i * dt. `homography` maps
    (j, i, 1) to homogeneous pixel coordinates of the color image.
    """

    origin_mm: np.ndarray
    along: np.ndarray
    across: np.ndarray
    s0: float
    ds: float
    t0: float
    dt: float
    cols: int
    rows: int
    homography: np.ndarray

    @classmethod
    def build(cls, intr: Intrinsics, origin_mm: np.ndarray, along: np.ndarray, across: np.ndarray,
              s0: float, ds: float, t0: float, dt: float, cols: int, rows: int) -> 'SeamFrame':
        """The grid of `cols` x `rows` samples at s0 + j ds, t0 + i dt [mm] and its homography."""
        k = np.array([[intr.fx, 0.0, intr.cx], [0.0, intr.fy, intr.cy], [0.0, 0.0, 1.0]])
        basis = np.stack([along * ds, across * dt, origin_mm + s0 * along + t0 * across], axis=1)
        return cls(origin_mm=origin_mm, along=along, across=across, s0=s0, ds=ds, t0=t0, dt=dt,
                   cols=cols, rows=rows, homography=k @ basis)

    def to_pixels(self, s_mm: np.ndarray, t_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image coordinates (x, y) [px] of plate points (s, t) [mm]."""
        j = (np.asarray(s_mm, dtype=np.float64) - self.s0) / self.ds
        i = (np.asarray(t_mm, dtype=np.float64) - self.t0) / self.dt
        h = self.homography
        w = h[2, 0] * j + h[2, 1] * i + h[2, 2]
        return (h[0, 0] * j + h[0, 1] * i + h[0, 2]) / w, (h[1, 0] * j + h[1, 1] * i + h[1, 2]) / w

    def s_of_col(self, j: np.ndarray | float) -> np.ndarray | float:
        return self.s0 + np.asarray(j) * self.ds

    def t_of_row(self, i: np.ndarray | float) -> np.ndarray | float:
        return self.t0 + np.asarray(i) * self.dt


# --- Result --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BeadGeometry:
    """Everything the measurement found; the rules and the debug view read it.

    Arrays over chunks (length n_chunks) describe the bead along the seam: centre and
    width across the seam [mm], crown height [mm], whether the chunk was measured
    (`chunk_ok`) and whether it is part of the bead statistics (`chunk_stat`, False on
    under-filled gap segments). `elevation` and `gray` are the seam-frame grids
    (rows across, columns along); `profiles` the chunk-averaged elevation (rows, n_chunks).
    """

    plate: Plate
    frame: SeamFrame
    elevation: np.ndarray
    gray: np.ndarray
    profiles: np.ndarray
    chunk_cols: int
    chunk_s_mm: np.ndarray
    chunk_centre_mm: np.ndarray
    chunk_width_mm: np.ndarray
    chunk_height_mm: np.ndarray
    chunk_ok: np.ndarray
    chunk_stat: np.ndarray
    chunk_gap: np.ndarray
    chunk_coverage: np.ndarray
    chunk_crown_mm: np.ndarray
    crown_median_mm: float
    profile_exponent: float
    seam_start_mm: float
    seam_end_mm: float
    seam_angle_deg: float
    mm_per_px: float
    lowres_mask: np.ndarray
    lowres_step: int
    col_inside: np.ndarray
    location: Optional['SeamLocation'] = None   # steps 1 and 2 as found; the ONNX stage cuts its strip from it
    resolution: Optional[DepthResolution] = None   # what the depth of this frame resolves

    @property
    def seam_length_mm(self) -> float:
        return self.seam_end_mm - self.seam_start_mm


# --- Measurement ---------------------------------------------------------------------------

_LEVELS = np.array([0.2, 0.35, 0.5, 0.65, 0.8], dtype=np.float32)
_P_GRID = np.arange(0.3, 2.61, 0.02)


def _level_fraction(p: np.ndarray | float, levels: np.ndarray = _LEVELS) -> np.ndarray:
    """u at which the cap (1 - u^2)^p falls to each level: shape (..., levels)."""
    p = np.asarray(p, dtype=np.float64)[..., None]
    return np.sqrt(np.clip(1.0 - levels.astype(np.float64) ** (1.0 / p), 0.0, 1.0))


def _normalised_grid(intr: Intrinsics, step: int) -> tuple[np.ndarray, np.ndarray, int]:
    off = step // 2
    xs = (np.arange(off, intr.width, step, dtype=np.float32) - intr.cx) / intr.fx
    ys = (np.arange(off, intr.height, step, dtype=np.float32) - intr.cy) / intr.fy
    return xs, ys, off


def _orient_in_image(plate_point_m: np.ndarray, direction: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, float]:
    """Flip `direction` so that its image direction has angle in [-90, 90); return it and the angle."""
    a = plate_point_m
    b = plate_point_m + 0.01 * direction
    xa, ya = intr.fx * a[0] / a[2], intr.fy * a[1] / a[2]
    xb, yb = intr.fx * b[0] / b[2], intr.fy * b[1] / b[2]
    angle = math.degrees(math.atan2(yb - ya, xb - xa))
    if angle >= 90.0 or angle < -90.0:
        direction = -direction
        angle = angle - 180.0 if angle >= 90.0 else angle + 180.0
    return direction, angle


@dataclass(frozen=True)
class SeamLocation:
    """Where the seam lies: steps 1 and 2 of the measurement.

    origin_m: a point of the plate on the seam centre line [m, camera frame]. along,
    across: unit vectors in the plate plane (camera frame); `along` is oriented so that the
    seam's image direction `angle_deg` lies in [-90, 90), and across = normal x along.
    s_min_mm, s_max_mm: extent of the bead's raised samples along the seam from the origin
    [mm]. coarse_width_mm: bead area / length [mm]. mm_per_px: size of an image pixel on
    the plate at its distance; cell_mm: of a low-resolution segmentation cell. bead_mask:
    the bead's low-resolution cells (every `lowres_step`-th pixel).
    """

    plate: Plate
    origin_m: np.ndarray
    along: np.ndarray
    across: np.ndarray
    angle_deg: float
    s_min_mm: float
    s_max_mm: float
    coarse_width_mm: float
    mm_per_px: float
    cell_mm: float
    bead_mask: np.ndarray
    lowres_step: int
    finder: tuple[tuple[str, float], ...] = ()   # the settings it was found with (seam_finder_settings)
    resolution: Optional[DepthResolution] = None   # what this frame's depth resolves


# The MeasureConfig fields locate_seam reads: they alone decide where the seam is found.
SEAM_FINDER_FIELDS = ('lowres_width_px', 'plane_inlier_mm', 'plane_iterations', 'min_plate_fraction',
                      'bead_min_elevation_mm', 'bead_noise_factor', 'min_bead_area_mm2', 'min_seam_length_mm')


def seam_finder_settings(cfg: MeasureConfig) -> tuple[tuple[str, float], ...]:
    """The (name, value) pairs of `cfg` that locate_seam reads, in SEAM_FINDER_FIELDS order."""
    return tuple((name, getattr(cfg, name)) for name in SEAM_FINDER_FIELDS)


def locate_seam(depth_m: np.ndarray, intr: Intrinsics, cfg: MeasureConfig = MeasureConfig(),
                depth_unit_m: float = 0.0) -> SeamLocation:
    """Fit the plate and find the seam on a depth image [m] (NaN: no return).

    depth_unit_m: quantization step of the depth [m] when known (16UC1); 0: look at the
    values (quantized floats are recognised). Raises MeasurementError when there is no
    plate or no bead to follow.
    """
    depth = depth_m
    step = max(1, int(round(intr.width / cfg.lowres_width_px)))
    xs, ys, off = _normalised_grid(intr, step)
    z = depth[off::step, off::step]
    valid = np.isfinite(z)
    n_valid = int(np.count_nonzero(valid))
    if n_valid < 0.05 * z.size:
        raise MeasurementError(f'depth valid on only {100.0 * n_valid / z.size:.1f} % of the image')
    xg = np.broadcast_to(xs[None, :], z.shape)
    yg = np.broadcast_to(ys[:, None], z.shape)
    # The plane needs far fewer samples than the segmentation: every third low-res one.
    zp, vp = z[::3, ::3], valid[::3, ::3]
    zv = zp[vp].astype(np.float64)
    pts = np.stack([xg[::3, ::3][vp] * zv, yg[::3, ::3][vp] * zv, zv], axis=1)
    step_mm = 1000.0 * (depth_unit_m if depth_unit_m > 0 else detect_depth_step_m(zv))
    plate = fit_plate(pts, cfg.plane_inlier_mm, cfg.plane_iterations, step_mm=step_mm)
    if plate.inlier_fraction < cfg.min_plate_fraction:
        raise MeasurementError(f'only {100 * plate.inlier_fraction:.0f} % of the depth lies on one '
                               'plane: no flat plate in view')

    # --- segmentation at low resolution
    raw_elev = plate.elevation_mm(z, xg, yg)
    elev = np.where(valid, raw_elev, 0.0).astype(np.float32)
    elev = cv2.blur(elev, (3, 3))
    mm_per_px = 1000.0 * plate.distance_m / (0.5 * (intr.fx + intr.fy))
    cell_mm = mm_per_px * step
    resolution = _plate_resolution(raw_elev, elev, valid, plate, step_mm, cfg)
    # Above the plate's noise and, for quantized depth, above the rounding error averaging
    # leaves (undithered steps would otherwise segment as terraces of 'bead').
    threshold = max(cfg.bead_min_elevation_mm, cfg.bead_noise_factor * plate.noise_mm / 3.0,
                    1.2 * resolution.bias_mm)
    lifted = threshold if threshold > cfg.bead_min_elevation_mm else 0.0

    def no_bead(text: str) -> MeasurementError:
        return MeasurementError(text, resolution, lifted)

    mask = (elev > threshold).astype(np.uint8)
    n_lab, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n_lab <= 1:
        raise no_bead('no bead in view: nothing stands above the plate')
    areas = stats[1:, cv2.CC_STAT_AREA]
    largest = int(np.argmax(areas)) + 1
    if areas[largest - 1] * cell_mm ** 2 < cfg.min_bead_area_mm2:
        raise no_bead(f'no bead in view: the largest raised blob covers only '
                               f'{areas[largest - 1] * cell_mm ** 2:.0f} mm^2')

    # plate-plane basis and the blob's points in it
    normal = plate.normal
    e1 = _cross(normal, np.array([0.0, 1.0, 0.0]))
    e1 /= np.linalg.norm(e1)
    e2 = _cross(normal, e1)

    def plate_coords(lab_mask: np.ndarray) -> np.ndarray:
        iy, ix = np.divmod(np.flatnonzero(lab_mask), lab_mask.shape[1])   # 2-D nonzero is slow
        p = plate.intersect(xs[ix].astype(np.float64), ys[iy].astype(np.float64)) * 1000.0
        return np.stack([p @ e1, p @ e2], axis=1)

    ab = plate_coords(labels == largest)
    if ab.shape[0] > 3000:      # plenty for a line fit; keeps the cost flat at high resolution
        ab = ab[::ab.shape[0] // 1500]
    centre, direction2 = _principal_axis(ab)
    along = ab @ direction2
    length = float(along.max() - along.min())
    if length < cfg.min_seam_length_mm:
        raise no_bead(f'no bead in view: the largest raised blob is only {length:.1f} mm long')
    coarse_width = areas[largest - 1] * cell_mm ** 2 / max(length, 1e-6)
    # Further blobs on the same line: the bead beyond a gap. Small ones (spatter) are left out.
    keep = [largest]
    if n_lab > 2:
        perp2 = np.array([-direction2[1], direction2[0]])
        for lab in np.flatnonzero(areas * cell_mm ** 2 >= 0.25 * cfg.min_bead_area_mm2) + 1:
            if lab == largest:
                continue
            pts_l = plate_coords(labels == lab)
            offset = np.abs((pts_l - centre) @ perp2)
            if np.median(offset) < coarse_width + 2.0:
                keep.append(int(lab))
        if len(keep) > 1:
            ab = np.concatenate([ab] + [plate_coords(labels == lab)[::4] for lab in keep[1:]])
            centre, direction2 = _principal_axis(ab)
    perp2 = np.array([-direction2[1], direction2[0]])
    # Trim the few far-off points (touching spatter) and re-centre across the seam.
    tcoord = (ab - centre) @ perp2
    core = np.abs(tcoord - float(np.mean(tcoord))) < 0.75 * coarse_width + 1.0
    if np.count_nonzero(core) > 10:
        centre = centre + perp2 * float(np.mean(tcoord[core]))
    bead_mask = np.isin(labels, keep) if len(keep) > 1 else labels == largest

    along3 = direction2[0] * e1 + direction2[1] * e2
    origin_m = (centre[0] * e1 + centre[1] * e2) / 1000.0
    # Bring the origin onto the plate (the 2-D coordinates dropped the normal component).
    origin_m = origin_m + normal * (plate.distance_m - float(origin_m @ normal))
    along3, angle = _orient_in_image(origin_m, along3, intr)
    across3 = _cross(normal, along3)
    s_pts = (ab - centre) @ (direction2 * np.sign(along3 @ (direction2[0] * e1 + direction2[1] * e2)))
    return SeamLocation(plate=plate, origin_m=origin_m, along=along3, across=across3, angle_deg=angle,
                        s_min_mm=float(s_pts.min()), s_max_mm=float(s_pts.max()),
                        coarse_width_mm=float(coarse_width), mm_per_px=mm_per_px, cell_mm=cell_mm,
                        bead_mask=bead_mask, lowres_step=step, finder=seam_finder_settings(cfg),
                        resolution=resolution)


def _plate_resolution(raw_elev: np.ndarray, blurred: np.ndarray, valid: np.ndarray, plate: Plate,
                      step_mm: float, cfg: MeasureConfig) -> DepthResolution:
    """What the depth resolves, from the plate's samples away from anything raised.

    The plate fit's own residual takes in the bead's low flanks (they lie within its
    band); here every low-resolution cell within three cells of a raised one is left out
    first, so the residual is the plate's: sensor noise and rounding.
    """
    raised = (blurred > max(cfg.bead_min_elevation_mm, 0.6 * step_mm)).astype(np.uint8)
    near = cv2.dilate(raised, np.ones((7, 7), np.uint8)).view(bool)
    band = max(3.0 * plate.noise_mm, 1.5 * step_mm, 0.25)
    r = raw_elev[valid & ~near]
    r = r[np.abs(r) < band]
    residual = math.sqrt(float(r @ r) / r.size) if r.size >= 16 else plate.residual_mm
    return DepthResolution(step_mm=step_mm, residual_mm=residual,
                           noise_mm=sensor_noise_mm(residual, step_mm),
                           dropout_fraction=1.0 - float(np.count_nonzero(valid)) / valid.size)


def measure_bead(frame: RGBDFrame, cfg: MeasureConfig = MeasureConfig(),
                 gray: Optional[np.ndarray] = None) -> BeadGeometry:
    """Measure the bead on `frame`; raise MeasurementError when there is none to measure.

    gray: the frame's gray image (uint8, H x W) if the caller already has it.
    """
    intr = frame.intrinsics
    depth = frame.depth_m
    loc = locate_seam(depth, intr, cfg, frame.depth_unit_m)
    plate, cell_mm, coarse_width = loc.plate, loc.cell_mm, loc.coarse_width_mm
    along3, across3, angle, mm_per_px = loc.along, loc.across, loc.angle_deg, loc.mm_per_px
    origin_m, bead_mask, step = loc.origin_m, loc.bead_mask, loc.lowres_step

    # --- seam-frame grid
    s_lo = loc.s_min_mm - 2.0 * cell_mm
    s_hi = loc.s_max_mm + 2.0 * cell_mm
    ds = max(cfg.along_step_mm, (s_hi - s_lo) / (cfg.max_profiles - 1))
    cols = int((s_hi - s_lo) / ds) + 1
    half_t = 0.8 * coarse_width + cfg.window_margin_mm
    dt = cfg.across_step_mm
    rows = 2 * int(math.ceil(half_t / dt)) + 1
    t0 = -dt * (rows // 2)
    seam = SeamFrame.build(intr, origin_m * 1000.0, along3, across3, s_lo, ds, t0, dt, cols, rows)
    elevation = seam_elevation_mm(depth, plate, seam)
    if gray is None:
        gray = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
    gg = cv2.warpPerspective(gray, seam.homography, (cols, rows),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    # Visible seam: the columns whose centre-line point lies inside the image.
    jj = np.arange(cols, dtype=np.float64)
    x_c, y_c = seam.to_pixels(seam.s_of_col(jj), np.zeros(cols))
    inside = (x_c >= 0) & (x_c <= intr.width - 1) & (y_c >= 0) & (y_c <= intr.height - 1)
    on_bead = np.zeros(cols, dtype=bool)
    s_bead_lo, s_bead_hi = loc.s_min_mm, loc.s_max_mm
    on_bead[(seam.s_of_col(jj) >= s_bead_lo - cell_mm) & (seam.s_of_col(jj) <= s_bead_hi + cell_mm)] = True
    # Columns whose whole cross-section lies inside the image (2 px margin).
    col_inside = inside.copy()
    for t_edge in (seam.t_of_row(0), seam.t_of_row(rows - 1)):
        x_e, y_e = seam.to_pixels(seam.s_of_col(jj), np.full(cols, t_edge))
        col_inside &= (x_e >= 2) & (x_e <= intr.width - 3) & (y_e >= 2) & (y_e <= intr.height - 3)
    vis = np.flatnonzero(inside & on_bead)
    if vis.size < 2:
        raise MeasurementError('no bead in view: the seam does not cross the image')
    seam_start = float(seam.s_of_col(vis[0]))
    seam_end = float(seam.s_of_col(vis[-1]))

    geom = _profiles(cfg, plate, seam, elevation, gg, seam_start, seam_end, angle,
                     mm_per_px, bead_mask, step, col_inside)
    if loc.resolution is not None and (loc.resolution.step_mm > 0):
        geom = _refine_on_mean_profile(geom)
    return replace(geom, location=loc, resolution=loc.resolution)


def _refine_on_mean_profile(geom: BeadGeometry) -> BeadGeometry:
    """Width and height of quantized depth from one cap fitted to the seam's mean cross-section.

    Rounded depth shifts each level crossing toward the nearest step edge, and the cap
    exponent fitted to those crossings goes wrong with them (the toe width is extrapolated
    with it). The cross-section averaged along the whole seam, each chunk centred on its
    own bead centre (smoothed along the seam), averages many samples of each height whose
    rounding differs (the plate's tilt and the bead's own variation move them across the
    steps): the level crossings and the cap exponent are taken on it, as on one chunk. The
    chunks keep their own variation; their mean width and height are moved onto it.
    """
    stat = geom.chunk_stat
    if np.count_nonzero(stat) < 3:
        return geom
    sf = geom.frame
    prof = geom.profiles[:, stat]
    rows = prof.shape[0]
    # chunk centres smoothed along the seam: their own jitter would broaden the mean profile
    centre = geom.chunk_centre_mm[stat]
    if centre.size >= 5:
        padded = np.pad(centre, 2, mode='edge')
        centre = np.convolve(padded, np.full(5, 0.2), mode='valid')
    centre_row = (centre - sf.t0) / sf.dt
    w0 = float(np.median(geom.chunk_width_mm[stat]))
    reach = int(math.ceil(0.5 * 1.25 * w0 / sf.dt)) + 2
    k = np.arange(-reach, reach + 1, dtype=np.float64)
    rf = centre_row[None, :] + k[:, None]
    r0 = np.floor(rf).astype(np.intp)
    inside = (r0 >= 0) & (r0 < rows - 1)
    r0c = np.clip(r0, 0, rows - 2)
    fr = rf - r0c
    cols = np.arange(prof.shape[1])[None, :]
    vals = prof[r0c, cols] * (1.0 - fr) + prof[r0c + 1, cols] * fr
    vals = np.where(inside, vals, np.nan)
    counts = np.count_nonzero(np.isfinite(vals), axis=1)
    use = counts >= max(3, 0.5 * prof.shape[1])
    if np.count_nonzero(use) < 8:
        return geom
    y = np.nansum(vals[use], axis=1) / counts[use]
    yf = np.full(k.size, np.nan, dtype=np.float32)
    yf[use] = y
    col = yf[:, None]
    peak = np.array([int(np.nanargmax(yf))])
    crown = float(np.nanmax(yf))
    t_left, t_right, found = level_crossings(col, peak, crown * _LEVELS[:, None])
    if not found.all():
        return geom
    level_widths = (t_right - t_left) * sf.dt                              # (levels, 1)
    p = _fit_exponent(level_widths)
    u = _level_fraction(p)
    w_fit = float((u @ level_widths)[0] / float(u @ u))
    # crown height: the cap fitted to the upper part of the mean profile
    c_row = float(0.5 * (t_left + t_right).mean())
    uu = (np.arange(k.size) - c_row) * 2.0 * sf.dt / max(w_fit, 1e-3)
    g = np.maximum(1.0 - uu * uu, 0.0) ** p
    sel = (g > 0.5) & np.isfinite(yf)
    h_fit = float((yf[sel] @ g[sel]) / max(float(g[sel] @ g[sel]), 1e-9)) if sel.any() else crown
    # Per chunk, rounding and noise scatter width and centre far more than the bead varies:
    # the rules that work beside the toes (spatter, marks) read the smoothed values.
    width = _running_median(geom.chunk_width_mm, stat, 5)
    width = width + (w_fit - float(np.mean(width[stat])))
    height = geom.chunk_height_mm + (h_fit - float(np.mean(geom.chunk_height_mm[stat])))
    centre_all = geom.chunk_centre_mm.copy()
    centre_all[stat] = centre
    return replace(geom, chunk_width_mm=width, chunk_height_mm=height, chunk_centre_mm=centre_all,
                   profile_exponent=float(p))


def _running_median(values: np.ndarray, use: np.ndarray, size: int) -> np.ndarray:
    """values with those at `use` replaced by the median of `size` neighbours among them."""
    out = values.astype(np.float64, copy=True)
    v = values[use]
    if v.size < size:
        return out
    half = size // 2
    padded = np.pad(v, half, mode='edge')
    windows = np.lib.stride_tricks.sliding_window_view(padded, size)
    out[use] = np.median(windows, axis=1)
    return out


def seam_elevation_mm(depth_m: np.ndarray, plate: Plate, seam: SeamFrame,
                      interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Depth sampled on the seam grid as elevation above the plate [mm] (rows, cols); NaN: no return.

    Elevation = d (1 - z / z_plate), with z_plate of each grid point affine in (s, t).
    """
    zg = cv2.warpPerspective(depth_m, seam.homography, (seam.cols, seam.rows),
                             flags=interpolation | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=float('nan'))
    origin_mm, along3, across3 = seam.origin_mm, seam.along, seam.across
    pz_col = (origin_mm[2] + (seam.s0 + seam.ds * np.arange(seam.cols)) * along3[2]).astype(np.float32)
    pz_row = ((seam.t0 + seam.dt * np.arange(seam.rows)) * across3[2]).astype(np.float32)
    d_mm = np.float32(1000.0 * plate.distance_m)
    return d_mm - (zg * d_mm * 1000.0) / (pz_row[:, None] + pz_col[None, :])


def _profiles(cfg: MeasureConfig, plate: Plate, seam: SeamFrame,
              elevation: np.ndarray, gray: np.ndarray, seam_start: float, seam_end: float,
              angle: float, mm_per_px: float, bead_mask: np.ndarray, step: int,
              col_inside: np.ndarray) -> BeadGeometry:
    rows, cols = elevation.shape
    m = max(1, int(round(cfg.chunk_mm / seam.ds)))
    n_chunks = cols // m
    if n_chunks < 2:
        raise MeasurementError('no bead in view: the seam is too short to profile')
    finite = np.isfinite(elevation)
    e0 = cv2.patchNaNs(elevation.copy(), 0.0)
    if e0 is None:                        # older OpenCV patches in place and returns nothing
        e0 = np.where(finite, elevation, np.float32(0.0))
    used = slice(0, n_chunks * m)
    sums = cv2.resize(e0[:, used], (n_chunks, rows), interpolation=cv2.INTER_AREA)
    counts = cv2.resize(finite[:, used].astype(np.float32), (n_chunks, rows), interpolation=cv2.INTER_AREA)
    with np.errstate(invalid='ignore', divide='ignore'):
        prof = np.where(counts > 0.2, sums / counts, np.nan).astype(np.float32)
    coverage = counts.mean(axis=0)

    # crown: the highest point of the lightly smoothed profile
    smooth = cv2.blur(np.where(np.isnan(prof), np.float32(-1e3), prof), (1, 3))
    peak_row = np.argmax(smooth, axis=0)
    ci = np.arange(n_chunks)
    crown0 = smooth[peak_row, ci]

    t_left, t_right, found = level_crossings(prof, peak_row, crown0[None, :] * _LEVELS[:, None])
    widths = (t_right - t_left) * seam.dt                                   # (levels, chunks)
    ok = (found.all(axis=0) & (coverage > 0.6) & (crown0 > cfg.bead_min_elevation_mm)
          & (peak_row > 0) & (peak_row < rows - 1))
    if np.count_nonzero(ok) < 2:
        raise MeasurementError('no bead in view: no cross-section shows a bead profile')
    crown_med = float(np.median(crown0[ok]))
    gap = ~ok | (crown0 < cfg.gap_height_ratio * crown_med)
    gap &= coverage > 0.6
    stat = ok & ~_dilate1d(gap, max(1, int(round(cfg.gap_margin_mm / (m * seam.ds)))))
    if np.count_nonzero(stat) < 2:
        stat = ok.copy()

    # global cap exponent from the level widths of the regular chunks
    p = _fit_exponent(widths[:, stat])
    u = _level_fraction(p)                                                  # (levels,)
    centre_rows = 0.5 * (t_left + t_right)                                  # (levels, chunks)
    width = (u @ widths) / float(u @ u)
    centre_row = centre_rows.mean(axis=0)
    # crown height: the cap model fitted to the upper profile
    # only the rows that can hold the upper half of a cap: the band around the crowns
    reach = 0.5 * float(width[ok].max()) / seam.dt + 1.0
    r_lo = max(0, int(centre_row[ok].min() - reach))
    r_hi = min(rows, int(centre_row[ok].max() + reach) + 1)
    band = prof[r_lo:r_hi]
    rr = np.arange(r_lo, r_hi, dtype=np.float32)[:, None]
    uu = (rr - centre_row[None, :].astype(np.float32)) * np.float32(2.0 * seam.dt) \
        / np.maximum(width[None, :], 1e-3).astype(np.float32)
    g = np.maximum(1.0 - uu * uu, 0.0) ** np.float32(p)
    use = (g > 0.5) & ~np.isnan(band)
    num = np.where(use, band * g, 0.0).sum(axis=0)
    den = np.where(use, g * g, 0.0).sum(axis=0)
    height = np.where(den > 0, num / np.maximum(den, 1e-9), crown0)

    chunk_s = seam.s0 + seam.ds * (ci * m + 0.5 * (m - 1))
    return BeadGeometry(
        plate=plate, frame=seam, elevation=elevation, gray=gray, profiles=prof, chunk_cols=m,
        chunk_s_mm=chunk_s, chunk_centre_mm=seam.t0 + seam.dt * centre_row,
        chunk_width_mm=width.astype(np.float64), chunk_height_mm=height.astype(np.float64),
        chunk_ok=ok, chunk_stat=stat, chunk_gap=gap, chunk_coverage=coverage,
        chunk_crown_mm=crown0.astype(np.float64), crown_median_mm=crown_med, profile_exponent=float(p),
        seam_start_mm=seam_start, seam_end_mm=seam_end, seam_angle_deg=angle,
        mm_per_px=mm_per_px, lowres_mask=bead_mask, lowres_step=step, col_inside=col_inside)


def _dilate1d(flags: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0 or not flags.any():
        return flags.copy()
    k = np.ones(2 * radius + 1)
    return np.convolve(flags.astype(float), k, mode='same') > 0.5


def level_crossings(prof: np.ndarray, peak_row: np.ndarray,
               levels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-sample rows where each profile falls below each level on either side of its crown.

    prof (rows, n), peak_row (n,), levels (L, n). NaN samples count as above the level
    (dropouts sit on the shiny crown). Returns left and right crossing rows (L, n) and
    whether both were found.
    """
    rows, n = prof.shape
    pt = np.ascontiguousarray(prof.T)                                  # (n, rows)
    below = pt[None, :, :] < levels[:, :, None]                        # (L, n, rows)
    r = np.arange(rows)
    before = r[None, :] < peak_row[:, None]                            # (n, rows)
    after = r[None, :] > peak_row[:, None]
    lmask = below & before[None]
    rmask = below & after[None]
    left = rows - 1 - np.argmax(lmask[:, :, ::-1], axis=2)
    right = np.argmax(rmask, axis=2)
    found = lmask.any(axis=2) & rmask.any(axis=2)
    li = np.clip(left, 0, rows - 2)
    ri = np.clip(right, 1, rows - 1)
    cols = np.arange(n)[None, :]
    a0, a1 = prof[li, cols], prof[li + 1, cols]
    b0, b1 = prof[ri, cols], prof[ri - 1, cols]
    with np.errstate(invalid='ignore', divide='ignore'):
        fl = np.clip(np.nan_to_num((levels - a0) / (a1 - a0), nan=0.5), 0.0, 1.0)
        fr = np.clip(np.nan_to_num((levels - b0) / (b1 - b0), nan=0.5), 0.0, 1.0)
    return li + fl, ri - fr, found


_RATIO_TABLE = _level_fraction(_P_GRID) / _level_fraction(_P_GRID)[:, 2:3]   # (P, levels)


def _fit_exponent(widths: np.ndarray) -> float:
    """Cap exponent p that best explains the ratios of level widths (levels, chunks)."""
    if widths.shape[1] == 0:
        return 1.0
    ratios = np.sort(widths / np.maximum(widths[2:3], 1e-6), axis=1)         # (levels, chunks)
    k = ratios.shape[1]
    ratio = 0.5 * (ratios[:, (k - 1) // 2] + ratios[:, k // 2])                # median per level
    model = _RATIO_TABLE
    err = ((model - ratio[None, :]) ** 2).sum(axis=1)
    i = int(np.argmin(err))
    if 0 < i < len(_P_GRID) - 1:
        a, b, c = err[i - 1], err[i], err[i + 1]
        den = a - 2 * b + c
        shift = 0.5 * (a - c) / den if den > 0 else 0.0
        return float(_P_GRID[i] + shift * (_P_GRID[1] - _P_GRID[0]))
    return float(_P_GRID[i])
