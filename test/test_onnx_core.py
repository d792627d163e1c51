"""ONNX classifier and hybrid cascade without ROS: validation before use, the shared
preprocessing, providers, the cascade's combination and fallback, and its counts."""
import threading
from dataclasses import replace

import numpy as np
import pytest

from test.helpers.onnx_models import (contract, export_graph, sha256_file, torch_logits, with_metadata,
                                      with_metadata, write_bad_models, write_model)
from weld_vision_ros.core.camera import Intrinsics
from weld_vision_ros.core.cascade import (CascadeConfig, HybridCascade, combine)
from weld_vision_ros.core.frames import RGBDFrame
from weld_vision_ros.core.onnx_classifier import (PROVIDERS, InferenceError, ModelValidationError,
                                                  ProviderUnavailableError, RuntimeOptions,
                                                  available_providers, load_classifier,
                                                  probabilities_from_output, resolve_providers)
from weld_vision_ros.core.preprocess import preprocess
from weld_vision_ros.core.results import BeadMeasurement, DefectRegion, Verdict
from weld_vision_ros.core.rules import Inspection

CLASSES = ('good', 'porosity', 'undercut', 'spatter', 'gap', 'crack')


def make_frame(seed: int = 1, w: int = 96, h: int = 72, white: bool = False) -> RGBDFrame:
    rng = np.random.default_rng(seed)
    rgb = np.full((h, w, 3), 250, np.uint8) if white else rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    depth = np.full((h, w), 0.3, np.float32)
    depth[:, w // 2 - 4:w // 2 + 4] -= 0.002 * (seed % 3)
    return RGBDFrame(rgb, depth, Intrinsics(500.0, 500.0, w / 2, h / 2, w, h), stamp_ns=seed)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp('onnx_core')
    models_dir, outside = root / 'models', root / 'outside'
    models_dir.mkdir()
    outside.mkdir()
    write_model(models_dir / 'v1.onnx', 'v1', seed=0)
    write_model(models_dir / 'rgbd.onnx', 'rgbd-1', seed=3, channels='rgbd')
    write_model(models_dir / 'flaky.onnx', 'flaky-1', seed=2, nan_when_bright=True)
    bad = write_bad_models(models_dir, outside)
    return models_dir, bad


def load(models_dir, name, **kw):
    return load_classifier(name, models_dir=str(models_dir), **kw)


# --- classifier ------------------------------------------------------------------------
def test_valid_model_classifies_with_the_training_preprocessing_and_matches_torch(models):
    models_dir, _ = models
    clf = load(models_dir, 'v1.onnx')  # relative to models_dir
    assert clf.version == 'v1' and clf.info.path == str((models_dir / 'v1.onnx').resolve())
    assert clf.info.sha256 == sha256_file(models_dir / 'v1.onnx')
    assert clf.info.class_names == CLASSES and clf.info.providers == ('cpu',)
    frame = make_frame(5)
    x = clf.input_tensor(frame)
    # Exactly the shared preprocessing, with the preset the model carries.
    assert np.array_equal(x[0], preprocess(frame.rgb, None, clf.preset))
    verdict = clf.classify(frame)
    assert verdict.method == 'ml' and verdict.model_version == 'v1'
    # latency_ms is reception to verdict: the node's to fill, not the classifier's.
    assert verdict.class_names == CLASSES and verdict.latency_ms == 0.0
    assert sum(verdict.probabilities) == pytest.approx(1.0)
    # Softmax of the logits torch computes for the same input: the export and the reader agree.
    expected = probabilities_from_output(torch_logits(x, seed=0)[0], 'logits')
    assert np.allclose(verdict.probabilities, expected, atol=1e-5)
    assert verdict.defect_class == CLASSES[int(np.argmax(expected))]
    assert verdict.confidence == pytest.approx(float(expected.max()))


def test_rgbd_model_reads_the_relief_channel(models):
    models_dir, _ = models
    clf = load(models_dir, 'rgbd.onnx')
    assert clf.info.channels == 'rgbd' and clf.input_tensor(make_frame()).shape == (1, 4, 64, 64)
    frame = make_frame(7)
    bumped = RGBDFrame(frame.rgb, frame.depth_m - np.where(np.arange(96) > 48, 0.004, 0.0).astype(np.float32),
                       frame.intrinsics)
    assert not np.allclose(clf.classify(frame).probabilities, clf.classify(bumped).probabilities)


def test_softmax_only_for_logits():
    p = probabilities_from_output(np.array([1000.0, 1000.0, -5.0]), 'logits')  # no overflow
    assert p == pytest.approx([0.5, 0.5, 0.0], abs=1e-9)
    assert probabilities_from_output(np.array([0.2, 0.8]), 'probabilities') == pytest.approx([0.2, 0.8])


def test_every_kind_of_bad_model_is_refused_with_a_reason(models):
    models_dir, bad = models
    kinds = {b.kind for b in bad}
    assert {'not_onnx', 'truncated', 'wrong_input_shape', 'class_count_mismatch', 'nan_output',
            'outside_models_dir', 'sha_mismatch', 'missing_metadata'} <= kinds
    for b in bad:
        with pytest.raises(ModelValidationError) as info:
            load_classifier(str(b.path), models_dir=str(models_dir), expected_sha256=b.sha256)
        assert b.reason_hint in str(info.value), f'{b.kind}: {info.value}'


def test_model_limits_refuse_size_input_and_time_before_paying_for_them(models, tmp_path, monkeypatch):
    from pathlib import Path

    from weld_vision_ros.core.onnx_classifier import ModelLimits
    models_dir, _ = models
    # A small graph whose contract declares a 12000x12000 input: refused before any allocation.
    huge = models_dir / 'huge_input.onnx'
    huge.write_bytes(with_metadata(export_graph(seed=0), contract('huge', input_size=12000).to_metadata()))
    with pytest.raises(ModelValidationError, match='12000x12000 input'):
        load(models_dir, 'huge_input.onnx')
    # A file over max_model_mb is refused from its size: never read.
    reads = []
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, 'read_bytes', lambda self: reads.append(self) or real_read(self))
    with pytest.raises(ModelValidationError, match='max_model_mb'):
        load(models_dir, 'v1.onnx', limits=ModelLimits(max_file_mb=0.001))
    assert reads == []
    monkeypatch.undo()
    # A model slower than max_inference_ms per frame is refused, not served.
    with pytest.raises(ModelValidationError, match='max_inference_ms'):
        load(models_dir, 'v1.onnx', limits=ModelLimits(max_inference_ms=1e-6))
    # require_sha256: a load naming no sha256 is refused; with the right one it loads.
    with pytest.raises(ModelValidationError, match='model_sha256 is required'):
        load(models_dir, 'v1.onnx', limits=ModelLimits(require_sha256=True))
    clf = load(models_dir, 'v1.onnx', expected_sha256=sha256_file(models_dir / 'v1.onnx'),
               limits=ModelLimits(require_sha256=True))
    assert clf.version == 'v1'
    with pytest.raises(ValueError, match='max_inference_ms'):
        ModelLimits(max_inference_ms=0)


