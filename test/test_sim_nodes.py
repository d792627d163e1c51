"""The synthetic camera and the dataset capture node, each in its own process, with real rclpy.

The test process is the subscriber and the service client, as a recorder or an operator
console would be.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy')

from test.rosutil import call_service, ros_context, set_parameters, spawn_node, spin_until, stop  # noqa: E402

pytestmark = pytest.mark.ros

CAMERA = 'weld_vision_ros.simulator.synthetic_camera_node'
CAPTURE = 'weld_vision_ros.nodes.dataset_capture_node'


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class Recorder:
    """Subscribes to the camera's five topics from the test process."""

    def __init__(self, node, reliability: str) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from weld_vision_ros.msg import WeldGroundTruth, WeldLabel
        qos = QoSProfile(depth=20)
        qos.reliability = (ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                           else ReliabilityPolicy.BEST_EFFORT)
        latched = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.color, self.depth, self.info, self.truth, self.label = [], [], [], [], []
        self.color_times: list[float] = []

        def on_color(m):
            self.color.append(m)
            self.color_times.append(time.monotonic())

        node.create_subscription(Image, 'camera/color/image_raw', on_color, qos)
        node.create_subscription(Image, 'camera/aligned_depth_to_color/image_raw', self.depth.append, qos)
        node.create_subscription(CameraInfo, 'camera/color/camera_info', self.info.append, qos)
        node.create_subscription(WeldGroundTruth, 'camera/ground_truth', self.truth.append, QoSProfile(depth=50))
        node.create_subscription(WeldLabel, 'weld/label', self.label.append, latched)


def test_camera_publishes_at_the_requested_rate_with_identical_stamps(tmp_path: Path) -> None:
    # A rate and size the camera keeps up with on a busy 2-core machine (a 160x120 frame
    # renders in a few ms, so 4 Hz needs a few % of a core): the test measures the timer and
    # the stamps, not how fast this CPU renders.
    rate_hz = 4.0
    proc = spawn_node(CAMERA, {'rate_hz': rate_hz, 'width': 160, 'height': 120, 'seed': 11,
                               'frames_per_weld': 3, 'image_reliability': 'reliable'},
                      log_path=tmp_path / 'camera.log')
    try:
        with ros_context() as (node, ex):
            rec = Recorder(node, 'reliable')
            assert spin_until(ex, lambda: len(rec.color) >= 1, 30.0), 'no frame from the camera'
            start = len(rec.color)
            spin_until(ex, lambda: False, 6.0)
            times = rec.color_times[start - 1:]
            measured_hz = (len(times) - 1) / (times[-1] - times[0])
            # Stamps are taken when a frame is made: their spacing is the camera's own rate.
            stamps = [stamp_ns(m.header) for m in rec.color[start - 1:]]
            stamp_hz = (len(stamps) - 1) * 1e9 / (stamps[-1] - stamps[0])
            assert measured_hz == pytest.approx(rate_hz, rel=0.35)
            assert stamp_hz == pytest.approx(rate_hz, rel=0.25)

            # One header for all five topics of a frame.
            spin_until(ex, lambda: False, 0.5)
            by_stamp = {stamp_ns(m.header): m for m in rec.color}
            common = set(by_stamp) & {stamp_ns(m.header) for m in rec.depth} \
                & {stamp_ns(m.header) for m in rec.info} & {stamp_ns(m.header) for m in rec.truth}
            assert len(common) >= 0.8 * len(by_stamp)
            assert {m.header.frame_id for m in rec.color + rec.depth + rec.info + rec.truth} == \
                {'camera_color_optical_frame'}
            color = rec.color[-1]
            assert (color.encoding, color.width, color.height, color.step) == ('rgb8', 160, 120, 480)
            depth = rec.depth[-1]
            assert depth.encoding == '32FC1'
            depth_m = np.frombuffer(bytes(depth.data), np.float32)
            assert 0.14 < np.nanmedian(depth_m) < 0.33
            info = rec.info[-1]
            assert info.width == 160 and info.k[0] > 0

            # A label at the first frame of each weld, with that frame's stamp; weld_id changes
            # every 3 frames.
            truth_by_weld: dict[str, list] = {}
            for t in rec.truth:
                truth_by_weld.setdefault(t.weld_id, []).append(t)
            labels = {m.weld_id: m for m in rec.label}
            # (Welds that began before this process matched the label topic miss theirs.)
            whole = [w for w, ts in truth_by_weld.items() if len(ts) == 3 and w in labels]
            assert len(whole) >= 3
            for weld in whole:
                frames = truth_by_weld[weld]
                assert len({t.defect_class for t in frames}) == 1
                lab = labels[weld]
                assert lab.label == frames[0].defect_class and lab.source == 'sim'
                assert stamp_ns(lab.header) == stamp_ns(frames[0].header)
    finally:
        assert stop(proc) == 0, (tmp_path / 'camera.log').read_text()


