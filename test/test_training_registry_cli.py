"""`weld-train` with the registry: train/export record runs and models; models, status, cancel.

Training and cancelling run as separate processes, the way a user runs them in two
terminals; the quick commands run through `cli.main` in this process.
"""
import subprocess
import sys
import time

import pytest
import torch

from test.helpers.training_toy import TOY_CLI, make_toy_dataset
from test.rosutil import REPO
from weld_training import checkpoints, cli
from weld_training.dataset import manifest_sha256
from weld_training.registry import Registry

torch.set_num_threads(2)

SMALL = ['--set', 'model.input_size=48', '--set', 'train.batch_size=16', '--set', 'train.threads=2',
         '--set', 'train.precise_bn_batches=2', '--set', 'train.sample_images=0', '--no-progress', *TOY_CLI]


@pytest.fixture(scope='module')
def toy_ds(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp('reg_cli'), n_per_class=4, frames_per_weld=5)


def weld_train(*args, **kwargs) -> subprocess.Popen:
    """`weld-train ...` as its own process (python -m, as the console script runs it)."""
    return subprocess.Popen([sys.executable, '-m', 'weld_training.cli', *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def run_cli(capsys, *args) -> tuple[int, str]:
    rc = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out + out.err


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f'{what} did not happen in {timeout_s} s')
        time.sleep(0.2)


def test_train_and_export_record_the_run_and_models_can_be_listed_compared_promoted_deleted(
        toy_ds, tmp_path, capsys):
    reg_path = tmp_path / 'registry.sqlite'
    run_dir = tmp_path / 'run'
    rc, out = run_cli(capsys, 'train', '--dataset', toy_ds, '-o', run_dir, '--epochs', 2,
                      '--registry', reg_path, *SMALL)
    assert rc == 0, out
    reg = Registry(reg_path)
    (run,) = reg.list_runs()
    assert (run.status, run.epoch, run.total_epochs, run.run_dir) == ('finished', 2, 2, str(run_dir))
    assert run.dataset_sha256 == manifest_sha256(toy_ds) and len(run.dataset_sha256) == 64
    assert run.config['train']['epochs'] == 2 and run.config['registry'] == str(reg_path)
    assert {'train_loss', 'val_macro_f1', 'best_metric', 'per_class_f1'} <= set(run.metrics)
    assert run.eta_s is None  # a finished run has no ETA

    rc, out = run_cli(capsys, 'status', '--registry', reg_path)
    assert rc == 0 and f'run {run.run_id}: finished' in out and 'epoch 2/2' in out and 'val_macro_f1' in out

    # Evaluate, then export twice (two versions of the same weights): each export registers.
    assert run_cli(capsys, 'evaluate', run_dir / 'best.pt', '--split', 'val')[0] == 0
    for version in ('toy-v1', 'toy-v2'):
        rc, out = run_cli(capsys, 'export', run_dir / 'best.pt', '--out', tmp_path / version / 'model.onnx',
                          '--model-version', version, '--parity-samples', 4)
        assert rc == 0 and f'registered model {version}' in out, out
    v1 = reg.get_model('toy-v1')
    assert v1.run_id == run.run_id and v1.dataset_sha256 == run.dataset_sha256
    assert v1.config['model']['input_size'] == 48 and v1.created_at > run.created_at
    assert set(v1.metrics['per_class']) == set(v1.class_names) and 'macro_f1' in v1.metrics
    assert {p.rsplit('/', 1)[-1] for p in v1.artifacts} == {'model.onnx', 'model.export.json'}
    from weld_training.deploy import file_sha256
    assert v1.sha256 == file_sha256(tmp_path / 'toy-v1' / 'model.onnx')

    rc, out = run_cli(capsys, 'models', 'list', '--registry', reg_path)
    assert rc == 0 and out.count('registered') == 2 and run.run_id in out
    rc, out = run_cli(capsys, 'models', 'show', 'toy-v1', '--registry', reg_path)
    assert rc == 0 and 'porosity' in out and 'precision' in out and v1.sha256 in out and 'model_registered' in out
    rc, out = run_cli(capsys, 'models', 'compare', 'toy-v1', 'toy-v2', '--registry', reg_path)
    assert rc == 0 and out.startswith('| metric | toy-v1 | toy-v2 |') and '| crack f1 |' in out
    assert run_cli(capsys, 'models', 'compare', 'toy-v1', '--registry', reg_path)[0] == 2

    assert run_cli(capsys, 'models', 'promote', 'toy-v2', '--registry', reg_path)[0] == 0
    rc, out = run_cli(capsys, 'models', 'delete', 'toy-v2', '--registry', reg_path)
    assert rc == 2 and 'toy-v2 is the active model; promote another one before deleting it' in out
    assert (tmp_path / 'toy-v2' / 'model.onnx').is_file()
    rc, out = run_cli(capsys, 'models', 'delete', 'toy-v1', '--registry', reg_path)
    assert rc == 0 and 'removed' in out
    assert not (tmp_path / 'toy-v1' / 'model.onnx').exists()
    assert not (tmp_path / 'toy-v1' / 'model.export.json').exists()
    assert [m.version for m in reg.list_models()] == ['toy-v2']
    rc, out = run_cli(capsys, 'models', 'show', 'toy-v1', '--registry', reg_path)
    assert rc == 2 and "unknown model version 'toy-v1'; registered: toy-v2" in out


def test_a_failing_run_is_recorded_as_failed(tmp_path, capsys):
    reg_path = tmp_path / 'registry.sqlite'
    rc, out = run_cli(capsys, 'train', '--dataset', tmp_path / 'missing', '-o', tmp_path / 'run',
                      '--registry', reg_path, *SMALL)
    assert rc == 2 and 'not a dataset folder' in out
    (run,) = Registry(reg_path).list_runs()
    assert run.status == 'failed'
    assert 'not a dataset folder' in Registry(reg_path).events()[-1]['detail']


def test_cancel_from_another_process_stops_training_cleanly(toy_ds, tmp_path):
    reg_path = tmp_path / 'registry.sqlite'
    run_dir = tmp_path / 'run'
    trainer = weld_train('train', '--dataset', toy_ds, '-o', run_dir, '--epochs', 500,
                         '--registry', reg_path, '--set', 'train.tensorboard=false', *SMALL)
    try:
        reg = Registry(reg_path)
        wait_for(lambda: any(r.epoch >= 1 for r in reg.list_runs()) or trainer.poll() is not None,
                 120.0, 'the first epoch')
        assert trainer.poll() is None, trainer.stdout.read()
        (run,) = reg.list_runs()

        status = weld_train('status', run.run_id[:12], '--registry', reg_path)
        out, _ = status.communicate(timeout=60)
        assert status.returncode == 0, out
        assert f'run {run.run_id}: running, pid {trainer.pid}' in out and '/500, ETA' in out

        cancel = weld_train('cancel', run.run_id, '--registry', reg_path)
        out, _ = cancel.communicate(timeout=60)
        assert cancel.returncode == 0 and 'cancel requested' in out, out
        trainer_out, _ = trainer.communicate(timeout=120)
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    assert trainer.returncode == 0, trainer_out
    assert 'cancelled: saved' in trainer_out and 'training stopped: cancelled' in trainer_out
    run = reg.get_run(run.run_id)
    assert run.status == 'cancelled' and run.cancel_requested and 1 <= run.epoch < 500
    assert [e['kind'] for e in reg.events()][-2:] == ['cancel_requested', 'run_cancelled']

    # The checkpoint is usable: it loads, names the run, and a resume continues from it.
    model, ckpt = checkpoints.load_checkpoint_model(run_dir / 'last.pt')
    assert ckpt['interrupted'] and ckpt['epoch'] == run.epoch and ckpt['run_id'] == run.run_id
    assert not model.training and (run_dir / 'best.pt').is_file()
    rc = cli.main(['train', '--dataset', str(toy_ds), '-o', str(run_dir), '--epochs', str(run.epoch + 1),
                   '--resume', str(run_dir / 'last.pt'), '--no-registry', '--set', 'train.tensorboard=false',
                   *SMALL])
    assert rc == 0 and checkpoints.load_checkpoint(run_dir / 'last.pt')['epoch'] == run.epoch + 1