def test_missing_metadata_names_each_missing_key(models):
    models_dir, _ = models
    meta = contract('partial').to_metadata()
    del meta['weld.model_version'], meta['weld.preprocess']
    (models_dir / 'partial.onnx').write_bytes(with_metadata(export_graph(), meta))
    with pytest.raises(ModelValidationError, match='weld.preprocess, weld.model_version') as info:
        load(models_dir, 'partial.onnx')
    assert 'weld.class_names' not in str(info.value)


@pytest.mark.parametrize('change, hint', [
    ({'channels': 'rgbd'}, r'\(batch, 3, 64, 64\).*\(N, 4, 64, 64\)'),
    ({'output_kind': 'probabilities'}, 'sum to'),
    ({'class_names': CLASSES + ('burn_through',)}, '7 classes'),
])
def test_metadata_that_disagrees_with_the_graph_is_refused(models, change, hint):
    models_dir, _ = models
    name = f'disagree_{"_".join(change)}.onnx'
    (models_dir / name).write_bytes(with_metadata(export_graph(), contract('x', **change).to_metadata()))
    with pytest.raises(ModelValidationError, match=hint):
        load(models_dir, name)


def test_io_names_must_match_the_contract(models):
    models_dir, _ = models
    meta = contract('names').to_metadata()
    meta['weld.input_name'] = 'rgb'
    (models_dir / 'names.onnx').write_bytes(with_metadata(export_graph(), meta))
    with pytest.raises(ModelValidationError, match=r"weld.input_name is 'rgb'.*\['image'\]"):
        load(models_dir, 'names.onnx')


