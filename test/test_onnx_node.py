"""ONNX defect node across processes: model deployment through the parameter service,
refusal of bad models while the old one keeps serving, no lost frame during swaps, run-time
mode switching, the hybrid cascade and its rule fallback, diagnostics."""
import json
import time
from pathlib import Path
from collections import defaultdict

import numpy as np
import pytest

from test.helpers.onnx_models import sha256_file, write_bad_models, write_model
from test.helpers.onnx_node_stub_rules import LOAD_DELAY_ENV
from test.rosutil import call_service, ros_context, set_parameters, spawn_node, spin_until, stop

pytestmark = pytest.mark.ros

NODE = '/onnx_defect_node'
STUB_NODE_MODULE = 'test.helpers.onnx_node_stub_rules'
WIDTH, HEIGHT = 96, 72
RATE_HZ = 12.0


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp('onnx_node')
    models_dir, outside = root / 'models', root / 'outside'
    models_dir.mkdir()
    outside.mkdir()
    write_model(models_dir / 'v1.onnx', 'weld-v1', seed=0)
    write_model(models_dir / 'v2.onnx', 'weld-v2', seed=1)
    write_model(models_dir / 'flaky.onnx', 'weld-flaky', seed=2, nan_when_bright=True)
    bad = write_bad_models(models_dir, outside)
    return models_dir, bad


