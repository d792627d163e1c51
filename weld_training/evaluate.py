"""Classification metrics (numpy only) and the evaluation report (JSON, Markdown, PNG).

Metrics: accuracy, balanced accuracy, per-class precision / recall / F1 / support,
macro-F1, the confusion matrix, and one-vs-rest ROC-AUC per class (Mann-Whitney rank
statistic, ties counted half) with its macro mean. Macro means are over the classes
present in the split (at least one true frame): a class with no frame in a small split
has no F1 to average, and counting it as 0 would report a model as useless because the
split is small. The metrics name the classes present and absent; the report warns.

`weld-train evaluate` also reports calibration (calibration.py): the temperature fitted on
the val split, the expected calibration error before and after it, and a reliability
diagram PNG.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def roc_auc_binary(positive: np.ndarray, scores: np.ndarray) -> Optional[float]:
    """Area under the ROC curve for a binary problem; None when one side is empty."""
    positive = np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind='mergesort')
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(scores.size, np.float64)
    # Average ranks over ties (1-based).
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, n in zip(first, counts):
        ranks[order[start:start + n]] = start + (n + 1) / 2.0
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def classification_metrics(y_true: Sequence[int], probs: np.ndarray, class_names: Sequence[str]) -> dict:
    """All metrics for predictions `probs` (N, K) against labels `y_true` (N)."""
    y_true = np.asarray(y_true, np.int64)
    probs = np.asarray(probs, np.float64)
    k = len(class_names)
    if probs.ndim != 2 or probs.shape != (y_true.size, k):
        raise ValueError(f'probs must be (N={y_true.size}, K={k}), got {probs.shape}')
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k),
                   where=(precision + recall) > 0)
    present = support > 0
    per_class = {}
    aucs = []
    for i, name in enumerate(class_names):
        auc = roc_auc_binary(y_true == i, probs[:, i])
        if auc is not None:
            aucs.append(auc)
        per_class[name] = {'precision': float(precision[i]), 'recall': float(recall[i]),
                           'f1': float(f1[i]), 'support': int(support[i]), 'roc_auc': auc}
    n = max(y_true.size, 1)
    return {
        'samples': int(y_true.size),
        'accuracy': float(tp.sum() / n),
        'balanced_accuracy': float(recall[present].mean()) if present.any() else 0.0,
        'macro_f1': float(f1[present].mean()) if present.any() else 0.0,
        'macro_precision': float(precision[present].mean()) if present.any() else 0.0,
        'macro_recall': float(recall[present].mean()) if present.any() else 0.0,
        'classes_present': [c for c, here in zip(class_names, present) if here],
        'classes_absent': [c for c, here in zip(class_names, present) if not here],
        'roc_auc_macro': float(np.mean(aucs)) if aucs else None,
        'per_class': per_class,
        'confusion_matrix': cm.tolist(),
        'class_names': list(class_names),
    }


def confusion_figure(cm: np.ndarray, class_names: Sequence[str], title: str = 'confusion matrix'):
    """A matplotlib Figure of the confusion matrix, rows normalised, counts written in."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    size = 1.0 + 0.7 * len(class_names)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.add_subplot(111)
    im = ax.imshow(norm, cmap='Blues', vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label='fraction of true class')
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha='right')
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha='center', va='center',
                    color='white' if norm[i, j] > 0.5 else 'black', fontsize=8)
    fig.tight_layout()
    return fig


def save_confusion_png(cm: np.ndarray, class_names: Sequence[str], path: str | Path, title: str) -> Path:
    fig = confusion_figure(cm, class_names, title)
    fig.savefig(str(path), dpi=110)
    return Path(path)


def _fmt(v: Optional[float]) -> str:
    return 'n/a' if v is None else f'{v:.4f}'


