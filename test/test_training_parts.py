"""weld_training metrics, losses, models, schedule and configuration."""
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from weld_training.config import ConfigError, load_config, parse_override
from weld_training.evaluate import classification_metrics, roc_auc_binary, write_report
from weld_training.losses import FocalLoss, LossError, balanced_sample_weights, build_criterion
from weld_training.models import MODEL_NAMES, ModelError, build_model
from weld_training import train
from weld_training.train import check_config, warmup_cosine

torch.set_num_threads(2)


def test_metrics_on_a_hand_checked_example():
    names = ['a', 'b', 'c']
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    probs = np.eye(3)[pred] * 0.8 + 0.1
    m = classification_metrics(y, probs, names)
    assert m['accuracy'] == pytest.approx(6 / 8)
    # recalls: a 3/4, b 1/2, c 2/2; precisions: a 3/3, b 1/2, c 2/3
    assert m['balanced_accuracy'] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    f1 = [2 * 1 * 0.75 / 1.75, 0.5, 2 * (2 / 3) / (5 / 3)]
    assert [m['per_class'][n]['f1'] for n in names] == pytest.approx(f1)
    assert m['macro_f1'] == pytest.approx(np.mean(f1))
    assert m['confusion_matrix'] == [[3, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert [m['per_class'][n]['support'] for n in names] == [4, 2, 2]


def test_roc_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        pos = rng.random(40) < 0.3
        scores = np.round(rng.random(40), 1)  # many ties
        pairs = [(1.0 if s > t else 0.5 if s == t else 0.0)
                 for (s, p), (t, q) in itertools.product(zip(scores, pos), repeat=2) if p and not q]
        assert roc_auc_binary(pos, scores) == pytest.approx(np.mean(pairs))
    assert roc_auc_binary(np.array([True, True]), np.array([0.1, 0.2])) is None
    assert roc_auc_binary(np.array([True, False]), np.array([0.9, 0.1])) == 1.0


def test_class_absent_from_test_split_has_no_auc():
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    m = classification_metrics([0, 1], probs, ['a', 'b', 'c'])
    assert m['per_class']['c']['roc_auc'] is None and m['roc_auc_macro'] == 1.0
    assert m['macro_f1'] == 1.0  # a class neither present nor predicted does not count


def test_report_files(tmp_path):
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]])
    m = classification_metrics([0, 1, 0], probs, ['good', 'crack'])
    paths = write_report(m, tmp_path, 'Evaluation on test', {'split': 'test'})
    assert paths['png'].read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    md = paths['markdown'].read_text()
    assert '| crack | 0.5000 | 1.0000 | 0.6667 |' in md and '| good | 1 | 1 |' in md
    assert '"macro_f1"' in paths['json'].read_text()


def test_focal_loss():
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.5], [1.0, 1.0]])
    target = torch.tensor([0, 0, 1])
    alpha = torch.tensor([0.5, 2.0])
    ce = nn.functional.cross_entropy(logits, target, reduction='none')
    assert FocalLoss(alpha, gamma=0.0)(logits, target) == pytest.approx((ce * alpha[target]).mean().item())
    per = FocalLoss(None, gamma=2.0)
    easy, hard = per(logits[:1], target[:1]), per(logits[1:2], target[1:2])
    assert easy / hard < ce[0] / ce[1]  # easy examples are down-weighted
    with pytest.raises(LossError, match='valid losses are: ce, weighted_ce, focal'):
        build_criterion('hinge', [1, 2])
    weighted = build_criterion('weighted_ce', [90, 10], weight_power=1.0)
    assert weighted.weight[1] / weighted.weight[0] == pytest.approx(9.0)


def test_balanced_sampling_weights():
    labels = [0] * 90 + [1] * 10
    w = balanced_sample_weights(labels, 2).numpy()
    assert w[:90].sum() == pytest.approx(w[90:].sum())


@pytest.mark.parametrize('name', MODEL_NAMES)
def test_every_model_builds_for_rgb_and_rgbd(name):
    for channels, cbam in ((3, False), (4, True)):
        model = build_model(name, 6, channels, cbam=cbam).eval()
        with torch.no_grad():
            assert model(torch.zeros(1, channels, 64, 64)).shape == (1, 6)


