"""Rule-based defect inspection: the inspector that needs no model.

`inspect_frame(frame, config)` measures the bead (`measure.measure_bead`), runs one rule per
defect class on the seam-aligned grids the measurement produced, and returns the bead
measurement in millimetres together with a defect verdict:

- **porosity**: dark pores on the bead. The bead's gray level is compared with a
  background taken along the seam (a morphological closing much longer than any pore),
  so shading across the bead does not count; marks much darker than the background are
  kept and round ones are pores.
- **crack**: a thin, long dark line on the bead (the same marks: long and narrow ones).
- **undercut**: a groove below the plate just beyond a toe, on the chunk-averaged
  cross-sections, over a minimum length along the seam.
- **gap**: chunks of seam whose crown falls below a fraction of the bead's median crown
  (missing or under-filled bead), over a minimum length.
- **spatter**: small, high-contrast blobs on the plate beside the bead, counted on a
  second, wider seam-aligned grid.

Every rule reports its findings with a strength (1 = exactly at its threshold) and a
region. The verdict turns strengths into per-class scores `s = x^k / (1 + x^k)`, takes
`good` as the chance that no rule fired, normalises, and reports the winner with its
probability as confidence: clear cases score above 0.9; a frame where two rules compete
or a rule sits at its threshold scores near 0.5, which is the cue for the hybrid cascade
to ask the learned model.

Everything is NumPy/OpenCV, vectorised, and free of ROS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import cv2
import numpy as np

from .classes import DEFAULT_CLASS_NAMES, GOOD
from .fields import tunable
from .frames import RGBDFrame
from .measure import BeadGeometry, MeasureConfig, MeasurementError, measure_bead
from .results import METHOD_RULE, REASON_DEPTH_UNRESOLVED, BeadMeasurement, DefectRegion, Verdict
from .spec import WeldSpec, evaluate_spec

POROSITY, UNDERCUT, SPATTER, GAP, CRACK = 'porosity', 'undercut', 'spatter', 'gap', 'crack'
DEFECT_CLASSES = (POROSITY, UNDERCUT, SPATTER, GAP, CRACK)


_K_H5 = np.ones((1, 5), np.uint8)
_K_V5 = np.ones((5, 1), np.uint8)


class RuleConfigError(ValueError):
    """Rule thresholds that cannot work (out of range or contradicting each other)."""


@dataclass(frozen=True)
class RuleConfig:
    """Every threshold of the rule inspector (lengths in mm unless named otherwise).

    `measure` holds the measurement settings and `spec` the weld spec the bead is
    checked against; the fields below are the defect rules' thresholds.
    """

    measure: MeasureConfig = field(default_factory=MeasureConfig)
    spec: WeldSpec = field(default_factory=WeldSpec)
    # porosity and crack: dark marks on the bead
    mark_core_fraction: float = tunable(
        0.75, 'Part of the bead half-width searched for pores and cracks',
        '', 0.05, 1.0)
    mark_background_mm: float = tunable(
        30.0, 'Along-seam reach of the bead brightness background',
        'mm', 1.0, 500.0)
    mark_darkness: float = tunable(
        0.6, 'Relative darkness below the background that makes a pore/crack mark',
        '', 0.01, 0.99)
    mark_extent_darkness: float = tunable(
        0.4, 'Relative darkness of the pixels that belong to a mark',
        '', 0.01, 0.99)
    pore_min_diameter_mm: float = tunable(
        0.4, 'Smallest mark reported (equivalent diameter)',
        'mm', 0.01, 20.0)
    crack_min_length_mm: float = tunable(5.0, 'Shortest crack along the seam', 'mm', 0.1, 500.0)
    crack_min_elongation: float = tunable(3.5, 'Length/width of a crack along the seam', '', 1.0, 100.0)
    crack_transverse_angle_deg: float = tunable(
        50.0, 'Marks at least this steep to the seam are transverse',
        'deg', 0.0, 90.0)
    crack_transverse_min_length_mm: float = tunable(2.0, 'Shortest transverse crack', 'mm', 0.1, 100.0)
    crack_chain_gap_mm: float = tunable(
        2.0, 'Largest gap along the seam between pieces of one crack (continuity)',
        'mm', 0.0, 50.0)
    crack_chain_min_elongation: float = tunable(
        2.0, 'Smallest elongation (without blur) of a piece of a crack along the seam',
        '', 1.0, 100.0)
    crack_transverse_min_band_fraction: float = tunable(
        0.5, 'A transverse crack spanning this fraction of the searched band is long enough '
        '(narrow beads, where the band is shorter than crack_transverse_min_length_mm)',
        '', 0.05, 1.0)
    crack_transverse_min_elongation: float = tunable(
        1.7, 'Length/width of a transverse crack',
        '', 1.0, 100.0)
    mark_noise_factor: float = tunable(
        4.0, 'A pore/crack mark must also be this many image-noise sigmas darker than its background',
        '', 0.0, 50.0)
    crack_blur_px: float = tunable(
        0.7, 'Image blur taken off a mark\'s mean width before its elongation is judged',
        'px', 0.0, 5.0)
    crack_max_width_mm: float = tunable(
        0.8, 'Widest mark (mean width) still called a crack, beyond 1.5 pixels of image blur',
        'mm', 0.01, 20.0)
    # undercut
    undercut_search_mm: float = tunable(
        2.8, 'Distance beyond each toe searched for an undercut groove',
        'mm', 0.2, 20.0)
    undercut_min_depth_mm: float = tunable(
        0.15, 'Shallowest undercut groove below the plate',
        'mm', 0.01, 10.0)
    undercut_noise_factor: float = tunable(
        5.0, 'Undercut threshold in profile-noise sigmas (if above the minimum)',
        '', 0.0, 50.0)
    undercut_min_length_mm: float = tunable(8.0, 'Shortest undercut along the seam', 'mm', 0.1, 1000.0)
    # depth resolution (core.resolution): what quantized depth can and cannot show
    resolution_bias_factor: float = tunable(
        3.0, 'Relief evidence (undercut depth, gap crown drop) must exceed this many times the '
        'rounding bias the depth steps leave after averaging',
        '', 0.0, 50.0)
    undercut_unresolved_mm: float = tunable(
        0.3, 'Undercut threshold beyond which the depth cannot show the shallowest undercut: '
        'the undercut check is reported as not made',
        'mm', 0.01, 10.0)
    max_width_uncertainty_mm: float = tunable(
        0.8, 'Largest width uncertainty from depth rounding (rounding bias over the flank slope, '
        'both toes) at which width and height are still reported valid',
        'mm', 0.001, 20.0)
    unresolved_crown_bias_ratio: float = tunable(
        5.0, 'A bead whose crown is below this many rounding biases is not inspected '
        '(depth_unresolved)',
        '', 0.0, 100.0)
    # gap (the crown ratio itself is measure.gap_height_ratio)
    gap_min_length_mm: float = tunable(
        3.0, 'Shortest under-filled stretch reported as gap',
        'mm', 0.1, 1000.0)
    gap_scatter_factor: float = tunable(
        3.5, 'A gap crown drop must exceed this many times the scatter (robust sigma) of the '
        'chunk crowns along the seam',
        '', 0.0, 50.0)
    # spatter
    spatter_search_mm: float = tunable(
        20.0, 'Plate searched for spatter beyond the clearance',
        'mm', 0.5, 500.0)
    spatter_clearance_mm: float = tunable(
        2.0, 'Distance beyond the toes where the spatter search starts',
        'mm', 0.0, 100.0)
    spatter_contrast: float = tunable(0.6, 'Local contrast (range / brightness) of a droplet', '', 0.01, 10.0)
    spatter_min_count: int = tunable(2, 'Droplets needed to call spatter', 'droplets', 1, 1000)
    spatter_noise_factor: float = tunable(
        5.0, 'A droplet\'s local range must also exceed this many image-noise sigmas',
        '', 0.0, 50.0)
    # verdict
    evidence_sharpness: float = tunable(
        3.0, 'Exponent k of the rule score x^k / (1 + x^k), x = strength / threshold',
        '', 0.1, 50.0)
    # confidence calibration: P(verdict right) = 1 / (1 + exp(-(bias + sum w_i f_i))), the
    # features f_i of the decision in CONFIDENCE_FEATURES, fitted by
    # benchmarks/fit_rule_confidence.py on synthetic validation frames (seeds 20_000-20_399 in
    # range, 40_000-40_399 with the benchmark's pushed ranges; 32FC1 and 16UC1 mm). Logit
    # weight 1 and the rest 0 gives the uncalibrated confidence (the winner's probability).
    confidence_bias: float = tunable(3.2947, 'Calibration: intercept of the confidence logistic', '', -50.0, 50.0)
    confidence_w_logit: float = tunable(
        -0.0401, 'Calibration: weight of the logit of the winning class probability', '', -50.0, 50.0)
    confidence_w_margin: float = tunable(
        3.4896, 'Calibration: weight of the winner\'s lead over the second class probability', '', -50.0, 50.0)
    confidence_w_competing: float = tunable(
        -0.1674, 'Calibration: weight of the number of rules that fired (strength >= 0.7)', '', -50.0, 50.0)
    confidence_w_good: float = tunable(-1.4432, 'Calibration: weight of a good verdict (1 if good)', '', -50.0, 50.0)
    confidence_w_image_noise: float = tunable(
        -1.9867, 'Calibration: weight of the image noise relative to the bead brightness', '', -50.0, 50.0)
    confidence_w_depth_bias: float = tunable(
        -10.6445, 'Calibration: weight of the depth rounding bias [mm]', '', -50.0, 50.0)
    confidence_w_unchecked: float = tunable(
        1.0865, 'Calibration: weight of a check not made (1 if any)', '', -50.0, 50.0)
    confidence_w_brightness: float = tunable(
        0.1896, 'Calibration: weight of the bead\'s median gray level (0-1)', '', -50.0, 50.0)
    confidence_w_depth_noise: float = tunable(
        -9.0296, 'Calibration: weight of the depth noise [mm]', '', -50.0, 50.0)
    confidence_w_width_uncertainty: float = tunable(
        -0.4424, 'Calibration: weight of the width uncertainty from depth rounding [mm]', '', -50.0, 50.0)
    confidence_w_strength: float = tunable(
        0.0928, 'Calibration: weight of the log of the strongest finding\'s strength', '', -50.0, 50.0)

    def __post_init__(self) -> None:
        positive = ('mark_background_mm', 'pore_min_diameter_mm', 'crack_min_length_mm',
                    'crack_transverse_min_length_mm',
                    'crack_max_width_mm', 'undercut_search_mm', 'undercut_min_depth_mm',
                    'undercut_min_length_mm', 'gap_min_length_mm', 'spatter_search_mm',
                    'spatter_contrast', 'evidence_sharpness')
        for name in positive:
            if not getattr(self, name) > 0:
                raise RuleConfigError(f'{name} must be > 0, got {getattr(self, name)}')
        if not 0.0 < self.mark_core_fraction <= 1.0:
            raise RuleConfigError(f'mark_core_fraction must be in (0, 1], got {self.mark_core_fraction}')
        if not 0.0 < self.mark_extent_darkness <= self.mark_darkness < 1.0:
            raise RuleConfigError('need 0 < mark_extent_darkness <= mark_darkness < 1, got '
                                  f'{self.mark_extent_darkness} and {self.mark_darkness}')
        if self.crack_min_elongation < 1.0 or self.crack_transverse_min_elongation < 1.0:
            raise RuleConfigError('crack elongations must be >= 1, got '
                                  f'{self.crack_min_elongation} and {self.crack_transverse_min_elongation}')
        if not 0.0 <= self.crack_transverse_angle_deg <= 90.0:
            raise RuleConfigError(f'crack_transverse_angle_deg must be in [0, 90], got '
                                  f'{self.crack_transverse_angle_deg}')
        if self.undercut_noise_factor < 0 or self.spatter_clearance_mm < 0:
            raise RuleConfigError('undercut_noise_factor and spatter_clearance_mm must be >= 0')
        if self.spatter_min_count < 1:
            raise RuleConfigError(f'spatter_min_count must be >= 1, got {self.spatter_min_count}')


@dataclass(frozen=True)
class Finding:
    """One defect instance in seam coordinates; strength 1 means exactly at threshold."""

    defect_class: str
    strength: float
    s_range_mm: tuple[float, float]
    t_range_mm: tuple[float, float]
    length_mm: float
    width_mm: float
    depth_mm: float = 0.0


@dataclass(frozen=True)
class Inspection:
    """Everything one inspection produced (the debug view and the benchmarks read it)."""

    measurement: BeadMeasurement
    verdict: Optional[Verdict]
    geometry: Optional[BeadGeometry]
    findings: tuple[Finding, ...]
    confidence_features: tuple[float, ...] = ()    # CONFIDENCE_FEATURES of the verdict, when inspected


# --- helpers -------------------------------------------------------------------------------

def _runs(flags: np.ndarray, max_hole: int = 1) -> list[tuple[int, int]]:
    """[start, end) index runs of True, bridging holes of up to `max_hole` False values."""
    idx = np.flatnonzero(flags)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > max_hole + 1)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]]) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def _score(strength: float, sharpness: float) -> float:
    if strength <= 0:
        return 0.0
    x = strength ** sharpness
    return x / (1.0 + x) if math.isfinite(x) else 1.0


def _column_arrays(geom: BeadGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre row, half-width [rows] and 'usable' flag of every fine-grid column.

    Centre and half-width are interpolated between the measured chunks, so that they
    follow a meandering bead smoothly.
    """
    sf = geom.frame
    n = geom.chunk_width_mm.size
    idx = np.minimum(np.arange(sf.cols) // geom.chunk_cols, n - 1)
    ok = geom.chunk_ok
    col_s = sf.s0 + sf.ds * np.arange(sf.cols)
    if np.count_nonzero(ok) >= 2:
        centre_mm = np.interp(col_s, geom.chunk_s_mm[ok], geom.chunk_centre_mm[ok])
        half_mm = np.interp(col_s, geom.chunk_s_mm[ok], 0.5 * geom.chunk_width_mm[ok])
    else:
        centre_mm, half_mm = geom.chunk_centre_mm[idx], 0.5 * geom.chunk_width_mm[idx]
    usable = geom.chunk_stat[idx] & geom.col_inside
    return (centre_mm - sf.t0) / sf.dt, half_mm / sf.dt, usable


# --- porosity and crack --------------------------------------------------------------------

def image_noise_levels(gray: np.ndarray) -> float:
    """Robust sigma [8-bit levels] of the gray image's pixel noise (and fine texture).

    The residual of a 3x3 box blur keeps sqrt(8/9) of white noise; its median absolute
    value over a sample of pixels is robust to the edges of bead, plate and defects.
    """
    # every other row of a band of the image is plenty for a median, and 4x cheaper
    h = gray.shape[0]
    band = np.ascontiguousarray(gray[h // 4: 3 * h // 4])
    resid = cv2.absdiff(band, cv2.blur(band, (3, 3)))[1:-1:2, 1:-1:3]
    return float(np.median(resid)) * 1.4826 / math.sqrt(8.0 / 9.0)


def find_marks(geom: BeadGeometry, cfg: RuleConfig, noise_levels: float = 0.0) -> list[Finding]:
    """Dark marks on the bead: pores (round) and cracks (long and thin).

    noise_levels: the image's pixel noise [8-bit levels]; a mark must be darker than its
    background by `mark_noise_factor` times it as well (dim, noisy images)."""
    sf = geom.frame
    centre, half, usable = _column_arrays(geom)
    if not usable.any():
        return []
    reach = cfg.mark_core_fraction * half
    # Straighten the bead: shift every column so that the centre line is one row. The
    # background along the seam then compares like with like even where the bead meanders.
    ref = float(np.median(centre[usable]))
    shift = (centre - ref).astype(np.float32)
    r_lo = int(max(0, np.floor(ref - reach[usable].max()) - 2))
    r_hi = int(min(sf.rows, np.ceil(ref + reach[usable].max()) + 3))
    map_x = np.broadcast_to(np.arange(sf.cols, dtype=np.float32)[None, :], (r_hi - r_lo, sf.cols))
    map_y = np.arange(r_lo, r_hi, dtype=np.float32)[:, None] + shift[None, :]
    gray = cv2.remap(geom.gray, np.ascontiguousarray(map_x), map_y, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    k_along = max(3, int(cfg.mark_background_mm / sf.ds) | 1)
    background = cv2.morphologyEx(gray, cv2.MORPH_CLOSE, np.ones((3, k_along), np.uint8))
    darkness = (cv2.subtract(background, gray).astype(np.float32)
                / np.maximum(background, 1).astype(np.float32))
    rows = np.arange(r_lo, r_hi, dtype=np.float32)[:, None]
    core = (np.abs(rows - ref) < reach[None, :]) & usable[None, :]
    if noise_levels > 0 and cfg.mark_noise_factor > 0:
        # Where the noise reaches the darkness threshold (a dim, noisy image) the thresholds
        # rise with it, pixel by pixel: darkness is rescaled so that a mark must be
        # mark_noise_factor noise sigmas below its background to seed.
        floor = (cfg.mark_noise_factor * noise_levels) / np.maximum(background, 1).astype(np.float32)
        darkness = darkness * np.minimum(np.float32(1.0), np.float32(cfg.mark_darkness) / np.maximum(floor, 1e-6))
    seeds = (darkness > cfg.mark_darkness) & core
    if not seeds.any():
        return []
    extent = ((darkness > cfg.mark_extent_darkness) & core).astype(np.uint8)
    n_lab, labels, stats, _ = cv2.connectedComponentsWithStats(extent, connectivity=8)
    seeded = np.unique(labels[seeds])
    findings = []
    pieces: list[tuple[int, float, float, float, float]] = []   # crack pieces: index, s0, s1, t, darkness
    cell_mm2 = sf.ds * sf.dt
    # a crack is a pixel or two wide in the image, whatever its width on the part
    max_width = cfg.crack_max_width_mm + 1.5 * geom.mm_per_px
    # a transverse crack runs across the bead: on a narrow bead it cannot be long, so a part
    # of the searched band's width is long enough
    band_mm = 2.0 * float(np.median(reach[usable])) * sf.dt
    transverse_min_length = min(cfg.crack_transverse_min_length_mm, cfg.crack_transverse_min_band_fraction * band_mm)
    for lab in seeded[seeded > 0][:64]:
        x, y, w, h, area = stats[lab]
        sub = labels[y:y + h, x:x + w] == lab
        ys, xs = np.divmod(np.flatnonzero(sub), sub.shape[1])
        s = (xs + x) * sf.ds
        t = (ys + y + r_lo) * sf.dt
        area_mm2 = area * cell_mm2
        if 2.0 * math.sqrt(area_mm2 / math.pi) < cfg.pore_min_diameter_mm:
            continue
        angle_deg = 0.0
        if xs.size >= 3:
            cov = np.cov(np.stack([s, t]))
            evals, evecs = np.linalg.eigh(cov)
            length = max(math.sqrt(12.0 * max(evals[1], 0.0)), sf.ds)
            minor = max(math.sqrt(12.0 * max(evals[0], 0.0)), sf.dt)
            angle_deg = math.degrees(math.atan2(abs(evecs[1, 1]), abs(evecs[0, 1])))
        else:
            length, minor = max(w * sf.ds, sf.ds), max(h * sf.dt, sf.dt)
        mean_width = max(area_mm2 / length, sf.dt)
        # The shape on the part: the image blur widens a crack a pixel or two wide by about
        # crack_blur_px whatever its true width, which makes a short transverse crack seen
        # from afar as stubby as a pore; its elongation is taken without that blur.
        sharp_width = max(mean_width - cfg.crack_blur_px * geom.mm_per_px, 0.5 * mean_width, sf.dt)
        elongation = length / sharp_width
        vals = darkness[y:y + h, x:x + w][sub]
        dark_peak = float(vals.max())
        dark_strength = dark_peak / cfg.mark_darkness
        if angle_deg >= cfg.crack_transverse_angle_deg:
            crack_ratio = min(length / transverse_min_length,
                              elongation / cfg.crack_transverse_min_elongation,
                              max_width / mean_width)
        else:
            crack_ratio = min(length / cfg.crack_min_length_mm,
                              elongation / cfg.crack_min_elongation,
                              max_width / mean_width)
        s_rng = (sf.s0 + x * sf.ds, sf.s0 + (x + w) * sf.ds)
        back = float(shift[x:x + w].mean())          # undo the straightening
        t_rng = (sf.t0 + (y + r_lo + back) * sf.dt, sf.t0 + (y + h + r_lo + back) * sf.dt)
        if crack_ratio >= 1.0:
            cls, strength = CRACK, dark_strength * min(crack_ratio, 2.0)
        else:
            cls, strength = POROSITY, dark_strength * min(1.0 / max(crack_ratio, 1e-3), 2.0)
        findings.append(Finding(cls, strength, s_rng, t_rng, length_mm=length, width_mm=mean_width))
        # along the seam, thin and elongated: a piece of a crack the noise may have broken up
        if (angle_deg < cfg.crack_transverse_angle_deg and elongation >= cfg.crack_chain_min_elongation
                and mean_width <= max_width):
            pieces.append((len(findings) - 1, float(s_rng[0]), float(s_rng[1]),
                           float(np.mean(t)), dark_strength))
    return _chain_cracks(findings, pieces, cfg, max(0.75, 1.5 * geom.mm_per_px))


def _chain_cracks(findings: list[Finding], pieces: list[tuple[int, float, float, float, float]],
                  cfg: RuleConfig, across_mm: float) -> list[Finding]:
    """Continuity: thin pieces along the seam, one after another on one line (gaps under
    crack_chain_gap_mm, centres within `across_mm` across the straightened bead), are one
    crack when together they span crack_min_length_mm; pores, round, never take part."""
    if len(pieces) < 2:
        return findings
    pieces.sort(key=lambda p: p[1])
    chains, current = [], [pieces[0]]
    for piece in pieces[1:]:
        last = current[-1]
        if piece[1] - last[2] <= cfg.crack_chain_gap_mm and abs(piece[3] - last[3]) <= across_mm:
            current.append(piece)
        else:
            chains.append(current)
            current = [piece]
    chains.append(current)
    out = list(findings)
    for chain in chains:
        span = chain[-1][2] - chain[0][1]
        if len(chain) < 2 or span < cfg.crack_min_length_mm:
            continue
        strength = max(p[4] for p in chain) * min(span / cfg.crack_min_length_mm, 2.0)
        for index, *_ in chain:
            f = out[index]
            out[index] = Finding(CRACK, max(strength, f.strength if f.defect_class == CRACK else 0.0),
                                 f.s_range_mm, f.t_range_mm, length_mm=span, width_mm=f.width_mm)
    return out


# --- undercut ------------------------------------------------------------------------------

def find_undercuts(geom: BeadGeometry, cfg: RuleConfig) -> list[Finding]:
    """Grooves below the plate beside either toe, over a minimum length along the seam."""
    sf = geom.frame
    prof = geom.profiles
    rows, n = prof.shape
    valid = geom.chunk_stat & _chunk_inside(geom)
    if np.count_nonzero(valid) < 2:
        return []
    centre_row = (geom.chunk_centre_mm - sf.t0) / sf.dt
    half_rows = 0.5 * geom.chunk_width_mm / sf.dt
    v = np.arange(0.0, cfg.undercut_search_mm + 0.5 * sf.dt, sf.dt) / sf.dt       # rows beyond toe
    noise = geom.plate.noise_mm / np.sqrt(np.maximum(geom.chunk_cols * geom.chunk_coverage, 1.0) * 3.0)
    # The profiles' own noise on the plate beyond the search zone: correlated sensor noise
    # (stereo matching) averages down far less than the sample count says.
    far = (np.abs(np.arange(rows)[:, None] - centre_row[None, :])
           > half_rows[None, :] + (cfg.undercut_search_mm + 1.0) / sf.dt) & valid[None, :]
    plate_vals = prof[far]
    plate_vals = plate_vals[np.isfinite(plate_vals)]
    if plate_vals.size >= 20:
        med = float(np.median(plate_vals))
        noise = np.maximum(noise, 1.4826 * float(np.median(np.abs(plate_vals - med))) / math.sqrt(3.0))
    threshold = np.maximum(np.maximum(cfg.undercut_min_depth_mm, cfg.undercut_noise_factor * noise),
                           resolved_relief_mm(geom, cfg))
    chunk_len = geom.chunk_cols * sf.ds
    ci = np.arange(n)[:, None]
    findings = []
    for side in (-1.0, 1.0):
        rf = centre_row[:, None] + side * (half_rows[:, None] + v[None, :])
        r0 = np.clip(np.floor(rf).astype(np.intp), 0, rows - 2)
        fr = np.clip(rf - r0, 0.0, 1.0)
        vals = np.nan_to_num(prof[r0, ci] * (1.0 - fr) + prof[r0 + 1, ci] * fr, nan=0.0)
        inside_win = (rf >= 0) & (rf <= rows - 1)
        vals = np.where(inside_win, vals, 0.0)
        sm = vals.copy()
        sm[:, 1:-1] = (vals[:, :-2] + vals[:, 1:-1] + vals[:, 2:]) / 3.0
        depth = -sm.min(axis=1)
        flags = valid & (depth > threshold)
        for a, b in _runs(flags, max_hole=1):
            length = (b - a) * chunk_len
            if length < cfg.undercut_min_length_mm:
                continue
            # depth: the groove averaged over the run (low noise, unsmoothed across)
            mean_prof = vals[a:b][valid[a:b]].mean(axis=0)
            groove_depth = groove_depth_mm(-mean_prof, sf.dt, geom.mm_per_px)
            strength = groove_depth / float(np.median(threshold[a:b]))
            t_toe = float(np.median(geom.chunk_centre_mm[a:b] + side * 0.5 * geom.chunk_width_mm[a:b]))
            t_rng = tuple(sorted((t_toe, t_toe + side * cfg.undercut_search_mm)))
            findings.append(Finding(UNDERCUT, strength, (float(geom.chunk_s_mm[a] - 0.5 * chunk_len),
                                                         float(geom.chunk_s_mm[b - 1] + 0.5 * chunk_len)),
                                    t_rng, length_mm=length, width_mm=cfg.undercut_search_mm,
                                    depth_mm=groove_depth))
    return findings


_GROOVE_WIDTHS_MM = np.arange(0.4, 3.01, 0.05)


def groove_depth_mm(profile_mm: np.ndarray, step_mm: float, pixel_mm: float) -> float:
    """Deepest point of a groove from its sampled depth profile beyond the toe.

    profile_mm: depth below the plate [mm] at 0, step, 2 step ... beyond the toe. The
    camera samples the groove at pixel spacing `pixel_mm` and the profile interpolates
    between pixels, which flattens a narrow groove's bottom; a half-sine groove of each
    width in _GROOVE_WIDTHS_MM, blurred by the matching triangle, is fitted (depth by
    least squares) and the depth of the best fit returned.
    """
    fine = 0.05
    half = max(pixel_mm, fine)
    u = np.arange(-half, half + 0.5 * fine, fine)
    tri = np.maximum(1.0 - np.abs(u) / half, 0.0)
    tri /= tri.sum()
    x = np.arange(-half, profile_mm.size * step_mm + half + fine, fine)          # fine positions
    w = _GROOVE_WIDTHS_MM[:, None]
    shape = np.where((x >= 0) & (x <= w), np.sin(np.pi * np.clip(x / w, 0.0, 1.0)), 0.0)
    blurred = cv2.filter2D(shape.astype(np.float32), -1, tri[None, :].astype(np.float32),
                           borderType=cv2.BORDER_CONSTANT)
    at = np.arange(profile_mm.size) * step_mm
    model = np.stack([np.interp(at, x, row) for row in blurred])                # (widths, samples)
    y = profile_mm.astype(np.float64)
    scale = (model @ y) / np.maximum((model * model).sum(axis=1), 1e-12)
    resid = ((y[None, :] - scale[:, None] * model) ** 2).sum(axis=1)
    best = int(np.argmin(np.where(scale > 0, resid, np.inf)))
    return float(max(scale[best], 0.0)) if np.isfinite(resid[best]) else float(max(y.max(), 0.0))


def resolved_relief_mm(geom: BeadGeometry, cfg: RuleConfig) -> float:
    """Smallest relief [mm] that the frame's depth tells apart from its own rounding steps
    (0 for continuous depth)."""
    res = geom.resolution
    return cfg.resolution_bias_factor * res.bias_mm if res is not None else 0.0


def _chunk_inside(geom: BeadGeometry) -> np.ndarray:
    n = geom.chunk_width_mm.size
    m = geom.chunk_cols
    inside = geom.col_inside[:n * m].reshape(n, m)
    return inside.all(axis=1)


# --- gap -----------------------------------------------------------------------------------

def find_gaps(geom: BeadGeometry, cfg: RuleConfig) -> list[Finding]:
    """Stretches where the bead is missing or under-filled."""
    sf = geom.frame
    inside = _chunk_inside(geom) & (geom.chunk_coverage > 0.6)
    # A chunk whose profile could not be measured is a gap only if its crown is low too:
    # noisy depth fails profiles on a full bead as well.
    ratio = geom.chunk_crown_mm / max(geom.crown_median_mm, 1e-6)
    limit = cfg.measure.gap_height_ratio
    flags = geom.chunk_gap & inside & (ratio < limit)
    if not flags.any():
        return []
    chunk_len = geom.chunk_cols * sf.ds
    resolved = resolved_relief_mm(geom, cfg)
    # The drop must also stand out of the crowns' own scatter (correlated stereo noise
    # scatters chunk crowns far more than white noise of the same size would).
    crowns = geom.chunk_crown_mm[geom.chunk_stat]
    if crowns.size >= 5:
        scatter = 1.4826 * float(np.median(np.abs(crowns - np.median(crowns))))
        resolved = max(resolved, cfg.gap_scatter_factor * scatter)
    findings = []
    for a, b in _runs(flags, max_hole=0):
        length = (b - a) * chunk_len
        if length < cfg.gap_min_length_mm:
            continue
        drop_mm = geom.crown_median_mm * (1.0 - float(np.clip(ratio[a:b].min(), 0.0, 1.0)))
        if drop_mm <= resolved:          # a crown step the depth's rounding can make
            continue
        deficit = (1.0 - float(np.clip(ratio[a:b].min(), 0.0, 1.0))) / (1.0 - limit)
        strength = deficit * min(1.0, length / cfg.gap_min_length_mm) ** 0.5
        half = 0.5 * float(np.median(geom.chunk_width_mm[geom.chunk_stat])) if geom.chunk_stat.any() else 5.0
        # the centre line where the bead is still measured on either side of the gap
        near = np.flatnonzero(geom.chunk_ok[max(a - 3, 0):b + 3]) + max(a - 3, 0)
        centre = float(np.median(geom.chunk_centre_mm[near])) if near.size else 0.0
        findings.append(Finding(GAP, strength, (float(geom.chunk_s_mm[a] - 0.5 * chunk_len),
                                                float(geom.chunk_s_mm[b - 1] + 0.5 * chunk_len)),
                                (centre - half, centre + half), length_mm=length, width_mm=2 * half))
    return findings


# --- spatter -------------------------------------------------------------------------------

def find_spatter(geom: BeadGeometry, gray: np.ndarray, frame: RGBDFrame,
                 cfg: RuleConfig, exclude: Sequence[Finding] = (), noise_levels: float = 0.0) -> list[Finding]:
    """Small high-contrast blobs on the plate beside the bead (droplets).

    Droplets have contrast both along and across the image rows, while the brushed
    texture of a plate is streaked along one image axis: the lesser of the horizontal and
    vertical local ranges keeps blobs and drops streaks. It is divided by the local
    brightness, thresholded on the image, and the surviving pixels are mapped to seam
    coordinates, where only those on the plate beside the bead count. Areas of `exclude`
    (undercut grooves, whose edges run along the seam) are left out, with a 1 mm margin.
    """
    sf = geom.frame
    stat = geom.chunk_stat
    if not stat.any():
        return []
    # work near 0.3-0.6 mm per pixel whatever the camera resolution
    factor = max(1, int(0.45 / max(geom.mm_per_px, 1e-6)))
    if factor > 1:
        gray = cv2.resize(gray, (gray.shape[1] // factor, gray.shape[0] // factor),
                          interpolation=cv2.INTER_AREA)
    range_h = cv2.subtract(cv2.dilate(gray, _K_H5), cv2.erode(gray, _K_H5))
    range_v = cv2.subtract(cv2.dilate(gray, _K_V5), cv2.erode(gray, _K_V5))
    blob = cv2.min(range_h, range_v)
    local = cv2.blur(gray, (9, 9))
    # blob > c (local + 10), on uint8 images (the rounding of the threshold is immaterial)
    limit = cv2.addWeighted(local, cfg.spatter_contrast, local, 0.0, 10.0 * cfg.spatter_contrast)
    if noise_levels > 0 and cfg.spatter_noise_factor > 0:
        # in a noisy image the local range of the noise alone reaches the contrast limit
        # (the working image is averaged over factor x factor pixels: its noise is 1/factor)
        level = min(255, int(round(cfg.spatter_noise_factor * noise_levels / factor)))
        limit = cv2.max(limit, np.full_like(limit, level))
    cand = cv2.compare(blob, limit, cv2.CMP_GT)
    cand[:3] = 0
    cand[-3:] = 0
    cand[:, :3] = 0
    cand[:, -3:] = 0
    ys, xs = np.divmod(np.flatnonzero(cand.view(bool)), cand.shape[1])
    if ys.size == 0:
        return []
    response = blob[ys, xs].astype(np.float32) / (local[ys, xs].astype(np.float32) + 10.0)
    # pixel -> seam coordinates through the inverse of the seam-frame homography
    inv = np.linalg.inv(sf.homography)
    xf = xs.astype(np.float64) * factor + 0.5 * (factor - 1)
    yf = ys.astype(np.float64) * factor + 0.5 * (factor - 1)
    w = inv[2, 0] * xf + inv[2, 1] * yf + inv[2, 2]
    s = sf.s0 + sf.ds * (inv[0, 0] * xf + inv[0, 1] * yf + inv[0, 2]) / w
    t = sf.t0 + sf.dt * (inv[1, 0] * xf + inv[1, 1] * yf + inv[1, 2]) / w
    cen = np.interp(s, geom.chunk_s_mm[stat], geom.chunk_centre_mm[stat])
    hw = np.interp(s, geom.chunk_s_mm[stat], 0.5 * geom.chunk_width_mm[stat])
    off = np.abs(t - cen) - hw
    # beside the measured bead only: not on it, not in the toe zone, not past a gap's end
    measured = np.interp(s, geom.chunk_s_mm, (geom.chunk_stat | ~geom.chunk_gap).astype(float)) > 0.5
    on_seam = (s >= geom.seam_start_mm) & (s <= geom.seam_end_mm)
    keep = ((off > cfg.spatter_clearance_mm) & (off < cfg.spatter_clearance_mm + cfg.spatter_search_mm)
            & measured & on_seam)
    for f in exclude:
        keep &= ~((s >= f.s_range_mm[0]) & (s <= f.s_range_mm[1])
                  & (t >= f.t_range_mm[0] - 1.0) & (t <= f.t_range_mm[1] + 1.0))
    if not keep.any():
        return []
    ys, xs, s, t, response = ys[keep], xs[keep], s[keep], t[keep], response[keep]
    # one detection per droplet: the strongest pixel of each 1.5 mm cell
    cell = 1.5
    order = np.argsort(-response)
    key = np.floor(s[order] / cell).astype(np.int64) * 1_000_003 + np.floor(t[order] / cell).astype(np.int64)
    _, first = np.unique(key, return_index=True)
    pick = order[np.sort(first)]
    count = pick.size
    pick = pick[np.argsort(-response[pick])][:40]         # the 40 strongest are reported
    count_strength = min(count / cfg.spatter_min_count, 3.0)
    half = max(geom.mm_per_px, 0.5)
    return [Finding(SPATTER, count_strength * min(float(response[i]) / cfg.spatter_contrast, 2.0) ** 0.5,
                    (float(s[i]) - half, float(s[i]) + half), (float(t[i]) - half, float(t[i]) + half),
                    length_mm=2 * half, width_mm=2 * half) for i in pick.tolist()]


# --- verdict -------------------------------------------------------------------------------

def class_probabilities(strengths: dict[str, float], sharpness: float,
                        class_names: tuple[str, ...] = DEFAULT_CLASS_NAMES) -> tuple[float, ...]:
    """Per-class probabilities aligned with `class_names` from the rules' strongest findings."""
    scores = {c: _score(strengths.get(c, 0.0), sharpness) for c in DEFECT_CLASSES}
    q_good = float(np.prod([1.0 - v for v in scores.values()]))
    raw = np.array([q_good if c == GOOD else scores.get(c, 0.0) for c in class_names], dtype=np.float64)
    total = raw.sum()
    if total <= 0:
        raw = np.ones(len(class_names))
        total = raw.sum()
    return tuple(float(v) for v in raw / total)


def _regions(findings: list[Finding], geom: BeadGeometry, frame: RGBDFrame,
             sharpness: float) -> tuple[DefectRegion, ...]:
    if not findings:
        return ()
    intr = frame.intrinsics
    s_rng = np.array([f.s_range_mm for f in findings])
    t_rng = np.array([f.t_range_mm for f in findings])
    s = s_rng[:, [0, 0, 1, 1]]
    t = t_rng[:, [0, 1, 0, 1]]
    x, y = geom.frame.to_pixels(s, t)
    x0 = np.clip(np.floor(x.min(axis=1)), 0, intr.width - 1).astype(int)
    x1 = np.clip(np.ceil(x.max(axis=1)), 0, intr.width - 1).astype(int)
    y0 = np.clip(np.floor(y.min(axis=1)), 0, intr.height - 1).astype(int)
    y1 = np.clip(np.ceil(y.max(axis=1)), 0, intr.height - 1).astype(int)
    pos = s_rng.mean(axis=1) - geom.seam_start_mm
    return tuple(DefectRegion(f.defect_class, _score(f.strength, sharpness), int(x0[i]), int(y0[i]),
                              int(x1[i] - x0[i] + 1), int(y1[i] - y0[i] + 1), length_mm=float(f.length_mm),
                              width_mm=float(f.width_mm), position_along_seam_mm=float(pos[i]))
                 for i, f in enumerate(findings))


def _measurement(geom: BeadGeometry, findings: list[Finding], spec: WeldSpec) -> BeadMeasurement:
    stat = geom.chunk_stat
    widths = geom.chunk_width_mm[stat]
    heights = geom.chunk_height_mm[stat]
    undercut = max((f.depth_mm for f in findings if f.defect_class == UNDERCUT), default=0.0)
    width, height = float(widths.mean()), float(heights.mean())
    check = evaluate_spec(spec, width, height, undercut)
    return BeadMeasurement(
        valid=True, width_mm=width, width_std_mm=float(widths.std()),
        width_min_mm=float(widths.min()), width_max_mm=float(widths.max()), height_mm=height,
        height_max_mm=float(heights.max()), undercut_depth_mm=float(undercut),
        seam_length_mm=float(geom.seam_length_mm), seam_angle_deg=float(geom.seam_angle_deg),
        within_tolerance=check.within_tolerance, score=check.score,
        axis_along_seam_mm=_axis_along_seam(geom))


def _axis_along_seam(geom: BeadGeometry) -> float:
    """Seam position (from the seam start in view) of the optical axis' plate point,
    projected onto the seam [mm]."""
    plate, seam = geom.plate, geom.frame
    nz = float(plate.normal[2])
    if abs(nz) < 1e-6:
        return 0.5 * geom.seam_length_mm
    axis_point_mm = np.array([0.0, 0.0, 1000.0 * plate.distance_m / nz])
    return float((axis_point_mm - seam.origin_mm) @ seam.along) - geom.seam_start_mm


def inspect_frame(frame: RGBDFrame, config: RuleConfig = RuleConfig()) -> Inspection:
    """Measure the bead and classify defects on one RGB-D frame.

    Returns the Inspection: the bead measurement [mm], the defect verdict (method 'rule';
    latency_ms 0, the node fills in reception to verdict), the geometry (with the seam's
    location, which the ONNX stage reuses) and the individual findings. When no bead can be
    measured (no plate, no bead in view, too little depth) the measurement has valid=False
    with the reason and the verdict is None: there is nothing to classify. Raises nothing
    for frames that RGBDFrame accepted.
    """
    gray = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
    try:
        geom = measure_bead(frame, config.measure, gray=gray)
    except MeasurementError as exc:
        res = exc.resolution
        if res is not None and res.step_mm > 0 and exc.lifted_threshold_mm > 0:
            # Quantized depth whose noise or rounding hides anything lower than the lifted
            # threshold: a low bead may be there. Not 'no bead': the depth cannot tell.
            detail = (f'{REASON_DEPTH_UNRESOLVED}: {exc} at a {exc.lifted_threshold_mm:.2f} mm threshold under '
                      f'{res.describe()}')
            verdict = Verdict.not_inspected(REASON_DEPTH_UNRESOLVED, detail, DEFAULT_CLASS_NAMES, METHOD_RULE)
            return Inspection(BeadMeasurement.invalid(detail), verdict, None, ())
        return Inspection(BeadMeasurement.invalid(str(exc)), None, None, ())
    res = geom.resolution
    if res is not None and res.bias_mm > 0 and \
            geom.crown_median_mm < config.unresolved_crown_bias_ratio * res.bias_mm:
        detail = (f'{REASON_DEPTH_UNRESOLVED}: a {geom.crown_median_mm:.2f} mm crown under '
                  f'{res.describe()}')
        verdict = Verdict.not_inspected(REASON_DEPTH_UNRESOLVED, detail, DEFAULT_CLASS_NAMES, METHOD_RULE)
        return Inspection(BeadMeasurement.invalid(detail), verdict, geom, ())
    findings: list[Finding] = []
    findings += find_gaps(geom, config)
    undercuts = find_undercuts(geom, config)
    findings += undercuts
    noise_levels = image_noise_levels(gray)
    findings += find_marks(geom, config, noise_levels)
    findings += find_spatter(geom, gray, frame, config, noise_levels=noise_levels,
                             exclude=[f for f in undercuts if f.strength >= 1.0])
    strengths: dict[str, float] = {}
    for f in findings:
        strengths[f.defect_class] = max(strengths.get(f.defect_class, 0.0), f.strength)
    probs = class_probabilities(strengths, config.evidence_sharpness)
    best = int(np.argmax(probs))
    winner = DEFAULT_CLASS_NAMES[best]
    shown = [f for f in findings if _score(f.strength, config.evidence_sharpness) >= 0.5]
    unchecked = checks_not_made(geom, config)
    features = confidence_features(probs, strengths, winner, noise_levels, gray, geom, unchecked)
    confidence = calibrated_confidence(features, config)
    verdict = Verdict(defect_class=winner, confidence=confidence, class_names=DEFAULT_CLASS_NAMES,
                      probabilities=_with_winner(probs, best, confidence), method=METHOD_RULE,
                      regions=_regions(shown, geom, frame, config.evidence_sharpness),
                      checks_not_made=unchecked)
    measurement = _measurement(geom, findings, config.spec)
    width_uncertainty = width_uncertainty_mm(geom)
    if width_uncertainty > config.max_width_uncertainty_mm:
        measurement = replace(measurement, valid=False, within_tolerance=False, score=0.0,
                              reason=f'{REASON_DEPTH_UNRESOLVED}: width uncertain by about '
                                     f'{width_uncertainty:.1f} mm under {res.describe()}')
    return Inspection(measurement, verdict, geom, tuple(findings), features)


def width_uncertainty_mm(geom: BeadGeometry) -> float:
    """Width error [mm] the depth's rounding can leave: its bias over the mean flank slope
    (crown height / half width), at both toes; 0 for continuous depth."""
    res = geom.resolution
    if res is None or res.bias_mm <= 0 or not geom.chunk_stat.any():
        return 0.0
    width = float(np.mean(geom.chunk_width_mm[geom.chunk_stat]))
    height = max(float(np.mean(geom.chunk_height_mm[geom.chunk_stat])), 1e-3)
    return res.bias_mm * width / height


CONFIDENCE_FEATURES = ('logit', 'margin', 'competing', 'good', 'image_noise', 'depth_bias', 'unchecked',
                       'brightness', 'strength', 'depth_noise', 'width_uncertainty')


def confidence_features(probs: Sequence[float], strengths: dict[str, float], winner: str,
                        noise_levels: float, gray: np.ndarray, geom: BeadGeometry,
                        unchecked: tuple[str, ...]) -> tuple[float, ...]:
    """The features of one rule decision that the calibration weighs (CONFIDENCE_FEATURES)."""
    ordered = sorted(probs, reverse=True)
    p1 = min(max(ordered[0], 1e-6), 1.0 - 1e-6)
    sample = geom.gray[::3, ::3]                  # a median needs few samples
    lit = sample[sample > 0]
    bead_gray = float(np.median(lit)) if lit.size else 1.0
    res = geom.resolution
    return (math.log(p1 / (1.0 - p1)), ordered[0] - ordered[1],
            float(sum(1 for v in strengths.values() if v >= 0.7)), 1.0 if winner == GOOD else 0.0,
            noise_levels / max(bead_gray, 1.0), res.bias_mm if res is not None else 0.0,
            1.0 if unchecked else 0.0, bead_gray / 255.0,
            math.log(max(max(strengths.values(), default=0.0), 0.05)),
            res.noise_mm if res is not None else 0.0, min(width_uncertainty_mm(geom), 5.0))


def calibrated_confidence(features: Sequence[float], cfg: RuleConfig) -> float:
    """P(the rule verdict is right) from the decision's features (Platt scaling, see RuleConfig)."""
    weights = (cfg.confidence_w_logit, cfg.confidence_w_margin, cfg.confidence_w_competing,
               cfg.confidence_w_good, cfg.confidence_w_image_noise, cfg.confidence_w_depth_bias,
               cfg.confidence_w_unchecked, cfg.confidence_w_brightness, cfg.confidence_w_strength,
               cfg.confidence_w_depth_noise, cfg.confidence_w_width_uncertainty)
    z = cfg.confidence_bias + sum(w * f for w, f in zip(weights, features))
    return 1.0 / (1.0 + math.exp(-min(max(z, -50.0), 50.0)))


def _with_winner(probs: Sequence[float], best: int, confidence: float) -> tuple[float, ...]:
    """probs with the winner's probability set to the calibrated `confidence` and the others
    rescaled to share the rest in their own ratios, so that they still sum to 1."""
    rest = sum(p for i, p in enumerate(probs) if i != best)
    scale = (1.0 - confidence) / rest if rest > 0 else 0.0
    out = [p * scale for p in probs]
    out[best] = confidence
    if rest <= 0:
        share = (1.0 - confidence) / max(len(out) - 1, 1)
        out = [confidence if i == best else share for i in range(len(out))]
    return tuple(float(v) for v in out)


def checks_not_made(geom: BeadGeometry, cfg: RuleConfig) -> tuple[str, ...]:
    """Checks the frame's depth resolution does not allow (see RuleConfig.undercut_unresolved_mm)."""
    if resolved_relief_mm(geom, cfg) > cfg.undercut_unresolved_mm:
        return (UNDERCUT,)
    return ()
