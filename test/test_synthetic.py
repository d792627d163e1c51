"""The synthetic renderer: its truth against a simple measurement of its own depth.

The reference measurement here is deliberately independent of the renderer's model: it
back-projects the depth, fits the plate plane robustly, takes the bead as the large
connected blobs above the plane, and measures width as bead area per seam length and
height as the mean elevation along the crown, in 2 mm bins along the bead's principal axis.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from weld_vision_ros.core.camera import Intrinsics
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES, UnknownClassError
from weld_vision_ros.simulator.renderer import (SceneError, SceneParams, SyntheticFrame, WELD_LEVEL_FIELDS,
                                            default_intrinsics, render, render_random, sample_scene)

INTR = default_intrinsics()
BIN_MM = 2.0
# Clean frames have float32 depth only: 2e-4 mm is far above its rounding (< 1e-4 mm) and
# far below any bead elevation that matters for the width.
TAU_CLEAN_MM = 2e-4


def clean_frame(seed: int, defect_class: str, **overrides) -> SyntheticFrame:
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, defect_class, noise_scale=0.0)
    if overrides:
        scene = dataclasses.replace(scene, **overrides)
    return render(scene, INTR, rng)


def fit_plate(points: np.ndarray, valid: np.ndarray, keep_mm: float) -> np.ndarray:
    """Plane z = a x + b y + c [mm] through the plate: least squares, rejecting the relief
    with a threshold that shrinks to `keep_mm`."""
    fit = points[valid][::3]
    for keep in (3.0, 1.0, 0.3, keep_mm, keep_mm):
        a = np.c_[fit[:, 0], fit[:, 1], np.ones(len(fit))]
        coef, *_ = np.linalg.lstsq(a, fit[:, 2], rcond=None)
        resid = fit[:, 2] - a @ coef
        fit = fit[np.abs(resid) < max(keep, keep_mm)]
    return coef


def measure(frame: SyntheticFrame, tau_mm: float = TAU_CLEAN_MM, keep_mm: float = 0.05) -> dict:
    intr = frame.intrinsics
    pts = intr.backproject(frame.depth_m).astype(np.float64) * 1000.0       # mm
    valid = np.isfinite(pts[..., 2])
    a, b, c = fit_plate(pts.reshape(-1, 3), valid.ravel(), keep_mm)
    norm = math.sqrt(a * a + b * b + 1.0)
    elev = (a * pts[..., 0] + b * pts[..., 1] + c - pts[..., 2]) / norm      # toward camera
    normal = np.array([a, b, -1.0]) / norm

    # Bead: the big connected blobs above the plate (droplets are small, pits sit inside).
    mask = (np.nan_to_num(elev, nan=0.0) > tau_mm).astype(np.uint8)
    n_lab, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    areas = stats[1:, cv2.CC_STAT_AREA]
    big = 1 + np.flatnonzero(areas >= 0.2 * areas.max())
    bead = np.isin(labels, big)

    # In-plane axes from the bead's principal direction.
    p_bead = pts[bead]
    centred = p_bead - p_bead.mean(axis=0)
    centred -= np.outer(centred @ normal, normal)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axis = vt[0]
    across = np.cross(normal, axis)

    # Plate area of each pixel: z0^2 / (fx fy |n . d|) with z0 the plane depth on its ray.
    xn = (np.arange(intr.width) - intr.cx) / intr.fx
    yn = (np.arange(intr.height) - intr.cy) / intr.fy
    denom = 1.0 - a * xn[None, :] - b * yn[:, None]
    z0 = c / denom
    n_dot_d = np.abs(denom) / norm
    area = z0 ** 2 / (intr.fx * intr.fy * n_dot_d)

    # Plate coordinates of each pixel: where its ray meets the fitted plate plane.
    origin = np.array([0.0, 0.0, c])
    ray = np.stack([np.broadcast_to(xn[None, :], z0.shape), np.broadcast_to(yn[:, None], z0.shape),
                    np.ones_like(z0)], axis=-1) * z0[..., None]
    s = (ray - origin) @ axis
    t = (ray - origin) @ across
    ys, xs = np.nonzero(bead)
    s_b, t_b, e_b, a_b = s[ys, xs], t[ys, xs], elev[ys, xs], area[ys, xs]
    at_border = (xs < 2) | (ys < 2) | (xs > intr.width - 3) | (ys > intr.height - 3)
    edges = np.arange(s_b.min(), s_b.max() + BIN_MM, BIN_MM)
    which = np.digitize(s_b, edges)
    widths, crowns, tops = [], [], []
    for k in range(2, len(edges) - 1):       # skip the partial first and last bins
        sel = which == k
        if not sel.any() or at_border[sel].any():
            continue
        w = a_b[sel].sum() / BIN_MM
        centre = np.average(t_b[sel], weights=a_b[sel])
        crown = sel & (np.abs(t_b - centre) < 0.05 * w)
        if crown.any():
            widths.append(w)
            crowns.append(float(e_b[crown].mean()))
            tops.append(float(e_b[sel].max()))
    # Image angle of the bead axis, through the bead's centroid.
    p0 = p_bead.mean(axis=0)
    p1 = p0 + 20.0 * axis
    x0, y0 = intr.fx * p0[0] / p0[2] + intr.cx, intr.fy * p0[1] / p0[2] + intr.cy
    x1, y1 = intr.fx * p1[0] / p1[2] + intr.cx, intr.fy * p1[1] / p1[2] + intr.cy
    angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
    return {
        'widths': np.array(widths), 'crowns': np.array(crowns), 'tops': np.array(tops),
        'elev': elev, 'bead': bead,
        's': s, 't': t, 'plane': (a, b, c),
        'angle_deg': (angle + 90.0) % 180.0 - 90.0,
    }


def angle_diff(a: float, b: float) -> float:
    return abs((a - b + 90.0) % 180.0 - 90.0)


@pytest.mark.parametrize('seed,defect_class', [
    (1, 'good'), (2, 'good'), (3, 'good'), (4, 'undercut'), (5, 'spatter'), (6, 'porosity'),
    (7, 'crack'), (8, 'good'), (9, 'undercut'), (10, 'crack')])
def test_truth_width_and_height_match_depth(seed: int, defect_class: str) -> None:
    frame = clean_frame(seed, defect_class)
    m = measure(frame)
    assert len(m['widths']) > 20, 'too few full cross-sections in view'
    truth = frame.truth
    assert np.mean(m['widths']) == pytest.approx(truth.width_mm, abs=0.03)
    # The crown strip averages the ripples; the truth is the mean cross-section maximum.
    assert np.median(m['crowns']) == pytest.approx(truth.height_mm, abs=0.02 + 0.01 * truth.height_mm)
    # Without ripples the highest point of each 2 mm slice is the cross-section maximum.
    smooth = clean_frame(seed, defect_class, ripple_amplitude=0.0)
    assert np.median(measure(smooth)['tops']) == pytest.approx(smooth.truth.height_mm, abs=0.015)


def test_gap_truth_describes_the_bead_where_present() -> None:
    frame = clean_frame(11, 'gap')
    m = measure(frame)
    crowns, widths = m['crowns'], m['widths']
    full = crowns > 0.95 * np.median(crowns)
    # The gap shows as slices that are much lower than the rest (or missing altogether).
    assert (crowns < 0.6 * np.median(crowns)).any() or not full.all()
    assert np.mean(widths[full]) == pytest.approx(frame.truth.width_mm, abs=0.05)
    assert np.median(crowns[full]) == pytest.approx(frame.truth.height_mm, abs=0.02 + 0.01 * frame.truth.height_mm)


def test_width_std_matches_a_bead_with_known_variation() -> None:
    frame = clean_frame(12, 'good', width_variation_mm=0.5, width_wavelength_mm=30.0,
                        toe_ripple_mm=0.0, meander_amplitude_mm=0.0)
    m = measure(frame)
    # Sinusoidal width variation of amplitude 0.5 mm: std 0.5 / sqrt(2); 2 mm bins smooth a little.
    assert frame.truth.width_std_mm == pytest.approx(0.5 / math.sqrt(2), rel=0.1)
    assert np.std(m['widths']) == pytest.approx(frame.truth.width_std_mm, rel=0.15)


def test_seam_angle_and_plate_distance_match_depth() -> None:
    for seed in range(20, 26):
        frame = clean_frame(seed, 'good')
        m = measure(frame)
        assert angle_diff(m['angle_deg'], frame.truth.seam_angle_deg) < 2.0
        a, b, c = m['plane']
        # The plane's depth on the optical axis (x = y = 0) is the plate distance.
        assert c / 1000.0 == pytest.approx(frame.truth.plate_distance_m, abs=1e-5)


def test_requested_seam_angle_is_roughly_kept() -> None:
    rng = np.random.default_rng(30)
    for angle in (-89.0, -45.0, 0.0, 30.0, 75.0):
        scene = dataclasses.replace(sample_scene(rng, 'good'), seam_angle_deg=angle)
        frame = render(scene, INTR, rng)
        assert angle_diff(frame.truth.seam_angle_deg, angle) < 8.0


def test_undercut_depth_is_measurable_below_the_plate() -> None:
    for seed in (40, 41, 42):
        frame = clean_frame(seed, 'undercut')
        m = measure(frame)
        depth = frame.truth.undercut_depth_mm
        assert depth > 0.25
        lowest = -np.nanmin(m['elev'])
        assert lowest == pytest.approx(depth, abs=0.03 + 0.05 * depth)
        groove = m['elev'] < -0.5 * depth
        boxes = [r for r in frame.truth.regions if r.defect_class == 'undercut']
        assert boxes
        in_box = np.zeros_like(groove)
        for r in boxes:
            in_box[r.y_px:r.y_px + r.height_px, r.x_px:r.x_px + r.width_px] = True
        assert groove.sum() > 20 and (groove & in_box).sum() >= 0.95 * groove.sum()


@pytest.mark.parametrize('defect_class', ['good', 'porosity', 'spatter', 'gap', 'crack'])
def test_only_undercut_goes_below_the_plate_beside_the_toes(defect_class: str) -> None:
    frame = clean_frame(50, defect_class)
    assert frame.truth.undercut_depth_mm == 0.0
    m = measure(frame)
    # Beside the bead (off the bead mask, outside any region box) nothing is below the plate.
    beside = ~m['bead'] & np.isfinite(m['elev'])
    for r in frame.truth.regions:
        beside[max(r.y_px - 2, 0):r.y_px + r.height_px + 2, max(r.x_px - 2, 0):r.x_px + r.width_px + 2] = False
    assert np.nanmin(m['elev'][beside]) > -0.01


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def region_mask(shape: tuple[int, int], regions) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for r in regions:
        mask[r.y_px:r.y_px + r.height_px, r.x_px:r.x_px + r.width_px] = True
    return mask


def test_good_frames_have_one_clean_bead() -> None:
    for seed in (60, 61, 62):
        frame = clean_frame(seed, 'good')
        assert frame.truth.regions == ()
        m = measure(frame)
        raised = (np.nan_to_num(m['elev']) > 0.05).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(raised, connectivity=8)
        # One bead (it may touch the border twice but stays one blob) and nothing else.
        assert n - 1 == 1, f'{n - 1} raised blobs on a good weld'


def test_porosity_pits_are_dark_holes_in_the_bead() -> None:
    for seed in (70, 71, 72):
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng, 'porosity', noise_scale=0.0)
        frame = render(scene, INTR, np.random.default_rng(0))
        without = render(dataclasses.replace(scene, pits=()), INTR, np.random.default_rng(0))
        pits = [r for r in frame.truth.regions if r.defect_class == 'porosity']
        assert len(pits) == len(scene.pits) > 0
        dip = measure(frame)['elev'] - measure(without)['elev']
        darker = luminance(frame.rgb) / np.maximum(luminance(without.rgb), 1.0)
        # Shading reaches one pixel past the relief (gradients): compare outside a margin.
        outside = ~region_mask(dip.shape, [dataclasses.replace(
            r, x_px=r.x_px - 2, y_px=r.y_px - 2, width_px=r.width_px + 4, height_px=r.height_px + 4)
            for r in pits])
        assert np.abs(dip[outside]).max() < 1e-3 and np.abs(darker[outside] - 1).max() < 0.02
        for r, pit in zip(pits, scene.pits):
            box = (slice(r.y_px, r.y_px + r.height_px), slice(r.x_px, r.x_px + r.width_px))
            assert np.nanmin(dip[box]) < -0.3 * pit.depth_mm
            assert darker[box].min() < 0.6
            assert r.length_mm == r.width_mm == pytest.approx(2 * pit.radius_mm)
            assert 0.0 <= r.position_along_seam_mm <= frame.seam_length_mm


def test_spatter_droplets_are_raised_blobs_off_the_bead() -> None:
    frame = clean_frame(80, 'spatter')
    drops = [r for r in frame.truth.regions if r.defect_class == 'spatter']
    assert len(drops) >= 4
    m = measure(frame)
    found = 0
    for r in drops:
        box = (slice(r.y_px, r.y_px + r.height_px), slice(r.x_px, r.x_px + r.width_px))
        off_bead = ~m['bead'][box]
        raised = np.nan_to_num(m['elev'][box]) > 0.15
        found += bool((raised & off_bead).any())
    assert found >= 0.8 * len(drops)
    raised_off = (np.nan_to_num(m['elev']) > 0.15) & ~m['bead']
    assert raised_off[~region_mask(raised_off.shape, drops)].sum() == 0


def test_gap_region_covers_missing_or_underfilled_bead() -> None:
    for seed, fill in ((90, 0.0), (91, 0.3)):
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng, 'gap', noise_scale=0.0)
        scene = dataclasses.replace(scene, gaps=(dataclasses.replace(scene.gaps[0], fill_fraction=fill),))
        frame = render(scene, INTR, rng)
        (region,) = frame.truth.regions
        assert region.defect_class == 'gap'
        m = measure(frame)
        # At the middle of the gap (the box centre) the bead is missing or much lower.
        cx, cy = region.x_px + region.width_px // 2, region.y_px + region.height_px // 2
        middle = m['elev'][cy - 1:cy + 2, cx - 1:cx + 2]
        top = np.nanmax(middle) if np.isfinite(middle).any() else -np.inf
        if fill == 0.0:
            assert top < 0.05
            # The open root gap: far below the plate or no return at all.
            lo = np.nanmin(m['elev'][cy - 3:cy + 4, cx - 3:cx + 4])
            assert lo < -2.0 or np.isnan(frame.depth_m[cy - 3:cy + 4, cx - 3:cx + 4]).any()
        else:
            assert 0.15 * frame.truth.height_mm < top < 0.45 * frame.truth.height_mm
        assert np.nanmax(m['elev']) > 0.9 * frame.truth.height_mm      # the bead elsewhere


def test_crack_is_a_dark_line_with_a_depth_step() -> None:
    for seed in (100, 101, 102, 103):
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng, 'crack', noise_scale=0.0)
        frame = render(scene, INTR, np.random.default_rng(0))
        without = render(dataclasses.replace(scene, cracks=()), INTR, np.random.default_rng(0))
        (region,) = frame.truth.regions
        (crack,) = scene.cracks
        box = (slice(region.y_px, region.y_px + region.height_px),
               slice(region.x_px, region.x_px + region.width_px))
        step = measure(frame)['elev'] - measure(without)['elev']
        darker = luminance(frame.rgb) / np.maximum(luminance(without.rgb), 1.0)
        # A thin dark line: dark pixels number about its length in pixels, not its area.
        dark = darker[box] < 0.5
        mm_per_px = INTR.mm_per_px(scene.plate_distance_m)
        assert crack.length_mm / mm_per_px * 0.5 < dark.sum() < crack.length_mm / mm_per_px * 4
        # The groove and the stepped-down side in the depth.
        assert np.nanmin(step[box]) < -0.3 * crack.depth_mm
        assert (step[box] < -0.7 * crack.step_mm).sum() > dark.sum()
        lengths = sorted([region.length_mm, region.width_mm])
        assert lengths[1] == pytest.approx(crack.length_mm, rel=0.3)


def test_same_seed_same_frame_and_different_seed_different_frame() -> None:
    a = render_random(np.random.default_rng(5), INTR)
    b = render_random(np.random.default_rng(5), INTR)
    c = render_random(np.random.default_rng(6), INTR)
    assert a.scene == b.scene and a.truth == b.truth
    assert np.array_equal(a.rgb, b.rgb)
    assert np.array_equal(a.depth_m, b.depth_m, equal_nan=True)
    assert not np.array_equal(a.rgb, c.rgb)
    # Rendering does not depend on what was rendered before (caches are deterministic).
    render_random(np.random.default_rng(99), default_intrinsics(320, 240))
    d = render_random(np.random.default_rng(5), INTR)
    assert np.array_equal(a.rgb, d.rgb) and np.array_equal(a.depth_m, d.depth_m, equal_nan=True)


def test_frame_types_and_shapes() -> None:
    for size in ((640, 480), (320, 240), (848, 480)):
        intr = default_intrinsics(*size)
        frame = render_random(np.random.default_rng(7), intr)
        assert frame.rgb.dtype == np.uint8 and frame.rgb.shape == (size[1], size[0], 3)
        assert frame.depth_m.dtype == np.float32 and frame.depth_m.shape == (size[1], size[0])
        assert frame.intrinsics == intr
        assert 0.14 < np.nanmedian(frame.depth_m) < 0.33
        for r in frame.truth.regions:
            assert r.width_px > 0 and r.height_px > 0
            assert 0 <= r.x_px and r.x_px + r.width_px <= size[0]
            assert 0 <= r.y_px and r.y_px + r.height_px <= size[1]


def test_default_intrinsics_are_d435_like() -> None:
    intr = default_intrinsics()
    hfov = 2 * math.degrees(math.atan(0.5 * intr.width / intr.fx))
    assert 68.0 < hfov < 71.0 and intr.fx == intr.fy
    assert isinstance(intr, Intrinsics) and (intr.width, intr.height) == (640, 480)


def test_dropouts_are_nan_and_mostly_on_the_bead_crown() -> None:
    rng = np.random.default_rng(110)
    for _ in range(4):
        scene = dataclasses.replace(sample_scene(rng, 'good'), dropout_fraction=0.08)
        frame = render(scene, INTR, rng)
        lost = np.isnan(frame.depth_m)
        on_bead = frame.elevation_mm > 0.0
        assert lost.sum() == pytest.approx(0.08 * on_bead.sum(), rel=0.1)
        assert (lost & on_bead).sum() == lost.sum()
        # Crown, not toes: lost pixels sit high on the bead.
        assert np.median(frame.elevation_mm[lost]) > 0.7 * frame.truth.height_mm
        assert not np.isinf(frame.depth_m).any()
    clean = render(sample_scene(rng, 'good', noise_scale=0.0), INTR, rng)
    assert not np.isnan(clean.depth_m).any()


def test_depth_noise_matches_noise_mm() -> None:
    rng = np.random.default_rng(120)
    for noise_mm in (0.02, 0.1, 0.2):
        scene = dataclasses.replace(sample_scene(rng, 'good'), noise_mm=noise_mm, dropout_fraction=0.0)
        frame = render(scene, INTR, rng)
        m = measure(frame, tau_mm=4 * noise_mm, keep_mm=4 * noise_mm)
        plate = ~m['bead'] & (frame.elevation_mm == 0)
        resid = m['elev'][plate]
        # Depth noise is along the ray; the plate is nearly square to it.
        assert resid.std() == pytest.approx(noise_mm, rel=0.1)


def test_lighting_gain_changes_brightness() -> None:
    rng = np.random.default_rng(130)
    scene = sample_scene(rng, 'good', noise_scale=0.0)
    dark = render(dataclasses.replace(scene, lighting_gain=0.6), INTR, rng)
    bright = render(dataclasses.replace(scene, lighting_gain=1.2), INTR, rng)
    assert luminance(bright.rgb).mean() > 1.5 * luminance(dark.rgb).mean()
    assert np.array_equal(dark.depth_m, bright.depth_m)


def test_heat_tint_colours_the_plate_beside_the_bead() -> None:
    rng = np.random.default_rng(140)
    scene = sample_scene(rng, 'good', noise_scale=0.0)
    plain = render(dataclasses.replace(scene, heat_tint_strength=0.0), INTR, rng)
    tinted = render(dataclasses.replace(scene, heat_tint_strength=1.0), INTR, rng)
    diff = np.abs(tinted.rgb.astype(int) - plain.rgb.astype(int)).sum(axis=2)
    changed = diff > 6
    # Beside the bead only: on the plate (elevation 0), within the tint band.
    assert changed.sum() > 1000
    assert (tinted.elevation_mm[changed] == 0).mean() > 0.95
    m = measure(plain)
    centre = np.median(m['t'][m['bead']])
    reach = 0.5 * scene.bead_width_mm + 1.3 * scene.heat_tint_width_mm + 4.0
    far = np.abs(m['t'] - centre) > reach
    assert far.sum() > 1000 and not changed[far].any()


def test_class_choice_and_weights() -> None:
    rng = np.random.default_rng(150)
    assert {sample_scene(rng, class_weights={'crack': 1.0}).defect_class for _ in range(10)} == {'crack'}
    drawn = {sample_scene(rng).defect_class for _ in range(200)}
    assert drawn == set(DEFAULT_CLASS_NAMES)
    for name in DEFAULT_CLASS_NAMES:
        frame = render_random(rng, INTR, name)
        assert frame.truth.defect_class == name
        assert (len(frame.truth.regions) > 0) == (name != 'good')
        assert all(r.defect_class == name for r in frame.truth.regions)


def test_bad_options_are_refused_with_a_reason() -> None:
    rng = np.random.default_rng(160)
    with pytest.raises(UnknownClassError, match='valid classes'):
        sample_scene(rng, 'burn_through')
    with pytest.raises(UnknownClassError):
        sample_scene(rng, class_weights={'slag': 1.0})
    with pytest.raises(SceneError, match='positive weight'):
        sample_scene(rng, class_weights={'good': 0.0})
    with pytest.raises(SceneError, match='>= 0'):
        sample_scene(rng, class_weights={'good': -1.0})
    with pytest.raises(SceneError, match='noise_scale'):
        sample_scene(rng, noise_scale=-1.0)
    scene = sample_scene(rng, 'good')
    with pytest.raises(SceneError, match='plate_distance_m'):
        dataclasses.replace(scene, plate_distance_m=0.0)
    with pytest.raises(SceneError, match='does not cross'):
        render(dataclasses.replace(scene, seam_offset_mm=5000.0), INTR, rng)


def test_frames_of_one_weld_share_the_bead() -> None:
    rng = np.random.default_rng(170)
    weld = sample_scene(rng, 'porosity')
    other = sample_scene(rng, weld=weld)
    assert all(getattr(other, f) == getattr(weld, f) for f in WELD_LEVEL_FIELDS)
    assert other.seam_angle_deg != weld.seam_angle_deg and other.pits != weld.pits
    assert isinstance(other, SceneParams)


def test_scene_ranges_can_be_replaced_and_are_checked() -> None:
    from weld_vision_ros.simulator.renderer import SCENE_RANGES, SyntheticWeldStream, sample_scene

    pushed = {'plate_distance_m': (0.32, 0.34), 'tilt_deg': (8.0, 9.0), 'bead_width_mm': (13.0, 13.5)}
    rng = np.random.default_rng(5)
    for _ in range(20):
        scene = sample_scene(rng, ranges=pushed)
        assert 0.32 <= scene.plate_distance_m <= 0.34 and 8.0 <= scene.tilt_deg <= 9.0
        assert 13.0 <= scene.bead_width_mm <= 13.5
        lo, hi = SCENE_RANGES['lighting_gain']
        assert lo <= scene.lighting_gain <= hi  # fields not named keep their ranges
    # The default ranges give exactly the frames they gave before ranges could be replaced.
    a = sample_scene(np.random.default_rng(9))
    b = sample_scene(np.random.default_rng(9), ranges=dict(SCENE_RANGES))
    assert a == b
    stream = SyntheticWeldStream(1, ranges=pushed, frames_per_weld=2)
    for _ in range(3):
        frame, _ = stream.next_frame()
        assert 0.32 <= frame.scene.plate_distance_m <= 0.34
    with pytest.raises(SceneError, match="no scene range named 'distance'"):
        sample_scene(rng, ranges={'distance': (0.1, 0.2)})
    with pytest.raises(SceneError, match='low <= high'):
        SyntheticWeldStream(1, ranges={'tilt_deg': (5.0, 1.0)})