def test_model_errors_and_local_weights(tmp_path):
    with pytest.raises(ModelError, match='valid models are: efficientnet_lite0, mobilenet_v3_small'):
        build_model('vit_b_16', 6)
    with pytest.raises(ModelError, match='nothing is downloaded'):
        build_model('resnet18', 6, weights_path=tmp_path / 'missing.pt')
    src = build_model('mobilenet_v3_small', 1000, 3)
    torch.save(src.state_dict(), tmp_path / 'imagenet_like.pt')
    model = build_model('mobilenet_v3_small', 6, 4, weights_path=tmp_path / 'imagenet_like.pt')
    w_src, w = src.features[0][0].weight, model.features[0][0].weight
    assert torch.equal(w[:, :3], w_src) and torch.allclose(w[:, 3], w_src.mean(dim=1))
    assert model.classifier[-1].out_features == 6  # the 1000-class head is left out


def test_warmup_then_cosine():
    lr = [warmup_cosine(s, 10, 110, 0.01) for s in range(111)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert lr[10] == pytest.approx(1.0) and lr[60] == pytest.approx(0.505) and lr[110] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))


def test_config_fails_fast_listing_valid_choices(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'; valid keys under train: .*epochs"):
        load_config(overrides=['train.epoch=3'])
    cfg = load_config(overrides=['train.epochs=3', 'model.name=resnet18', 'data.fractions={train: 0.8, val: 0.2}'])
    assert cfg['train']['epochs'] == 3 and cfg['model']['name'] == 'resnet18'
    assert cfg['data']['fractions'] == {'train': 0.8, 'val': 0.2}
    assert parse_override('a.b=[1, 2]') == {'a': {'b': [1, 2]}}
    with pytest.raises(ConfigError, match='section.key=value'):
        parse_override('epochs')
    for override, valid in (('model.name=vgg', 'mobilenet_v3_small, mobilenet_v3_large'),
                            ('train.loss=l1', 'ce, weighted_ce, focal'),
                            ('train.monitor=loss', 'macro_f1, balanced_accuracy'),
                            ('model.channels=depth', 'rgb, rgbd'), ('device=tpu', 'auto, cpu, cuda')):
        with pytest.raises(ConfigError, match=valid):
            check_config(load_config(overrides=[override]))
    with pytest.raises(ConfigError, match=r'\[width, height\]'):
        check_config(load_config(overrides=['model.input_size=[64]']))
    preset = train.preset_from_config(load_config(overrides=['model.input_size=[96, 64]']))
    assert (preset.input_width, preset.input_height) == (96, 64)
    (tmp_path / 'c.yaml').write_text('train:\n  lr: -1\n')
    with pytest.raises(ConfigError, match='train.lr must be a positive number'):
        check_config(load_config(tmp_path / 'c.yaml'))


def test_macro_averages_are_over_the_classes_present(tmp_path):
    names = ['good', 'porosity', 'undercut', 'spatter']
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 2])  # one frame wrongly called undercut, which has no frame here
    m = classification_metrics(y, np.eye(4)[pred], names)
    assert m['classes_present'] == ['good', 'porosity'] and m['classes_absent'] == ['undercut', 'spatter']
    assert m['macro_f1'] == pytest.approx((1.0 + 2 * 0.5 / 1.5) / 2)  # not divided by 4 (or 3)
    assert m['balanced_accuracy'] == pytest.approx(0.75)
    md_dir = write_report(m, tmp_path, 'Evaluation on test')
    text = md_dir['markdown'].read_text()
    assert 'over the 2 classes present in this split: good, porosity' in text
    assert 'Warning: this split has no frame of undercut, spatter' in text


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_ece():
    from weld_training.calibration import (expected_calibration_error, fit_temperature, nll,
                                           reliability_bins)
    from weld_training.evaluate import softmax

    rng = np.random.default_rng(0)
    n, k, true_t = 20000, 6, 2.0
    logits = rng.normal(0, 3.0, (n, k))
    p = softmax(logits / true_t)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)  # drawn from softmax(z / 2)
    t = fit_temperature(logits, labels)
    # The maximum-likelihood T of 20000 draws: its spread is about 1 %, so 5 % holds for any seed.
    assert t == pytest.approx(true_t, rel=0.05)
    assert nll(logits, labels, t) < nll(logits, labels, 1.0)
    before, after = expected_calibration_error(labels, softmax(logits)), expected_calibration_error(labels, softmax(logits / t))
    assert after < 0.02 < before
    table = reliability_bins(labels, softmax(logits / t))
    assert sum(table['counts']) == n and len(table['edges']) == 16


def test_ece_on_a_hand_checked_example():
    from weld_training.calibration import reliability_bins

    # Two frames at 0.95 confidence (one right), two at 0.55 (both right): bins 0.9-0.97 and 0.53-0.6.
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    table = reliability_bins([0, 1, 0, 0], probs)
    assert table['ece'] == pytest.approx(0.5 * abs(0.5 - 0.95) + 0.5 * abs(1.0 - 0.55))