def markdown_report(metrics: dict, title: str, context: Optional[dict] = None,
                    png_name: Optional[str] = None) -> str:
    lines = [f'# {title}', '']
    for key, value in (context or {}).items():
        lines.append(f'- **{key}**: {value}')
    absent = metrics.get('classes_absent') or []
    present = metrics.get('classes_present') or metrics['class_names']
    lines += ['', f'Macro averages are over the {len(present)} classes present in this split: '
              f'{", ".join(present)}.']
    if absent:
        lines += ['', f'**Warning: this split has no frame of {", ".join(absent)}**; those classes are left '
                  f'out of the averages and their rows below mean nothing. ' + (metrics.get('suggestion') or '')]
    lines += ['', '| metric | value |', '| --- | --- |']
    for key in ('samples', 'accuracy', 'balanced_accuracy', 'macro_f1', 'roc_auc_macro'):
        v = metrics[key]
        lines.append(f'| {key} | {v if isinstance(v, int) else _fmt(v)} |')
    cal = metrics.get('calibration')
    if cal:
        lines += [f'| temperature (fitted on {cal["fitted_on"]}) | {cal["temperature"]:.4f} |',
                  f'| ECE, uncalibrated ({cal["bins"]} bins) | {_fmt(cal["ece_uncalibrated"])} |',
                  f'| ECE, calibrated | {_fmt(cal["ece"])} |']
    lines += ['', '| class | precision | recall | F1 | ROC-AUC | support |',
              '| --- | --- | --- | --- | --- | --- |']
    for name, m in metrics['per_class'].items():
        lines.append(f'| {name} | {_fmt(m["precision"])} | {_fmt(m["recall"])} | {_fmt(m["f1"])} | '
                     f'{_fmt(m["roc_auc"])} | {m["support"]} |')
    names = metrics['class_names']
    lines += ['', 'Confusion matrix (rows: true, columns: predicted):', '',
              '| true \\ pred | ' + ' | '.join(names) + ' |', '| --- ' * (len(names) + 1) + '|']
    for name, row in zip(names, metrics['confusion_matrix']):
        lines.append(f'| {name} | ' + ' | '.join(str(v) for v in row) + ' |')
    if png_name:
        lines += ['', f'![confusion matrix]({png_name})']
    if cal and cal.get('png'):
        lines += ['', f'![reliability diagram]({cal["png"]})']
    return '\n'.join(lines) + '\n'


