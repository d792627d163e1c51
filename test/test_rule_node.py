"""The rule node in its own process, fed synthetic RGB-D frames by the test process over DDS.

The test process plays the camera driver (color rgb8, depth 32FC1 or 16UC1, camera_info
with identical stamps) and the consumers (bead, verdict, debug image, diagnostics), and
re-tunes the node through its real parameter service.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

pytest.importorskip('rclpy')

from test.rosutil import ros_context, set_parameters, spawn_node, spin_until, stop  # noqa: E402
from weld_vision_ros.core.depth import encode_depth_16uc1  # noqa: E402
from weld_vision_ros.simulator.renderer import default_intrinsics, render_random  # noqa: E402

pytestmark = pytest.mark.ros

NODE = 'weld_vision_ros.nodes.rule_defect_node'
T0_NS = 1_700_000_000_000_000_000


@pytest.fixture(scope='module')
def frames():
    """A few rendered frames (one per class that changes the verdict) and their truths."""
    intr = default_intrinsics(640, 480)
    out = []
    for seed, cls in ((5, 'good'), (6, 'porosity'), (7, 'gap')):
        out.append(render_random(np.random.default_rng(4200 + seed), intr, defect_class=cls))
    return out


def _ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class Camera:
    """Publishes RGB-D frames the way a RealSense driver does (reliable here: no loss)."""

    def __init__(self, node) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.color = node.create_publisher(Image, 'camera/color/image_raw', qos)
        self.depth = node.create_publisher(Image, 'camera/aligned_depth_to_color/image_raw', qos)
        self.info = node.create_publisher(CameraInfo, 'camera/color/camera_info', qos)

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in (self.color, self.depth, self.info))

    def publish(self, rgb, depth, intrinsics, stamp_ns: int, *, depth_encoding: str = '32FC1',
                color_encoding: str = 'rgb8', with_info: bool = True, frame_id: str = 'cam_optical',
                depth_delay_ns: int = 0):
        from std_msgs.msg import Header

        from weld_vision_ros.ros.conversions import array_to_image, intrinsics_to_camera_info, ns_to_stamp
        header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
        depth_header = Header(stamp=ns_to_stamp(stamp_ns + depth_delay_ns), frame_id=frame_id)
        if with_info:
            self.info.publish(intrinsics_to_camera_info(intrinsics, header))
        if depth_encoding == '16UC1':
            depth_msg = array_to_image(encode_depth_16uc1(depth), '16UC1', depth_header)
        else:
            depth_msg = array_to_image(depth, '32FC1', depth_header)
        color_msg = array_to_image(rgb, 'rgb8', header)
        color_msg.encoding = color_encoding      # a wrong label for the same bytes, when asked
        self.depth.publish(depth_msg)
        self.color.publish(color_msg)


class Listener:
    """Everything the node publishes, as its consumers see it."""

    def __init__(self, node, node_name: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from weld_vision_ros.msg import BeadMeasurement, WeldDefect
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.beads: dict[int, object] = {}
        self.defects: dict[int, object] = {}
        self.debug: list = []
        self.diagnostics: list[dict[str, str]] = []
        self._name = node_name
        node.create_subscription(BeadMeasurement, 'weld/bead', lambda m: self.beads.__setitem__(_ns(m.header), m), qos)
        node.create_subscription(WeldDefect, 'weld/defect/rule', lambda m: self.defects.__setitem__(_ns(m.header), m), qos)
        node.create_subscription(Image, 'weld/debug_image', self.debug.append, qos)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, qos)

    def _on_diag(self, msg) -> None:
        from weld_vision_ros.ros.diagnostics import status_values
        for status in msg.status:
            if status.name.startswith(f'/{self._name}:'):
                self.diagnostics.append(status_values(status))

    def latest_diag(self) -> dict[str, str]:
        return self.diagnostics[-1] if self.diagnostics else {}

    def drops(self, reason: str) -> int:
        return int(self.latest_diag().get(f'drop.{reason}', '0'))


def handshake(ex, cam: Camera, out: Listener, f, stamp_ns: int, timeout_s: float = 40.0) -> int:
    """Publish frame `f` with rising stamps until the node measures one (every topic matched
    both ways, camera_info known); returns the next free stamp."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cam.publish(f.rgb, f.depth_m, f.intrinsics, stamp_ns)
        if spin_until(ex, lambda: stamp_ns in out.beads, 1.0):
            return stamp_ns + 10**8
        stamp_ns += 10**7
    raise AssertionError(f'the node never answered: {out.latest_diag()}')