def test_paths_and_models_dir(models, tmp_path):
    models_dir, _ = models
    with pytest.raises(ModelValidationError, match='does not exist'):
        load(models_dir, 'nope.onnx')
    with pytest.raises(ModelValidationError, match='models_dir is not set'):
        load_classifier(str(models_dir / 'v1.onnx'), models_dir='')
    with pytest.raises(ModelValidationError, match='models_dir .* does not exist'):
        load_classifier(str(models_dir / 'v1.onnx'), models_dir=str(tmp_path / 'gone'))
    with pytest.raises(ModelValidationError, match='outside models_dir'):
        load(models_dir, '../outside/outside_models_dir.onnx')  # '..' does not escape
    (models_dir / 'sub').mkdir(exist_ok=True)
    with pytest.raises(ModelValidationError, match='not a regular file'):
        load(models_dir, 'sub')
    (models_dir / 'empty.onnx').write_bytes(b'')
    with pytest.raises(ModelValidationError, match='empty'):
        load(models_dir, 'empty.onnx')


def test_sha256_is_checked_when_given(models):
    models_dir, _ = models
    digest = sha256_file(models_dir / 'v1.onnx')
    assert load(models_dir, 'v1.onnx', expected_sha256=digest.upper()).info.sha256 == digest
    assert load(models_dir, 'v1.onnx', expected_sha256='sha256:' + digest).version == 'v1'
    with pytest.raises(ModelValidationError, match='64 hexadecimal digits'):
        load(models_dir, 'v1.onnx', expected_sha256=digest[:40])
    with pytest.raises(ModelValidationError, match=f'is {digest}'):
        load(models_dir, 'v1.onnx', expected_sha256='0' * 64)


def test_providers_are_resolved_in_order_of_preference(models):
    assert resolve_providers(['cuda', 'cpu'], ['cpu']) == (['cpu'], ['cuda'])
    assert resolve_providers(['tensorrt', 'cuda', 'cpu'], ['cuda', 'cpu']) == (['cuda', 'cpu'], ['tensorrt'])
    with pytest.raises(ProviderUnavailableError, match="add 'cpu'"):
        resolve_providers(['cuda'], ['cpu'])
    with pytest.raises(ValueError, match='valid: cpu, cuda, tensorrt, openvino'):
        RuntimeOptions(providers=('gpu',))
    with pytest.raises(ValueError, match='0..256'):
        RuntimeOptions(intra_op_threads=-1)
    models_dir, _ = models
    missing = [p for p in PROVIDERS if p not in available_providers()]
    assert 'cpu' in available_providers() and missing, 'expected a CPU-only onnxruntime here'
    with pytest.raises(ProviderUnavailableError, match=missing[0]):
        load(models_dir, 'v1.onnx', options=RuntimeOptions(providers=(missing[0],)))
    clf = load(models_dir, 'v1.onnx', options=RuntimeOptions(providers=(missing[0], 'cpu'),
                                                               intra_op_threads=2))
    assert clf.info.providers == ('cpu',) and clf.info.skipped_providers == (missing[0],)


