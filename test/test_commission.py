"""Commissioning check: a gauge of known size measured through the synthetic camera."""
from __future__ import annotations

import numpy as np
import pytest

from weld_vision_ros.commission import main, synthetic_gauge_frames
from weld_vision_ros.core.commission import Gauge, GaugeError, commission


@pytest.mark.parametrize('depth', ['32FC1', '16UC1'])
def test_a_rendered_gauge_is_measured_to_within_a_pixel(depth: str) -> None:
    gauge = Gauge(10.0, 3.0)
    report = commission(synthetic_gauge_frames(gauge, 4, depth, seed=3), gauge)
    assert report.frames_measured == 4 and report.frames_failed == 0
    # the renderer's pixels are 0.25-0.5 mm on the plate: the half-height width of a
    # square-edged bar is found to about half a pixel, its top height far better
    assert abs(report.width_bias_mm) < 0.25
    assert abs(report.height_bias_mm) < 0.1
    assert report.width_std_mm < 0.3 and report.height_std_mm < 0.3
    assert ('1.00 mm depth steps' in report.depth_resolution) == (depth == '16UC1')


def test_a_misstated_gauge_shows_as_its_error() -> None:
    # the same frames against a gauge stated 1 mm wider and 0.5 mm lower: the report says so
    true, stated = Gauge(8.0, 2.5), Gauge(9.0, 2.0)
    frames = list(synthetic_gauge_frames(true, 3, '32FC1', seed=4))
    right, wrong = commission(frames, true), commission(frames, stated)
    assert wrong.width_bias_mm == pytest.approx(right.width_bias_mm - 1.0, abs=1e-9)
    assert wrong.height_bias_mm == pytest.approx(right.height_bias_mm + 0.5, abs=1e-9)


def test_frames_without_a_gauge_are_counted_as_failed() -> None:
    gauge = Gauge(8.0, 2.5)
    frame = next(synthetic_gauge_frames(gauge, 1, '32FC1', seed=5))
    flat = np.where(np.isfinite(frame.depth_m), np.float32(np.nanmedian(frame.depth_m)), np.float32(np.nan))
    bare = type(frame)(frame.rgb, flat.astype(np.float32), frame.intrinsics)
    report = commission([bare], gauge)
    assert report.frames_measured == 0 and report.frames_failed == 1
    assert report.failures[0].startswith('no bead in view')


def test_command_passes_fails_and_refuses_bad_sizes(capsys) -> None:
    assert main(['--width-mm', '10', '--height-mm', '3', '--synthetic', '2']) == 0
    assert 'PASS' in capsys.readouterr().out
    # a tolerance below what the camera achieves fails (exit status 1)
    assert main(['--width-mm', '10', '--height-mm', '3', '--synthetic', '2', '--tolerance-mm', '0.001']) == 1
    assert 'FAIL' in capsys.readouterr().out
    with pytest.raises(GaugeError, match='must be > 0'):
        Gauge(0.0, 3.0)
    with pytest.raises(SystemExit):
        main(['--width-mm', '-1', '--height-mm', '3'])


def test_commission_measures_the_gauge_on_live_camera_topics(tmp_path) -> None:
    """Across processes: the test publishes rendered gauge frames on the camera topics,
    `weld-vision commission --live` collects them through the nodes' RGB-D input."""
    import subprocess
    import sys
    import time
    pytest.importorskip('rclpy')
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from test.rosutil import REPO, ros_context
    from weld_vision_ros.commission import synthetic_gauge_frames
    from weld_vision_ros.core.commission import Gauge
    from weld_vision_ros.ros.conversions import array_to_image, intrinsics_to_camera_info, ns_to_stamp

    frames = list(synthetic_gauge_frames(Gauge(10.0, 3.0), 6, '32FC1', seed=5))
    proc = subprocess.Popen([sys.executable, '-m', 'weld_vision_ros.cli', 'commission', '--width-mm', '10',
                             '--height-mm', '3', '--live', '4', '--timeout', '90', '--ros-args', '-p',
                             'image_reliability:=reliable', '-p', 'image_queue_depth:=50'],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with ros_context('gauge_camera') as (node, ex):
            qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
            pubs = [node.create_publisher(t, name, qos) for t, name in (
                (CameraInfo, 'camera/color/camera_info'), (Image, 'camera/color/image_raw'),
                (Image, 'camera/aligned_depth_to_color/image_raw'))]
            deadline = time.monotonic() + 60
            while node.count_subscribers('camera/color/image_raw') == 0 and time.monotonic() < deadline:
                ex.spin_once(timeout_sec=0.1)
            i = 0
            while proc.poll() is None and time.monotonic() < deadline:
                f = frames[i % len(frames)]
                header = Header(stamp=ns_to_stamp(1_800_000_000_000_000_000 + i * 100_000_000),
                                frame_id='camera_color_optical_frame')
                pubs[0].publish(intrinsics_to_camera_info(f.intrinsics, header))
                pubs[1].publish(array_to_image(f.rgb, 'rgb8', header))
                pubs[2].publish(array_to_image(f.depth_m, '32FC1', header))
                i += 1
                end = time.monotonic() + 0.25
                while time.monotonic() < end:
                    ex.spin_once(timeout_sec=0.05)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert '4 of 4 live frame(s) received' in out, out
    assert proc.returncode == 0 and 'PASS' in out and '4 frames measured, 0 failed' in out, out
