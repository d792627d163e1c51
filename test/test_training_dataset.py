"""weld_training dataset extraction, splits, the torch Dataset and augmentation."""
import json
from collections import defaultdict

import cv2
import numpy as np
import pytest

from test.helpers.training_toy import make_toy_dataset, record_toy_bag, toy_welds
from weld_training.augment import AugmentConfig, AugmentError, Augmenter, class_boosts
from weld_training.bags import iter_bag_frames
from weld_training.dataset import DatasetError, WeldFrames, extract_dataset, load_manifest
from weld_training.splits import SplitError, check_fractions, grouped_stratified_split
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_vision_ros.core.preprocess import PreprocessPreset, preprocess


@pytest.fixture(scope='module')
def toy_ds(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp('ds'), n_per_class=4, frames_per_weld=5)


def test_manifest_provenance_stats_and_files(toy_ds):
    m = load_manifest(toy_ds)
    assert m['class_names'] == list(DEFAULT_CLASS_NAMES)
    assert m['stats']['per_class'] == {c: 20 for c in DEFAULT_CLASS_NAMES}
    assert m['stats']['frames'] == len(m['frames']) == 120 and m['stats']['bags'] == 2
    assert m['stats']['frames_per_s'] > 0
    storages = set()
    for f in m['frames']:
        assert (toy_ds / f['rgb']).is_file() and (toy_ds / f['depth']).is_file()
        assert f['topics']['color'] == '/camera/color/image_raw' and f['stamp_ns'] > 0
        assert f['group'] == f['weld_id'] and f['label_source'] == 'topic'
        storages.add(next(p.suffix for p in (toy_ds.parent / 'bags' / f['bag'].split('/')[-1]).iterdir()
                          if p.suffix in ('.db3', '.mcap')))
    assert storages == {'.db3', '.mcap'}


def test_stored_frames_match_the_bag(toy_ds):
    m = load_manifest(toy_ds)
    first = m['frames'][0]
    bag_frame = next(iter_bag_frames(first['bag']))
    assert bag_frame.stamp_ns == first['stamp_ns']
    ds = WeldFrames(toy_ds, None, PreprocessPreset.for_channels('rgbd', 48))
    rgb, depth = ds.raw(0)
    np.testing.assert_array_equal(rgb, bag_frame.rgb)
    ok = np.isfinite(bag_frame.depth_m)
    np.testing.assert_array_equal(np.isfinite(depth), ok)
    assert np.abs(depth[ok] - bag_frame.depth_m[ok]).max() <= 0.00005 + 1e-7  # 0.1 mm storage units


def test_eval_transform_is_the_shared_preprocess(toy_ds):
    """The training eval tensors are exactly what the ONNX node's preprocess() makes of the frame."""
    for channels in ('rgb', 'rgbd'):
        preset = PreprocessPreset.for_channels(channels, 48)
        ds = WeldFrames(toy_ds, 'val', preset)
        for i in (0, len(ds) - 1):
            x, y = ds[i]
            rgb, depth = ds.raw(i)
            np.testing.assert_array_equal(x.numpy(), preprocess(rgb, depth, preset))
            assert x.shape == (preset.num_channels, 48, 48)
            assert DEFAULT_CLASS_NAMES[y] == ds.frames[i]['label']


def test_splits_grouped_stratified_and_seeded(toy_ds):
    m = load_manifest(toy_ds)
    split_of_group = defaultdict(set)
    for f in m['frames']:
        split_of_group[f['group']].add(f['split'])
    assert all(len(s) == 1 for s in split_of_group.values()), 'a weld straddles splits'
    counts = m['splits']['counts']
    for c in DEFAULT_CLASS_NAMES:
        assert counts['train'][c] > 0 and counts['val'][c] > 0 and counts['test'][c] > 0
    assert m['splits']['seed'] == 0 and m['splits']['fractions'] == {'train': 0.7, 'val': 0.15, 'test': 0.15}


