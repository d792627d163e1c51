"""weld_training.train: checkpoints, seeding, resume, Ctrl-C, early stopping, time budget, TensorBoard."""
import numpy as np
import pytest
import torch
import yaml

from test.helpers.training_toy import make_toy_dataset, toy_train_config
from weld_training import checkpoints, train
from weld_vision_ros.core.preprocess import LEGACY_SEAM_FINDER
from weld_training.export import export_model

torch.set_num_threads(2)
QUIET = dict(log=lambda s: None)


@pytest.fixture(scope='module')
def toy_ds(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp('trainer'), n_per_class=4, frames_per_weld=5)


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['model']


def test_run_is_self_describing(toy_ds, tmp_path):
    cfg = toy_train_config(toy_ds, tmp_path / 'run', epochs=2)
    summary = train.main(cfg, **QUIET)
    assert summary['epochs_run'] == 2 and not summary['interrupted'] and summary['images_per_s'] > 0
    ckpt = checkpoints.load_checkpoint(tmp_path / 'run' / 'best.pt')
    for key in ('model', 'optimizer', 'lr_scheduler', 'epoch', 'config', 'class_names', 'preset', 'history'):
        assert key in ckpt
    assert ckpt['preset'] == {'input_height': 48, 'input_width': 48, 'channels': 'rgbd',
                              'mean': [0.485, 0.456, 0.406, 0.0], 'std': [0.229, 0.224, 0.225, 0.5],
                              'depth_range_mm': 4.0, 'crop': 'frame', 'strip_length_mm': 400.0,
                              'strip_width_mm': 37.5, 'seam_finder': dict(LEGACY_SEAM_FINDER)}
    assert yaml.safe_load((tmp_path / 'run' / 'config.yaml').read_text()) == cfg
    model, _ = checkpoints.load_checkpoint_model(tmp_path / 'run' / 'last.pt')
    assert not model.training

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / 'run' / 'tb'), size_guidance={'images': 0}).Reload()
    tags = acc.Tags()
    assert {'train/loss', 'train/lr', 'val/macro_f1', 'val/balanced_accuracy'} <= set(tags['scalars'])
    assert {'val/confusion_matrix', 'val/sample_predictions'} <= set(tags['images'])
    assert len(acc.Scalars('val/macro_f1')) == 2
    assert any((tmp_path / 'run' / 'tb').rglob('events.out.tfevents.*'))  # hparams run beside it


def test_seeded_runs_repeat_and_resume_continues_exactly(toy_ds, tmp_path):
    full = train.main(toy_train_config(toy_ds, tmp_path / 'full', epochs=2, tensorboard=False), **QUIET)
    again = train.main(toy_train_config(toy_ds, tmp_path / 'again', epochs=2, tensorboard=False), **QUIET)
    a, b = _weights(tmp_path / 'full' / 'last.pt'), _weights(tmp_path / 'again' / 'last.pt')
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full['best_metric'] == again['best_metric']

    # Stop after epoch 1 (as a 1-epoch run of the same 2-epoch schedule would), then resume.
    cfg = toy_train_config(toy_ds, tmp_path / 'split', epochs=2, tensorboard=False)
    calls = {'n': 0}
    real = train.train_one_epoch

    def one_then_interrupt(*args, **kwargs):
        calls['n'] += 1
        if calls['n'] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    train.train_one_epoch = one_then_interrupt
    try:
        first = train.main(cfg, **QUIET)
    finally:
        train.train_one_epoch = real
    assert first['interrupted'] and first['epochs_run'] == 1
    resumed_cfg = toy_train_config(toy_ds, tmp_path / 'split', epochs=2, tensorboard=False,
                                   resume=str(tmp_path / 'split' / 'last.pt'))
    second = train.main(resumed_cfg, **QUIET)
    assert second['epochs_run'] == 2 and not second['interrupted']
    c = _weights(tmp_path / 'split' / 'last.pt')
    diff = max(float((a[k].float() - c[k].float()).abs().max()) for k in a)
    assert diff == 0.0, f'resumed run differs from the straight run by {diff}'