def until(ex, attempt, done, tries: int = 20) -> bool:
    """attempt(k) until done() (the test nodes report diagnostics every 0.25 s)."""
    for k in range(tries):
        attempt(k)
        if spin_until(ex, done, 1.0):
            return True
    return False


def _start(tmp_path: Path, name: str, params: Optional[dict] = None):
    base = {'image_reliability': 'reliable', 'diagnostics_period_s': 0.25}
    base.update(params or {})
    return spawn_node(NODE, base, name=name, log_path=tmp_path / f'{name}.log')


def _log(tmp_path: Path, name: str) -> str:
    path = tmp_path / f'{name}.log'
    return path.read_text()[-3000:] if path.exists() else ''


def _declared() -> dict:
    from weld_vision_ros.nodes.rule_defect_node import NODE_PARAMS
    from weld_vision_ros.ros.rgbd_input import INPUT_PARAMS
    from weld_vision_ros.ros.rule_params import RULE_PARAMS
    return {s.name: s for s in NODE_PARAMS + RULE_PARAMS + INPUT_PARAMS}


def test_every_parameter_is_described_documented_and_valid_in_the_params_file() -> None:
    import yaml

    from weld_vision_ros.nodes.rule_defect_node import NodeConfig
    declared = _declared()
    doc = (Path(__file__).resolve().parent.parent / 'docs' / 'rule_node.md').read_text()
    for name, spec in declared.items():
        assert spec.description, name
        assert f'`{name}`' in doc, f'{name} missing from docs/rule_node.md'
        d = spec.descriptor()
        if isinstance(spec.default, float) and not isinstance(spec.default, bool):
            assert d.floating_point_range, f'{name} has no range'
        elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
            assert d.integer_range, f'{name} has no range'
    # The defaults make a valid config, and the params file names only declared parameters.
    NodeConfig.from_values({n: s.default for n, s in declared.items()})
    cfg = yaml.safe_load((Path(__file__).resolve().parent.parent / 'config' / 'weld_cell.yaml').read_text())
    params = {**cfg['/**']['ros__parameters'], **cfg['/**/rule_defect_node']['ros__parameters']}

    def flat(d, prefix=''):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f'{prefix}{k}.')
            else:
                yield f'{prefix}{k}', v
    values = {n: s.default for n, s in declared.items()}
    for name, value in flat(params):
        assert name in declared, f'{name} in weld_cell.yaml is not a parameter of the node'
        assert declared[name].check(value) is None
        values[name] = value
    NodeConfig.from_values(values)