def test_a_model_failing_on_a_frame_raises_inference_error(models):
    models_dir, _ = models
    clf = load(models_dir, 'flaky.onnx')  # passes validation...
    assert clf.classify(make_frame(2)).model_version == 'flaky-1'
    with pytest.raises(InferenceError, match='non-finite'):  # ...but not a white frame
        clf.classify(make_frame(2, white=True))


# --- cascade -----------------------------------------------------------------------------
def rule_verdict(cls: str, confidence: float) -> Verdict:
    probs = tuple(confidence if c == cls else (1 - confidence) / 5 for c in CLASSES)
    regions = (DefectRegion('porosity', 0.6, 1, 2, 3, 4), DefectRegion('spatter', 0.5, 5, 6, 7, 8))
    return Verdict(cls, confidence, CLASSES, probs, 'rule', regions=regions)


class StubRules:
    """The rule core's interface: frame -> (BeadMeasurement, Verdict); confidence by stamp."""

    def __init__(self, confidences):
        self.confidences, self.calls = confidences, 0

    def __call__(self, frame):
        self.calls += 1
        conf = self.confidences[frame.stamp_ns]
        if conf is None:  # no bead measured: no rule verdict
            return Inspection(BeadMeasurement.invalid('no bead in view'), None, None, ())
        return Inspection(BeadMeasurement(valid=True, width_mm=4.0), rule_verdict('gap', conf), None, ())


class StubModel:
    def __init__(self, version, cls='porosity', fail_on=()):
        self.version, self.cls, self.fail_on, self.calls = version, cls, set(fail_on), 0

    def classify(self, frame, seam=None):
        self.calls += 1
        if frame.stamp_ns in self.fail_on:
            raise InferenceError(f'model {self.version} returned non-finite outputs')
        probs = tuple(0.9 if c == self.cls else 0.02 for c in CLASSES)
        return Verdict(self.cls, 0.9, CLASSES, probs, 'ml', self.version)


def frames(*stamps):
    return [make_frame(s) for s in stamps]


def test_rule_and_ml_modes():
    rules, model = StubRules({1: 0.2, 2: 0.9}), StubModel('m1')
    cascade = HybridCascade(rules, CascadeConfig('rule'), model)
    results = [cascade.run(f) for f in frames(1, 2)]
    assert [r.final.method for r in results] == ['rule', 'rule'] and model.calls == 0
    assert results[0].bead.width_mm == 4.0 and results[0].ml is None
    cascade.config = CascadeConfig('ml')
    results = [cascade.run(f) for f in frames(1, 2)]
    assert [(r.final.method, r.final.model_version) for r in results] == [('ml', 'm1')] * 2
    assert rules.calls == 4 and model.calls == 2  # ml mode runs the rules first (inspectability)
    assert cascade.stats.ml_invocations == 2 and cascade.stats.ml_invocation_ratio == 0.5
    assert dict(cascade.stats.by_method) == {'rule': 2, 'ml': 2}


def test_hybrid_runs_the_model_only_where_rules_are_unsure():
    rules = StubRules({1: 0.2, 2: 0.9, 3: 0.70, 4: 0.69})
    model = StubModel('m1', cls='porosity')
    cascade = HybridCascade(rules, CascadeConfig('hybrid', 0.70), model)
    r1, r2, r3, r4 = (cascade.run(f) for f in frames(1, 2, 3, 4))
    # Unsure rules: the model decides, rule regions of the decided class are kept.
    assert r1.ml_invoked and r1.final.method == 'hybrid' and r1.final.defect_class == 'porosity'
    assert r1.final.model_version == 'm1' and r1.final.confidence == pytest.approx(0.9)
    assert [g.defect_class for g in r1.final.regions] == ['porosity']
    assert r1.ml.method == 'ml' and r1.rule.defect_class == 'gap'
    # Sure rules (at or above the threshold): the rule verdict stands, as hybrid.
    for r in (r2, r3):
        assert not r.ml_invoked and r.ml is None
        assert (r.final.method, r.final.defect_class, r.final.model_version) == ('hybrid', 'gap', '')
    assert r4.ml_invoked
    assert model.calls == 2 and cascade.stats.ml_invocations == 2
    assert cascade.stats.ml_invocation_ratio == pytest.approx(0.5)
    cascade.config = CascadeConfig('hybrid', 0.95)  # live threshold change
    assert cascade.run(make_frame(2)).ml_invoked


