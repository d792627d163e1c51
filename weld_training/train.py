"""The trainer: train_one_epoch, evaluate, main(cfg), in the torchvision-reference shape.

AdamW with a linear warm-up and a cosine decay per step; early stopping and the best
checkpoint on validation macro-F1 (or balanced accuracy); resume from `last.pt`;
Ctrl-C saves `last.pt` before stopping. Seeded; CPU or CUDA (mixed precision on CUDA).
Checkpoints describe themselves: weights, optimizer, schedule, epoch, the config, the
class names and the preprocessing preset, so evaluate and export need nothing else.

Given a registry, the run is recorded there (config, dataset manifest hash, progress every
epoch with metrics and ETA, final status), and `weld-train cancel` stops it cleanly: the
flag is polled after every optimizer step. Under torchrun the same code trains data-parallel
(see distributed.py); only rank 0 logs and writes checkpoints, TensorBoard and the registry.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from weld_vision_ros.core.preprocess import CHANNELS_RGB, CHANNELS_RGBD, CROPS, PreprocessPreset

from .augment import AugmentConfig, Augmenter
from .checkpoints import CHECKPOINT_FORMAT, load_checkpoint
from .config import ConfigError, flat, save_config
from .dataset import WeldFrames, load_manifest, manifest_sha256
from .distributed import (BalancedDistributedSampler, DistEnv, any_rank, broadcast_from_main,
                          convert_batchnorm, env_from_torchrun, init_process_group, per_process_batch,
                          reduce_mean)
from .evaluate import classification_metrics, confusion_figure, softmax
from .losses import LOSS_NAMES, balanced_sample_weights, build_criterion
from .models import LITE0_NAME, MODEL_NAMES, PRETRAINED_CHOICES, ModelError, build_model
from .pretrained import LITE0_BLOCKS, RELIEF_INITS

MONITORS = ('macro_f1', 'balanced_accuracy')
SAMPLERS = ('balanced', 'shuffle')
DEVICES = ('auto', 'cpu', 'cuda')


def check_config(cfg: dict) -> None:
    """Fail fast, naming the valid choices, before any data is read."""
    def choice(value, valid, key):
        if value not in valid:
            raise ConfigError(f'{key} must be one of {", ".join(valid)}; got {value!r}')

    m, t = cfg['model'], cfg['train']
    choice(m['name'], MODEL_NAMES, 'model.name')
    choice('none' if m['pretrained'] is None else m['pretrained'], PRETRAINED_CHOICES, 'model.pretrained')
    choice(m['relief_init'], RELIEF_INITS, 'model.relief_init')
    if not (isinstance(m['freeze_blocks'], int) and 0 <= m['freeze_blocks'] <= len(LITE0_BLOCKS)):
        raise ConfigError(f'model.freeze_blocks must be an integer in [0, {len(LITE0_BLOCKS)}], '
                          f'got {m["freeze_blocks"]!r}')
    choice(m['channels'], (CHANNELS_RGB, CHANNELS_RGBD), 'model.channels')
    choice(t['loss'], LOSS_NAMES, 'train.loss')
    choice(t['monitor'], MONITORS, 'train.monitor')
    choice(t['sampler'], SAMPLERS, 'train.sampler')
    choice(cfg['device'], DEVICES, 'device')
    positive = {'train.epochs': t['epochs'], 'train.batch_size': t['batch_size'], 'train.lr': t['lr']}
    for key, v in positive.items():
        if not (isinstance(v, (int, float)) and v > 0):
            raise ConfigError(f'{key} must be a positive number, got {v!r}')
    for key in ('warmup_epochs', 'weight_decay', 'time_budget_min', 'patience', 'num_workers',
                'threads', 'grad_clip_norm', 'sample_images', 'precise_bn_batches'):
        if not (isinstance(t[key], (int, float)) and t[key] >= 0):
            raise ConfigError(f'train.{key} must be >= 0, got {t[key]!r}')
    if not 0 < t['min_lr_ratio'] <= 1:
        raise ConfigError(f'train.min_lr_ratio must be in (0, 1], got {t["min_lr_ratio"]}')
    input_size(cfg)
    AugmentConfig.from_dict(cfg['augment'])
    preset_from_config(cfg)


def input_size(cfg: dict) -> tuple[int, int]:
    """(width, height) of the network input [px] from model.input_size: N or [width, height]."""
    size = cfg['model']['input_size']
    wh = [size, size] if isinstance(size, int) else list(size) if isinstance(size, (list, tuple)) else []
    if len(wh) != 2 or not all(isinstance(v, int) and v >= 32 for v in wh):
        raise ConfigError(f'model.input_size must be an integer >= 32 [px] or [width, height] of such '
                          f'integers, got {size!r}')
    return wh[0], wh[1]


def preset_from_config(cfg: dict) -> PreprocessPreset:
    """The one eval preprocessing preset for a run (also written into the ONNX model)."""
    m = cfg['model']
    width, height = input_size(cfg)
    base = PreprocessPreset.for_channels(m['channels'])
    if m['crop'] not in CROPS:
        raise ConfigError(f'model.crop must be one of {", ".join(CROPS)}, got {m["crop"]!r}')
    try:
        return PreprocessPreset(input_height=height, input_width=width,
                                channels=base.channels, mean=base.mean, std=base.std,
                                depth_range_mm=float(m['depth_range_mm']), crop=m['crop'],
                                strip_length_mm=float(m['strip_mm'][0]),
                                strip_width_mm=float(m['strip_mm'][1]))
    except (TypeError, IndexError, ValueError) as exc:
        raise ConfigError(f'model.depth_range_mm and model.strip_mm ([length, width] in mm) must be '
                          f'positive numbers: {exc}') from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('device cuda was asked for but torch sees no CUDA device; use cpu or auto')
    return torch.device(name)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate factor: linear 0 -> 1 over warmup_steps, then cosine 1 -> min_ratio."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loaders(cfg: dict, preset: PreprocessPreset, generator: torch.Generator, env: DistEnv = DistEnv()):
    """Train and val loaders. The train sampler is sharded over the processes (one shard when
    there is one process) and must be told the epoch (`loader.sampler.set_epoch`)."""
    d, t = cfg['data'], cfg['train']
    manifest = load_manifest(d['dataset'])
    class_names = manifest['class_names']
    train_plain = WeldFrames(d['dataset'], 'train', preset, cache=t['cache'])
    counts = train_plain.class_counts()
    augmenter = Augmenter(AugmentConfig.from_dict(cfg['augment']), counts, depth_range_mm=preset.depth_range_mm)
    train_ds = WeldFrames(d['dataset'], 'train', preset, augment=augmenter, cache=t['cache'])
    val_ds = WeldFrames(d['dataset'], 'val', preset, cache=t['cache'])
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise ConfigError(f'dataset {d["dataset"]} has {len(train_ds)} train and {len(val_ds)} val '
                          f'frames; both splits must be non-empty (check data.fractions)')
    workers = int(t['num_workers'])
    common = dict(num_workers=workers, worker_init_fn=_seed_worker, generator=generator,
                  persistent_workers=workers > 0)
    if t['sampler'] == 'balanced':
        sampler = BalancedDistributedSampler(balanced_sample_weights(train_ds.labels, len(class_names)),
                                             len(train_ds), num_replicas=env.world_size, rank=env.rank,
                                             seed=int(cfg['seed']))
    else:
        sampler = DistributedSampler(train_ds, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                     seed=int(cfg['seed']), drop_last=True)
    train_loader = DataLoader(train_ds, batch_size=per_process_batch(int(t['batch_size']), env),
                              sampler=sampler, drop_last=len(train_ds) > t['batch_size'], **common)
    val_loader = DataLoader(val_ds, batch_size=max(t['batch_size'], 64), shuffle=False,
                            num_workers=workers, worker_init_fn=_seed_worker)
    return train_loader, val_loader, class_names, counts


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, loader: DataLoader, device: torch.device, epoch: int, epochs: int,
                    scaler: torch.amp.GradScaler, *, use_amp: bool = False, grad_clip_norm: float = 0.0,
                    progress: bool = True, deadline: Optional[float] = None,
                    on_step: Optional[Callable[[int, float, float], None]] = None,
                    should_stop: Optional[Callable[[], Optional[str]]] = None) -> dict:
    """One pass over the training data; returns mean loss, images and images/s.

    deadline: perf_counter() time after which the epoch stops early (time budget).
    on_step(global_step, loss, lr) is called after each optimizer step.
    should_stop() is called after each optimizer step; a reason it returns ('cancelled' or
    'time budget') ends the epoch there and is returned as 'stop'.
    """
    from tqdm import tqdm

    model.train()
    total_loss, seen, stopped_early, stop = 0.0, 0, False, None
    start = time.perf_counter()
    bar = tqdm(loader, desc=f'epoch {epoch + 1}/{epochs}', unit='batch', disable=not progress,
               dynamic_ncols=True, leave=False)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(x)
            loss = criterion(logits.float(), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f'loss became {loss.item()} at epoch {epoch + 1}; '
                                     f'lower train.lr or check the data')
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip_norm > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        n = y.shape[0]
        total_loss += float(loss.item()) * n
        seen += n
        lr = optimizer.param_groups[0]['lr']
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f'{total_loss / seen:.4f}', lr=f'{lr:.2e}', img_s=f'{seen / elapsed:.0f}')
        if on_step is not None:
            on_step(scheduler.last_epoch, float(loss.item()), lr)
        if deadline is not None and time.perf_counter() > deadline:
            stopped_early, stop = True, 'time budget'
            break
        if should_stop is not None:
            stop = should_stop()
            if stop:
                stopped_early = stop == 'time budget'
                break
    bar.close()
    seconds = time.perf_counter() - start
    return {'loss': total_loss / max(seen, 1), 'images': seen, 'seconds': seconds,
            'images_per_s': seen / seconds if seconds > 0 else 0.0, 'stopped_early': stopped_early,
            'stop': stop}


def recompute_bn_stats(model: nn.Module, loader: DataLoader, device: torch.device, batches: int) -> None:
    """Re-estimate BatchNorm running statistics as plain averages over `batches` training batches.

    The running averages lag behind fast-changing weights in short runs from scratch, and
    a model that is right in train mode can then be wrong in eval mode.
    """
    model.train()
    # Frozen stages stay in eval mode (models.Lite0Classifier): their statistics are kept.
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not bns or batches <= 0:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x.to(device))
    for bn, m in zip(bns, momenta):
        bn.momentum = m


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, class_names: list[str],
             criterion: Optional[nn.Module] = None, use_amp: bool = False) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics on a loader with the eval preprocessing; returns (metrics, labels, probabilities)."""
    model.eval()
    ys, outs, total_loss = [], [], 0.0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x).float()
            if criterion is not None:
                total_loss += float(criterion(logits, y).item()) * y.shape[0]
            outs.append(logits.cpu().numpy())
            ys.append(y.cpu().numpy())
    labels = np.concatenate(ys)
    probs = softmax(np.concatenate(outs).astype(np.float64))
    metrics = classification_metrics(labels, probs, class_names)
    if criterion is not None:
        metrics['loss'] = total_loss / max(labels.size, 1)
    return metrics, labels, probs