class Rig:
    """The test's side: a camera publishing frames from a timer, and every answer recorded.

    Frames carry their rule confidence in pixel (0, 0) (see the stub rule core). `phase`
    labels each frame with what was deployed when it was published.
    """

    def __init__(self, node, ex):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from weld_vision_ros.core.camera import Intrinsics
        from weld_vision_ros.msg import WeldDefect
        self.node, self.ex = node, ex
        # Reliable and deep on both sides, so that every frame published is delivered and the
        # count of answers can be exact.
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_color = node.create_publisher(Image, 'camera/color/image_raw', qos)
        self.pub_depth = node.create_publisher(Image, 'camera/aligned_depth_to_color/image_raw', qos)
        self.pub_info = node.create_publisher(CameraInfo, 'camera/color/camera_info', qos)
        self.intr = Intrinsics(120.0, 120.0, WIDTH / 2, HEIGHT / 2, WIDTH, HEIGHT)
        self.make_frame = self._stub_frame  # i -> (rgb, depth_m, intrinsics, info)
        self.sent: dict[int, dict] = {}
        self.final: dict[int, list] = defaultdict(list)
        self.arrival_s: dict[int, float] = {}
        self.calls: dict[str, tuple[float, float]] = {}
        self.ml: dict[int, list] = defaultdict(list)
        self.diag: list[dict] = []
        self.confidence = lambda i: 0.2
        self.white = lambda i: False
        self.phase = 'start'
        self.publishing = True
        self._i = 0
        self._rng = np.random.default_rng(0)
        node.create_subscription(WeldDefect, 'weld/defect', self._on_final, qos)
        node.create_subscription(WeldDefect, 'weld/defect/ml', self._on_ml, qos)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)
        node.create_timer(1.0 / RATE_HZ, self._tick)

    def _tick(self):
        from weld_vision_ros.ros.conversions import array_to_image, intrinsics_to_camera_info, ns_to_stamp
        from std_msgs.msg import Header
        if not self.publishing:
            return
        i = self._i
        self._i += 1
        stamp_ns = 1_700_000_000_000_000_000 + i * 50_000_000
        rgb, depth, intr, info = self.make_frame(i)
        header = Header(stamp=ns_to_stamp(stamp_ns), frame_id='camera_color_optical_frame')
        self.pub_info.publish(intrinsics_to_camera_info(intr, header))
        self.pub_color.publish(array_to_image(rgb, 'rgb8', header))
        self.pub_depth.publish(array_to_image(depth, '32FC1', header))
        self.sent[stamp_ns] = {'i': i, 'phase': self.phase, **info}

    def _stub_frame(self, i):
        conf, white = self.confidence(i), self.white(i)
        rgb = (np.full((HEIGHT, WIDTH, 3), 250, np.uint8) if white
               else self._rng.integers(0, 200, (HEIGHT, WIDTH, 3), dtype=np.uint8))
        rgb[0, 0, 0] = round(conf * 255)
        depth = np.full((HEIGHT, WIDTH), 0.3, np.float32)
        depth[:, WIDTH // 2 - 5:WIDTH // 2 + 5] = 0.298
        return rgb, depth, self.intr, {'confidence': rgb[0, 0, 0] / 255.0, 'white': white}

    @staticmethod
    def _stamp(msg):
        return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

    def _on_final(self, msg):
        self.final[self._stamp(msg)].append(msg)
        self.arrival_s.setdefault(self._stamp(msg), time.monotonic())

    def _on_ml(self, msg):
        self.ml[self._stamp(msg)].append(msg)

    def _on_diag(self, msg):
        from weld_vision_ros.ros.diagnostics import status_values
        for status in msg.status:
            if status.name.startswith('onnx_defect_node'):
                self.diag.append(dict(status_values(status), _message=status.message,
                                      _level=int.from_bytes(status.level, 'little')
                                      if isinstance(status.level, bytes) else int(status.level)))

    # --- helpers ---------------------------------------------------------------------
    def run_for(self, seconds):
        spin_until(self.ex, lambda: False, seconds)

    def wait_ready(self, timeout_s=40.0):
        """Until the node answers: from then on every frame published must be answered."""
        assert spin_until(self.ex, lambda: len(self.final) > 0, timeout_s), \
            f'the node answered no frame in {timeout_s} s'
        return max(self.sent) + 1  # frames with a stamp above this are tracked

    def stamps(self, phase):
        return sorted(s for s, info in self.sent.items() if info['phase'] == phase)

    def set(self, phase, values, atomic=True):
        """Set parameters (atomically, as a deploy does) and label later frames with phase.

        Frames published until the answer are labelled 'during <phase>'. Before the request
        goes out, the node catches up with every frame published so far (so no frame of the
        previous phase is processed under the new settings); then one frame is published
        just before the request, so one is always in flight with it.
        """
        self.phase = f'during {phase}'
        self.drain()
        self._tick()
        t_sent = time.monotonic()
        try:
            if atomic:
                result = set_atomically(self.node, self.ex, NODE, values)
            else:
                result = set_parameters(self.node, self.ex, NODE, values)[0]
        finally:
            self.phase = phase
            self.calls[phase] = (t_sent, time.monotonic())
        return result

    def drain(self, timeout_s=20.0):
        """Until the node answers a frame published from now on. It processes frames in
        order, so then it has processed every frame published before."""
        first_new = self._i
        assert spin_until(self.ex, lambda: any(info['i'] >= first_new and s in self.final
                                               for s, info in self.sent.items()), timeout_s), \
            f'the node answered no new frame in {timeout_s} s'

    def answered_between(self, t0, t1):
        """Final verdicts that arrived in [t0, t1], in stamp order."""
        return [self.final[s][0] for s in sorted(self.arrival_s) if t0 <= self.arrival_s[s] <= t1]

    def finish(self, timeout_s=20.0, since=0):
        """Stop the camera, and wait until every tracked frame has its final verdict."""
        self.publishing = False
        tracked = [s for s in self.sent if s >= since]
        spin_until(self.ex, lambda: all(s in self.final for s in tracked), timeout_s)
        self.run_for(0.5)  # a duplicate answer would arrive now
        return tracked

    def latest_diag(self, after_s=1.5):
        n = len(self.diag)
        assert spin_until(self.ex, lambda: len(self.diag) > n, after_s + 3.0), 'no /diagnostics'
        return self.diag[-1]


def set_atomically(node, ex, target, values):
    from rcl_interfaces.srv import SetParametersAtomically
    from rclpy.parameter import Parameter
    req = SetParametersAtomically.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return call_service(node, ex, SetParametersAtomically, f'{target}/set_parameters_atomically', req).result


def get_parameter(node, ex, target, name):
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python
    answer = call_service(node, ex, GetParameters, f'{target}/get_parameters',
                          GetParameters.Request(names=[name]))
    return parameter_value_to_python(answer.values[0])


def start_node(models_dir, tmp_path, load_delay_s=0.0, **params):
    # Reliable camera QoS and a queue that covers a few seconds of frames: a loaded CI
    # machine may stall the node that long, and every frame must still be answered.
    values = {'models_dir': str(models_dir), 'image_reliability': 'reliable',
              'image_queue_depth': 100, **params}
    import os
    os.environ[LOAD_DELAY_ENV] = str(load_delay_s)  # the child inherits it
    try:
        return spawn_node(STUB_NODE_MODULE, values, log_path=tmp_path / 'onnx_node.log')
    finally:
        del os.environ[LOAD_DELAY_ENV]


def node_log(tmp_path):
    return (tmp_path / 'onnx_node.log').read_text()[-3000:]


def test_every_parameter_is_described_documented_and_valid_in_the_params_file():
    import yaml

    from weld_vision_ros.nodes.onnx_defect_node import PARAMS, OnnxNodeConfig
    from weld_vision_ros.ros.anomaly_slot import ANOMALY_PARAMS
    from weld_vision_ros.ros.rgbd_input import INPUT_PARAMS
    from weld_vision_ros.ros.rule_params import RULE_PARAMS
    repo = Path(__file__).resolve().parent.parent
    doc = (repo / 'docs' / 'onnx_node.md').read_text()
    for spec in PARAMS + INPUT_PARAMS + ANOMALY_PARAMS:
        assert spec.description and f'`{spec.name}`' in doc, f'{spec.name} missing from docs/onnx_node.md'
        d = spec.descriptor()
        if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            assert d.integer_range or d.floating_point_range, f'{spec.name} has no range'
    declared = {s.name: s for s in PARAMS + INPUT_PARAMS + RULE_PARAMS + ANOMALY_PARAMS}
    values = {s.name: s.default for s in PARAMS}
    OnnxNodeConfig.from_values(values)
    from weld_vision_ros.bringup import load_params_file, node_params
    params = node_params(load_params_file(repo / 'config' / 'weld_cell.yaml'), 'onnx_defect_node')
    for name, value in params.items():
        assert name in declared, f'{name} in weld_cell.yaml is not a parameter of onnx_defect_node'
        assert declared[name].check(value) is None, name
        values[name] = value
    OnnxNodeConfig.from_values({k: v for k, v in values.items() if k in {s.name for s in PARAMS}})
    with pytest.raises(ValueError, match='model_sha256'):
        OnnxNodeConfig.from_values({**values, 'model_sha256': 'abc'})


def test_models_deploy_through_the_parameter_service_and_bad_ones_are_refused(models, tmp_path):
    models_dir, bad = models
    v2 = models_dir / 'v2.onnx'
    # Every model load takes 0.6 s longer (a large model): frames keep coming meanwhile.
    proc = start_node(models_dir, tmp_path, load_delay_s=0.6, mode='ml', model_path='v1.onnx')
    try:
        with ros_context() as (node, ex):
            rig = Rig(node, ex)
            since = rig.wait_ready()
            assert spin_until(ex, lambda: len(rig.ml) > 0, 10.0)
            rig.phase = 'v1'
            rig.run_for(0.5)

            # Deploy v2 pinned to its sha256, as weld_training.deploy does.
            result = rig.set('v2', {'model_sha256': sha256_file(v2), 'model_path': str(v2)})
            assert result.successful, result.reason
            rig.run_for(1.0)

            # Every kind of bad model is refused with its reason; v2 keeps serving.
            for b in bad:
                result = rig.set(f'v2 after {b.kind}', {'model_path': str(b.path),
                                                        'model_sha256': b.sha256})
                assert not result.successful, f'{b.kind} was accepted'
                assert b.reason_hint in result.reason and 'weld-v2 keeps serving' in result.reason, \
                    f'{b.kind}: {result.reason}'
                rig.run_for(0.3)
            # A single-parameter set (as `ros2 param set` sends) is validated the same way,
            # against the sha256 approved with v2, which stays in force.
            result = rig.set('v2 after plain set', {'model_path': str(models_dir / 'v1.onnx')},
                             atomic=False)
            assert not result.successful and 'sha256' in result.reason
            rig.run_for(0.5)
            assert get_parameter(node, ex, NODE, 'model_path') == str(v2)

            tracked = rig.finish(since=since)
            diag = rig.latest_diag()
            late = []  # the latched active-model topic reaches a subscriber that joins now
            from std_msgs.msg import String

            from weld_vision_ros.ros.qos import latched_qos
            node.create_subscription(String, f'{NODE}/active_model', lambda m: late.append(m.data),
                                     latched_qos())
            spin_until(ex, lambda: late, 5.0)
    finally:
        stop(proc)

    # Every frame published once the node was up, swaps included, was answered exactly once.
    missing = [s for s in tracked if s not in rig.final]
    assert not missing, (f'{len(missing)} of {len(tracked)} frames unanswered: '
                         f'{[rig.sent[s]["i"] for s in missing]}, since {rig.sent[since]["i"] if since in rig.sent else since}\n'
                         f'{diag}\n{node_log(tmp_path)}')
    assert all(len(rig.final[s]) == 1 for s in tracked), 'a frame was answered twice'
    assert all(len(rig.ml[s]) == 1 for s in tracked), 'ml mode: every frame on weld/defect/ml too'
    assert len(tracked) >= 60

    # The switch to v2 happened once, in stamp order, and held through every refusal.
    versions = [rig.final[s][0].model_version for s in sorted(tracked)]
    assert set(versions) == {'weld-v1', 'weld-v2'}
    first_v2 = versions.index('weld-v2')
    assert versions[:first_v2] == ['weld-v1'] * first_v2 and set(versions[first_v2:]) == {'weld-v2'}
    for s in tracked:
        phase = rig.sent[s]['phase']
        if phase == 'v1':
            assert rig.final[s][0].model_version == 'weld-v1'
        elif phase.startswith('v2'):  # published after the deploy answered
            assert rig.final[s][0].model_version == 'weld-v2'
        msg = rig.final[s][0]
        assert msg.method == 'ml' and abs(sum(msg.probabilities) - 1) < 1e-4
        assert msg.header.frame_id == 'camera_color_optical_frame' and msg.latency_ms > 0
    assert sum(1 for s in tracked if rig.sent[s]['phase'].startswith('during')) >= len(bad) + 2
    # While v2 was loading (0.6 s and more), the node kept answering frames with v1.
    t_sent, t_answered = rig.calls['v2']
    assert t_answered - t_sent >= 0.6
    during = rig.answered_between(t_sent + 0.05, t_answered - 0.05)
    assert len(during) >= 2 and {m.model_version for m in during} == {'weld-v1'}, \
        [m.model_version for m in during]
    t_sent, t_answered = rig.calls['v2 after nan_output']  # and with v2 while a bad one loaded
    during = rig.answered_between(t_sent + 0.05, t_answered - 0.05)
    assert len(during) >= 2 and {m.model_version for m in during} == {'weld-v2'}

    assert diag['model_version'] == 'weld-v2' and diag['model_sha256'] == sha256_file(v2)
    assert diag['swaps_accepted'] == '1' and diag['swaps_refused'] == str(len(bad) + 1)
    assert 'sha256' in diag['last_refusal'] and diag['rule_fallback_active'] == 'False'
    assert int(diag['frames']) >= len(tracked) and diag['frames_ml'] == diag['frames']
    assert float(diag['ml_invocation_ratio']) == pytest.approx(1.0)
    assert float(diag['latency_p99_ms']) >= float(diag['latency_p50_ms']) > 0
    active = json.loads(late[-1])
    assert (active['version'], active['sha256'], active['path']) == \
        ('weld-v2', sha256_file(v2), str(v2.resolve()))


def test_modes_switch_at_run_time_and_hybrid_falls_back_to_rules(models, tmp_path):
    models_dir, _ = models
    # Started with a model that is refused: the node serves the rules and says why.
    proc = start_node(models_dir, tmp_path, mode='hybrid', model_path='not_onnx.onnx')
    try:
        with ros_context() as (node, ex):
            rig = Rig(node, ex)
            rig.confidence = lambda i: 0.2 if i % 2 else 0.9  # rules unsure on odd frames
            since = rig.wait_ready()
            rig.phase = 'no model'
            rig.run_for(1.0)
            diag_no_model = rig.latest_diag()

            assert rig.set('v1', {'model_path': 'v1.onnx', 'model_sha256': ''}).successful
            rig.run_for(1.5)
            diag_v1 = rig.latest_diag()

            assert rig.set('threshold 0.95', {'hybrid_threshold': 0.95}).successful
            rig.run_for(1.0)
            assert rig.set('rule', {'mode': 'rule'}, atomic=False).successful
            rig.run_for(1.0)
            assert rig.set('ml', {'mode': 'ml'}, atomic=False).successful
            rig.run_for(1.0)
            refused = {name: rig.set('ml', {name: value}, atomic=False)
                       for name, value in (('mode', 'auto'), ('hybrid_threshold', 1.5),
                                           ('providers', ['gpu']), ('models_dir', '/'))}

            # A model that passes validation but fails on bright frames: rules stand in.
            assert rig.set('flaky', {'mode': 'hybrid', 'hybrid_threshold': 0.7,
                                     'model_path': 'flaky.onnx'}).successful
            rig.white = lambda i: True
            rig.run_for(1.5)
            diag_flaky = rig.latest_diag()
            rig.white = lambda i: False
            assert rig.set('unloaded', {'model_path': ''}).successful
            rig.run_for(1.0)
            tracked = rig.finish(since=since)
            diag_end = rig.latest_diag()
    finally:
        stop(proc)

    missing = [s for s in tracked if s not in rig.final]
    assert not missing, (f'{len(missing)} frames unanswered: {[rig.sent[s] for s in missing]}\n'
                         f'{diag_end}\n{node_log(tmp_path)}')

    def answers(phase):
        out = [(rig.sent[s]['confidence'], rig.final[s][0], rig.ml.get(s, [])) for s in rig.stamps(phase)]
        assert len(out) >= 5, f'too few frames in phase {phase!r}'
        return out

    # No model: every verdict is the rule's, and diagnostics say why.
    for conf, final, ml in answers('no model'):
        assert (final.method, final.defect_class, final.model_version, ml) == ('rule', 'gap', '', [])
    assert diag_no_model['rule_fallback_active'] == 'True'
    assert 'no model loaded' in diag_no_model['rule_fallback_reason']
    assert 'refused at start' in diag_no_model['rule_fallback_reason']
    assert diag_no_model['_level'] == 1  # WARN

    # Hybrid with v1: the model runs exactly on the frames the rules are unsure about.
    for conf, final, ml in answers('v1'):
        assert final.method == 'hybrid'
        if conf < 0.7:
            assert len(ml) == 1 and ml[0].model_version == 'weld-v1' and ml[0].method == 'ml'
            assert (final.model_version, final.defect_class) == ('weld-v1', ml[0].defect_class)
        else:
            assert ml == [] and (final.model_version, final.defect_class) == ('', 'gap')
    assert diag_v1['rule_fallback_active'] == 'False' and diag_v1['model_version'] == 'weld-v1'
    assert 0.0 < float(diag_v1['ml_invocation_ratio']) < 1.0
    assert int(diag_v1['ml_invocations']) >= sum(1 for c, _, _ in answers('v1') if c < 0.7)

    # A higher threshold sends the confident frames to the model too.
    assert all(len(ml) == 1 and final.model_version == 'weld-v1'
               for _, final, ml in answers('threshold 0.95'))
    # Mode switches at run time.
    assert all(final.method == 'rule' and ml == [] for _, final, ml in answers('rule'))
    assert all(final.method == 'ml' and len(ml) == 1 for _, final, ml in answers('ml'))
    for name, result in refused.items():
        assert not result.successful and name in result.reason, (name, result.reason)

    # The model failing on a frame: that frame gets the rule verdict, diagnostics say so.
    flaky = answers('flaky')
    for conf, final, ml in flaky:
        assert final.method == 'rule' if conf < 0.7 else final.method == 'hybrid'
        assert ml == []
    assert diag_flaky['rule_fallback_active'] == 'True' and 'failed' in diag_flaky['rule_fallback_reason']
    assert int(diag_flaky['ml_errors']) >= sum(1 for c, _, _ in flaky if c < 0.7)
    # Unloaded: back to the rules.
    assert all(final.method == 'rule' for _, final, _ in answers('unloaded'))
    assert diag_end['rule_fallback_reason'] == 'no model loaded' and diag_end['model_version'] == ''
    assert sum(int(diag_end[k]) for k in ('frames_rule', 'frames_ml', 'frames_hybrid',
                                          'frames_without_verdict')) == int(diag_end['frames'])


def test_real_node_runs_the_rule_core_in_process_and_asks_the_model_where_it_is_unsure(models, tmp_path):
    """The installed entry point (real rules) on synthetic weld frames."""
    from weld_vision_ros.core.frames import RGBDFrame
    from weld_vision_ros.core.rules import inspect_frame
    from weld_vision_ros.simulator.renderer import default_intrinsics, render_random
    models_dir, _ = models
    rng = np.random.default_rng(11)
    intr = default_intrinsics(320, 240)
    scenes = [render_random(rng, intr) for _ in range(12)]
    expected = [inspect_frame(RGBDFrame(f.rgb, f.depth_m, f.intrinsics)).verdict for f in scenes]
    # A threshold between two of the scenes' rule confidences, so both branches are taken.
    confidences = sorted(v.confidence for v in expected if v is not None)
    assert len(set(confidences)) >= 2
    k = len(confidences) // 2
    while confidences[k - 1] == confidences[k]:
        k += 1
    threshold = 0.5 * (confidences[k - 1] + confidences[k])
    values = {'models_dir': str(models_dir), 'image_reliability': 'reliable',
              'image_queue_depth': 100, 'mode': 'rule', 'model_path': 'v1.onnx'}
    proc = spawn_node('weld_vision_ros.nodes.onnx_defect_node', values, log_path=tmp_path / 'onnx_node.log')
    try:
        with ros_context() as (node, ex):
            rig = Rig(node, ex)
            rig.make_frame = lambda i: (scenes[i % len(scenes)].rgb, scenes[i % len(scenes)].depth_m,
                                        intr, {'scene': i % len(scenes)})
            since = rig.wait_ready(timeout_s=60.0)
            refused = rig.set('rule', {'rules.mark_darkness': 5.0}, atomic=False)
            rig.run_for(len(scenes) / RATE_HZ + 0.3)
            assert rig.set('hybrid', {'mode': 'hybrid', 'hybrid_threshold': threshold}).successful
            rig.run_for(len(scenes) / RATE_HZ + 0.3)
            rig.publishing = False
            tracked = [s for s in rig.sent if s >= since]
            spin_until(ex, lambda: all(s in rig.final
                                       for s in tracked), 30.0)
            rig.run_for(1.0)
    finally:
        stop(proc)
    assert not refused.successful and 'rules.mark_darkness' in refused.reason
    checked = {'rule': 0, 'hybrid': 0}
    for s in tracked:
        phase, want = rig.sent[s]['phase'], expected[rig.sent[s]['scene']]
        got, ml = rig.final.get(s, []), rig.ml.get(s, [])
        if phase == 'rule':
            if want is None:  # no bead measured: published as not inspected, model not asked
                assert len(got) == 1 and got[0].status == 'not_inspected' and ml == []
                assert got[0].status_reason == 'no_bead' and got[0].defect_class != 'good'
            else:
                assert len(got) == 1 and got[0].method == 'rule' and ml == []
                assert (got[0].defect_class, got[0].model_version) == (want.defect_class, '')
                assert got[0].confidence == pytest.approx(want.confidence, abs=1e-5)
            checked['rule'] += 1
        elif phase == 'hybrid':
            assert len(got) == 1 and got[0].method == 'hybrid', node_log(tmp_path)
            if want is None:  # not inspectable: never sent to the model, never good
                assert ml == [] and got[0].status == 'not_inspected' and got[0].defect_class != 'good'
            elif want.confidence >= threshold:  # rules sure: their verdict stands
                assert ml == [] and (got[0].defect_class, got[0].model_version) == (want.defect_class, '')
            else:  # rules unsure: the model decides
                assert len(ml) == 1 and got[0].model_version == 'weld-v1'
                assert got[0].defect_class == ml[0].defect_class
            checked['hybrid'] += 1
    assert checked['rule'] >= len(scenes) // 2 and checked['hybrid'] >= len(scenes) // 2
    asked = [s for s in tracked if rig.sent[s]['phase'] == 'hybrid' and s in rig.ml]
    assert 0 < len(asked) < checked['hybrid']


def test_an_unexpected_error_while_loading_is_a_refusal_not_a_crash(tmp_path):
    import rclpy
    from rclpy.parameter import Parameter

    from test.helpers.onnx_node_stub_rules import stub_rules
    from weld_vision_ros.nodes.onnx_defect_node import OnnxDefectNode

    def loader(*args, **kwargs):
        raise MemoryError('cannot allocate the session')

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = OnnxDefectNode(rule_fn=stub_rules, loader=loader, context=ctx, parameter_overrides=[
            Parameter('models_dir', value=str(tmp_path)), Parameter('model_path', value='a.onnx')])
        values = node.diagnostics_values()
        assert node.cascade.classifier is None and values['rule_fallback_active']
        assert 'refused at start' in values['rule_fallback_reason'] and 'MemoryError' in values['rule_fallback_reason']
        (result,) = node.set_parameters([Parameter('model_path', value='b.onnx')])
        assert not result.successful and 'MemoryError' in result.reason
        assert node.swaps_refused == 1 and node.get_parameter('model_path').value == 'a.onnx'
        (result,) = node.set_parameters([Parameter('mode', value='rule')])  # other sets still work
        assert result.successful and node.cascade.config.mode == 'rule'
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