def test_combine_keeps_ml_decision_and_the_rules_regions_of_that_class():
    rule = rule_verdict('gap', 0.4)
    ml = StubModel('m9', cls='spatter').classify(make_frame(1))
    out = combine(rule, ml)
    assert (out.defect_class, out.method, out.model_version) == ('spatter', 'hybrid', 'm9')
    assert out.probabilities == ml.probabilities
    assert [r.defect_class for r in out.regions] == ['spatter']


def test_no_model_or_ml_failure_falls_back_to_the_rule_verdict():
    rules = StubRules({1: 0.2, 2: 0.2, 3: 0.9})
    cascade = HybridCascade(rules, CascadeConfig('hybrid'))
    assert cascade.fallback_state() == (True, 'no model loaded')
    r = cascade.run(make_frame(1))
    assert (r.final.method, r.final.defect_class, r.fallback) == ('rule', 'gap', 'no model loaded')
    assert not r.ml_invoked and cascade.stats.fallbacks['no_model'] == 1
    cascade.config = CascadeConfig('ml')
    r = cascade.run(make_frame(1))
    assert r.final.method == 'rule' and r.fallback == 'no model loaded'
    cascade.config = CascadeConfig('rule')
    assert cascade.fallback_state() == (False, '')

    cascade.config = CascadeConfig('hybrid')
    cascade.swap_classifier(StubModel('m1', fail_on={2}))
    assert cascade.fallback_state() == (False, '')
    r = cascade.run(make_frame(2))
    assert r.ml_invoked and r.ml is None and r.final.method == 'rule'
    assert 'non-finite' in r.fallback and cascade.stats.ml_errors == 1
    active, why = cascade.fallback_state()
    assert active and 'failed' in why
    assert cascade.run(make_frame(1)).final.model_version == 'm1'  # next frame is fine again
    assert cascade.fallback_state() == (False, '')
    cascade.config = CascadeConfig('ml')
    r = cascade.run(make_frame(2))
    assert r.final.method == 'rule' and r.ml_invoked and cascade.stats.fallbacks['ml_error'] == 2


@pytest.mark.parametrize('mode', ['rule', 'ml', 'hybrid'])
@pytest.mark.parametrize('reason,status_reason', [
    ('no bead in view: nothing stands above the plate', 'no_bead'),
    ('depth valid on only 1.0 % of the image', 'no_depth'),
    ('only 12 valid depth samples: cannot fit the plate', 'no_depth'),
    ('no plane supports enough depth samples: no plate in view', 'bad_frame'),
])
def test_a_frame_the_rules_cannot_inspect_is_published_as_not_inspected_never_good(
        mode, reason, status_reason):
    class NoBead:
        calls = 0

        def __call__(self, frame):
            self.calls += 1
            return Inspection(BeadMeasurement.invalid(reason), None, None, ())

    model = StubModel('m1', cls='good')  # a model says 'good' to anything
    cascade = HybridCascade(NoBead(), CascadeConfig(mode, 0.7), model)
    r = cascade.run(make_frame(1))
    assert not r.final.inspected and r.final.status == 'not_inspected'
    assert r.final.defect_class != 'good' and r.final.confidence == 0.0
    assert (r.final.status_reason, r.final.status_detail, r.final.method) == (status_reason, reason, mode)
    assert len(r.final.probabilities) == len(r.final.class_names) and not any(r.final.probabilities)
    assert model.calls == 0 and not r.ml_invoked and r.ml is None and not r.bead.valid
    assert cascade.stats.not_inspected == {status_reason: 1} and cascade.stats.no_verdict == 0


