"""Anomaly detection trained on good welds only: fit -> ONNX export (bank in the graph) -> parity
-> validation; the ONNX node serves it in its own slot across processes; models of the wrong
kind are refused in either slot while the serving one keeps serving; a frame the rules call
good that the anomaly model flags is never published as good."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from test.helpers.onnx_models import write_model

FIT_FRAMES = 40


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    from weld_training.anomaly import AnomalyFitConfig, export_anomaly, fit_anomaly
    from weld_vision_ros.simulator.renderer import default_intrinsics, render_random
    rng = np.random.default_rng(101)
    intr = default_intrinsics()
    good = [render_random(rng, intr, 'good') for _ in range(FIT_FRAMES)]
    model = fit_anomaly(good, AnomalyFitConfig(bank_per_row=120), progress=None)
    models = tmp_path_factory.mktemp('models')
    export_anomaly(model, models / 'anomaly.onnx', 'anomaly-test-1', parity_frames=good[:2])
    export_anomaly(model, tmp_path_factory.mktemp('candidates') / 'anomaly2.onnx', 'anomaly-test-2')
    write_model(models / 'classifier.onnx', 'classifier-1', seed=1)
    return model, models


def test_fit_calibrates_levels_and_separates_defects_from_good(fitted):
    from weld_training.anomaly import frame_scores, roc_auc
    from weld_vision_ros.simulator.renderer import default_intrinsics, render_random
    model, _ = fitted
    t = model.thresholds
    assert 0 < t.potential < t.inspect < t.critical
    assert model.calibration['calibration_frames'] + model.calibration['fit_frames'] == FIT_FRAMES
    assert model.banks.shape[0] == model.preset.input_height // model.config.patch_px
    rng = np.random.default_rng(202)
    intr = default_intrinsics()
    good = frame_scores(model, [render_random(rng, intr, 'good') for _ in range(12)])
    bad = frame_scores(model, [render_random(rng, intr, c) for c in ('porosity', 'spatter', 'gap') for _ in range(4)])
    assert roc_auc(good, bad) > 0.8, (good, bad)


def test_the_onnx_model_scores_frames_with_levels_and_regions(fitted):
    from weld_vision_ros.core.anomaly import LEVELS, load_anomaly_model
    from weld_vision_ros.core.frames import RGBDFrame
    from weld_vision_ros.simulator.renderer import default_intrinsics, render_random
    model, models = fitted
    served = load_anomaly_model('anomaly.onnx', models_dir=str(models))
    assert served.version == 'anomaly-test-1' and served.contract.thresholds == model.thresholds
    rng = np.random.default_rng(5)
    f = render_random(rng, default_intrinsics(), 'spatter')
    r = served.score(RGBDFrame(f.rgb, f.depth_m, f.intrinsics))
    assert 0.0 <= r.score <= 1.0 and r.level in LEVELS and r.anomaly_map.shape == (24, 256)
    if r.flags:
        assert r.regions and all(0 <= reg.x_px < 640 and reg.length_mm > 0 for reg in r.regions)


def test_each_slot_refuses_the_other_kind_with_a_reason(fitted):
    from weld_vision_ros.core.anomaly import load_anomaly_model
    from weld_vision_ros.core.onnx_classifier import ModelValidationError, load_classifier
    _, models = fitted
    with pytest.raises(ModelValidationError, match='set it as anomaly_model_path'):
        load_classifier('anomaly.onnx', models_dir=str(models))
    with pytest.raises(ModelValidationError, match='set it as model_path'):
        load_anomaly_model('classifier.onnx', models_dir=str(models))


def test_a_good_verdict_flagged_by_the_anomaly_model_is_not_published_as_good(fitted):
    """The slot's rule, with a stand-in model whose level is chosen by the test."""
    rclpy = pytest.importorskip('rclpy')
    from types import SimpleNamespace
    from weld_vision_ros.core.anomaly import AnomalyResult, Thresholds
    from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
    from weld_vision_ros.core.onnx_classifier import ModelLimits, RuntimeOptions
    from weld_vision_ros.core.preprocess import CropInfo
    from weld_vision_ros.core.results import DefectRegion, Verdict
    from weld_vision_ros.ros.anomaly_slot import AnomalySlot

    class Stub:
        version, path, sha256 = 'stub-1', '/tmp/x.onnx', ''
        contract = SimpleNamespace(thresholds=Thresholds(1.0, 2.0, 4.0))
        level = 'critical'

        def score(self, frame):
            region = DefectRegion('anomaly', 0.9, 10, 10, 5, 5, length_mm=2.0)
            return AnomalyResult(0.9 if self.level == 'critical' else 0.1, 9.0, self.level, (region,),
                                 np.zeros((24, 256), np.float32), CropInfo(), 'stub-1')

    stub = Stub()
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node('slot_probe', context=ctx,
                                 parameter_overrides=[rclpy.parameter.Parameter('anomaly_model_path', value='x.onnx')])
        slot = AnomalySlot(node, lambda: '/tmp', RuntimeOptions, ModelLimits, loader=lambda *a, **k: stub)
        good = Verdict('good', 0.97, DEFAULT_CLASS_NAMES, (0.97,) + (0.006,) * 5, 'rule')
        out = slot.apply(SimpleNamespace(), good, None)
        assert not out.inspected and out.status_reason == 'unknown_appearance' and out.defect_class == ''
        assert out.anomaly_level == 'critical' and out.anomaly_model_version == 'stub-1' and out.anomaly_regions
        assert slot.counts['good_overridden'] == 1
        stub.level = 'normal'
        out = slot.apply(SimpleNamespace(), good, None)
        assert out.inspected and out.defect_class == 'good' and out.anomaly_level == 'normal'
        porosity = Verdict('porosity', 0.9, DEFAULT_CLASS_NAMES, (0.02, 0.9) + (0.02,) * 4, 'rule')
        assert slot.apply(SimpleNamespace(), porosity, None) is porosity      # rule_good: not scored
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


