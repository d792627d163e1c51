"""One training step's gradient as `weld-train train` computes it, alone or under torchrun.

    python -m test.helpers.ddp_grad_probe --dataset D --out F.pt [--fault F] [--set K=V ...]
    python -m torch.distributed.run --standalone --nproc_per_node 2 -m test.helpers.ddp_grad_probe ...

The loaders, model, BatchNorm conversion, DDP wrapper and loss come from
`weld_training.train.build_training_parts`, the function training itself uses. The probe takes
the first global batch of epoch 0, runs one forward and backward pass, and rank 0 saves every
parameter's gradient (in a process group: the gradient DDP averaged over the processes), the
loss of the global batch, the sample indices of the global batch (in the one-process order)
and the CPU kernel path that ran.

It computes in float64 by default (`--dtype float32` for the training dtype). Why: the
networks have ReLU and max-pool kinks. In float32 the two runs' activations differ by
rounding (about 1e-5 absolute after a few layers, measured), which flips the ReLU mask of the
few units that lie that close to zero; each flip switches a subgradient, and with the small
late layers of a 48 px input that moved the whole gradient by 0.5 % (3.5e-3 relative, measured
on an AVX-512 machine with oneDNN's AVX-512 or SSE4.1 kernels, 2.7e-6 with its AVX2 kernels).
No rounding-based tolerance can hold across kernels there. In float64 the same rounding is
1e-16 relative, a unit must lie within ~1e-13 of a kink to flip, and the comparison measures
what data parallelism promises: the same global batch gives the same averaged gradient.

Faults, to show that the comparison catches what data parallelism can get wrong:
  local_bn    BatchNorm keeps per-process statistics (no GlobalBatchNorm);
  same_shard  every process trains on rank 0's shard instead of its own.
"""
from __future__ import annotations

import argparse

import torch

from weld_training import train as training
from weld_training.config import load_config
from weld_training.distributed import env_from_torchrun, init_process_group, reduce_mean, shutdown

FAULTS = ('none', 'local_bn', 'same_shard')
DTYPES = {'float32': torch.float32, 'float64': torch.float64}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--dataset', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--fault', choices=FAULTS, default='none')
    ap.add_argument('--dtype', choices=tuple(DTYPES), default='float64')
    ap.add_argument('--set', dest='overrides', action='append', default=[])
    args = ap.parse_args(argv)

    env = env_from_torchrun()
    device = torch.device('cpu')
    init_process_group(env, device)
    cfg = load_config(None, args.overrides, [{'data': {'dataset': args.dataset}, 'output_dir': args.out}])
    dtype = DTYPES[args.dtype]
    torch.set_default_dtype(dtype)  # the model, its converted BatchNorms and DDP's buckets
    if args.fault == 'local_bn':
        training.convert_batchnorm = lambda model, device: model  # per-process statistics
    parts = training.build_training_parts(cfg, env, device)
    parts.criterion.to(dtype)
    sampler = parts.train_loader.sampler
    if args.fault == 'same_shard':
        sampler.rank = 0
    sampler.set_epoch(0)
    mine = list(sampler)[:parts.train_loader.batch_size]
    x, y = next(iter(parts.train_loader))

    parts.net.train()
    loss = parts.criterion(parts.net(x.to(dtype)), y)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in parts.model.named_parameters() if p.grad is not None}
    global_loss = reduce_mean(float(loss.item()), float(len(y)), env)

    shards = [mine]
    if env.distributed:
        shards = [None] * env.world_size
        torch.distributed.all_gather_object(shards, mine)
    indices = [i for step in zip(*shards) for i in step]  # DistributedSampler interleaves
    if env.is_main:
        torch.save({'grads': grads, 'loss': global_loss, 'indices': indices, 'world_size': env.world_size,
                    'dtype': args.dtype, 'capability': torch.backends.cpu.get_cpu_capability()}, args.out)
    shutdown()


if __name__ == '__main__':
    main()
