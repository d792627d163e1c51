"""The rule inspector's core without ROS: plate fit, bead measurement, defect rules, spec.

Two kinds of input: an analytic test surface built here (a tilted plate with a cap-shaped
ridge of known width and height, independent of the renderer), and frames of the
synthetic renderer with their ground truth.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from weld_vision_ros.core.camera import Intrinsics
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_vision_ros.core.debug_view import draw_inspection
from weld_vision_ros.core.frames import FrameError, RGBDFrame
from weld_vision_ros.core.depth import decode_depth, encode_depth_16uc1
from weld_vision_ros.core.measure import MeasureConfig, MeasureConfigError, fit_plate, measure_bead
from weld_vision_ros.core.resolution import detect_depth_step_m, quantization_bias_mm
from weld_vision_ros.core.cascade import CascadeConfig, HybridCascade
from weld_vision_ros.core.results import BeadMeasurement, Verdict
from weld_vision_ros.core.rules import (CONFIDENCE_FEATURES, Inspection, RuleConfig, RuleConfigError,
                                        calibrated_confidence, class_probabilities, groove_depth_mm, inspect_frame)
from weld_vision_ros.core.spec import WeldSpec, WeldSpecError, evaluate_spec
from weld_vision_ros.simulator.renderer import (Crack, GapSegment, Pit, UndercutSegment, d4xx_16uc1,
                                            default_intrinsics, render, sample_scene)

INTR = default_intrinsics(640, 480)


# --- an analytic scene, independent of the renderer ------------------------------------------

def ridge_frame(width_mm: float = 8.0, height_mm: float = 2.0, exponent: float = 1.0,
                angle_deg: float = 30.0, tilt_deg: float = 4.0, distance_m: float = 0.22,
                noise_mm: float = 0.05, intr: Intrinsics = INTR, seed: int = 0) -> RGBDFrame:
    """A tilted plate with a straight ridge e = H (1 - u^2)^p across the image.

    Each pixel ray meets the plate at plate coordinates (s, t); the depth is that of the
    point on the ray at elevation e(t) above the plate (as a depth camera sees a relief).
    """
    rng = np.random.default_rng(seed)
    tau, phi = math.radians(tilt_deg), math.radians(35.0)
    n = np.array([math.sin(tau) * math.cos(phi), math.sin(tau) * math.sin(phi), -math.cos(tau)])
    d = distance_m * 1000.0 * math.cos(tau)               # perpendicular camera-plate distance [mm]
    theta = math.radians(angle_deg)
    g = np.array([math.cos(theta), math.sin(theta), 0.0])
    g -= g.dot(n) * n
    g /= np.linalg.norm(g)
    b = np.cross(n, g)
    origin = np.array([0.0, 0.0, distance_m * 1000.0])
    xn = (np.arange(intr.width) - intr.cx) / intr.fx
    yn = (np.arange(intr.height) - intr.cy) / intr.fy
    rays = np.stack(np.broadcast_arrays(xn[None, :], yn[:, None], np.ones((1, 1))), axis=-1)
    z0 = d / -(rays @ n)                                   # plate hit along each ray [mm]
    hit = rays * z0[..., None]
    t = (hit - origin) @ b
    u = 2.0 * t / width_mm
    elev = height_mm * np.maximum(1.0 - u * u, 0.0) ** exponent
    depth_mm = z0 * (1.0 - elev / d) + rng.normal(0.0, noise_mm, z0.shape)
    gray = np.where(elev > 0, 170, 90).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    return RGBDFrame(rgb=rgb, depth_m=(depth_mm / 1000.0).astype(np.float32), intrinsics=intr)


def test_plate_fit_recovers_a_tilted_plane_despite_outliers() -> None:
    rng = np.random.default_rng(3)
    normal = np.array([0.08, -0.05, -1.0])
    normal /= np.linalg.norm(normal)
    distance = 0.25
    pts = rng.uniform(-0.1, 0.1, (4000, 3))
    pts -= np.outer(pts @ normal - distance, normal)          # onto the plane
    pts += np.outer(rng.normal(0.0, 0.0001, 4000), normal)   # 0.1 mm noise
    pts[:600] -= np.outer(rng.uniform(0.002, 0.004, 600), normal)   # 15 %: a raised bead
    plate = fit_plate(pts)
    assert abs(float(plate.normal @ normal)) > 0.99999
    assert plate.distance_m == pytest.approx(distance, abs=2e-5)
    assert plate.noise_mm == pytest.approx(0.1, rel=0.25)
    assert 0.8 < plate.inlier_fraction < 0.9


@pytest.mark.parametrize('width_mm, height_mm, exponent, angle_deg', [
    (8.0, 2.0, 1.0, 30.0), (5.5, 1.2, 1.4, -75.0), (11.0, 3.0, 0.65, 88.0), (7.0, 1.6, 0.9, 0.0)])
def test_analytic_ridge_is_measured_in_millimetres(width_mm, height_mm, exponent, angle_deg) -> None:
    frame = ridge_frame(width_mm, height_mm, exponent, angle_deg)
    geom = measure_bead(frame)
    stat = geom.chunk_stat
    assert geom.chunk_width_mm[stat].mean() == pytest.approx(width_mm, abs=0.15)
    assert geom.chunk_height_mm[stat].mean() == pytest.approx(height_mm, abs=0.06)
    assert geom.profile_exponent == pytest.approx(exponent, abs=0.15)
    diff = (geom.seam_angle_deg - angle_deg + 90.0) % 180.0 - 90.0    # directions are modulo 180
    assert abs(diff) < 1.5


def test_measurement_does_not_depend_on_resolution() -> None:
    low = inspect_frame(ridge_frame(intr=default_intrinsics(640, 480))).measurement
    high = inspect_frame(ridge_frame(intr=default_intrinsics(1280, 720))).measurement
    assert high.width_mm == pytest.approx(low.width_mm, abs=0.15)
    assert high.height_mm == pytest.approx(low.height_mm, abs=0.06)
    assert high.seam_length_mm == pytest.approx(low.seam_length_mm, rel=0.05)


# --- synthetic frames with ground truth --------------------------------------------------------

def synthetic(seed: int, defect_class: str, noise_scale: float = 1.0, intr: Intrinsics = INTR, **changes):
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, defect_class, noise_scale=noise_scale)
    if changes:
        scene = dataclasses.replace(scene, **changes)
    f = render(scene, intr, rng)
    return RGBDFrame(f.rgb, f.depth_m, f.intrinsics, stamp_ns=seed), f


@pytest.mark.parametrize('seed', [31, 32, 33, 34, 35])
def test_good_welds_are_measured_against_ground_truth(seed: int) -> None:
    frame, truth_frame = synthetic(seed, 'good')
    truth = truth_frame.truth
    result = inspect_frame(frame)
    bead, verdict = result.measurement, result.verdict
    assert bead.valid, bead.reason
    assert bead.width_mm == pytest.approx(truth.width_mm, abs=0.25)
    assert bead.height_mm == pytest.approx(truth.height_mm, abs=0.12)
    assert bead.width_min_mm <= bead.width_mm <= bead.width_max_mm
    assert bead.height_max_mm >= bead.height_mm
    assert bead.seam_length_mm == pytest.approx(truth_frame.seam_length_mm, rel=0.03)
    diff = (bead.seam_angle_deg - truth.seam_angle_deg + 90.0) % 180.0 - 90.0
    assert abs(diff) < 1.0
    assert bead.undercut_depth_mm == 0.0
    assert verdict.defect_class == 'good' and verdict.confidence > 0.7
    assert verdict.class_names == DEFAULT_CLASS_NAMES
    assert sum(verdict.probabilities) == pytest.approx(1.0)
    assert verdict.confidence == pytest.approx(max(verdict.probabilities))
    assert verdict.method == 'rule' and verdict.regions == ()


def _overlaps(region, truth_regions) -> bool:
    for t in truth_regions:
        if (region.x_px < t.x_px + t.width_px and t.x_px < region.x_px + region.width_px
                and region.y_px < t.y_px + t.height_px and t.y_px < region.y_px + region.height_px):
            return True
    return False


CLEAR = {
    'porosity': dict(pits=(Pit(0.4, 0.0, 1.0, 1.0), Pit(0.7, 0.5, 0.8, 0.8))),
    'crack': dict(cracks=(Crack(0.5, 0.0, 3.0, 15.0, 0.5, 0.6, 0.2, 0.1, 0.0),)),
    'undercut': dict(undercuts=(UndercutSegment(1, 0.2, 0.6, 0.8, 1.5),)),
    'gap': dict(gaps=(GapSegment(0.5, 20.0, 0.0, 1.5, 2.0),)),
    'spatter': {},
}


@pytest.mark.parametrize('defect_class', sorted(CLEAR))
@pytest.mark.parametrize('seed', [51, 52])
def test_each_defect_class_is_found_and_located_on_clear_examples(defect_class: str, seed: int) -> None:
    frame, truth_frame = synthetic(seed, defect_class, noise_scale=0.5, **CLEAR[defect_class])
    result = inspect_frame(frame)
    bead, verdict = result.measurement, result.verdict
    assert bead.valid, bead.reason
    assert verdict.defect_class == defect_class, verdict.probabilities
    assert verdict.confidence > 0.7
    mine = [r for r in verdict.regions if r.defect_class == defect_class]
    assert mine, 'no region for the verdict'
    assert any(_overlaps(r, truth_frame.truth.regions) for r in mine)
    for r in mine:
        assert 0 <= r.x_px < INTR.width and 0 <= r.y_px < INTR.height
        assert 0.0 <= r.position_along_seam_mm <= bead.seam_length_mm + 5.0
        assert 0.0 < r.confidence <= 1.0
    if defect_class == 'undercut':
        assert bead.undercut_depth_mm == pytest.approx(0.8, abs=0.25)
    else:
        assert bead.undercut_depth_mm == 0.0
    if defect_class == 'gap':     # the gap is left out of the bead statistics, as in the truth
        assert bead.width_mm == pytest.approx(truth_frame.truth.width_mm, abs=0.3)


@pytest.mark.parametrize('width_mm, depth_mm, pixel_mm, flattened', [
    (0.9, 0.6, 0.55, True), (1.8, 0.4, 0.35, False), (1.2, 1.0, 0.6, True)])
def test_groove_depth_undoes_the_pixel_blur(width_mm: float, depth_mm: float, pixel_mm: float,
                                            flattened: bool) -> None:
    # what a camera with `pixel_mm` pixels sees of a half-sine groove, averaged over pixel phases
    step = 0.25
    at = np.arange(0.0, 2.8, step)
    phases = np.linspace(0.0, pixel_mm, 9, endpoint=False)
    seen = []
    for phase in phases:
        px = np.arange(-phase, 4.0, pixel_mm)
        groove = np.where((px >= 0) & (px <= width_mm), depth_mm * np.sin(np.pi * np.clip(px / width_mm, 0, 1)), 0.0)
        seen.append(np.interp(at, px, groove))
    profile = np.mean(seen, axis=0)
    if flattened:                                    # narrow groove, coarse pixels: too shallow raw
        assert profile.max() < 0.9 * depth_mm
    assert groove_depth_mm(profile, step, pixel_mm) == pytest.approx(depth_mm, rel=0.1)


def test_a_bare_plate_has_no_bead_and_no_verdict() -> None:
    frame, f = synthetic(61, 'good')
    plate = np.where(np.isfinite(f.depth_m), np.float32(f.truth.plate_distance_m), np.float32(np.nan))
    result = inspect_frame(RGBDFrame(f.rgb, plate.astype(np.float32), f.intrinsics))
    bead, verdict = result.measurement, result.verdict
    assert not bead.valid and bead.reason.startswith('no bead in view')
    assert verdict is None


def test_unusable_depth_gives_a_reason_not_an_exception() -> None:
    frame, f = synthetic(62, 'good')
    empty = np.full(f.depth_m.shape, np.nan, np.float32)
    result = inspect_frame(RGBDFrame(f.rgb, empty, f.intrinsics))
    bead, verdict = result.measurement, result.verdict
    assert not bead.valid and 'valid' in bead.reason and verdict is None
    noise = np.random.default_rng(0).uniform(0.1, 2.0, f.depth_m.shape).astype(np.float32)
    result = inspect_frame(RGBDFrame(f.rgb, noise, f.intrinsics))
    bead, verdict = result.measurement, result.verdict
    assert not bead.valid and verdict is None


def test_invalid_inputs_and_settings_raise_specific_errors() -> None:
    rgb = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(FrameError, match='differ in size'):
        RGBDFrame(rgb, np.zeros((240, 320), np.float32), INTR)
    with pytest.raises(FrameError, match='float32'):
        RGBDFrame(rgb, np.zeros((480, 640), np.uint16), INTR)
    with pytest.raises(RuleConfigError, match='mark_extent_darkness'):
        RuleConfig(mark_darkness=0.3, mark_extent_darkness=0.5)
    with pytest.raises(RuleConfigError, match='spatter_min_count'):
        RuleConfig(spatter_min_count=0)
    with pytest.raises(MeasureConfigError, match='gap_height_ratio'):
        MeasureConfig(gap_height_ratio=1.5)
    with pytest.raises(WeldSpecError, match='tolerances'):
        WeldSpec(width_tolerance_mm=0.0)


def test_spec_scores_distance_from_target_in_tolerance_units() -> None:
    spec = WeldSpec(target_width_mm=8.0, width_tolerance_mm=2.0, target_height_mm=2.0,
                    height_tolerance_mm=1.0, max_undercut_mm=0.5)
    on = evaluate_spec(spec, 8.0, 2.0, 0.0)
    assert on.within_tolerance and on.score == pytest.approx(100.0)
    edge = evaluate_spec(spec, 10.0, 2.0, 0.0)
    assert edge.within_tolerance and edge.score == pytest.approx(50.0) and edge.worst == 'width'
    out = evaluate_spec(spec, 8.0, 3.5, 0.0)
    assert not out.within_tolerance and out.score == pytest.approx(25.0) and out.worst == 'height'
    undercut = evaluate_spec(spec, 8.0, 2.0, 0.75)
    assert not undercut.within_tolerance and undercut.worst == 'undercut'
    assert evaluate_spec(spec, 30.0, 2.0, 0.0).score == 0.0


def test_measured_bead_is_checked_against_the_configured_spec() -> None:
    frame = ridge_frame(width_mm=8.0, height_mm=2.0)
    result = inspect_frame(frame, RuleConfig(spec=WeldSpec(target_width_mm=8.0, target_height_mm=2.0)))
    ok, _ = result.measurement, result.verdict
    assert ok.within_tolerance and ok.score > 90.0
    result = inspect_frame(frame, RuleConfig(spec=WeldSpec(target_width_mm=12.0, width_tolerance_mm=1.0)))
    wide, _ = result.measurement, result.verdict
    assert not wide.within_tolerance and wide.score < 10.0


def test_probabilities_follow_the_rules_evidence() -> None:
    quiet = class_probabilities({}, 3.0)
    assert quiet[0] == pytest.approx(1.0)
    clear = class_probabilities({'crack': 3.0}, 3.0)
    assert int(np.argmax(clear)) == DEFAULT_CLASS_NAMES.index('crack') and max(clear) > 0.9
    torn = class_probabilities({'crack': 2.0, 'porosity': 2.0}, 3.0)
    assert max(torn) < 0.7                        # two rules disagree: low confidence
    at_threshold = class_probabilities({'gap': 1.0}, 3.0)
    assert max(at_threshold) == pytest.approx(0.5)
    for probs in (quiet, clear, torn, at_threshold):
        assert sum(probs) == pytest.approx(1.0) and len(probs) == len(DEFAULT_CLASS_NAMES)


def test_debug_view_draws_on_a_copy() -> None:
    frame, _ = synthetic(53, 'porosity', noise_scale=0.5, **CLEAR['porosity'])
    result = inspect_frame(frame)
    before = frame.rgb.copy()
    img = draw_inspection(frame.rgb, result)
    assert img.shape == frame.rgb.shape and img.dtype == np.uint8
    assert np.array_equal(frame.rgb, before)
    assert np.count_nonzero(np.any(img != frame.rgb, axis=2)) > 1000
    no_bead = inspect_frame(RGBDFrame(frame.rgb, np.full(frame.depth_m.shape, np.nan, np.float32),
                                      frame.intrinsics))
    assert draw_inspection(frame.rgb, no_bead).shape == frame.rgb.shape


# --- depth resolution: millimetre depth (16UC1) ----------------------------------------------

def test_quantization_bias_follows_the_dither_of_the_noise() -> None:
    # plain rounding's sawtooth has a first harmonic of 1/pi step; noise of half a step removes nearly all
    assert quantization_bias_mm(1.0, 0.0) == pytest.approx(1.0 / math.pi)
    assert quantization_bias_mm(1.0, 0.5) < 0.01
    assert quantization_bias_mm(1.0, 0.1) > quantization_bias_mm(1.0, 0.3) > quantization_bias_mm(1.0, 0.4)
    assert quantization_bias_mm(0.0, 0.0) == 0.0
    # the bias is what averaging cannot remove: the mean of many rounded noisy samples of one value
    rng = np.random.default_rng(0)
    for noise in (0.1, 0.2, 0.3):
        worst = max(abs(float(np.mean(np.round(x + rng.normal(0.0, noise, 200_000)))) - x)
                    for x in np.linspace(0.0, 1.0, 21))
        # the first harmonic bounds the error to within its own next term (exp(-8 pi^2 r^2))
        assert worst == pytest.approx(quantization_bias_mm(1.0, noise), abs=0.02 + 0.6 * math.exp(-8 * math.pi ** 2 * noise ** 2))


def test_depth_step_is_recognised_in_rounded_values_only() -> None:
    rng = np.random.default_rng(1)
    metres = rng.uniform(0.18, 0.22, 3000).astype(np.float32)
    assert detect_depth_step_m(metres) == 0.0
    assert detect_depth_step_m((np.round(metres * 1000.0) / 1000.0).astype(np.float32)) == pytest.approx(0.001)
    assert detect_depth_step_m((np.round(metres * 10000.0) / 10000.0).astype(np.float32)) == pytest.approx(0.0001)


def _d4xx(seed: int, defect_class: str, subpixel: float, **changes):
    rng = np.random.default_rng(seed)
    scene = d4xx_16uc1(dataclasses.replace(sample_scene(rng, defect_class), **changes), subpixel)
    f = render(scene, INTR, rng)
    units = encode_depth_16uc1(f.depth_m)               # what the driver sends
    depth = decode_depth(units, '16UC1', 0.001)         # what the node decodes
    return RGBDFrame(f.rgb, depth, INTR, depth_unit_m=0.001), f


def test_millimetre_depth_noise_is_estimated_apart_from_its_rounding() -> None:
    for subpixel in (0.06, 0.12):
        frame, f = _d4xx(71, 'good', subpixel, plate_distance_m=0.28, tilt_deg=3.0)
        res = measure_bead(frame).resolution
        assert res.step_mm == pytest.approx(1.0)
        # the plate residual includes rounding (1/12 step^2); the estimate takes it out again
        assert res.noise_mm == pytest.approx(f.scene.noise_mm, rel=0.15)
        assert res.residual_mm > res.noise_mm


def test_dithered_millimetre_depth_still_measures_below_one_unit() -> None:
    # 0.3 mm of stereo noise at 0.28 m dithers 1 mm steps: the seam's mean cross-section
    # recovers the width to a fraction of a unit (the physical bound here: 0.35 mm)
    frame, f = _d4xx(72, 'good', 0.09, plate_distance_m=0.28, tilt_deg=3.0, bead_height_mm=2.5,
                     bead_width_mm=8.0)
    result = inspect_frame(frame)
    assert result.geometry.resolution.bias_mm < 0.1
    assert result.measurement.valid, result.measurement.reason
    assert result.measurement.width_mm == pytest.approx(f.truth.width_mm, abs=0.35)
    assert result.verdict.defect_class == 'good'


def test_undithered_millimetre_depth_says_what_it_cannot_check_instead_of_calling_defects() -> None:
    # 0.05 mm of noise under 1 mm steps: nothing dithers the steps
    for seed in (73, 74, 75):
        frame, f = _d4xx(seed, 'good', 0.03, plate_distance_m=0.2, tilt_deg=2.0, bead_height_mm=2.0)
        result = inspect_frame(frame)
        verdict = result.verdict
        assert result.geometry.resolution.bias_mm > 0.2
        assert verdict.defect_class in ('good', '')
        if verdict.inspected:
            assert 'undercut' in verdict.checks_not_made
        else:
            assert verdict.status_reason == 'depth_unresolved'
        if not result.measurement.valid:
            assert result.measurement.reason.startswith('depth_unresolved')


def test_a_shallow_undercut_under_millimetre_steps_is_reported_as_not_checked() -> None:
    undercut = UndercutSegment(side=1, start_fraction=0.2, length_fraction=0.6, depth_mm=0.15, width_mm=1.2)
    frame, f = _d4xx(76, 'undercut', 0.03, plate_distance_m=0.2, undercuts=(undercut,))
    verdict = inspect_frame(frame).verdict
    assert verdict.defect_class != 'undercut'
    assert not verdict.inspected or 'undercut' in verdict.checks_not_made


# --- calibrated confidence and the hybrid cascade ---------------------------------------------

def test_confidence_is_a_logistic_of_the_decision_and_the_probabilities_stay_consistent() -> None:
    frame, _ = synthetic(31, 'good')
    plain = RuleConfig(confidence_bias=0.0, confidence_w_logit=1.0, confidence_w_margin=0.0,
                       confidence_w_competing=0.0, confidence_w_good=0.0, confidence_w_image_noise=0.0,
                       confidence_w_depth_bias=0.0, confidence_w_unchecked=0.0, confidence_w_brightness=0.0,
                       confidence_w_strength=0.0, confidence_w_depth_noise=0.0,
                       confidence_w_width_uncertainty=0.0)
    raw = inspect_frame(frame, plain)
    # logit weight 1 and nothing else: the winner's probability itself (the uncalibrated rules)
    assert raw.verdict.confidence == pytest.approx(max(raw.verdict.probabilities), abs=1e-9)
    assert len(raw.confidence_features) == len(CONFIDENCE_FEATURES)
    calibrated = inspect_frame(frame, RuleConfig())
    v = calibrated.verdict
    assert v.confidence == pytest.approx(calibrated_confidence(calibrated.confidence_features, RuleConfig()))
    assert v.probabilities[v.class_names.index(v.defect_class)] == pytest.approx(v.confidence)
    assert sum(v.probabilities) == pytest.approx(1.0)
    # a frame whose depth is rounded without dither is less certain than the same frame in 32FC1
    rounded, _ = _d4xx(31, 'good', 0.03, plate_distance_m=0.2, tilt_deg=2.0)
    unsure = inspect_frame(rounded).verdict
    assert not unsure.inspected or unsure.confidence < v.confidence


class _Model:
    version = 'stub'

    def __init__(self) -> None:
        self.calls = 0

    def classify(self, frame, seam=None) -> Verdict:
        self.calls += 1
        probs = (0.9, 0.02, 0.02, 0.02, 0.02, 0.02)
        return Verdict('good', 0.9, DEFAULT_CLASS_NAMES, probs, method='ml', model_version='stub')


def test_hybrid_asks_the_model_where_the_depth_cannot_resolve_the_bead_never_where_there_is_none() -> None:
    unresolved = Verdict.not_inspected('depth_unresolved', 'depth_unresolved: a 0.9 mm crown under 1 mm steps',
                                       DEFAULT_CLASS_NAMES, 'rule')
    for verdict, asked in ((unresolved, True), (None, False)):
        model = _Model()
        bead = BeadMeasurement.invalid('depth_unresolved: ...' if verdict else 'no bead in view: nothing stands above')
        cascade = HybridCascade(lambda f: Inspection(bead, verdict, None, ()), CascadeConfig('hybrid'), model)
        result = cascade.run(None)
        assert (model.calls == 1) == asked
        if asked:
            assert result.final.defect_class == 'good' and result.final.method == 'hybrid'
        else:
            assert not result.final.inspected and result.final.status_reason == 'no_bead'


def test_a_low_bead_hidden_by_millimetre_noise_is_unresolved_not_absent() -> None:
    # 0.9 mm of stereo noise (0.34 m) lifts the segmentation threshold over a 0.9 mm bead: the rules
    # cannot tell it from the plate, and say that instead of 'no bead in view'
    frame, f = _d4xx(77, 'good', 0.16, plate_distance_m=0.34, bead_height_mm=0.9, bead_width_mm=8.0)
    result = inspect_frame(frame)
    assert result.verdict is not None and not result.verdict.inspected
    assert result.verdict.status_reason == 'depth_unresolved'
    assert result.measurement.reason.startswith('depth_unresolved: no bead in view')
    # the same scene in 32FC1 with little noise: the bead is there and measured
    clean, _ = synthetic(77, 'good', plate_distance_m=0.34, bead_height_mm=0.9, bead_width_mm=8.0, noise_mm=0.02)
    assert inspect_frame(clean).measurement.valid