def test_ml_mode_checks_inspectability_with_the_rules_and_hands_the_model_their_seam():
    rules, seams = StubRules({1: 0.9}), []

    class Seams(StubModel):
        def classify(self, frame, seam=None):
            seams.append(seam)
            return super().classify(frame, seam)

    cascade = HybridCascade(rules, CascadeConfig('ml'), Seams('m1'))
    r = cascade.run(make_frame(1))
    assert rules.calls == 1 and r.final.method == 'ml' and r.rule.defect_class == 'gap'
    assert r.bead.valid and seams == [None]  # the stub's geometry carries no seam


def test_a_frame_is_served_by_one_model_even_if_a_swap_happens_during_it():
    rules = StubRules({1: 0.1, 2: 0.1})
    cascade = HybridCascade(rules, CascadeConfig('ml'))

    class SwapsDuring(StubModel):
        def classify(self, frame, seam=None):
            cascade.swap_classifier(StubModel('new'))  # a parameter thread swapping mid-frame
            return super().classify(frame, seam)

    cascade.swap_classifier(SwapsDuring('old'))
    assert cascade.run(make_frame(1)).final.model_version == 'old'
    assert cascade.run(make_frame(2)).final.model_version == 'new'


def test_swaps_from_another_thread_never_mix_models(models):
    models_dir, _ = models
    v1 = load(models_dir, 'v1.onnx')
    write_model(models_dir / 'v2.onnx', 'v2', seed=1)
    v2 = load(models_dir, 'v2.onnx')
    expected = {m.version: m.classify(make_frame(3)).probabilities for m in (v1, v2)}
    cascade = HybridCascade(StubRules({3: 0.1}), CascadeConfig('ml'), v1)
    stop = threading.Event()

    def swapper():
        while not stop.is_set():
            for m in (v2, v1):
                cascade.swap_classifier(m)

    t = threading.Thread(target=swapper)
    t.start()
    try:
        seen = [cascade.run(make_frame(3)).final for _ in range(200)]
    finally:
        stop.set()
        t.join()
    for v in seen:  # probabilities always those of the version named
        assert v.probabilities == pytest.approx(expected[v.model_version])


def test_cascade_config_is_validated():
    with pytest.raises(ValueError, match='rule, ml, hybrid'):
        CascadeConfig('auto')
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        CascadeConfig('hybrid', 1.5)


def test_the_contract_temperature_is_applied_to_the_logits(models, tmp_path):
    """A calibrated model (weld.temperature) gives softmax(logits / T); the class is unchanged."""
    from weld_vision_ros.core.model_contract import ModelContract, ModelContractError

    models_dir, _ = models
    calibrated = replace(contract('cal-1'), temperature=2.5)
    meta = calibrated.to_metadata()
    assert ModelContract.from_metadata(meta).temperature == 2.5
    older = {k: v for k, v in meta.items() if k != 'weld.temperature'}
    assert ModelContract.from_metadata(older).temperature == 1.0  # models exported before calibration
    (models_dir / 'cal.onnx').write_bytes(with_metadata(export_graph(seed=0), meta))
    plain, cal = load(models_dir, 'v1.onnx'), load(models_dir, 'cal.onnx')
    frame = make_frame(5)
    logits = torch_logits(plain.input_tensor(frame), seed=0)[0]
    got = np.array(cal.classify(frame).probabilities)
    e = np.exp(logits / 2.5 - np.max(logits / 2.5))
    assert np.allclose(got, e / e.sum(), atol=1e-5)
    assert cal.classify(frame).defect_class == plain.classify(frame).defect_class
    assert cal.classify(frame).confidence < plain.classify(frame).confidence  # T > 1 softens
    for bad in ('0', '-1', 'nan', 'warm'):
        with pytest.raises(ModelContractError, match='temperature'):
            ModelContract.from_metadata({**meta, 'weld.temperature': bad})
    with pytest.raises(ModelContractError, match="output_kind 'logits' only"):
        replace(contract('p', output_kind='probabilities'), temperature=2.0)