def test_the_onnx_node_serves_the_anomaly_model_in_its_own_slot(fitted, tmp_path):
    pytest.importorskip('rclpy')
    from weld_vision_ros.msg import WeldDefect
    from test.rosutil import ros_context, set_parameters, spawn_node, spin_until, stop
    _, models = fitted
    onnx = spawn_node('weld_vision_ros.nodes.onnx_defect_node',
                      {'models_dir': str(models), 'mode': 'rule', 'anomaly_frames': 'all',
                       'image_reliability': 'reliable'}, log_path=tmp_path / 'onnx.log')
    camera = None
    got = []
    try:
        with ros_context('anomaly_probe') as (node, ex):
            node.create_subscription(WeldDefect, 'weld/defect', got.append, 50)
            res = set_parameters(node, ex, '/onnx_defect_node', {'anomaly_model_path': 'anomaly.onnx'}, 60.0)
            assert res[0].successful, res[0].reason
            camera = spawn_node('weld_vision_ros.simulator.synthetic_camera_node',
                                {'rate_hz': 4.0, 'seed': 9, 'image_reliability': 'reliable'},
                                log_path=tmp_path / 'camera.log')
            assert spin_until(ex, lambda: sum(m.anomaly_model_version == 'anomaly-test-1' for m in got) >= 3, 60.0), \
                (tmp_path / 'onnx.log').read_text()[-2000:]
            scored = [m for m in got if m.anomaly_model_version]
            assert all(0.0 <= m.anomaly_score <= 1.0 and m.anomaly_level for m in scored)
            # a classifier in the anomaly slot is refused; the anomaly model keeps serving
            res = set_parameters(node, ex, '/onnx_defect_node', {'anomaly_model_path': 'classifier.onnx'}, 60.0)
            assert not res[0].successful and 'anomaly-test-1 keeps serving' in res[0].reason
            assert 'set it as model_path' in res[0].reason
            # ... and the anomaly model in the classifier slot is refused too
            res = set_parameters(node, ex, '/onnx_defect_node', {'model_path': 'anomaly.onnx'}, 60.0)
            assert not res[0].successful and 'anomaly_model_path' in res[0].reason
            n = len(got)
            assert spin_until(ex, lambda: len(got) >= n + 2, 30.0)
            assert got[-1].anomaly_model_version == 'anomaly-test-1'
            # weld-train deploy puts an anomaly model in the anomaly slot, recorded as such
            from weld_training.cli import main as weld_train
            from weld_training.registry import Registry
            candidate = next(models.parent.glob('candidates*/anomaly2.onnx'))
            reg = tmp_path / 'registry.sqlite'
            assert weld_train(['deploy', str(candidate), '--registry', str(reg), '--timeout', '60']) == 0
            n = len(got)
            assert spin_until(ex, lambda: any(m.anomaly_model_version == 'anomaly-test-2' for m in got[n:]), 30.0)
            record = Registry(reg).get_model('anomaly-test-2')
            assert record.metrics['kind'] == 'anomaly' and record.deployed_to == '/onnx_defect_node:anomaly'
    finally:
        if camera is not None:
            stop(camera)
        stop(onnx)