def test_frames_get_measurements_and_verdicts_with_their_headers(tmp_path: Path, frames) -> None:
    name = 'rule_node_measure'
    proc = _start(tmp_path, name, {'publish_debug_image': True})
    try:
        with ros_context('rule_test_camera') as (node, ex):
            cam, out = Camera(node), Listener(node, name)
            assert spin_until(ex, cam.connected, 30.0), 'node did not subscribe: ' + _log(tmp_path, name)
            start = handshake(ex, cam, out, frames[0], T0_NS)
            assert spin_until(ex, lambda: 'drops_total' in out.latest_diag(), 5.0)
            drops_before = int(out.latest_diag()['drops_total'])
            stamps = []
            for i, f in enumerate(frames):
                for encoding in ('32FC1', '16UC1'):
                    stamp = start + (2 * i + (encoding == '16UC1')) * 100_000_000
                    cam.publish(f.rgb, f.depth_m, f.intrinsics, stamp, depth_encoding=encoding)
                    stamps.append((stamp, f, encoding))
                    spin_until(ex, lambda: False, 0.05)
            assert spin_until(ex, lambda: all(s in out.beads for s, _, _ in stamps), 30.0), \
                (f'measurements for {sorted(out.beads)} of {[s for s, _, _ in stamps]}: {out.latest_diag()} '
                 + _log(tmp_path, name))
            assert spin_until(ex, lambda: all(s in out.defects for s, _, _ in stamps), 10.0)
            for stamp, f, encoding in stamps:
                bead, defect = out.beads[stamp], out.defects[stamp]
                assert bead.header.frame_id == 'cam_optical' and defect.header.frame_id == 'cam_optical'
                if encoding == '16UC1' and not bead.valid:
                    # the renderer's 0.02-0.2 mm noise need not dither whole millimetres: then
                    # the node says so instead of measuring
                    assert bead.reason.startswith('depth_unresolved'), bead.reason
                    continue
                assert bead.valid, bead.reason
                tol_mm = 0.5 if encoding == '32FC1' else 1.5     # 16UC1 steps in whole millimetres
                assert bead.width_mm == pytest.approx(f.truth.width_mm, abs=tol_mm)
                assert abs(bead.seam_angle_deg - f.truth.seam_angle_deg) < 3.0 or \
                    abs(abs(bead.seam_angle_deg - f.truth.seam_angle_deg) - 180.0) < 3.0
                assert defect.method == 'rule'
                assert list(defect.class_names) == ['good', 'porosity', 'undercut', 'spatter', 'gap', 'crack']
                assert len(defect.probabilities) == 6
                assert math.isclose(sum(defect.probabilities), 1.0, abs_tol=1e-3)
                assert defect.latency_ms > 0
                if encoding == '32FC1':
                    assert bead.height_mm == pytest.approx(f.truth.height_mm, abs=0.2)
                    assert defect.defect_class == f.truth.defect_class
            # The annotated image comes with the frame's header, as rgb8 at the frame's size
            # (the debug stream keeps only the newest image: not every one need arrive).
            assert spin_until(ex, lambda: len(out.debug) >= 1, 10.0)
            debug = out.debug[-1]
            assert debug.encoding == 'rgb8' and (debug.width, debug.height) == (640, 480)
            assert _ns(debug.header) in {s for s, _, _ in stamps}
            # Diagnostics: rate, latency and counts, once per second.
            assert spin_until(ex, lambda: int(out.latest_diag().get('frames_inspected', 0)) > len(stamps), 10.0)
            diag = out.latest_diag()
            assert float(diag['latency_p50_ms']) > 0 and float(diag['latency_p99_ms']) >= float(diag['latency_p50_ms'])
            assert int(diag['drops_total']) == drops_before
            assert 'rate_hz' in diag
    finally:
        assert stop(proc) == 0, _log(tmp_path, name)


