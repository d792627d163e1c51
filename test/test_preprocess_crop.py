"""The seam-aligned crop of the shared preprocessing: geometry, the no-seam fallback, old
model metadata, and training and the ONNX classifier feeding a model the same tensor."""
import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from test.helpers.onnx_models import export_graph, with_metadata
from weld_vision_ros.core.camera import Intrinsics
from weld_vision_ros.core.frames import RGBDFrame
from weld_vision_ros.core.model_contract import ModelContract
from weld_vision_ros.core.onnx_classifier import OnnxClassifier, load_classifier
from weld_vision_ros.core.preprocess import (CROP_FRAME, PreprocessError, PreprocessPreset, crop_frame,
                                             preprocess, preprocess_with_info)
from weld_vision_ros.simulator.renderer import default_intrinsics, render, sample_scene

CLASSES = ('good', 'porosity', 'undercut', 'spatter', 'gap', 'crack')
SEAM = replace(PreprocessPreset.for_channels('rgbd'), input_width=256, input_height=32, crop='seam',
               strip_length_mm=200.0, strip_width_mm=25.0, depth_range_mm=4.0)


def synthetic(seed: int, angle_deg: float, defect_class: str = 'good', w: int = 320, h: int = 240):
    rng = np.random.default_rng(seed)
    scene = replace(sample_scene(rng, defect_class=defect_class), seam_angle_deg=angle_deg,
                    seam_offset_mm=0.0, meander_amplitude_mm=0.0)
    return render(scene, default_intrinsics(w, h), rng)


@pytest.mark.parametrize('angle_deg', [-70.0, -20.0, 0.0, 35.0, 80.0])
def test_seam_at_any_angle_becomes_a_horizontal_bead_in_the_middle_of_the_strip(angle_deg):
    f = synthetic(3, angle_deg)
    c = crop_frame(f.rgb, f.depth_m, SEAM, f.intrinsics)
    assert c.info.seam_found and c.info.reason == ''
    assert c.info.seam_angle_deg == pytest.approx(f.truth.seam_angle_deg, abs=1.0)
    assert c.rgb.shape == (32, 256, 3) and c.rgb.dtype == np.uint8
    assert c.relief.shape == (32, 256) and np.isfinite(c.relief).all()
    # Columns where the bead is in the image: its crown is on the middle rows all along.
    covered = c.relief.max(axis=0) > 0.2
    assert covered.sum() > 100
    crown_rows = np.argmax(c.relief[:, covered], axis=0)
    assert np.abs(crown_rows - 15.5).max() <= 3
    # Relief is the height above the fitted plate: the plate on both sides is near 0.
    plate = np.concatenate([c.relief[:3, covered], c.relief[-3:, covered]])
    assert np.abs(np.median(plate)) < 0.05
    # Fixed metric scale: the bead's toe-to-toe width in rows matches the truth in mm.
    width_rows = (c.relief[:, covered] > 0.03).sum(axis=0)
    mm_per_row = SEAM.strip_width_mm / SEAM.input_height
    assert np.median(width_rows) * mm_per_row == pytest.approx(f.truth.width_mm, abs=2.5 * mm_per_row)


def test_the_strip_scale_does_not_depend_on_the_camera_distance():
    widths = []
    for distance_m in (0.16, 0.28):
        rng = np.random.default_rng(4)
        scene = replace(sample_scene(rng, defect_class='good'), seam_angle_deg=10.0, plate_distance_m=distance_m,
                        seam_offset_mm=0.0, meander_amplitude_mm=0.0, width_variation_mm=0.0)
        f = render(scene, default_intrinsics(320, 240), rng)
        c = crop_frame(f.rgb, f.depth_m, SEAM, f.intrinsics)
        covered = c.relief.max(axis=0) > 0.2
        widths.append(np.median((c.relief[:, covered] > 0.03).sum(axis=0)))
    assert abs(widths[0] - widths[1]) <= 1


def test_no_seam_falls_back_to_the_centre_strip_and_says_so():
    h, w = 120, 160
    intr = Intrinsics(150.0, 150.0, w / 2, h / 2, w, h)
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    flat = np.full((h, w), 0.25, np.float32)
    x, info = preprocess_with_info(rgb, flat, SEAM, intr)
    assert not info.seam_found and 'no seam' in info.reason
    assert x.shape == (4, 32, 256) and np.isfinite(x).all()
    # Relief above the fallback plane (the median depth): a flat plate is 0 everywhere.
    assert np.allclose(x[3] * SEAM.std[3] + SEAM.mean[3], 0.0, atol=1e-5)
    # No depth return at all: still a strip, still no exception.
    x, info = preprocess_with_info(rgb, np.full((h, w), np.nan, np.float32), SEAM, intr)
    assert not info.seam_found and 'no depth' in info.reason and np.isfinite(x).all()


