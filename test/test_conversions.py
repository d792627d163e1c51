"""Message <-> numpy conversions (real message classes, no DDS)."""
import numpy as np
import pytest

pytestmark = pytest.mark.ros


def test_image_round_trip_all_encodings_and_row_padding():
    from weld_vision_ros.ros.conversions import array_to_image, color_to_rgb, image_to_array
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
    from weld_vision_ros.ros.conversions import (ImageEncodingError, array_to_image,
                                                 color_to_rgb, image_to_array)
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