def sample_predictions_figure(dataset: WeldFrames, model: nn.Module, device: torch.device, n: int):
    """A figure of the first n validation frames with true and predicted class."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure

    n = min(n, len(dataset))
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.6 * cols, 2.8 * rows))
    model.eval()
    mean = np.asarray(dataset.preset.mean[:3])[:, None, None]
    std = np.asarray(dataset.preset.std[:3])[:, None, None]
    with torch.inference_mode():
        for i in range(n):
            x, y = dataset[i]
            p = torch.softmax(model(x[None].to(device)).float(), dim=1)[0].cpu().numpy()
            img = np.clip((x[:3].numpy() * std + mean).transpose(1, 2, 0), 0, 1)
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.imshow(img)
            ax.axis('off')
            pred = int(p.argmax())
            ok = pred == y
            ax.set_title(f'true {dataset.class_names[y]}\npred {dataset.class_names[pred]} {p[pred]:.2f}',
                         fontsize=8, color='green' if ok else 'red')
    fig.tight_layout()
    return fig


def save_checkpoint(path: Path, **state) -> None:
    tmp = path.with_suffix('.tmp')
    torch.save(state, tmp)
    tmp.replace(path)


class RunTracker:
    """Rank 0's link to the registry: the run record, progress per epoch, the cancel flag."""

    def __init__(self, registry, cfg: dict, run_dir: Path, poll_s: float = 0.5) -> None:
        from .registry import Registry

        self.registry = registry if isinstance(registry, Registry) else Registry(registry)
        self.run_id = self.registry.create_run(cfg, manifest_sha256(cfg['data']['dataset']), str(run_dir),
                                               int(cfg['train']['epochs']))
        self._poll_s, self._next_poll, self._cancel = poll_s, 0.0, False

    def progress(self, epoch: int, metrics: dict, eta_s: Optional[float]) -> None:
        self.registry.update_progress(self.run_id, epoch, metrics, eta_s)

    def cancel_requested(self) -> bool:
        """The registry's cancel flag, read at most every poll_s seconds (checked every step)."""
        now = time.monotonic()
        if not self._cancel and now >= self._next_poll:
            self._next_poll = now + self._poll_s
            self._cancel = self.registry.cancel_requested(self.run_id)
        return self._cancel

    def finish(self, status: str, detail: str = '') -> None:
        self.registry.finish_run(self.run_id, status, detail)