def test_camera_parameters_are_live_and_range_checked(tmp_path: Path) -> None:
    proc = spawn_node(CAMERA, {'rate_hz': 10.0, 'width': 160, 'height': 120, 'seed': 5,
                               'class_weights.good': 0.0, 'class_weights.porosity': 0.0,
                               'class_weights.undercut': 0.0, 'class_weights.spatter': 0.0,
                               'class_weights.gap': 0.0, 'frames_per_weld': 1},
                      log_path=tmp_path / 'camera.log')
    try:
        with ros_context() as (node, ex):
            rec = Recorder(node, 'best_effort')
            assert spin_until(ex, lambda: len(rec.truth) >= 3, 30.0)
            assert {t.defect_class for t in rec.truth} == {'crack'}
            refused = set_parameters(node, ex, 'synthetic_camera_node',
                                     {'rate_hz': 0.0})
            assert not refused[0].successful and 'out of range' in refused[0].reason
            refused = set_parameters(node, ex, 'synthetic_camera_node', {'class_weights.crack': 0.0})
            assert not refused[0].successful and 'class_weights' in refused[0].reason
            refused = set_parameters(node, ex, 'synthetic_camera_node', {'depth_encoding': '8UC1'})
            assert not refused[0].successful and '16UC1' in refused[0].reason
            done = set_parameters(node, ex, 'synthetic_camera_node',
                                  {'depth_encoding': '16UC1', 'width': 200, 'height': 150})
            assert all(r.successful for r in done)
            rec.depth.clear()
            assert spin_until(ex, lambda: any(m.encoding == '16UC1' and m.width == 200 for m in rec.depth), 15.0)
            depth = next(m for m in rec.depth if m.encoding == '16UC1')
            mm = np.frombuffer(bytes(depth.data), np.uint16)
            assert 150 <= np.median(mm[mm > 0]) <= 300
    finally:
        assert stop(proc) == 0, (tmp_path / 'camera.log').read_text()


