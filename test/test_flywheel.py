"""The data flywheel: frames where the rules and the model disagree land in a bounded review
bag with their reasons (across processes); labelled, the bag reads as a dataset; and the
golden-set gate refuses a worse candidate with a paired test."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip('rclpy')

from test.helpers.onnx_models import write_model  # noqa: E402
from test.rosutil import REPO, ros_context, spawn_node, spin_until, stop  # noqa: E402

DEMO_MODEL = REPO / 'config' / 'models' / 'weld_demo.onnx'


def _bag_bytes(bag: Path) -> int:
    return sum(p.stat().st_size for p in bag.rglob('*') if p.is_file())


def test_disagreements_land_in_a_bounded_review_bag_with_their_reasons(tmp_path):
    from weld_vision_ros.msg import WeldDefect
    models = tmp_path / 'models'
    models.mkdir()
    write_model(models / 'random.onnx', 'random-1', seed=5)     # untrained: disagrees with the rules
    review = tmp_path / 'review'
    bag_max_mb = 12.0                                           # about 8 frames of 640x480 per bag
    logs = tmp_path / 'logs'
    logs.mkdir()
    procs = [
        spawn_node('weld_vision_ros.nodes.rule_defect_node', {'image_reliability': 'reliable'},
                   log_path=logs / 'rule.log'),
        spawn_node('weld_vision_ros.nodes.onnx_defect_node',
                   {'models_dir': str(models), 'model_path': 'random.onnx', 'mode': 'ml',
                    'image_reliability': 'reliable'}, log_path=logs / 'onnx.log'),
        spawn_node('weld_vision_ros.nodes.review_recorder_node',
                   {'review_dir': str(review), 'bag_max_mb': bag_max_mb, 'max_per_minute': 6000.0,
                    'low_confidence': 0.0, 'image_reliability': 'reliable', 'buffer_frames': 60,
                    'close_after_idle_s': 1.0}, log_path=logs / 'review.log'),
    ]
    ml_seen = []
    try:
        with ros_context('flywheel_probe') as (node, ex):
            node.create_subscription(WeldDefect, 'weld/defect/ml', ml_seen.append, 50)
            spin_until(ex, lambda: node.count_subscribers('camera/color/image_raw') >= 3, 30.0)
            procs.append(spawn_node('weld_vision_ros.simulator.synthetic_camera_node',
                                    {'rate_hz': 4.0, 'seed': 21, 'image_reliability': 'reliable'},
                                    log_path=logs / 'camera.log'))

            def saved() -> int:
                return sum(len(yaml.safe_load((b / 'review.yaml').read_text()) or [])
                           for b in review.glob('review_*') if (b / 'review.yaml').is_file())
            assert spin_until(ex, lambda: saved() >= 20, 90.0), (logs / 'review.log').read_text()[-2000:]
            stop(procs.pop())                                   # the camera: the last bag closes when idle
            spin_until(ex, lambda: all((b / 'metadata.yaml').is_file() for b in review.glob('review_*')), 10.0)
    finally:
        for p in procs:
            stop(p)
    bags = sorted(review.glob('review_*'))
    assert len(bags) >= 2, 'the size bound starts a new bag'
    for bag in bags:
        assert (bag / 'metadata.yaml').is_file(), f'{bag} was not closed'
        assert _bag_bytes(bag) <= bag_max_mb * 2**20 * 1.05, f'{bag}: {_bag_bytes(bag)} bytes'
        entries = yaml.safe_load((bag / 'review.yaml').read_text())
        for e in entries:
            assert 'disagreement' in e['reasons']
            assert e['rule_class'] and e['ml_class'] and e['rule_class'] != e['ml_class']
    assert ml_seen, 'the model verdicts were published'

    # labelled, a review bag reads as a dataset bag
    from weld_training.bags import iter_bag_frames
    from weld_training.cli import main as weld_train
    bag = bags[0]
    entries = yaml.safe_load((bag / 'review.yaml').read_text())
    labels = tmp_path / 'labels.csv'
    with open(labels, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['stamp_ns', 'label'])
        for e in entries[:3]:
            w.writerow([e['stamp_ns'], e['rule_class']])
    assert weld_train(['review', str(bag), '--labels', str(labels)]) == 0
    frames = list(iter_bag_frames(bag))
    assert [f.stamp_ns for f in frames] == [e['stamp_ns'] for e in entries[:3]]
    assert [f.label for f in frames] == [e['rule_class'] for e in entries[:3]]


def test_review_labels_are_checked_against_the_bag(tmp_path, capsys):
    from weld_training.cli import main as weld_train
    bag = tmp_path / 'bag'
    bag.mkdir()
    (bag / 'review.yaml').write_text(yaml.safe_dump([{'stamp_ns': 5, 'reasons': ['low_confidence']}]))
    labels = tmp_path / 'l.csv'
    labels.write_text('6,good\n')
    assert weld_train(['review', str(bag), '--labels', str(labels)]) == 2
    assert 'no frame stamped 6' in capsys.readouterr().err
    labels.write_text('5,banana\n')
    assert weld_train(['review', str(bag), '--labels', str(labels)]) == 2
    assert 'unknown class' in capsys.readouterr().err
    assert weld_train(['review', str(tmp_path)]) == 2
    assert 'review.yaml: cannot read' in capsys.readouterr().err


# --- golden-set gate ---------------------------------------------------------------------

def test_paired_gate_arithmetic():
    from weld_training.golden import GoldenGateError, paired_gate
    same = [True] * 90 + [False] * 10
    r = paired_gate(same, same)
    assert r.passed and r.difference == 0 and r.lower_bound == 0
    worse = [True] * 80 + [False] * 20          # 10 more frames wrong, on the same frames
    r = paired_gate(worse, same, margin=0.02)
    assert not r.passed and r.only_serving_right == 10 and r.only_candidate_right == 0
    assert r.difference == pytest.approx(-0.10) and r.lower_bound < -0.10
    # one flip each way: the difference is 0 but its bound counts both disagreements, so
    # 100 frames cannot show the candidate within 0.02; they can within 0.03
    a = [True] * 99 + [False]
    b = [False] + [True] * 99
    r = paired_gate(a, b, margin=0.02)
    assert r.difference == 0 and r.lower_bound == pytest.approx(-1.645 * np.sqrt(2) / 100) and not r.passed
    assert paired_gate(a, b, margin=0.03).passed
    with pytest.raises(GoldenGateError, match='at least 100'):
        paired_gate(same[:50], same[:50])
    with pytest.raises(GoldenGateError, match='same frames'):
        paired_gate(same, same[:99])


@pytest.fixture(scope='module')
def golden_bag(tmp_path_factory):
    from weld_training.bags import write_bag
    from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
    from weld_vision_ros.simulator.renderer import default_intrinsics, render_random
    rng = np.random.default_rng(2024)
    intr = default_intrinsics()
    frames, labels = [], []
    for i in range(120):
        cls = DEFAULT_CLASS_NAMES[i % len(DEFAULT_CLASS_NAMES)]
        f = render_random(rng, intr, cls)
        stamp = 1_000_000_000 + i * 100_000_000
        labels.append({'stamp_ns': stamp, 'label': cls, 'weld_id': f'g{i}'})
        frames.append({'stamp_ns': stamp, 'rgb': f.rgb, 'depth_m': f.depth_m, 'intrinsics': f.intrinsics})
    return write_bag(tmp_path_factory.mktemp('golden') / 'golden', frames, labels=labels, depth_encoding='32FC1')


def test_a_worse_candidate_is_refused_by_the_golden_gate_with_the_figures(golden_bag, tmp_path, capsys):
    from weld_training.cli import main as weld_train
    worse = write_model(tmp_path / 'worse.onnx', 'untrained-1', seed=3)
    code = weld_train(['gate', str(worse), '--serving', str(DEMO_MODEL), '--golden', str(golden_bag)])
    out = capsys.readouterr().out
    assert code == 1 and 'REFUSED' in out and 'golden set, 120 frames' in out, out
    # the same model passes against itself: identical answers on every frame
    code = weld_train(['gate', str(DEMO_MODEL), '--serving', str(DEMO_MODEL), '--golden', str(golden_bag)])
    assert code == 0 and 'passes' in capsys.readouterr().out
    # a set below the minimum is refused, not judged
    code = weld_train(['gate', str(DEMO_MODEL), '--serving', str(DEMO_MODEL), '--golden', str(golden_bag),
                       '--golden-min-frames', '500'])
    assert code == 2 and 'needs at least 500' in capsys.readouterr().err


def test_every_review_recorder_parameter_is_documented():
    from weld_vision_ros.nodes.review_recorder_node import PARAMS
    doc = (REPO / 'docs' / 'flywheel.md').read_text()
    for spec in PARAMS:
        assert f'`{spec.name}`' in doc, f'{spec.name} missing from docs/flywheel.md'


def test_review_reasons():
    from types import SimpleNamespace as M
    from weld_vision_ros.core.review import review_reasons
    rule = M(status='inspected', defect_class='crack', confidence=0.9, status_reason='')
    ml = M(status='inspected', defect_class='porosity', confidence=0.8, status_reason='')
    final = M(status='inspected', defect_class='porosity', confidence=0.55, status_reason='')
    assert review_reasons(rule, ml, final, 0.6) == ['disagreement', 'low_confidence']
    assert review_reasons(rule, None, rule, 0.6) == []
    blind = M(status='not_inspected', defect_class='', confidence=0.0, status_reason='unknown_appearance')
    assert review_reasons(rule, blind, blind, 0.6) == ['unknown_appearance']
    assert review_reasons(rule, ml, final, 0.6, disagreement=False) == ['low_confidence']