def main(cfg: dict, log: Callable[[str], None] = print, registry=None) -> dict:
    """Train with `cfg` (see configs/default.yaml); returns a summary of the run.

    Writes into cfg['output_dir']: config.yaml, last.pt, best.pt, history.json and tb/.
    registry: a Registry (or its path) to record the run in; None records nothing.
    Under torchrun, every process calls this; rank 0 alone writes and logs.
    """
    check_config(cfg)
    env = env_from_torchrun()
    device = select_device(cfg['device'])
    if device.type == 'cuda' and env.distributed:
        device = torch.device('cuda', env.local_rank)
    per_process_batch(int(cfg['train']['batch_size']), env)  # fail before the group forms
    init_process_group(env, device)
    if not env.is_main:
        log = lambda s: None  # noqa: E731  (one voice: rank 0)
        registry = None
    tracker = RunTracker(registry, cfg, Path(cfg['output_dir'])) if registry is not None else None
    try:
        summary = _train(cfg, env, device, log, tracker)
    except KeyboardInterrupt:  # raised outside the epoch loop (e.g. while loading data)
        if tracker:
            tracker.finish('interrupted')
        raise
    except BaseException as exc:
        if tracker:
            tracker.finish('failed', f'{type(exc).__name__}: {exc}')
        raise
    finally:
        from .distributed import shutdown
        shutdown()
    if tracker:
        tracker.finish(summary['status'], summary['stop_reason'])
        summary['run_id'] = tracker.run_id
    return summary


