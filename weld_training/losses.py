"""Losses and sampling for imbalanced defect classes.

Defects are rare next to good welds. Three remedies, usable together:
  weighted_ce   cross-entropy with per-class weights ~ 1 / frequency^power
  focal         focal loss (Lin et al. 2017): alpha from class frequencies, gamma configurable
  balanced sampling (train.sampler: balanced): each class drawn equally often
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LOSS_NAMES = ('ce', 'weighted_ce', 'focal')


class LossError(ValueError):
    """Loss settings that cannot be used."""


def inverse_frequency_weights(counts: Sequence[int], power: float = 1.0) -> torch.Tensor:
    """Per-class weights (1 / count)^power, scaled to average 1 over the classes."""
    c = np.maximum(np.asarray(counts, np.float64), 1.0)
    w = c ** -float(power)
    return torch.tensor(w / w.mean(), dtype=torch.float32)


class FocalLoss(nn.Module):
    """Multi-class focal loss: -alpha_y (1 - p_y)^gamma log p_y, averaged over the batch.

    alpha: per-class weights (None = all 1). gamma: focusing parameter (0 = weighted CE).
    """

    def __init__(self, alpha: Optional[torch.Tensor] = None, gamma: float = 2.0) -> None:
        super().__init__()
        if gamma < 0:
            raise LossError(f'focal gamma must be >= 0, got {gamma}')
        self.gamma = float(gamma)
        self.register_buffer('alpha', alpha if alpha is not None else torch.empty(0))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # At least float32 (float16 logits under autocast), never less precise than the logits.
        log_p = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
        log_p = log_p.gather(1, target[:, None]).squeeze(1)
        loss = -((1.0 - log_p.exp()).clamp(min=0.0) ** self.gamma) * log_p
        if self.alpha.numel():
            loss = loss * self.alpha[target]
        return loss.mean()


def build_criterion(name: str, class_counts: Sequence[int], *, focal_gamma: float = 2.0,
                    weight_power: float = 0.5, label_smoothing: float = 0.0) -> nn.Module:
    """The training loss by name (see LOSS_NAMES), weighted from the training class counts."""
    if name not in LOSS_NAMES:
        raise LossError(f'unknown loss {name!r}; valid losses are: {", ".join(LOSS_NAMES)}')
    if not 0.0 <= label_smoothing < 1.0:
        raise LossError(f'label_smoothing must be in [0, 1), got {label_smoothing}')
    if name == 'ce':
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    weights = inverse_frequency_weights(class_counts, weight_power)
    if name == 'weighted_ce':
        return nn.CrossEntropyLoss(weight=weights, label_smoothing=label_smoothing)
    return FocalLoss(alpha=weights, gamma=focal_gamma)


def balanced_sample_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Per-sample weights for WeightedRandomSampler so every class is drawn equally often."""
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return torch.tensor(1.0 / np.maximum(counts[labels], 1.0), dtype=torch.double)