def test_split_function_properties():
    rng = np.random.default_rng(0)
    groups, labels = [], []
    for g in range(60):
        n = int(rng.integers(1, 12))
        groups += [f'g{g}'] * n
        labels += [DEFAULT_CLASS_NAMES[g % 3]] * n
    a = grouped_stratified_split(labels, groups, seed=1)
    assert a == grouped_stratified_split(labels, groups, seed=1)
    assert a != grouped_stratified_split(labels, groups, seed=2)
    by_group = defaultdict(set)
    for g, s in zip(groups, a):
        by_group[g].add(s)
    assert all(len(v) == 1 for v in by_group.values())
    for c in DEFAULT_CLASS_NAMES[:3]:
        n = sum(1 for lab in labels if lab == c)
        share = sum(1 for lab, s in zip(labels, a) if lab == c and s == 'train') / n
        assert 0.55 < share < 0.85, (c, share)
    two = grouped_stratified_split(labels, groups, {'train': 0.8, 'val': 0.2, 'test': 0.0}, seed=0)
    assert set(two) == {'train', 'val'}


def test_split_fraction_errors():
    with pytest.raises(SplitError, match='sum to 1'):
        check_fractions({'train': 0.7, 'val': 0.2, 'test': 0.2})
    with pytest.raises(SplitError, match='valid splits are train, val, test'):
        check_fractions({'train': 0.7, 'validation': 0.3})
    with pytest.raises(SplitError, match='train > 0'):
        check_fractions({'train': 0.0, 'val': 0.5, 'test': 0.5})


def test_refuses_rare_classes_with_a_clear_message(tmp_path):
    rng = np.random.default_rng(7)
    welds = toy_welds(2, 'r', ('good', 'porosity')) + [('r-crack', 'crack')]
    record_toy_bag(tmp_path / 'bag', welds, 4, rng)
    with pytest.raises(DatasetError) as err:
        extract_dataset([tmp_path / 'bag'], tmp_path / 'ds', min_samples_per_class=5, progress=False,
                        log=lambda s: None)
    msg = str(err.value)
    assert "'crack' has 4" in msg and "'gap' has 0" in msg and 'min_samples_per_class=5' in msg
    assert '--classes' in msg and not (tmp_path / 'ds' / 'manifest.json').exists()
    m = extract_dataset([tmp_path / 'bag'], tmp_path / 'ds', class_names=['good', 'porosity'],
                        min_samples_per_class=5, progress=False, log=lambda s: None)
    assert m['stats']['per_class'] == {'good': 8, 'porosity': 8}
    assert m['stats']['skipped'] == {"class 'crack' not selected": 4}
    with pytest.raises(DatasetError, match='already holds a dataset'):
        extract_dataset([tmp_path / 'bag'], tmp_path / 'ds', class_names=['good', 'porosity'],
                        min_samples_per_class=5, progress=False, log=lambda s: None)


def test_max_side_downscales_frames_and_intrinsics(tmp_path):
    rng = np.random.default_rng(8)
    record_toy_bag(tmp_path / 'bag', toy_welds(3, 's', ('good', 'gap')), 2, rng, size=(80, 60))
    m = extract_dataset([tmp_path / 'bag'], tmp_path / 'ds', class_names=['good', 'gap'], min_samples_per_class=2,
                        max_side_px=40, progress=False, log=lambda s: None)
    f = m['frames'][0]
    assert cv2.imread(str(tmp_path / 'ds' / f['rgb'])).shape == (30, 40, 3)
    assert f['intrinsics']['width'] == 40 and f['intrinsics']['k'][0] == pytest.approx(40.0)
    assert json.loads((tmp_path / 'ds' / 'manifest.json').read_text())['source']['max_side_px'] == 40


def _stripes():
    rgb = np.zeros((40, 56, 3), np.uint8)
    depth = np.full((40, 56), 0.3, np.float32)
    rgb[10:18, 5:50] = 255
    depth[10:18, 5:50] = 0.29
    rgb[20:36, 30:34] = 255
    depth[20:36, 30:34] = 0.29
    return rgb, depth


