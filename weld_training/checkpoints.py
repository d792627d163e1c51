"""Training checkpoints: the format, and reading one back (with its model) for evaluation,
export and resuming. A module of its own, so that train (which writes them) and evaluate
and export (which read them) need not import each other."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from weld_vision_ros.core.preprocess import PreprocessPreset

from .models import build_model

CHECKPOINT_FORMAT = 'weld_training.checkpoint/1'


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get('format') != CHECKPOINT_FORMAT:
        raise ValueError(f'{path} is not a weld_training checkpoint (format {CHECKPOINT_FORMAT})')
    ckpt['preset_obj'] = PreprocessPreset.from_dict(ckpt['preset'])
    return ckpt


def load_checkpoint_model(path: str | Path) -> tuple[nn.Module, dict]:
    """The model of a checkpoint, in eval mode on the CPU, and the checkpoint."""
    ckpt = load_checkpoint(path)
    m = ckpt['config']['model']
    model = build_model(m['name'], len(ckpt['class_names']), ckpt['preset_obj'].num_channels, cbam=m['cbam'])
    model.load_state_dict(ckpt['model'])
    model.eval()
    return model, ckpt