@dataclass
class TrainingParts:
    """What a training step needs, built as every process builds it (see build_training_parts).

    model: the plain model (BatchNorm converted to global-batch statistics in a process
    group); net: what the step calls, the model or its DistributedDataParallel wrapper.
    """
    preset: PreprocessPreset
    generator: torch.Generator
    train_loader: DataLoader
    val_loader: DataLoader
    class_names: list
    counts: np.ndarray
    model: nn.Module
    net: nn.Module
    criterion: nn.Module


def build_training_parts(cfg: dict, env: DistEnv, device: torch.device) -> TrainingParts:
    """Seeded loaders, model, BatchNorm conversion, DDP wrapper and loss of one process.

    The one place `_train` and the data-parallel equivalence test build them, so the test
    checks the code that trains."""
    t = cfg['train']
    seed_everything(int(cfg['seed']))
    if t['threads']:
        torch.set_num_threads(int(t['threads']))
    preset = preset_from_config(cfg)
    generator = torch.Generator().manual_seed(int(cfg['seed']))
    train_loader, val_loader, class_names, counts = make_loaders(cfg, preset, generator, env)
    m = cfg['model']
    try:
        model = build_model(m['name'], len(class_names), preset.num_channels, cbam=m['cbam'],
                            weights_path=m['weights'], bn_momentum=m['bn_momentum'],
                            pretrained=m['pretrained'], relief_init=m['relief_init'],
                            # Lite0's blocks; the torchvision models train every layer.
                            freeze_blocks=m['freeze_blocks'] if m['name'] == LITE0_NAME else 0)
    except ModelError as exc:
        raise ConfigError(str(exc)) from None
    if env.distributed:
        # Statistics of the global batch, as one process would see it (distributed.py).
        model = convert_batchnorm(model, device)
    model = model.to(device)
    net = model
    if env.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None)
    criterion = build_criterion(t['loss'], counts, focal_gamma=t['focal_gamma'],
                                weight_power=t['weight_power'],
                                label_smoothing=t['label_smoothing']).to(device)
    return TrainingParts(preset, generator, train_loader, val_loader, class_names, counts, model, net,
                         criterion)


