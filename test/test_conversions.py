"""Message <-> numpy conversions (real message classes, no DDS)."""
import numpy as np
import pytest

pytestmark = pytest.mark.ros


def test_image_round_trip_all_encodings_and_row_padding():
    from weld_vision_ros.ros.codec import decode_color as color_to_rgb, image_to_array
    from weld_vision_ros.ros.conversions import array_to_image
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(color_to_rgb(array_to_image(rgb, 'rgb8')), rgb)
    assert np.array_equal(color_to_rgb(array_to_image(rgb[..., ::-1].copy(), 'bgr8')), rgb)
    d16 = rng.integers(0, 65535, (5, 7), dtype=np.uint16)
    assert np.array_equal(image_to_array(array_to_image(d16, '16UC1')), d16)
    d32 = rng.random((5, 7), dtype=np.float32)
    assert np.array_equal(image_to_array(array_to_image(d32, '32FC1')), d32)
    # A driver that pads each row to 32 bytes.
    msg = array_to_image(rgb, 'rgb8')
    padded = np.zeros((5, 32), np.uint8)
    padded[:, :21] = rgb.reshape(5, 21)
    msg.step, msg.data = 32, padded.tobytes()
    assert np.array_equal(color_to_rgb(msg), rgb)
    # Big-endian 16-bit depth from another machine.
    msg = array_to_image(d16, '16UC1')
    msg.is_bigendian, msg.data = 1, d16.byteswap().tobytes()
    assert np.array_equal(image_to_array(msg), d16)


def test_bad_images_raise_clear_errors():
    from weld_vision_ros.ros.codec import ImageEncodingError, image_to_array
    from weld_vision_ros.ros.codec import decode_color as color_to_rgb
    from weld_vision_ros.ros.conversions import array_to_image
    msg = array_to_image(np.zeros((4, 4, 3), np.uint8), 'rgb8')
    msg.encoding = 'yuv422'
    with pytest.raises(ImageEncodingError, match='not supported'):
        color_to_rgb(msg)
    msg = array_to_image(np.zeros((4, 4), np.uint16), '16UC1')
    msg.data = msg.data[:10]
    with pytest.raises(ImageEncodingError, match='needs 32'):
        image_to_array(msg)


def test_result_messages_carry_core_results():
    from std_msgs.msg import Header
    from weld_vision_ros.core.results import BeadMeasurement, DefectRegion, Verdict
    from weld_vision_ros.ros.conversions import bead_to_msg, verdict_from_msg, verdict_to_msg
    v = Verdict('crack', 0.5, ('good', 'crack'), (0.5, 0.5), 'rule',
                regions=(DefectRegion('crack', 0.5, 1, 2, 3, 4, 5.0, 6.0, 7.0),))
    h = Header(frame_id='cam')
    m = verdict_to_msg(v, h)
    assert m.header.frame_id == 'cam' and verdict_from_msg(m) == v
    b = bead_to_msg(BeadMeasurement.invalid('no bead in view'), h)
    assert (b.valid, b.reason) == (False, 'no bead in view')


def test_not_inspected_verdicts_round_trip_and_never_carry_a_class():
    from std_msgs.msg import Header
    from weld_vision_ros.core.results import REASON_DEPTH_UNRESOLVED, STATUS_NOT_INSPECTED, Verdict
    from weld_vision_ros.msg import WeldDefect
    from weld_vision_ros.ros.conversions import verdict_from_msg, verdict_to_msg
    v = Verdict.not_inspected(REASON_DEPTH_UNRESOLVED, 'depth step 1.0 mm > bead height 0.6 mm',
                              ('good', 'crack'), 'rule')
    m = verdict_to_msg(v, Header())
    assert (m.status, m.status_reason, m.defect_class, m.confidence) == \
        (WeldDefect.STATUS_NOT_INSPECTED, WeldDefect.REASON_DEPTH_UNRESOLVED, '', 0.0)
    assert list(m.probabilities) == [0.0, 0.0] and verdict_from_msg(m) == v
    assert not v.inspected and v.status == STATUS_NOT_INSPECTED
    # Every reason the core knows is a constant of the message, spelled the same.
    from weld_vision_ros.core.results import NOT_INSPECTED_REASONS
    assert {getattr(WeldDefect, k) for k in dir(WeldDefect) if k.startswith('REASON_')} == set(NOT_INSPECTED_REASONS)
    with pytest.raises(ValueError, match='status_reason'):
        Verdict('', 0.0, ('good',), (0.0,), 'rule', status=STATUS_NOT_INSPECTED, status_reason='tired')
    with pytest.raises(ValueError, match='carries no class'):
        Verdict('good', 0.9, ('good',), (0.9,), 'rule', status=STATUS_NOT_INSPECTED, status_reason='no_bead')
    # An old message without a status (a bag recorded before the field existed) reads as inspected.
    old = verdict_to_msg(Verdict('good', 0.9, ('good',), (0.9,), 'rule'), Header())
    old.status = ''
    assert verdict_from_msg(old).inspected


def test_rclpy_and_bag_messages_decode_identically_through_the_one_codec(tmp_path):
    # What the nodes receive (rclpy) and what training reads (rosbags) are the same fields
    # filled by the same codec; decoded by it, they give the same arrays bit for bit.
    from weld_vision_ros.core.camera import Intrinsics
    from weld_vision_ros.ros import codec
    from weld_vision_ros.ros.conversions import array_to_image, intrinsics_to_camera_info
    from weld_vision_ros.ros.dataset_bag import frame_messages, make_typestore
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    depth = rng.uniform(0.2, 0.4, (6, 8)).astype(np.float32)
    depth[0, 0] = np.nan
    intr = Intrinsics(fx=9.0, fy=9.5, cx=4.0, cy=3.0, width=8, height=6)
    for depth_encoding in codec.DEPTH_ENCODINGS:
        bag = dict(frame_messages(make_typestore(), 5, rgb, depth, intr, depth_encoding, 'cam'))
        ros_depth = depth if depth_encoding == '32FC1' else codec.depth_image_fields(depth, '16UC1')['data'].view(np.uint16).reshape(6, 8)
        live = {'color': array_to_image(rgb, 'rgb8'), 'depth': array_to_image(ros_depth, depth_encoding),
                'info': intrinsics_to_camera_info(intr)}
        from weld_vision_ros.ros.dataset_bag import CAMERA_INFO_TOPIC, COLOR_TOPIC, DEPTH_TOPIC
        assert np.array_equal(codec.decode_color(live['color']), codec.decode_color(bag[COLOR_TOPIC]))
        np.testing.assert_array_equal(codec.decode_depth_image(live['depth']),
                                      codec.decode_depth_image(bag[DEPTH_TOPIC]))
        assert codec.intrinsics_from_camera_info(live['info']) == codec.intrinsics_from_camera_info(bag[CAMERA_INFO_TOPIC]) == intr