def test_bad_inputs_are_counted_by_reason_and_the_node_keeps_answering(tmp_path: Path, frames) -> None:
    name = 'rule_node_bad_input'
    proc = _start(tmp_path, name)
    f = frames[0]
    rgb, depth, intr = f.rgb, f.depth_m, f.intrinsics
    try:
        with ros_context('rule_test_bad_camera') as (node, ex):
            cam, out = Camera(node), Listener(node, name)
            assert spin_until(ex, cam.connected, 30.0), 'node did not subscribe: ' + _log(tmp_path, name)
            stamp = [T0_NS]

            def next_stamp() -> int:
                stamp[0] += 10**7
                return stamp[0]

            def counted(reason: str, n: int = 1):
                return lambda: out.drops(reason) >= n

            # Frames before any camera_info.
            assert until(ex, lambda k: cam.publish(rgb, depth, intr, next_stamp(), with_info=False),
                         counted('no_camera_info')), out.latest_diag()
            stamp[0] = handshake(ex, cam, out, f, next_stamp())
            # An encoding the node does not know.
            assert until(ex, lambda k: cam.publish(rgb, depth, intr, next_stamp(), color_encoding='yuv422'),
                         counted('bad_color_encoding')), out.latest_diag()
            # Depth not aligned to color: a different size.
            small = np.ascontiguousarray(depth[::2, ::2])
            assert until(ex, lambda k: cam.publish(rgb, small, intr, next_stamp()),
                         counted('size_mismatch')), out.latest_diag()
            # All-NaN depth (32FC1), then all-zero depth (16UC1: no return anywhere).
            assert until(ex, lambda k: cam.publish(rgb, np.full_like(depth, np.nan), intr, next_stamp()),
                         counted('depth_all_invalid')), out.latest_diag()
            zero_before = out.drops('depth_all_invalid')
            assert until(ex, lambda k: cam.publish(rgb, np.zeros_like(depth), intr, next_stamp(),
                                                   depth_encoding='16UC1'),
                         counted('depth_all_invalid', zero_before + 1)), out.latest_diag()
            # A good frame, then one stamped before it.
            good = handshake(ex, cam, out, f, next_stamp()) - 10**8
            back = [good - 5 * 10**8]

            def publish_back(k: int) -> None:
                back[0] -= 10**6
                cam.publish(rgb, depth, intr, back[0])
            assert until(ex, publish_back, counted('stamp_backwards')), out.latest_diag()
            # ... and the node keeps answering.
            stamp[0] = good + 10**8
            last = handshake(ex, cam, out, f, next_stamp()) - 10**8
            assert spin_until(ex, lambda: last in out.defects, 10.0) and out.beads[last].valid
            backwards = [s for s in out.beads if good - 6 * 10**8 < s < good - 5 * 10**8 + 1]
            assert not backwards, 'a frame stamped before its predecessor was inspected'
            # camera_info with a non-finite principal point: refused and counted.
            from std_msgs.msg import Header
            from weld_vision_ros.ros.conversions import intrinsics_to_camera_info, ns_to_stamp

            def publish_nan_info(k: int) -> None:
                header = Header(frame_id='cam_optical', stamp=ns_to_stamp(next_stamp()))
                info = intrinsics_to_camera_info(intr, header)
                info.k[2 + 3 * (k % 2)] = float('nan')  # cx, then cy
                cam.info.publish(info)
            assert until(ex, publish_nan_info, counted('bad_camera_info')), out.latest_diag()
            # One frame stamped an hour ahead (a camera clock jump) does not blind the node:
            # the frames after it, on the camera's normal clock, are inspected again.
            future = last + 3600 * 10**9
            assert until(ex, lambda k: cam.publish(rgb, depth, intr, future + k * 10**7),
                         lambda: any(s >= future for s in out.beads)), out.latest_diag()
            stamp[0] = last + 2 * 10**8
            after = handshake(ex, cam, out, f, next_stamp()) - 10**8
            assert after < future and out.beads[after].valid
            assert spin_until(ex, lambda: int(out.latest_diag().get('clock_jumps', '0')) >= 2, 5.0), \
                out.latest_diag()  # out and back: not drops
            # A 4000x2200 image (over the 8.4 MPx default): dropped before it is decoded,
            # counted, and the node keeps going.
            big = np.zeros((2200, 4000, 3), np.uint8)
            assert until(ex, lambda k: cam.publish(big, np.zeros((2200, 4000), np.uint16), intr,
                                                   next_stamp(), with_info=False, depth_encoding='16UC1'),
                         counted('image_too_large'), tries=5), out.latest_diag()
            del big
            stamp[0] = handshake(ex, cam, out, f, next_stamp())
            # Frames with their own camera_info are measured with it; a frame whose camera_info
            # (same stamp) never came is measured with the latest one, and counted as stale.
            diag_values = lambda key: int(out.latest_diag().get(key, '0'))  # noqa: E731
            assert spin_until(ex, lambda: diag_values('camera_info_by_stamp') > 0, 5.0), out.latest_diag()
            stale_before = diag_values('camera_info_stale')
            no_info = next_stamp()
            assert until(ex, lambda k: cam.publish(f.rgb, f.depth_m, f.intrinsics, no_info + k, with_info=False),
                         lambda: diag_values('camera_info_stale') > stale_before, tries=5), out.latest_diag()
            assert any(no_info <= s < no_info + 5 and out.beads[s].valid for s in out.beads)
            stamp[0] = no_info + 10**8
            diag = out.latest_diag()
            assert int(diag['drops_total']) >= 6
            assert proc.poll() is None, 'the node died on bad input'
    finally:
        assert stop(proc) == 0, _log(tmp_path, name)