def test_geometric_augmentation_is_identical_on_rgb_and_depth():
    rgb, depth = _stripes()
    aug = Augmenter(AugmentConfig(rotate_deg=40, scale=0.2, shift=0.1, brightness=0, contrast=0, saturation=0,
                                  gamma=0, blur_p=0, noise_std=0))
    for seed in range(8):
        r2, d2 = aug(rgb, depth, 0, np.random.default_rng(seed))
        assert r2.shape == rgb.shape and d2.shape == depth.shape and d2.dtype == np.float32
        raised = d2 < 0.295
        bright = r2[..., 0] > 127
        assert (raised == bright).mean() > 0.97
        assert set(np.unique(d2[np.isfinite(d2)])) <= {np.float32(0.3), np.float32(0.29)}  # nearest sampling


def test_photometric_augmentation_touches_rgb_only():
    rgb, depth = _stripes()
    rgb = (rgb * 0.5 + 60).astype(np.uint8)
    depth[0, 0] = np.nan
    aug = Augmenter(AugmentConfig(hflip=0, vflip=0, rotate_deg=0, scale=0, shift=0, brightness=0.5, noise_std=5))
    r2, d2 = aug(rgb, depth, 0, np.random.default_rng(0))
    np.testing.assert_array_equal(d2, depth)
    assert np.abs(r2.astype(int) - rgb.astype(int)).mean() > 2


def test_rare_classes_are_augmented_harder():
    boosts = class_boosts([400, 100, 25, 0], max_boost=3.0)
    np.testing.assert_allclose(boosts, [1.0, 2.0, 3.0, 3.0])
    aug = Augmenter(AugmentConfig(max_boost=2.0), class_counts=[400, 25])
    assert aug.strength(0) == 1.0 and aug.strength(1) == 2.0
    with pytest.raises(AugmentError, match='valid:'):
        AugmentConfig.from_dict({'rotate': 10})
    with pytest.raises(AugmentError, match='probability'):
        AugmentConfig(hflip=1.5)



def test_depth_perturbations_act_on_the_relief_plane_only():
    rgb, _ = _stripes()
    relief = np.full(rgb.shape[:2], 0.02, np.float32)
    relief[10:18, 5:50] = 0.5  # 2 mm proud at a 4 mm depth range
    relief[0:3, 0:3] = 0.0  # no return stays no return
    quiet = dict(hflip=0, vflip=0, rotate_deg=0, scale=0, shift=0, brightness=0, contrast=0, saturation=0,
                 gamma=0, blur_p=0, noise_std=0)
    noisy = Augmenter(AugmentConfig(**quiet, depth_noise_mm=0.4), depth_range_mm=4.0)
    spread = [np.std(noisy(rgb, relief, 0, np.random.default_rng(s))[1][20:40, :]) for s in range(20)]
    # Noise std is drawn in [0, 0.4 mm] per frame: 0.1 relief units at most (0.4 mm / 4 mm).
    assert 0.0 < max(spread) <= 0.1 * 1.2
    r2, d2 = noisy(rgb, relief, 0, np.random.default_rng(0))
    np.testing.assert_array_equal(r2, rgb)
    quant = Augmenter(AugmentConfig(**quiet, depth_quant_p=1.0, depth_quant_mm=1.0), depth_range_mm=4.0)
    d3 = quant(rgb, relief, 0, np.random.default_rng(1))[1]
    assert len(np.unique(d3)) <= 3 and d3[0, 0] == 0.0  # 0.5, 0.02 and no-return 0: at most three steps
    drop = Augmenter(AugmentConfig(**quiet, depth_dropout=0.3), depth_range_mm=4.0)
    lost = [(drop(rgb, relief, 0, np.random.default_rng(s))[1] == 0).mean() for s in range(10)]
    assert max(lost) > 0.05 and min(lost) >= 9 / relief.size
    gain = Augmenter(AugmentConfig(**quiet, relief_gain=0.3), depth_range_mm=4.0)
    ratio = gain(rgb, relief, 0, np.random.default_rng(3))[1][12, 20] / 0.5
    assert 0.7 <= ratio <= 1.3 and ratio != 1.0