def test_capture_service_writes_what_it_reports(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader

    from weld_vision_ros.ros.dataset_bag import make_typestore
    from weld_vision_ros.srv import CaptureFrame, GetDatasetCounts

    bag_dir = tmp_path / 'dataset'
    capture = spawn_node(CAPTURE, {'bag_dir': str(bag_dir), 'storage': 'sqlite3', 'weld_id': 'w-1'},
                         log_path=tmp_path / 'capture.log')
    camera = None
    answers = []
    try:
        with ros_context() as (node, ex):
            def capture_call(label: str, weld_id: str = ''):
                req = CaptureFrame.Request(label=label, weld_id=weld_id)
                return call_service(node, ex, CaptureFrame, '/dataset_capture_node/capture', req, 30.0)

            early = capture_call('good')
            assert not early.success and 'no frame yet' in early.message

            camera = spawn_node(CAMERA, {'rate_hz': 5.0, 'width': 160, 'height': 120, 'seed': 8},
                                log_path=tmp_path / 'camera.log')
            rec = Recorder(node, 'best_effort')
            wrong = capture_call('slag')
            assert not wrong.success
            assert 'unknown label' in wrong.message
            assert all(name in wrong.message for name in ('good', 'porosity', 'undercut', 'spatter', 'gap', 'crack'))

            def capture_when_ready(label: str, weld_id: str = ''):
                deadline = time.monotonic() + 30.0
                while True:
                    res = capture_call(label, weld_id)
                    if res.success or time.monotonic() > deadline:
                        return res
                    spin_until(ex, lambda: False, 0.2)      # wait for the next frame

            # Capture only once this process hears the camera too, so that the frames the
            # capture node writes can be compared with what the camera published.
            assert spin_until(ex, lambda: len(rec.color) >= 2, 30.0)
            for label, weld in (('porosity', ''), ('porosity', ''), ('good', 'w-2'), ('porosity', '')):
                res = capture_when_ready(label, weld)
                assert res.success, res.message
                answers.append((label, weld, res))
            assert [a[2].class_count for a in answers] == [1, 2, 1, 3]
            stamps = [stamp_ns(a[2]) for a in answers]
            assert stamps == sorted(stamps) and len(set(stamps)) == 4

            counts = call_service(node, ex, GetDatasetCounts, '/dataset_capture_node/counts',
                                  GetDatasetCounts.Request())
            assert counts.bag_path == str(bag_dir)
            assert dict(zip(counts.class_names, counts.counts)) == {
                'good': 1, 'porosity': 3, 'undercut': 0, 'spatter': 0, 'gap': 0, 'crack': 0}
            assert counts.total == 4
            spin_until(ex, lambda: False, 0.5)
            published = {stamp_ns(m.header): bytes(m.data) for m in rec.color}
    finally:
        if camera is not None:
            stop(camera)
        assert stop(capture) == 0, (tmp_path / 'capture.log').read_text()

    # Read the finalized bag back: four frames, their labels, exactly what was reported.
    store = make_typestore()
    with Reader(bag_dir) as reader:
        topics = {c.topic: c.msgcount for c in reader.connections}
        assert topics['/camera/color/image_raw'] == topics['/camera/aligned_depth_to_color/image_raw'] == 4
        assert topics['/camera/color/camera_info'] == 4 and topics['/weld/label'] == 4
        msgs = [(c.topic, t, store.deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages()]
    labels = [(m.label, m.weld_id, m.source, t) for topic, t, m in msgs if topic == '/weld/label']
    assert [(lab, weld) for lab, weld, _, _ in labels] == [
        ('porosity', 'w-1'), ('porosity', 'w-1'), ('good', 'w-2'), ('porosity', 'w-2')]
    assert {src for _, _, src, _ in labels} == {'capture'}
    reported = [stamp_ns(a[2]) for a in answers]
    assert [t for _, _, _, t in labels] == reported
    for topic in ('/camera/color/image_raw', '/camera/aligned_depth_to_color/image_raw',
                  '/camera/color/camera_info'):
        assert [stamp_ns(m.header) for tp, _, m in msgs if tp == topic] == reported
    # The bag holds the frames as the camera published them, bit for bit.
    colors = {stamp_ns(m.header): m for tp, _, m in msgs if tp == '/camera/color/image_raw'}
    compared = [s for s in colors if s in published]
    assert len(compared) >= 2
    for s in compared:
        assert colors[s].encoding == 'rgb8' and bytes(np.asarray(colors[s].data)) == published[s]


def test_params_file_sections_match_the_declared_parameters() -> None:
    import rclpy
    from rcl_interfaces.msg import ParameterType

    from weld_vision_ros.bringup import create_nodes, load_params_file

    params = load_params_file(Path(__file__).resolve().parent.parent / 'config' / 'weld_cell.yaml')
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    nodes = []
    try:
        nodes = create_nodes(['synthetic_camera_node', 'dataset_capture_node'], params, context=ctx)
        for node in nodes:
            section = params[f'/**/{node.get_name()}']  # keys as rcl reads them (bringup.load_params_file)
            own = [n for n in node._parameters if n != 'use_sim_time']
            assert set(section) <= set(own), f'{node.get_name()}: undeclared {set(section) - set(own)}'
            for name in own:
                d = node.describe_parameter(name)
                assert d.description, f'{name} has no description'
                if d.type in (ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_INTEGER):
                    assert d.floating_point_range or d.integer_range, f'{name} has no range'
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=ctx)