def test_no_bead_and_live_parameters(tmp_path: Path, frames) -> None:
    name = 'rule_node_params'
    proc = _start(tmp_path, name)
    f = frames[0]
    try:
        with ros_context('rule_test_param_client') as (node, ex):
            cam, out = Camera(node), Listener(node, name)
            assert spin_until(ex, cam.connected, 30.0), 'node did not subscribe: ' + _log(tmp_path, name)
            stamp = handshake(ex, cam, out, f, T0_NS)
            # A bare plate: invalid measurement with a reason, and no verdict for that stamp.
            plate = np.where(np.isfinite(f.depth_m), np.float32(f.truth.plate_distance_m), np.float32(np.nan))
            plate = plate.astype(np.float32)
            cam.publish(f.rgb, plate, f.intrinsics, stamp)
            assert spin_until(ex, lambda: stamp in out.beads, 20.0), _log(tmp_path, name)
            assert not out.beads[stamp].valid and 'no bead' in out.beads[stamp].reason
            # The verdict of the next (good) frame proves the node answered since; none came for the plate.
            stamp_good = stamp + 10**8
            cam.publish(f.rgb, f.depth_m, f.intrinsics, stamp_good)
            assert spin_until(ex, lambda: stamp_good in out.defects, 20.0)
            assert stamp not in out.defects
            measured = out.beads[stamp_good]
            assert measured.valid

            # A live change of the weld spec is accepted and used from the next frame on.
            target = measured.width_mm + 5.0
            done = set_parameters(node, ex, name, {'spec.target_width_mm': target,
                                                   'spec.width_tolerance_mm': 1.0})
            assert all(r.successful for r in done), [r.reason for r in done]
            stamp2 = stamp_good + 10**8
            cam.publish(f.rgb, f.depth_m, f.intrinsics, stamp2)
            assert spin_until(ex, lambda: stamp2 in out.beads, 20.0)
            assert out.beads[stamp2].within_tolerance is False
            assert out.beads[stamp2].score < measured.score or measured.score == 0.0
            back = set_parameters(node, ex, name, {'spec.target_width_mm': measured.width_mm,
                                                   'spec.width_tolerance_mm': 3.0})
            assert all(r.successful for r in back)
            stamp3 = stamp2 + 10**8
            cam.publish(f.rgb, f.depth_m, f.intrinsics, stamp3)
            assert spin_until(ex, lambda: stamp3 in out.beads, 20.0)
            assert out.beads[stamp3].score > 90.0

            # Out of range: refused with a reason, and the running value stays.
            refused = set_parameters(node, ex, name, {'rules.mark_darkness': 1.5})
            assert not refused[0].successful
            assert 'mark_darkness' in refused[0].reason or 'range' in refused[0].reason
            # In range alone but contradicting another threshold: refused by the config itself.
            refused = set_parameters(node, ex, name, {'rules.mark_extent_darkness': 0.9})
            assert not refused[0].successful and 'mark_extent_darkness' in refused[0].reason
            # Read-only at run time.
            refused = set_parameters(node, ex, name, {'opencv_threads': 2})
            assert not refused[0].successful
            stamp4 = stamp3 + 10**8
            cam.publish(f.rgb, f.depth_m, f.intrinsics, stamp4)
            assert spin_until(ex, lambda: stamp4 in out.defects, 20.0)
            assert out.defects[stamp4].defect_class == 'good'

            # Depth stamped 3 ms after color: not paired by exact stamps, paired once the sync
            # tolerance allows it; the outputs carry the color frame's stamp.
            stamp5 = stamp4 + 10**8
            cam.publish(f.rgb, f.depth_m, f.intrinsics, stamp5, depth_delay_ns=3_000_000)
            assert not spin_until(ex, lambda: stamp5 in out.beads, 2.0)
            done = set_parameters(node, ex, name, {'sync_tolerance_ms': 5.0})
            assert all(r.successful for r in done), [r.reason for r in done]
            stamp6 = stamp5 + 10**8
            cam.publish(f.rgb, f.depth_m, f.intrinsics, stamp6, depth_delay_ns=3_000_000)
            assert spin_until(ex, lambda: stamp6 in out.beads, 20.0), out.latest_diag()
            assert out.beads[stamp6].valid
    finally:
        assert stop(proc) == 0, _log(tmp_path, name)