def test_seam_crop_needs_intrinsics_and_depth_even_for_rgb():
    f = synthetic(5, 20.0, w=160, h=120)
    rgb_seam = replace(PreprocessPreset.for_channels('rgb'), crop='seam', input_width=128, input_height=32)
    assert rgb_seam.needs_depth
    with pytest.raises(PreprocessError, match='intrinsics'):
        preprocess(f.rgb, f.depth_m, rgb_seam)
    with pytest.raises(PreprocessError, match='depth'):
        preprocess(f.rgb, None, rgb_seam, f.intrinsics)
    assert preprocess(f.rgb, f.depth_m, rgb_seam, f.intrinsics).shape == (3, 32, 128)
    with pytest.raises(PreprocessError, match='crop'):
        replace(rgb_seam, crop='strip')


def test_metadata_without_crop_loads_as_the_whole_frame_preprocessing():
    old = {'input_height': 48, 'input_width': 64, 'channels': 'rgbd', 'mean': [0.485, 0.456, 0.406, 0.0],
           'std': [0.229, 0.224, 0.225, 0.5], 'depth_range_mm': 5.0}
    meta = {'weld.class_names': json.dumps(list(CLASSES)), 'weld.preprocess': json.dumps(old),
            'weld.input_name': 'image', 'weld.output_name': 'logits', 'weld.output_kind': 'logits',
            'weld.model_version': 'old-1'}
    preset = ModelContract.from_metadata(meta).preprocess
    assert preset.crop == CROP_FRAME and preset.needs_depth  # rgbd still reads depth
    f = synthetic(6, 30.0, w=160, h=120)
    x = preprocess(f.rgb, f.depth_m, preset)          # no intrinsics needed, as before
    # Exactly the earlier definition: the resized frame, relief above the median depth.
    rgb = cv2.resize(f.rgb, (64, 48), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    finite = np.isfinite(f.depth_m)
    relief = np.clip((np.median(f.depth_m[finite]) - f.depth_m) * 1000.0 / 5.0, -1, 1)
    relief = cv2.resize(np.where(finite, relief, 0).astype(np.float32), (64, 48), interpolation=cv2.INTER_AREA)
    want = (np.dstack([rgb, relief]).transpose(2, 0, 1) - np.array(old['mean'], np.float32)[:, None, None]) \
        / np.array(old['std'], np.float32)[:, None, None]
    np.testing.assert_allclose(x, want, atol=1e-6)
    assert PreprocessPreset.from_dict(SEAM.to_dict()) == SEAM


def test_training_eval_transform_and_onnx_classifier_give_identical_tensors(tmp_path):
    """A recorded synthetic bag -> dataset -> eval tensor equals the node classifier's input."""
    from weld_training.bags import iter_bag_frames
    from weld_training.dataset import WeldFrames, extract_dataset
    from weld_vision_ros.simulator.sim_record import RecordOptions, record

    record(RecordOptions(out=tmp_path / 'bag', frames=12, seed=7, frames_per_weld=2, width=320, height=240,
                         storage='sqlite3', depth_encoding='32FC1'))
    extract_dataset([tmp_path / 'bag'], tmp_path / 'ds', min_samples_per_class=1, progress=False,
                    class_names=sorted({f.label for f in iter_bag_frames(tmp_path / 'bag')}),
                    fractions={'train': 1.0, 'val': 0.0, 'test': 0.0}, log=lambda _: None)
    ds = WeldFrames(tmp_path / 'ds', None, SEAM)
    classifier = OnnxClassifier(session=None, contract=ModelContract(
        class_names=tuple(ds.class_names), preprocess=SEAM, input_name='image', output_name='logits',
        output_kind='logits', model_version='t'), info=None)
    bag_frames = list(iter_bag_frames(tmp_path / 'bag'))
    for i in range(len(ds)):
        x, _ = ds[i]
        rgb, depth = ds.raw(i)
        frame = RGBDFrame(rgb, depth, bag_frames[i].intrinsics)
        np.testing.assert_array_equal(x.numpy(), classifier.input_tensor(frame)[0])
        assert ds.cropped(i).info.seam_found


def test_classifier_counts_frames_without_a_seam(tmp_path):
    preset = replace(SEAM, input_width=64, input_height=64)
    graph = export_graph(channels=4, input_size=64)
    meta = ModelContract(class_names=CLASSES, preprocess=preset, input_name='image', output_name='logits',
                         output_kind='logits', model_version='seam-1').to_metadata()
    (tmp_path / 'seam.onnx').write_bytes(with_metadata(graph, meta))
    clf = load_classifier('seam.onnx', models_dir=str(tmp_path))
    assert clf.seam_not_found == 0          # the warm-up frames do not count
    h, w = 120, 160
    flat = RGBDFrame(np.full((h, w, 3), 120, np.uint8), np.full((h, w), 0.25, np.float32),
                     Intrinsics(150.0, 150.0, w / 2, h / 2, w, h))
    verdict = clf.classify(flat)
    assert verdict.defect_class in CLASSES and clf.seam_not_found == 1 and 'no seam' in clf.last_seam_problem
    f = synthetic(8, -40.0, w=w, h=h)
    clf.classify(RGBDFrame(f.rgb, f.depth_m, f.intrinsics))
    assert clf.seam_not_found == 1


def test_the_model_input_depends_on_its_contract_only_and_takes_over_the_rules_seam_when_found_alike():
    """Live re-tuning of measure.* changes where the rules find the seam, never the model's
    strip: the strip uses the seam finder its preset (its ONNX contract) records, and the
    rule stage's location is reused only when it was found with exactly those settings."""
    from weld_vision_ros.core.measure import MeasureConfig
    from weld_vision_ros.core.preprocess import LEGACY_SEAM_FINDER, reuses_seam
    from weld_vision_ros.core.rules import RuleConfig, inspect_frame
    f = synthetic(21, 17.0, 'porosity')
    frame = RGBDFrame(f.rgb, f.depth_m, f.intrinsics)
    alone, info = preprocess_with_info(frame.rgb, frame.depth_m, SEAM, frame.intrinsics)
    assert info.seam_found

    default_seam = inspect_frame(frame, RuleConfig()).geometry.location
    assert reuses_seam(SEAM, default_seam)
    shared, _ = preprocess_with_info(frame.rgb, frame.depth_m, SEAM, frame.intrinsics, default_seam)
    assert np.array_equal(shared, alone), 'the strip cut from the rules\' seam differs from the strip alone'

    retuned_cfg = MeasureConfig(plane_inlier_mm=0.9, lowres_width_px=320)   # a finer plate fit
    retuned_seam = inspect_frame(frame, RuleConfig(measure=retuned_cfg)).geometry.location
    assert not reuses_seam(SEAM, retuned_seam)
    assert not np.array_equal(retuned_seam.origin_m, default_seam.origin_m), 'the re-tuning moved nothing'
    given, _ = preprocess_with_info(frame.rgb, frame.depth_m, SEAM, frame.intrinsics, retuned_seam)
    assert np.array_equal(given, alone), 'a re-tuned rule stage changed the model input'

    # A model whose contract records other settings gets its strip from those, both ways.
    other = replace(SEAM, seam_finder=tuple((n, getattr(retuned_cfg, n)) for n, _ in LEGACY_SEAM_FINDER))
    assert reuses_seam(other, retuned_seam)
    own, _ = preprocess_with_info(frame.rgb, frame.depth_m, other, frame.intrinsics)
    reused, _ = preprocess_with_info(frame.rgb, frame.depth_m, other, frame.intrinsics, retuned_seam)
    assert np.array_equal(own, reused) and not np.array_equal(own, alone)


def test_the_seam_finder_travels_in_the_preset_and_old_presets_get_the_legacy_one():
    from weld_vision_ros.core.preprocess import LEGACY_SEAM_FINDER
    d = SEAM.to_dict()
    assert d['seam_finder'] == dict(LEGACY_SEAM_FINDER)
    assert PreprocessPreset.from_dict(json.loads(json.dumps(d))) == SEAM
    old = {k: v for k, v in d.items() if k != 'seam_finder'}
    assert PreprocessPreset.from_dict(old).seam_finder == LEGACY_SEAM_FINDER
    with pytest.raises(PreprocessError, match='seam_finder lacks'):
        PreprocessPreset.from_dict({**d, 'seam_finder': {'plane_inlier_mm': 0.6}})
    with pytest.raises(PreprocessError, match='seam_finder'):
        replace(SEAM, seam_finder=(('plane_inlier_mm', 0.6),))