def write_report(metrics: dict, out_dir: str | Path, title: str, context: Optional[dict] = None,
                 stem: str = 'report') -> dict[str, Path]:
    """Write <stem>.json, <stem>.md and <stem>_confusion.png into out_dir; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = save_confusion_png(np.asarray(metrics['confusion_matrix']), metrics['class_names'],
                             out / f'{stem}_confusion.png', title)
    js = out / f'{stem}.json'
    js.write_text(json.dumps({'title': title, 'context': context or {}, 'metrics': metrics}, indent=1))
    md = out / f'{stem}.md'
    md.write_text(markdown_report(metrics, title, context, png.name))
    return {'json': js, 'markdown': md, 'png': png}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_torch(model, dataset, batch_size: int = 64, device: str = 'cpu') -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), logits (N, K)) of a model over a dataset, in order."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    model.eval()
    ys, outs = [], []
    with torch.inference_mode():
        for x, y in loader:
            outs.append(model(x.to(device)).float().cpu().numpy())
            ys.append(np.asarray(y))
    k = len(dataset.class_names)
    return (np.concatenate(ys) if ys else np.zeros(0, np.int64),
            np.concatenate(outs) if outs else np.zeros((0, k), np.float32))


def predict_onnx(session, dataset, input_name: str, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(labels, outputs) of an onnxruntime session over a dataset, in order."""
    ys, outs = [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = np.stack([np.asarray(t) for t, _ in items]).astype(np.float32)
        outs.append(session.run(None, {input_name: x})[0])
        ys.append(np.array([y for _, y in items]))
    k = len(dataset.class_names)
    return (np.concatenate(ys) if ys else np.zeros(0, np.int64),
            np.concatenate(outs) if outs else np.zeros((0, k), np.float32))


def missing_class_advice(dataset_dir: str | Path, split: str, absent: Sequence[str]) -> str:
    """How to record so that every class reaches every split (splits.grouped_stratified_split
    gives each split one weld of a class once the class has a weld per non-empty split)."""
    from .dataset import load_manifest

    manifest = load_manifest(dataset_dir)
    fractions = manifest.get('splits', {}).get('fractions', {})
    active = [s for s in ('train', 'val', 'test') if fractions.get(s, 0) > 0] or ['train', 'val', 'test']
    welds: dict[str, set] = {}
    for f in manifest['frames']:
        welds.setdefault(f['label'], set()).add(f['group'])
    have = ', '.join(f'{c} {len(welds.get(c, ()))}' for c in absent)
    return (f'Each split ({", ".join(active)}) gets a weld of a class once the class has at least '
            f'{len(active)} welds; welds of {", ".join(absent)} recorded: {have}. The smallest recording '
            f'that gives every class a {"/".join(s for s in active if s != "train")} share: {len(active)} '
            f'separate welds of each class (so at least {len(active) * len(manifest["class_names"])} welds), '
            f'each with at least data.min_samples_per_class / {len(active)} frames.')


def evaluate_checkpoint(checkpoint: str | Path, dataset_dir: str | Path, out_dir: str | Path,
                        split: str = 'test', batch_size: int = 64) -> dict:
    """Evaluate a checkpoint on one split of a dataset; write the report; return metrics.

    Calibration: the temperature is fitted on the val split (as export does) and the split's
    ECE reported before and after it, with a reliability diagram (<out>/report_reliability.png).
    A split that lacks classes is evaluated over the classes it has, with a warning.
    """
    from .calibration import ECE_BINS, fit_temperature, reliability_bins, save_reliability_png
    from .dataset import WeldFrames
    from .checkpoints import load_checkpoint_model

    model, ckpt = load_checkpoint_model(checkpoint)
    preset = ckpt['preset_obj']
    ds = WeldFrames(dataset_dir, split, preset, class_names=ckpt['class_names'])
    if len(ds) == 0:
        raise ValueError(f'split {split!r} of {dataset_dir} is empty; nothing to evaluate')
    y, logits = predict_torch(model, ds, batch_size)
    logits = logits.astype(np.float64)
    val = ds if split == 'val' else WeldFrames(dataset_dir, 'val', preset, class_names=ckpt['class_names'])
    if len(val):
        yv, lv = (y, logits) if val is ds else predict_torch(model, val, batch_size)
        temperature, fitted_on = fit_temperature(lv, yv), f'val ({len(val)} frames)'
    else:
        temperature, fitted_on = 1.0, 'nothing: no val frames, temperature 1'
    probs = softmax(logits / temperature)
    metrics = classification_metrics(y, probs, ckpt['class_names'])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = reliability_bins(y, probs)
    png = save_reliability_png(table, out / 'report_reliability.png', f'{split}, temperature {temperature:.3f}')
    metrics['calibration'] = {'temperature': temperature, 'fitted_on': fitted_on, 'bins': ECE_BINS,
                              'ece': table['ece'],
                              'ece_uncalibrated': reliability_bins(y, softmax(logits))['ece'],
                              'reliability': table, 'png': png.name}
    if metrics['classes_absent']:
        metrics['suggestion'] = missing_class_advice(dataset_dir, split, metrics['classes_absent'])
        warnings.warn(f'split {split!r} of {dataset_dir} has no frame of {", ".join(metrics["classes_absent"])}; '
                      f'its macro averages are over the {len(metrics["classes_present"])} classes present '
                      f'({", ".join(metrics["classes_present"])}). {metrics["suggestion"]}', stacklevel=2)
    context = {'checkpoint': str(checkpoint), 'dataset': str(dataset_dir), 'split': split,
               'model': ckpt['config']['model']['name'], 'channels': preset.channels,
               'input': f'{preset.input_width}x{preset.input_height}', 'epoch': ckpt.get('epoch')}
    paths = write_report(metrics, out, f'Evaluation on {split}', context)
    metrics['report_files'] = {**{k: str(v) for k, v in paths.items()}, 'reliability_png': str(png)}
    return metrics