def _train(cfg: dict, env: DistEnv, device: torch.device, log: Callable[[str], None],
           tracker: Optional[RunTracker]) -> dict:
    t = cfg['train']
    m = cfg['model']
    run_dir = Path(cfg['output_dir'])
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    use_amp = bool(t['amp']) and device.type == 'cuda'
    parts = build_training_parts(cfg, env, device)
    preset, generator, train_loader, val_loader = parts.preset, parts.generator, parts.train_loader, parts.val_loader
    class_names, counts, model, net, criterion = (parts.class_names, parts.counts, parts.model, parts.net,
                                                  parts.criterion)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t['lr'],
                                  weight_decay=t['weight_decay'])
    epochs = int(t['epochs'])
    steps = len(train_loader)
    warmup_steps = int(round(t['warmup_epochs'] * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps, epochs * steps, t['min_lr_ratio']))
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    start_epoch, best, best_epoch, stale, history = 0, -1.0, -1, 0, []
    if t['resume']:
        ckpt = load_checkpoint(t['resume'])
        if ckpt['class_names'] != class_names or ckpt['config']['model']['name'] != m['name'] \
                or ckpt['preset'] != preset.to_dict():
            raise ConfigError(f'cannot resume from {t["resume"]}: its model, classes or preprocessing '
                              f'differ from this config')
        model.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
        scheduler.load_state_dict(ckpt['lr_scheduler'])
        if ckpt.get('scaler'):
            scaler.load_state_dict(ckpt['scaler'])
        start_epoch = int(ckpt['epoch'])
        best, best_epoch = float(ckpt['best_metric']), int(ckpt['best_epoch'])
        stale, history = int(ckpt['epochs_without_improvement']), list(ckpt['history'])
        torch.set_rng_state(ckpt['rng']['torch'])
        np.random.set_state(ckpt['rng']['numpy'])
        random.setstate(ckpt['rng']['python'])
        generator.set_state(ckpt['rng']['loader'])
        log(f'resumed from {t["resume"]} after epoch {start_epoch} (best {t["monitor"]} {best:.4f})')
    if env.distributed:
        # Every process starts from the same seed (same weights, same sampler sequence); the
        # augmentation draws must differ between processes, or each shard would get the
        # same random transforms as the others.
        torch.manual_seed(int(cfg['seed']) + 1000 * env.rank + 7919 * start_epoch)
    dataset_sha = manifest_sha256(cfg['data']['dataset'])
    if env.is_main:
        save_config(cfg, run_dir / 'config.yaml')

    writer = None
    if t['tensorboard'] and env.is_main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run_dir / 'tb'))

    def on_step(step: int, loss: float, lr: float) -> None:
        if writer is not None and (step % 10 == 0 or step == 1):
            writer.add_scalar('train/loss_step', loss, step)
            writer.add_scalar('train/lr', lr, step)

    deadline = time.perf_counter() + 60.0 * t['time_budget_min'] if t['time_budget_min'] else None

    def should_stop() -> Optional[str]:
        """After every step, in every process at once: cancel (rank 0 reads the registry) or time up."""
        cancel = tracker is not None and tracker.cancel_requested()
        over = deadline is not None and time.perf_counter() > deadline
        if env.distributed:
            cancel, over = any_rank(cancel, env), any_rank(over, env)
        return 'cancelled' if cancel else 'time budget' if over else None

    def checkpoint(epoch_done: int, interrupted: bool = False) -> dict:
        return dict(format=CHECKPOINT_FORMAT, model=model.state_dict(), optimizer=optimizer.state_dict(),
                    lr_scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), epoch=epoch_done,
                    config=cfg, class_names=class_names, preset=preset.to_dict(),
                    class_counts=[int(c) for c in counts], monitor=t['monitor'], best_metric=best,
                    best_epoch=best_epoch, epochs_without_improvement=stale, history=history,
                    interrupted=interrupted, run_id=tracker.run_id if tracker else None,
                    dataset_sha256=dataset_sha, world_size=env.world_size,
                    rng={'torch': torch.get_rng_state(), 'numpy': np.random.get_state(),
                         'python': random.getstate(), 'loader': generator.get_state()})

    def save_stopped(reason: str) -> None:
        # Epoch stays at the last completed one: resuming repeats the stopped epoch.
        if not env.is_main:
            return
        save_checkpoint(run_dir / 'last.pt', **checkpoint(len(history) and history[-1]['epoch'], True))
        if not (run_dir / 'best.pt').exists():
            shutil.copyfile(run_dir / 'last.pt', run_dir / 'best.pt')
        log(f'{reason}: saved {run_dir / "last.pt"}; resume with --set train.resume={run_dir / "last.pt"}')

    world = f' x {env.world_size} processes ({dist_backend()})' if env.distributed else ''
    log(f'training {m["name"]} ({preset.channels}, {preset.input_width}x{preset.input_height}) on '
        f'{device}{world}: {len(train_loader.dataset)} train / {len(val_loader.dataset)} val frames, '
        f'classes {class_names}, counts {counts.tolist()}, global batch {t["batch_size"]}'
        + (f' (run {tracker.run_id})' if tracker else ''))
    run_start = time.perf_counter()
    epoch, status, stop_reason = start_epoch, 'finished', 'epochs done'
    try:
        for epoch in range(start_epoch, epochs):
            train_loader.sampler.set_epoch(epoch)
            stats = train_one_epoch(net, criterion, optimizer, scheduler, train_loader, device, epoch,
                                    epochs, scaler, use_amp=use_amp, grad_clip_norm=t['grad_clip_norm'],
                                    progress=t['progress'] and env.is_main, on_step=on_step,
                                    should_stop=should_stop)
            if stats['stop'] == 'cancelled':
                status, stop_reason = 'cancelled', 'cancelled (weld-train cancel)'
                save_stopped('cancelled')
                break
            stats['loss'] = reduce_mean(stats['loss'], stats['images'], env)
            stats['images_per_s'] *= env.world_size
            recompute_bn_stats(model, train_loader, device, int(t['precise_bn_batches']))
            decision = [None]
            if env.is_main:
                metrics, _, _ = evaluate(model, val_loader, device, class_names, criterion, use_amp)
                score = metrics[t['monitor']]
                improved = score > best
                if improved:
                    best, best_epoch, stale = score, epoch + 1, 0
                else:
                    stale += 1
                history.append({'epoch': epoch + 1, 'train_loss': stats['loss'],
                                'images_per_s': stats['images_per_s'], 'val_loss': metrics['loss'],
                                'val_accuracy': metrics['accuracy'], 'val_macro_f1': metrics['macro_f1'],
                                'val_balanced_accuracy': metrics['balanced_accuracy'],
                                'lr': optimizer.param_groups[0]['lr'], 'seconds': stats['seconds']})
                if writer is not None:
                    _log_epoch(writer, epoch + 1, stats, metrics, class_names, model, val_loader, device,
                               t['sample_images'])
                save_checkpoint(run_dir / 'last.pt', **checkpoint(epoch + 1))
                if improved:
                    shutil.copyfile(run_dir / 'last.pt', run_dir / 'best.pt')
                elapsed = time.perf_counter() - run_start
                done = epoch + 1 - start_epoch
                eta_s = elapsed / done * (epochs - epoch - 1)
                log(f'epoch {epoch + 1}/{epochs}: loss {stats["loss"]:.4f}, {stats["images_per_s"]:.1f} img/s, '
                    f'val {t["monitor"]} {score:.4f} (best {best:.4f} @ {best_epoch}), '
                    f'val acc {metrics["accuracy"]:.4f}, ETA {eta_s / 60.0:.1f} min')
                if tracker:
                    tracker.progress(epoch + 1, {**history[-1], 'best_metric': best, 'best_epoch': best_epoch,
                                                 'monitor': t['monitor'],
                                                 'per_class_f1': {c: pc['f1'] for c, pc in
                                                                  metrics['per_class'].items()}},
                                     eta_s)
                if stats['stopped_early']:
                    decision = [f'time budget of {t["time_budget_min"]} min reached']
                elif t['patience'] and stale >= t['patience']:
                    decision = [f'no {t["monitor"]} improvement for {stale} epochs (early stopping)']
            decision = broadcast_from_main(decision, env)
            if decision[0]:
                stop_reason = decision[0]
                break
    except KeyboardInterrupt:
        status, stop_reason = 'interrupted', 'interrupted (Ctrl-C)'
        save_stopped('interrupted')
    finally:
        if writer is not None:
            hparams = {k: v for k, v in flat(cfg).items() if k.startswith(('model.', 'train.', 'seed'))
                       and not k.endswith(('resume', 'progress'))}
            writer.add_hparams(hparams, {f'hparam/best_val_{t["monitor"]}': best}, run_name='hparams')
            writer.close()
    summary = {'run_dir': str(run_dir), 'best_checkpoint': str(run_dir / 'best.pt'),
               'last_checkpoint': str(run_dir / 'last.pt'), 'monitor': t['monitor'], 'best_metric': best,
               'best_epoch': best_epoch, 'epochs_run': len(history), 'stop_reason': stop_reason,
               'status': status, 'interrupted': status == 'interrupted', 'cancelled': status == 'cancelled',
               'world_size': env.world_size, 'seconds': time.perf_counter() - run_start,
               'images_per_s': float(np.mean([h['images_per_s'] for h in history])) if history else 0.0}
    if env.is_main:
        (run_dir / 'history.json').write_text(json.dumps({'summary': summary, 'epochs': history}, indent=1))
    log(f'training stopped: {stop_reason}; best val {t["monitor"]} {best:.4f} at epoch {best_epoch}')
    return summary


def dist_backend() -> str:
    import torch.distributed as dist
    return dist.get_backend() if dist.is_initialized() else 'none'


def _log_epoch(writer, epoch: int, stats: dict, metrics: dict, class_names, model, val_loader,
               device, n_samples: int) -> None:
    writer.add_scalar('train/loss', stats['loss'], epoch)
    writer.add_scalar('train/images_per_s', stats['images_per_s'], epoch)
    for key in ('loss', 'accuracy', 'balanced_accuracy', 'macro_f1'):
        writer.add_scalar(f'val/{key}', metrics[key], epoch)
    if metrics['roc_auc_macro'] is not None:
        writer.add_scalar('val/roc_auc_macro', metrics['roc_auc_macro'], epoch)
    for name, pc in metrics['per_class'].items():
        writer.add_scalar(f'val_f1/{name}', pc['f1'], epoch)
    writer.add_figure('val/confusion_matrix',
                      confusion_figure(np.asarray(metrics['confusion_matrix']), class_names,
                                       f'val, epoch {epoch}'), epoch)
    if n_samples:
        writer.add_figure('val/sample_predictions',
                          sample_predictions_figure(val_loader.dataset, model, device, n_samples), epoch)
