"""Small-data honesty and calibration end to end: a recording too small for every class to
reach every split is warned about at extraction and at evaluation, metrics average over the
classes present, and `weld-train evaluate` reports the ECE with a reliability diagram."""
import json

import numpy as np
import pytest
import torch

from weld_training import train
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_training.dataset import extract_dataset, load_manifest
from weld_training.evaluate import evaluate_checkpoint

from .helpers.training_toy import record_toy_bag, toy_train_config, toy_welds

torch.set_num_threads(2)


def test_small_recording_warns_and_is_measured_over_the_classes_present(tmp_path):
    rng = np.random.default_rng(0)
    # Three welds of four classes, two of gap and crack: train, val and test cannot all get
    # a gap and a crack weld.
    welds = toy_welds(3, 'a', DEFAULT_CLASS_NAMES[:4]) + toy_welds(2, 'b', ('gap', 'crack'))
    record_toy_bag(tmp_path / 'bags' / 'a', welds, 4, rng)
    with pytest.warns(UserWarning, match=r'split (val|test) has no frame of .*Record at least one weld'):
        manifest = extract_dataset([tmp_path / 'bags'], tmp_path / 'ds', min_samples_per_class=5,
                                   progress=False, log=lambda s: None)
    missing = manifest['splits']['missing']
    assert len(missing) == 1 and set(next(iter(missing.values()))) == {'gap', 'crack'}
    assert load_manifest(tmp_path / 'ds')['splits']['missing'] == missing

    cfg = toy_train_config(tmp_path / 'ds', tmp_path / 'run', epochs=1, precise_bn_batches=0,
                           tensorboard=False, sample_images=0)
    summary = train.main(cfg)
    (split,) = missing
    with pytest.warns(UserWarning, match='macro averages are over the .* classes present'):
        metrics = evaluate_checkpoint(summary['best_checkpoint'], tmp_path / 'ds', tmp_path / 'eval', split)
    assert set(metrics['classes_absent']) == set(missing[split])
    present = [metrics['per_class'][c]['f1'] for c in metrics['classes_present']]
    assert metrics['macro_f1'] == pytest.approx(np.mean(present))
    assert '3 separate welds of each class' in metrics['suggestion']
    cal = metrics['calibration']
    assert cal['temperature'] > 0 and 0.0 <= cal['ece'] <= 1.0 and cal['fitted_on'].startswith('val')
    png = tmp_path / 'eval' / 'report_reliability.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    report = (tmp_path / 'eval' / 'report.md').read_text()
    assert 'Warning: this split has no frame of' in report and 'ECE, calibrated' in report
    assert 'reliability diagram' in report
    assert json.loads((tmp_path / 'eval' / 'report.json').read_text())['metrics']['classes_absent']