def test_millimetre_depth_from_a_d4xx_is_measured_or_declared_unresolved(tmp_path: Path, frames) -> None:
    """16UC1 in whole millimetres as a RealSense D4xx sends it (core.resolution): dithered by
    0.3 mm of stereo noise the bead is measured below one unit; with 0.05 mm of noise the
    node calls no defect on a good weld, says which check it could not make, and reports
    the depth resolution it saw in diagnostics."""
    from weld_vision_ros.simulator.renderer import d4xx_16uc1, render, sample_scene
    intr = default_intrinsics(640, 480)
    cases = []
    for seed, subpixel in ((72, 0.09), (73, 0.03)):
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng, 'good')
        scene = d4xx_16uc1(replace(scene, plate_distance_m=0.28 if subpixel > 0.05 else 0.2, tilt_deg=3.0,
                                   bead_width_mm=8.0, bead_height_mm=2.5), subpixel)
        cases.append(render(scene, intr, rng))
    name = 'rule_node_16uc1'
    proc = _start(tmp_path, name)
    try:
        with ros_context('rule_test_camera_16uc1') as (node, ex):
            cam, out = Camera(node), Listener(node, name)
            assert spin_until(ex, cam.connected, 30.0), 'node did not subscribe: ' + _log(tmp_path, name)
            stamp = handshake(ex, cam, out, frames[0], T0_NS)
            stamps = []
            for f in cases:
                # the frame is already rounded to millimetres: the driver's 16UC1 holds it exactly
                cam.publish(f.rgb, f.depth_m, f.intrinsics, stamp, depth_encoding='16UC1')
                stamps.append(stamp)
                stamp += 100_000_000
                spin_until(ex, lambda: False, 0.05)
            assert spin_until(ex, lambda: all(s in out.beads and s in out.defects for s in stamps), 30.0), \
                _log(tmp_path, name)
            dithered, plain = (out.beads[s] for s in stamps)
            assert dithered.valid, dithered.reason
            assert dithered.width_mm == pytest.approx(cases[0].truth.width_mm, abs=0.35)
            assert out.defects[stamps[0]].defect_class == 'good'
            verdict = out.defects[stamps[1]]
            assert verdict.defect_class in ('good', '')        # no defect invented from the steps
            if verdict.status == 'inspected':
                assert 'undercut' in verdict.checks_not_made
            else:
                assert verdict.status_reason == 'depth_unresolved'
            assert spin_until(ex, lambda: 'depth_step_mm' in out.latest_diag()
                              and int(out.latest_diag().get('frames_inspected', 0)) >= 3, 10.0)
            diag = out.latest_diag()
            assert float(diag['depth_step_mm']) == pytest.approx(1.0)
            assert 'depth_rounding_bias_mm' in diag and 'depth_noise_mm' in diag
    finally:
        assert stop(proc) == 0, _log(tmp_path, name)
