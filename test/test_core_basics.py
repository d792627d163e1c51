"""Core building blocks without ROS: intrinsics, depth decoding, stamp sync, preprocessing."""
import numpy as np
import pytest

from weld_vision_ros.core.camera import Intrinsics, IntrinsicsError
from weld_vision_ros.core.depth import DepthError, decode_depth, encode_depth_16uc1
from weld_vision_ros.core.frames import FrameError, RGBDFrame
from weld_vision_ros.core.model_contract import ModelContract, ModelContractError
from weld_vision_ros.core.preprocess import PreprocessError, PreprocessPreset, preprocess
from weld_vision_ros.ros.sync import StampSynchronizer


def test_intrinsics_from_k_and_mm_per_px():
    intr = Intrinsics.from_k([600, 0, 320, 0, 600, 240, 0, 0, 1], 640, 480)
    assert (intr.fx, intr.cy) == (600, 240)
    assert intr.mm_per_px(0.3) == pytest.approx(0.5)
    pts = intr.backproject(np.full((480, 640), 0.3, np.float32))
    assert pts[240, 320] == pytest.approx([0, 0, 0.3])
    with pytest.raises(IntrinsicsError, match='positive'):
        Intrinsics.from_k([0] * 9, 640, 480)


def test_depth_decoding_marks_no_return_as_nan():
    raw = np.array([[0, 250], [300, 65535]], np.uint16)
    d = decode_depth(raw, '16UC1', 0.001)
    assert np.isnan(d[0, 0]) and d[0, 1] == pytest.approx(0.25)
    f = decode_depth(np.array([[0.0, np.inf], [-1.0, 0.2]], np.float32), '32FC1')
    assert np.isnan(f[:, 0]).all() and np.isnan(f[0, 1]) and f[1, 1] == pytest.approx(0.2)
    assert np.array_equal(encode_depth_16uc1(d), raw)
    with pytest.raises(DepthError, match='unsupported depth encoding'):
        decode_depth(raw, 'rgb8')
    with pytest.raises(DepthError, match='uint16'):
        decode_depth(raw.astype(np.float32), '16UC1')


def test_frame_rejects_mismatched_sizes():
    intr = Intrinsics(500, 500, 32, 24, 64, 48)
    RGBDFrame(np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64), np.float32), intr)
    with pytest.raises(FrameError, match='differ in size'):
        RGBDFrame(np.zeros((48, 64, 3), np.uint8), np.zeros((40, 64), np.float32), intr)
    with pytest.raises(FrameError, match='camera_info'):
        RGBDFrame(np.zeros((48, 60, 3), np.uint8), np.zeros((48, 60), np.float32), intr)


def test_sync_exact_pairs_and_counts_unmatched_and_backwards():
    s = StampSynchronizer(tolerance_ns=0, queue_size=2)
    assert s.add_color(100, 'c100') is None
    pair = s.add_depth(100, 'd100')
    assert (pair.color, pair.depth, pair.stamp_ns) == ('c100', 'd100', 100)
    for t in (200, 300, 400):  # no depth for these: the oldest fall out of the queue
        s.add_color(t, f'c{t}')
    assert s.drops['unmatched'] == 1
    assert s.add_depth(400, 'd400').color == 'c400'
    assert s.drops['unmatched'] == 2  # c300 can no longer pair
    s.add_color(150, 'c150')
    assert s.add_depth(150, 'd150') is None
    assert s.drops['stamp_backwards'] == 1


def test_sync_approximate_takes_the_nearest_within_tolerance():
    s = StampSynchronizer(tolerance_ns=5_000_000, queue_size=5)
    s.add_depth(1_000_000_000, 'd0')
    s.add_depth(1_033_000_000, 'd1')
    pair = s.add_color(1_031_000_000, 'c')
    assert pair.depth == 'd1' and pair.skew_ns == 2_000_000
    assert s.add_color(1_100_000_000, 'far') is None


def test_preprocess_shapes_normalisation_and_relief():
    rgb = np.full((48, 64, 3), 255, np.uint8)
    depth = np.full((48, 64), 0.2, np.float32)
    depth[10:20, :] = 0.198  # 2 mm above the rest
    depth[0, 0] = np.nan
    preset = PreprocessPreset.for_channels('rgbd', input_size=32)
    x = preprocess(rgb, depth, preset)
    assert x.shape == (4, 32, 32) and x.dtype == np.float32
    assert x[0].mean() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    relief = x[3] * 0.5  # std of the relief channel is 0.5, mean 0
    assert relief.max() == pytest.approx(2 / 5, abs=0.02)
    assert PreprocessPreset.from_dict(preset.to_dict()) == preset
    with pytest.raises(PreprocessError, match='needs a depth'):
        preprocess(rgb, None, preset)
    with pytest.raises(PreprocessError, match="'rgb' or 'rgbd'"):
        PreprocessPreset(channels='gray')