def test_ctrl_c_leaves_a_usable_checkpoint(toy_ds, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, 'train_one_epoch', interrupted)
    summary = train.main(toy_train_config(toy_ds, tmp_path / 'run', epochs=3), **QUIET)
    assert summary['interrupted'] and summary['stop_reason'] == 'interrupted (Ctrl-C)'
    ckpt = checkpoints.load_checkpoint(tmp_path / 'run' / 'last.pt')
    assert ckpt['interrupted'] and ckpt['epoch'] == 0
    out = export_model(tmp_path / 'run' / 'best.pt', tmp_path / 'm.onnx', toy_ds, parity_samples=4, **QUIET)
    assert out['parity']['passed']


def test_early_stopping_on_the_monitored_metric(toy_ds, tmp_path, monkeypatch):
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.69, 0.9])
    real_evaluate = train.evaluate

    def scripted(*args, **kwargs):
        metrics, y, p = real_evaluate(*args, **kwargs)
        metrics['balanced_accuracy'] = next(scores)
        return metrics, y, p

    monkeypatch.setattr(train, 'evaluate', scripted)
    cfg = toy_train_config(toy_ds, tmp_path / 'run', epochs=6, patience=2, monitor='balanced_accuracy',
                           tensorboard=False, precise_bn_batches=0)
    summary = train.main(cfg, **QUIET)
    assert summary['epochs_run'] == 4 and summary['best_epoch'] == 2 and summary['best_metric'] == 0.7
    assert 'early stopping' in summary['stop_reason']
    assert checkpoints.load_checkpoint(tmp_path / 'run' / 'best.pt')['epoch'] == 2


def test_time_budget_stops_training(toy_ds, tmp_path):
    cfg = toy_train_config(toy_ds, tmp_path / 'run', epochs=50, time_budget_min=1e-6, tensorboard=False)
    summary = train.main(cfg, **QUIET)
    assert summary['epochs_run'] == 1 and 'time budget' in summary['stop_reason']
    assert (tmp_path / 'run' / 'best.pt').is_file()


def test_focal_and_weighted_ce_train(toy_ds, tmp_path):
    for loss, sampler in (('weighted_ce', 'shuffle'), ('ce', 'balanced')):
        cfg = toy_train_config(toy_ds, tmp_path / loss, epochs=1, loss=loss, sampler=sampler, tensorboard=False)
        cfg['model']['channels'] = 'rgb'
        summary = train.main(cfg, **QUIET)
        assert np.isfinite(summary['best_metric']) and summary['epochs_run'] == 1


def test_loader_workers(toy_ds, tmp_path):
    cfg = toy_train_config(toy_ds, tmp_path / 'run', epochs=1, num_workers=1, tensorboard=False)
    summary = train.main(cfg, **QUIET)
    assert summary['epochs_run'] == 1 and summary['images_per_s'] > 0


def test_registry_records_progress_and_a_ctrl_c_as_interrupted(toy_ds, tmp_path, monkeypatch):
    from weld_training.registry import Registry
    reg = Registry(tmp_path / 'registry.sqlite')
    summary = train.main(toy_train_config(toy_ds, tmp_path / 'done', epochs=2, tensorboard=False), **QUIET,
                         registry=reg)
    run = reg.get_run(summary['run_id'])
    assert (run.status, run.epoch, run.total_epochs) == ('finished', 2, 2)
    assert run.metrics['val_macro_f1'] == summary['best_metric'] or run.metrics['best_metric'] == summary['best_metric']

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, 'train_one_epoch', interrupted)
    summary = train.main(toy_train_config(toy_ds, tmp_path / 'stopped', epochs=2, tensorboard=False), **QUIET,
                         registry=reg)
    assert summary['interrupted'] and reg.get_run(summary['run_id']).status == 'interrupted'
    assert checkpoints.load_checkpoint(tmp_path / 'stopped' / 'last.pt')['run_id'] == summary['run_id']
