"""Input losses a user can see: frames missing between the stamps that did arrive (a burst
lost in transport or overwritten in a full queue) counted per stream, and the memory of a
frame too large to inspect given back (rule node across processes)."""
from pathlib import Path

import numpy as np
import pytest

from test.rosutil import ros_context, spin_until, stop
from test.test_rule_node import T0_NS, Camera, Listener, _log, _start, frames, handshake  # noqa: F401

pytestmark = pytest.mark.ros

PERIOD_NS = 20_000_000      # a 50 Hz camera


def _rss_mb(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024.0
    raise AssertionError('no VmRSS')


def test_a_frame_too_large_to_inspect_gives_its_memory_back(tmp_path: Path, frames, monkeypatch) -> None:
    """An 8000x8000 frame (192 MB of rgb8, 128 MB of 16UC1) is dropped as image_too_large,
    and the node's resident memory comes back to where it was: if any copy of it were kept
    (in the synchroniser, a decoded array, a transport buffer), RSS would stay up by at
    least the 128 MB of its smaller image. The node runs with the shipped Fast DDS profile,
    as the launch files and `weld-vision run` start it (before it, the reader's buffers kept
    the whole frame: +317 MB for good)."""
    from weld_vision_ros import resources
    from weld_vision_ros.ros.launch_args import DDS_PROFILE_NAME, dds_environment
    for key, value in dds_environment(str(resources.resource_path('config', DDS_PROFILE_NAME))):
        monkeypatch.setenv(key, value)
    name = 'losses_rss'
    proc = _start(tmp_path, name)
    f = frames[0]
    try:
        with ros_context() as (node, ex):
            cam, out = Camera(node), Listener(node, name)
            stamp = handshake(ex, cam, out, f, T0_NS)
            for _ in range(5):                  # warm: the node's own buffers at their working size
                stamp = handshake(ex, cam, out, f, stamp)
            before = _rss_mb(proc.pid)
            big_rgb = np.zeros((8000, 8000, 3), np.uint8)
            big_depth = np.zeros((8000, 8000), np.float32)
            cam.publish(big_rgb, big_depth[:, :], f.intrinsics, stamp, depth_encoding='16UC1', with_info=False)
            del big_rgb, big_depth
            assert spin_until(ex, lambda: out.drops('image_too_large') >= 2, 60.0), out.latest_diag()
            stamp += 10**8
            peak = _rss_mb(proc.pid)
            for _ in range(5):
                stamp = handshake(ex, cam, out, f, stamp)
            spin_until(ex, lambda: False, 1.0)
            after = _rss_mb(proc.pid)
            assert after - before < 128.0, f'RSS {before:.0f} MB before, {peak:.0f} MB at the drop, {after:.0f} MB after'
            assert proc.poll() is None
    finally:
        assert stop(proc) == 0, _log(tmp_path, name)


def test_a_burst_of_frames_lost_shows_per_stream_in_diagnostics(tmp_path: Path, frames) -> None:
    """300 frames lost at once (the camera stamped them, none arrived), then 5 depth images
    alone: the node counts frames_missed_color/depth from the gaps between the stamps that
    did arrive (ROS 2 headers carry no sequence number), so a burst, and which stream it hit,
    shows in /diagnostics."""
    name = 'losses_burst'
    proc = _start(tmp_path, name)
    f = frames[0]
    period = 33_333_333
    try:
        with ros_context() as (node, ex):
            cam, out = Camera(node), Listener(node, name)
            t0 = handshake(ex, cam, out, f, T0_NS) + 10 * 10**9    # a fresh time line, 10 s on
            k = 0

            def publish(i: int, depth_only: bool = False) -> None:
                stamp = t0 + i * period
                if depth_only:
                    from std_msgs.msg import Header
                    from weld_vision_ros.ros.conversions import array_to_image, ns_to_stamp
                    cam.depth.publish(array_to_image(f.depth_m, '32FC1', Header(stamp=ns_to_stamp(stamp))))
                else:
                    cam.publish(f.rgb, f.depth_m, f.intrinsics, stamp)
                # Paced: back to back, a full subscription queue would overwrite one (and count it).
                spin_until(ex, lambda: stamp in out.beads, 0.1 if depth_only else 2.0)

            for k in range(12):
                publish(k)
            base = {s: int(out.latest_diag().get(f'frames_missed_{s}', '0')) for s in ('color', 'depth')}
            for k in range(12 + 300, 12 + 300 + 8):   # 300 frames lost in one burst
                publish(k)
            for j in range(k + 1, k + 6):             # the colour stream loses 5 more: only depth comes
                publish(j, depth_only=True)
            for j in range(k + 6, k + 10):
                publish(j)

            def missed(stream: str) -> int:
                return int(out.latest_diag().get(f'frames_missed_{stream}', '0')) - base[stream]
            assert spin_until(ex, lambda: missed('color') == 305 and missed('depth') == 300, 10.0), \
                (base, {k: v for k, v in out.latest_diag().items() if 'missed' in k or 'gap' in k or 'jump' in k})
            assert out.latest_diag()['largest_gap_color'] == '300'
            assert proc.poll() is None
    finally:
        assert stop(proc) == 0, _log(tmp_path, name)
