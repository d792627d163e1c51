"""Confidence that means something: temperature scaling and the expected calibration error.

A network trained with a focal or cross-entropy loss for a few epochs is rarely calibrated:
its top probability is not the fraction of such frames it gets right. Temperature scaling
(Guo et al. 2017) divides the logits by one number T > 0, fitted on the validation split
by minimising the negative log-likelihood; the predicted class does not change, only the
confidence. T travels in the ONNX contract (`weld.temperature`) and the node applies it.

The expected calibration error (ECE) bins frames by top probability (equal-width bins)
and averages |accuracy - mean confidence| over the bins, weighted by their frame counts.
The reliability diagram draws the same bins.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

ECE_BINS = 15
# The search range of log T: T in [0.05, 20] covers any network we train (T ~ 0.5 to 3).
_LOG_T_RANGE = (math.log(0.05), math.log(20.0))


class CalibrationError(ValueError):
    """Data that cannot calibrate a model (empty, mismatched shapes)."""


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
    logp = _log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-logp[np.arange(labels.size), labels].mean())


def fit_temperature(logits: np.ndarray, labels: Sequence[int], iterations: int = 60) -> float:
    """The temperature T minimising the validation NLL (golden-section search on log T).

    The NLL of temperature-scaled logits is unimodal in log T, so the search finds its
    minimum to about 1e-6 in log T after 60 iterations, deterministically.
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    if logits.ndim != 2 or logits.shape[0] != labels.size or labels.size == 0:
        raise CalibrationError(f'need (N, K) logits and N labels with N > 0, got {logits.shape} and {labels.shape}')
    lo, hi = _LOG_T_RANGE
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, labels, math.exp(a)), nll(logits, labels, math.exp(b))
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, labels, math.exp(b))
    return float(math.exp((lo + hi) / 2.0))


def reliability_bins(labels: Sequence[int], probs: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per equal-width confidence bin: frames, mean top probability, accuracy; and the ECE."""
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.size:
        raise CalibrationError(f'probs must be (N={labels.size}, K), got {probs.shape}')
    conf = probs.max(axis=1) if labels.size else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels) if labels.size else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    acc_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    mean_conf = np.divide(conf_sum, counts, out=np.zeros(bins), where=counts > 0)
    accuracy = np.divide(acc_sum, counts, out=np.zeros(bins), where=counts > 0)
    n = max(labels.size, 1)
    ece = float(np.sum(counts / n * np.abs(accuracy - mean_conf)))
    return {'edges': edges.tolist(), 'counts': counts.tolist(), 'confidence': mean_conf.tolist(),
            'accuracy': accuracy.tolist(), 'ece': ece, 'samples': int(labels.size)}


def expected_calibration_error(labels: Sequence[int], probs: np.ndarray, bins: int = ECE_BINS) -> float:
    return reliability_bins(labels, probs, bins)['ece']


def save_reliability_png(table: dict, path: str | Path, title: str) -> Path:
    """The reliability diagram of `reliability_bins`: accuracy per confidence bin against the diagonal."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure

    edges = np.asarray(table['edges'])
    width = np.diff(edges)
    counts = np.asarray(table['counts'])
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.add_subplot(111)
    ax.plot([0, 1], [0, 1], '--', color='grey', lw=1, label='calibrated')
    ax.bar(edges[:-1], np.where(counts > 0, table['accuracy'], 0.0), width=width, align='edge',
           edgecolor='black', color='tab:blue', alpha=0.8, label='accuracy')
    ax.plot(np.asarray(table['confidence'])[counts > 0], np.asarray(table['accuracy'])[counts > 0], 'o',
            color='tab:orange', ms=4, label='mean confidence')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel('top probability')
    ax.set_ylabel('accuracy')
    ax.set_title(f'{title}\nECE {table["ece"]:.4f} over {table["samples"]} frames', fontsize=9)
    ax.legend(loc='upper left', fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    return Path(path)