def test_model_contract_round_trip_and_missing_keys():
    c = ModelContract(class_names=('good', 'crack'), preprocess=PreprocessPreset(),
                      input_name='image', output_name='logits', output_kind='logits',
                      model_version='v1', metrics={'macro_f1': 0.9})
    assert ModelContract.from_metadata(c.to_metadata()) == c
    meta = c.to_metadata()
    del meta['weld.class_names'], meta['weld.preprocess']
    with pytest.raises(ModelContractError, match='weld.class_names, weld.preprocess'):
        ModelContract.from_metadata(meta)


def test_sync_recovers_from_a_frame_stamped_in_the_future():
    """One pair stamped +1 h is a clock jump, not the new floor: later normal frames pair
    again, the jump is counted, a merely late frame is still dropped as stamp_backwards."""
    s = StampSynchronizer(tolerance_ns=0, queue_size=5)
    t0, ms = 1_000_000_000_000, 1_000_000
    assert s.add_color(t0, 'c0') is None and s.add_depth(t0, 'd0') is not None
    hour = 3600 * 1_000_000_000
    s.add_color(t0 + hour, 'cf')
    assert s.add_depth(t0 + hour, 'df') is not None
    emitted = []
    for i in range(1, 6):
        s.add_color(t0 + i * 33 * ms, f'c{i}')
        pair = s.add_depth(t0 + i * 33 * ms, f'd{i}')
        emitted.append(pair is not None)
    assert all(emitted), emitted
    assert s.events['clock_jump'] == 2 and 'clock_jump' not in s.drops  # out, then back: not drops
    s.add_color(t0 + 2 * 33 * ms, 'late')
    assert s.add_depth(t0 + 2 * 33 * ms, 'late') is None
    assert s.drops['stamp_backwards'] == 1


@pytest.mark.parametrize('cx,cy', [(float('nan'), 240.0), (320.0, float('inf')), (float('-inf'), float('nan'))])
def test_camera_info_with_a_non_finite_principal_point_is_refused(cx, cy):
    with pytest.raises(IntrinsicsError, match='principal point'):
        Intrinsics.from_k([600, 0, cx, 0, 600, cy, 0, 0, 1], 640, 480)


def test_unmatched_frames_are_counted_by_the_stream_that_lost_them():
    s = StampSynchronizer(tolerance_ns=0, queue_size=2)
    for k in range(5):  # a dead depth stream: colour frames find no partner
        s.add_color(k * 10**8, 'c')
    assert s.drops['unmatched'] == 3 and s.unmatched_by_stream == {'color': 3}
    for k in range(5, 9):  # then a dead colour stream
        s.add_depth(k * 10**8, 'd')
    assert s.unmatched_by_stream == {'color': 3, 'depth': 2} and s.drops['unmatched'] == 5


def test_stamp_gaps_count_the_frames_missing_between_stamps():
    from weld_vision_ros.core.frame_gaps import StampGapCounter
    period = 33_333_333
    g = StampGapCounter()
    stamps = [i * period for i in range(10)]
    stamps += [(10 + 300 + i) * period for i in range(10)]     # 300 frames lost in one burst
    stamps += [(320 + 2 + i) * period + 1_000_000 for i in range(5)]  # 2 more, with 1 ms of jitter
    assert [g.add(s) for s in stamps].count(0) == len(stamps) - 2
    assert (g.missed, g.gaps, g.largest_gap) == (302, 2, 300)
    # Late, duplicate and jumped stamps are not losses; after a jump the period is learnt again.
    last = stamps[-1]
    assert g.add(last) == 0 and g.add(last - period) == 0
    assert g.add(last + 3600 * 10**9) == 0 and g.period_ns is None
    for k in range(1, 6):
        assert g.add(last + 3600 * 10**9 + k * 10**8) == 0   # a new 10 Hz stream
    assert g.add(last + 3600 * 10**9 + 8 * 10**8) == 2 and g.missed == 304
    # Nothing is counted before the period is known.
    early = StampGapCounter()
    assert [early.add(s) for s in (0, period, 50 * period)] == [0, 0, 0] and early.missed == 0
