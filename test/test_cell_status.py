"""The cell status a controller subscribes to: the pure state machine, and the ONNX node
publishing it latched across processes (stall detected within a second)."""
import time

import pytest

from weld_vision_ros.core.cell_status import CellStatusTracker


def test_states_follow_frames_and_their_absence():
    t = CellStatusTracker(stall_timeout_s=0.5, not_inspectable_after=3)
    assert t.state(0.0).state == 'waiting_for_camera' and t.state(0.0).seconds_since_frame == -1
    t.frame(1.0, inspected=True)
    assert t.state(1.4).state == 'inspecting'
    assert t.state(1.6).state == 'camera_stalled' and '0.6 s' in t.state(1.6).detail
    for k in range(2):
        t.frame(2.0 + k * 0.1, inspected=False, reason='no_bead')
    assert t.state(2.2).state == 'inspecting'  # two not inspected: not yet a pattern
    t.frame(2.3, inspected=False, reason='no_bead')
    s = t.state(2.35)
    assert s.state == 'not_inspectable' and 'no_bead' in s.detail
    assert t.state(3.0).state == 'camera_stalled'  # a stall outranks what the last frames said
    t.frame(3.1, inspected=True)
    assert t.state(3.15).state == 'inspecting'
    with pytest.raises(ValueError):
        CellStatusTracker(stall_timeout_s=0)


@pytest.mark.ros
def test_the_node_publishes_a_latched_status_that_sees_a_camera_stall_within_a_second(tmp_path):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from test.rosutil import ros_context, spin_until, stop
    from test.test_onnx_node import Rig, set_atomically, start_node
    from test.helpers.onnx_models import write_model
    from weld_vision_ros.msg import CellStatus

    models_dir = tmp_path / 'models'
    models_dir.mkdir()
    write_model(models_dir / 'v1.onnx', 'weld-v1', seed=0)
    (models_dir / 'junk.onnx').write_bytes(b'not a model')
    proc = start_node(models_dir, tmp_path, mode='hybrid', model_path='v1.onnx', stall_timeout_s=0.6)
    try:
        with ros_context() as (node, ex):
            seen = []
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            node.create_subscription(CellStatus, 'weld/cell_status',
                                     lambda m: seen.append((time.monotonic(), m)), latched)
            assert spin_until(ex, lambda: seen and seen[-1][1].model_state == 'serving', 40.0), \
                [m.state for _, m in seen]
            rig = Rig(node, ex)
            rig.wait_ready()
            assert spin_until(ex, lambda: seen[-1][1].state == 'inspecting', 10.0)
            assert seen[-1][1].model_version == 'weld-v1'
            # The camera stops: camera_stalled within stall_timeout_s + the 0.1 s check period.
            rig.publishing = False
            n = len(seen)
            assert spin_until(ex, lambda: any(m.state == 'camera_stalled' for _, m in seen[n:]), 10.0)
            stalled = next(m for _, m in seen[n:] if m.state == 'camera_stalled')
            # The node's own measure, taken when it published: under 1 s after the last frame.
            assert 0.6 <= stalled.seconds_since_frame < 1.0, stalled.seconds_since_frame
            # A refused model shows as refused, the old one still named as serving.
            assert not set_atomically(node, ex, '/onnx_defect_node', {'model_path': 'junk.onnx'}).successful
            assert spin_until(ex, lambda: seen[-1][1].model_state == 'refused', 5.0)
            assert seen[-1][1].model_version == 'weld-v1' and 'junk.onnx' in seen[-1][1].model_problem
            # The camera comes back: inspecting again.
            rig.publishing = True
            assert spin_until(ex, lambda: seen[-1][1].state == 'inspecting', 10.0)
            # A late joiner gets the current status at once (latched).
            late = []
            node.create_subscription(CellStatus, 'weld/cell_status', late.append, latched)
            assert spin_until(ex, lambda: late, 5.0) and late[0].state == seen[-1][1].state
    finally:
        assert stop(proc) == 0
