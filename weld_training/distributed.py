"""Data-parallel training across processes (torchrun): process group, samplers, BatchNorm.

`weld-train train` runs as one process, or as N under
`python -m torch.distributed.run --standalone --nproc_per_node N -m weld_training.cli train ...`
(torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address). The config's
`train.batch_size` is the GLOBAL batch: each process takes batch_size / N samples of it.

The aim is that N processes compute what one process computes with the same global batch
and seed, up to float rounding:
- the samplers draw ONE index sequence per epoch from (seed, epoch), identical in every
  process, and process r takes positions r, r + N, r + 2N... (as DistributedSampler does),
  so each global batch holds the same samples as the one-process batch;
- gradients are averaged over processes (DistributedDataParallel), which for a loss that is
  a plain mean over the batch (ce, focal) is the gradient of the global-batch mean;
- BatchNorm takes its statistics over the global batch: SyncBatchNorm on CUDA, and on the
  CPU (where PyTorch's SyncBatchNorm refuses to run) `GlobalBatchNorm` below.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: rank (0 writes files and logs), world size, local rank."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_torchrun() -> DistEnv:
    """The DistEnv torchrun describes in the environment (one process when it did not start us)."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    return DistEnv(int(os.environ.get('RANK', '0')), world, int(os.environ.get('LOCAL_RANK', '0')))


def init_process_group(env: DistEnv, device: torch.device) -> None:
    """gloo on the CPU, nccl on CUDA (one GPU per process: cuda:LOCAL_RANK)."""
    if not env.distributed or dist.is_initialized():
        return
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    if device.type == 'cuda':
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True when `flag` is true in any process (all processes must call this together)."""
    if not env.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_from_main(values: list, env: DistEnv) -> list:
    """Rank 0's `values` (picklable) in every process."""
    if env.distributed:
        dist.broadcast_object_list(values, src=0)
    return values


class BalancedDistributedSampler(DistributedSampler):
    """Weighted sampling with replacement (every class equally often), sharded like
    DistributedSampler: the whole epoch's sequence comes from (seed, epoch) alone, so it is
    deterministic, the same in every process, and the same for 1 or N processes."""

    def __init__(self, weights: Sequence[float], num_samples: int, *, num_replicas: int = 1,
                 rank: int = 0, seed: int = 0) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self._num_draws = int(num_samples)
        super().__init__(range(self._num_draws), num_replicas=num_replicas, rank=rank,
                         shuffle=True, seed=seed, drop_last=True)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        indices = torch.multinomial(self.weights, self._num_draws, replacement=True, generator=g).tolist()
        indices = indices[:self.total_size]  # drop_last: every process the same number of samples
        return iter(indices[self.rank:self.total_size:self.num_replicas])


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose gradient is the sum over processes of the gradients: every
    process's loss depends on every process's share of the sum."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of `x` over all processes."""
    return _AllReduceSum.apply(x)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch of all processes.

    For the CPU (gloo), where torch.nn.SyncBatchNorm refuses to run. The sums go through the
    differentiable all_reduce (all_reduce_sum), so the gradient also flows through the
    other processes' share of the statistics, as it does through one big batch. In eval
    mode, or outside a process group, it is plain BatchNorm. The state dict is BatchNorm's.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f'expected at least 2D input (N, C, ...), got {x.dim()}D')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64)
        dist.all_reduce(count)
        n = float(count.item())
        mean = all_reduce_sum(x.sum(dims)) / n
        centered = x - mean.view(shape)
        var = all_reduce_sum((centered * centered).sum(dims)) / n  # two passes, like BatchNorm
        out = centered * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * (n / max(n - 1, 1)), alpha=f)
        return out


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm in `module` takes global-batch statistics (SyncBatchNorm on CUDA)."""
    if device.type == 'cuda':
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        with torch.no_grad():
            if module.affine:
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
            if module.track_running_stats:
                out.running_mean.copy_(module.running_mean)
                out.running_var.copy_(module.running_var)
                out.num_batches_tracked.copy_(module.num_batches_tracked)
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_batchnorm(child, device))
    return out


def per_process_batch(global_batch: int, env: DistEnv) -> int:
    """train.batch_size is the global batch; it must split evenly over the processes."""
    if global_batch % env.world_size:
        from .config import ConfigError
        raise ConfigError(f'train.batch_size {global_batch} (the global batch) must be a multiple of '
                          f'the number of processes ({env.world_size})')
    return global_batch // env.world_size


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def reduce_mean(value: float, weight: float, env: DistEnv) -> float:
    """Weighted mean of a per-process value over all processes."""
    if not env.distributed:
        return value
    t = torch.tensor([value * weight, weight], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0] / t[1]) if t[1] > 0 else 0.0


__all__ = ['DistEnv', 'env_from_torchrun', 'init_process_group', 'shutdown', 'any_rank',
           'broadcast_from_main', 'BalancedDistributedSampler', 'GlobalBatchNorm',
           'convert_batchnorm', 'per_process_batch', 'unwrap', 'reduce_mean']
