"""Data-parallel training: `weld-train train` under torchrun (2 CPU processes, gloo) computes
what one process computes with the same global batch and seed.

What must hold for that:
- the balanced sampler draws one sequence per epoch from (seed, epoch) and shards it, so the
  two processes' batches together are exactly the one-process batch;
- DDP averages the gradients; the loss (focal) is a plain mean, so that is the gradient of
  the global-batch mean;
- BatchNorm: per-process statistics over 8 samples would differ from statistics over 16, so
  the DDP run converts every BatchNorm to GlobalBatchNorm (statistics all-reduced over
  both processes; torch's SyncBatchNorm refuses CPU tensors). resnet18 because it has no
  dropout (dropout masks come from each process's own RNG), and augmentation is off for the
  same reason.

The promise is tested where it is made: the averaged gradient of one step
(test/helpers/ddp_grad_probe.py builds the step with the trainer's own
`build_training_parts`), compared in float64 under every CPU kernel path this machine offers
(ATen's default, AVX2 and AVX-512 kernels). Tolerance: the two computations differ only in
summation order (BatchNorm sums split in two, gradients summed across processes), so their
difference is float64 rounding: relative error about n * 1.1e-16 for sums of n terms,
compounded through ~20 layers of backward pass; measured 7e-15 of the gradient's norm and at
most 1.4e-14 of any one tensor's norm, on all three kernel paths. The bound, 1e-9 of each
tensor's norm, is 1e5 above that and 1e8 below what the two faults below do (0.94 and 1.3
relative): per-process BatchNorm statistics, and both processes training on the same shard.
Why not float32: ReLU and max-pool kinks turn float32 rounding (about 1e-5 in the activations)
into switched subgradients; that moved the whole float32 gradient by 3.5e-3 between the
one- and two-process runs with oneDNN's AVX-512 kernels and by 2.7e-6 with its AVX2 kernels
(probe docstring), and after two AdamW epochs the validation loss by 1.3 %. Any float32
tolerance there describes one CPU's kernels, not data parallelism.

End to end, the two `weld-train train` runs check what only the whole program does (only
rank 0 logs, checkpoints and records the run; the data, sampler sequence, BatchNorm
statistics and validation agree) at a learning rate of 1e-9: AdamW moves each weight by at
most lr per step (6e-9 over the 6 steps), so the runs' losses may differ only by float32
rounding of the forward pass (measured 2e-7 relative), and the bound 1e-4 relative holds
on any CPU. Training dynamics at a real learning rate are not compared: AdamW's first
steps are about lr * sign(g), which amplifies rounding chaotically.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from test.helpers.training_toy import make_toy_dataset
from test.rosutil import REPO
from weld_training.registry import Registry

CONFIG = ['--set', 'model.name=resnet18', '--set', 'model.input_size=48', '--set', 'model.crop=frame',
          '--set', 'augment.enabled=false',
          '--set', 'train.batch_size=16', '--set', 'train.lr=0.000000001', '--set', 'train.precise_bn_batches=2',
          '--set', 'train.sample_images=0', '--set', 'train.tensorboard=false', '--set', 'train.threads=1',
          '--epochs', '2', '--no-progress']


@pytest.fixture(scope='module')
def toy_ds(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp('ddp'), n_per_class=4, frames_per_weld=5)


def _train(launcher: list[str], out, toy_ds, registry) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *launcher, '-m', 'weld_training.cli', 'train', '--dataset', str(toy_ds),
           '-o', str(out), '--registry', str(registry), *CONFIG]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_two_gloo_processes_train_like_one_with_the_same_global_batch(toy_ds, tmp_path):
    registry = tmp_path / 'registry.sqlite'
    one = _train([], tmp_path / 'one', toy_ds, registry)
    assert one.returncode == 0, one.stdout + one.stderr
    two = _train(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2'],
                 tmp_path / 'two', toy_ds, registry)
    assert two.returncode == 0, two.stdout + two.stderr

    # Only rank 0 speaks, writes checkpoints and records the run.
    assert two.stdout.count('epoch 1/2:') == 1 and 'x 2 processes (gloo)' in two.stdout
    runs = Registry(registry).list_runs()
    assert [r.status for r in runs] == ['finished', 'finished']
    assert runs[1].run_dir == str(tmp_path / 'two') and runs[1].epoch == 2
    ckpt = torch.load(tmp_path / 'two' / 'last.pt', map_location='cpu', weights_only=False)
    assert ckpt['world_size'] == 2 and ckpt['run_id'] == runs[1].run_id
    assert not any(k.startswith('module.') for k in ckpt['model'])  # the plain model's weights

    h1 = json.loads((tmp_path / 'one' / 'history.json').read_text())['epochs']
    h2 = json.loads((tmp_path / 'two' / 'history.json').read_text())['epochs']
    assert len(h1) == len(h2) == 2
    for a, b in zip(h1, h2):
        assert b['train_loss'] == pytest.approx(a['train_loss'], rel=1e-4), (h1, h2)
        assert b['val_loss'] == pytest.approx(a['val_loss'], rel=1e-4), (h1, h2)


PROBE_CONFIG = [c for c in CONFIG if c not in ('--epochs', '2', '--no-progress')]
TORCHRUN = ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
KERNELS = {'default': 'DEFAULT', 'avx2': 'AVX2', 'avx512': 'AVX512'}
GRADIENT_RTOL = 1e-9  # of each tensor's norm, float64 (module docstring)


def _probe(launcher: list[str], out, toy_ds, kernels: str, fault: str = 'none') -> dict:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=kernels)
    cmd = [sys.executable, *launcher, '-m', 'test.helpers.ddp_grad_probe', '--dataset', str(toy_ds),
           '--out', str(out), '--fault', fault, *PROBE_CONFIG]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return torch.load(out, map_location='cpu', weights_only=False)


def gradient_mismatch(a: dict, b: dict) -> dict[str, float]:
    """Per parameter: |grad_b - grad_a| / |grad_a|, for each tensor both runs produced."""
    assert a.keys() == b.keys()
    return {k: float((b[k] - a[k]).norm() / a[k].norm().clamp_min(1e-300)) for k in a}


@pytest.fixture(scope='module')
def one_process_f64(toy_ds, tmp_path_factory):
    return _probe([], tmp_path_factory.mktemp('one') / 'grad.pt', toy_ds, 'default')


@pytest.mark.parametrize('kernels', sorted(KERNELS))
def test_two_processes_average_the_gradient_of_the_global_batch(toy_ds, tmp_path, kernels):
    one = _probe([], tmp_path / 'one.pt', toy_ds, kernels)
    if one['capability'] != KERNELS[kernels]:
        pytest.skip(f'this CPU offers no {kernels} kernels (ATen ran {one["capability"]})')
    two = _probe(TORCHRUN, tmp_path / 'two.pt', toy_ds, kernels)
    assert (two['world_size'], two['capability'], two['dtype']) == (2, KERNELS[kernels], 'float64')
    assert two['indices'] == one['indices'] and len(set(one['indices'])) > 1
    assert two['loss'] == pytest.approx(one['loss'], rel=1e-12)
    mismatch = gradient_mismatch(one['grads'], two['grads'])
    assert len(mismatch) == len(list(build_resnet18_parameter_names()))
    worst = max(mismatch, key=mismatch.get)
    assert mismatch[worst] < GRADIENT_RTOL, (worst, mismatch[worst])


@pytest.mark.parametrize('fault', ['local_bn', 'same_shard'])
def test_the_gradient_check_catches_processes_that_disagree(toy_ds, tmp_path, one_process_f64, fault):
    bad = _probe(TORCHRUN, tmp_path / 'bad.pt', toy_ds, 'default', fault)
    mismatch = gradient_mismatch(one_process_f64['grads'], bad['grads'])
    assert max(mismatch.values()) > 1e-3, mismatch  # 1e6 x GRADIENT_RTOL and more
    if fault == 'same_shard':
        assert bad['indices'] != one_process_f64['indices']
    else:  # the same samples: only the statistics differ
        assert bad['indices'] == one_process_f64['indices']


def build_resnet18_parameter_names():
    from weld_training.models import build_model
    return (n for n, _ in build_model('resnet18', 6, 4).named_parameters())


def test_the_global_batch_must_split_evenly(toy_ds, tmp_path):
    cmd = ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
    bad = subprocess.run([sys.executable, *cmd, '-m', 'weld_training.cli', 'train', '--dataset', str(toy_ds),
                          '-o', str(tmp_path / 'run'), '--no-registry', '--set', 'train.batch_size=15',
                          '--set', 'train.threads=1', '--no-progress'],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert 'train.batch_size 15 (the global batch) must be a multiple of the number of processes (2)' \
        in bad.stdout + bad.stderr


def test_the_balanced_sampler_shards_one_deterministic_sequence():
    from weld_training.distributed import BalancedDistributedSampler
    weights = [1.0] * 10 + [5.0] * 3
    one = BalancedDistributedSampler(weights, 13, seed=7)
    shards = [BalancedDistributedSampler(weights, 13, num_replicas=2, rank=r, seed=7) for r in (0, 1)]
    for epoch in (0, 1):
        for s in (one, *shards):
            s.set_epoch(epoch)
        seq = list(one)
        a, b = list(shards[0]), list(shards[1])
        assert len(a) == len(b) == 6
        assert [x for pair in zip(a, b) for x in pair] == seq[:12]  # interleaved, as DistributedSampler
        assert list(one) == seq  # the same again: depends on (seed, epoch) only
    one.set_epoch(0)
    first = list(one)
    one.set_epoch(1)
    assert list(one) != first
