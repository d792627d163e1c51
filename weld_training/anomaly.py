"""Anomaly detection trained on good welds only: a position-aware patch memory bank on the seam
strip, exported to ONNX with the bank inside the graph.

What a patch is described by. The seam strip (core.preprocess, crop 'seam': the bead runs
along the rows at a fixed metric scale, the relief is the elevation above the fitted plate)
is regular along the seam: a good bead looks the same from one millimetre to the next, a
pore, crack, spatter droplet or missing stretch does not. So each pixel is compared with
the same row a little before and after it: the *along-seam residual* of the grey image and
of the relief (the value minus its mean over `window_px` along the row, valid pixels only),
plus the depth *below the plate* (undercut grooves and open roots lie below it, a good weld
never does). Patches of `patch_px` x `patch_px` are described by the mean and the maximum of
the absolute residuals and of the depth below the plate, and the signed mean residuals (8
numbers, scaled per channel by their spread on good frames).

Where a patch is compared. The strip's rows are positions across the seam (toe, flank,
crown); a patch is compared only with good patches of the same row of patches (a
position-aware memory bank, one per row), so a toe is never excused by a crown that looks
like it. Each row's bank is reduced by greedy coreset subsampling (farthest point first) to
`bank_per_row` patches. The anomaly map is each patch's distance to its nearest good patch
of its row; the frame score is its maximum.

What was measured before choosing this (100 good frames, 60 good and 150 defect frames of
other seeds, AUROC good vs all defects): frozen ImageNet EfficientNet-Lite0 features (blocks
2 and 4, stride 4, 3x3 averaged) with a global bank 0.72 (RGB), 0.64 (relief), 0.72 (both),
with per-row banks 0.69 / 0.65 / 0.69, and their along-seam residuals 0.49 / 0.54; the
residual descriptors here with per-row banks 0.99 (BENCHMARKS_anomaly.md has the current
figures). The pretrained features describe texture; what separates these defects from a
good bead is a local break of the seam's regularity, which the residuals measure directly.

Calibration. Scores of held-out good frames set the levels: Potential at their
`potential_quantile`, Inspect at `inspect_quantile` times `inspect_margin`, Critical at
twice Inspect; the score a user sees is mapped piecewise-linearly so that these fall at 0.3,
0.5 and 0.8 (the seed system's scale: 0-0.3 Normal, 0.3-0.5 Potential, 0.5-0.8 Inspect,
0.8-1 Critical). The false-alarm rate of each level on the calibration frames is recorded.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from weld_vision_ros.core.anomaly import (ANOMALY_INPUT, ANOMALY_OUTPUT, AnomalyContract, Thresholds)
from weld_vision_ros.core.preprocess import CHANNELS_RGBD, CROP_SEAM, PreprocessPreset, preprocess

ANOMALY_PRESET = PreprocessPreset(input_height=96, input_width=1024, channels=CHANNELS_RGBD,
                                  mean=(0.485, 0.456, 0.406, 0.0), std=(0.229, 0.224, 0.225, 0.5),
                                  crop=CROP_SEAM, strip_length_mm=400.0, strip_width_mm=37.5)
PARITY_OF_INSPECT = 0.01    # largest ONNX vs torch map difference, as a share of the inspect threshold
_PAD_DISTANCE = 1.0e3       # a bank slot left empty: never the nearest


class AnomalyFitError(ValueError):
    """Frames or settings an anomaly model cannot be fitted from."""


@dataclass(frozen=True)
class AnomalyFitConfig:
    patch_px: int = 4
    window_px: int = 41              # along-seam reference window of the residuals
    erode_px: int = 9                # strip pixels this close to the image border are ignored
    below_blur: tuple[int, int] = (15, 3)
    bank_per_row: int = 400
    max_frames: int = 300
    calibration_fraction: float = 0.3
    potential_quantile: float = 0.90
    inspect_quantile: float = 0.99
    inspect_margin: float = 1.05
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.patch_px >= 1 and self.window_px >= 3 and self.window_px % 2 == 1 and self.bank_per_row >= 8
                and 0 < self.calibration_fraction < 0.9 and 0 < self.potential_quantile < self.inspect_quantile < 1):
            raise AnomalyFitError(f'anomaly fit settings out of range: {self}')


def _torch():
    import torch
    return torch


def build_descriptor_net(preset: PreprocessPreset, cfg: AnomalyFitConfig):
    """The torch module: normalised strip (N, 4, H, W) -> patch descriptors (N, 8, h, w) and
    the valid-patch mask (N, 1, h, w)."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class Descriptors(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer('mean', torch.tensor(preset.mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer('std', torch.tensor(preset.std, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer('grey', torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))
            self.depth_range = float(preset.depth_range_mm)
            self.p, self.win, self.erode = cfg.patch_px, cfg.window_px, cfg.erode_px
            self.below = cfg.below_blur

        def forward(self, x):
            raw = x * self.std + self.mean
            rgb = raw[:, :3]
            grey = (rgb * self.grey).sum(1, keepdim=True)
            relief = raw[:, 3:4] * self.depth_range                       # mm above the plate
            inside = (rgb.sum(1, keepdim=True) > 0.5 / 255.0).float()   # black outside the image
            e = self.erode
            valid = 1.0 - F.max_pool2d(1.0 - inside, e, 1, e // 2)
            k, pad = (1, self.win), (0, self.win // 2)

            def along_sum(m):          # sum over the window along the seam (zero outside)
                return F.avg_pool2d(m, k, 1, pad, count_include_pad=True) * float(self.win)

            den = along_sum(valid)

            def residual(m):
                num = along_sum(m * valid)
                return F.avg_pool2d(m - num / den.clamp(min=1.0), 3, 1, 1, count_include_pad=False)

            gr, rr = residual(grey), residual(relief)
            bw, bh = self.below
            below = F.relu(-F.avg_pool2d(relief, (bh, bw), 1, (bh // 2, bw // 2), count_include_pad=False))
            absm = torch.cat([gr.abs(), rr.abs(), below], 1) * valid
            signed = torch.cat([gr, rr], 1) * valid
            p = self.p
            desc = torch.cat([F.avg_pool2d(absm, p, p), F.max_pool2d(absm, p, p), F.avg_pool2d(signed, p, p)], 1)
            vpatch = (F.avg_pool2d(valid, p, p) > 0.99).float()
            return desc, vpatch

    return Descriptors()


def build_scorer(descriptors, scale: np.ndarray, banks: np.ndarray):
    """Descriptors + per-row nearest-neighbour distance: strip -> anomaly map (N, h, w), the
    distance to the nearest good patch of the same row (0 on invalid patches)."""
    torch = _torch()

    class Scorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.desc = descriptors
            self.register_buffer('scale', torch.tensor(scale, dtype=torch.float32).view(1, -1, 1, 1))
            b = torch.tensor(banks, dtype=torch.float32)                    # (h, K, C)
            self.register_buffer('bank', b)
            self.register_buffer('bank_sq', (b * b).sum(-1))                # (h, K)

        def forward(self, x):
            d, v = self.desc(x)
            d = d / self.scale                                              # (N, C, h, w)
            n, c, h, w = d.shape
            q = d.permute(2, 0, 3, 1).reshape(h, n * w, c)                  # rows first
            cross = torch.bmm(q, self.bank.transpose(1, 2))                 # (h, N*w, K)
            d2 = (q * q).sum(-1, keepdim=True) - 2.0 * cross + self.bank_sq.unsqueeze(1)
            nearest = torch.sqrt(torch.clamp(d2.min(-1).values, min=0.0))   # (h, N*w)
            amap = nearest.reshape(h, n, w).permute(1, 0, 2)
            return amap * v[:, 0]

    return Scorer()


def greedy_coreset(x: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """Indices of `budget` rows of x chosen farthest-point first (PatchCore's coreset)."""
    n = len(x)
    if n <= budget:
        return np.arange(n)
    torch = _torch()
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    first = int(np.random.default_rng(seed).integers(n))
    sel = [first]
    d = torch.cdist(t, t[first:first + 1]).squeeze(1)
    for _ in range(budget - 1):
        i = int(torch.argmax(d))
        sel.append(i)
        d = torch.minimum(d, torch.cdist(t, t[i:i + 1]).squeeze(1))
    return np.array(sel)


@dataclass
class FittedAnomalyModel:
    preset: PreprocessPreset
    config: AnomalyFitConfig
    scale: np.ndarray               # (C,)
    banks: np.ndarray               # (h, K, C), padded rows at _PAD_DISTANCE
    thresholds: Thresholds
    calibration: dict = field(default_factory=dict)
    fit_seconds: float = 0.0

    def scorer(self):
        return build_scorer(build_descriptor_net(self.preset, self.config), self.scale, self.banks).eval()


def _tensor(frames: Sequence, preset: PreprocessPreset) -> np.ndarray:
    return np.stack([preprocess(f.rgb, f.depth_m, preset, f.intrinsics) for f in frames]).astype(np.float32)


def _batches(frames: Sequence, preset: PreprocessPreset, size: int = 8):
    for i in range(0, len(frames), size):
        yield _tensor(frames[i:i + size], preset)


def fit_anomaly(frames: Sequence, cfg: AnomalyFitConfig = AnomalyFitConfig(),
                preset: PreprocessPreset = ANOMALY_PRESET,
                progress: Optional[Callable[[str], None]] = print) -> FittedAnomalyModel:
    """Fit on good frames (objects with rgb, depth_m, intrinsics): a share is held out for the
    calibration of the levels."""
    torch = _torch()
    t0 = time.monotonic()
    frames = list(frames)
    if len(frames) < 10:
        raise AnomalyFitError(f'an anomaly model needs at least 10 good frames, got {len(frames)}')
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(frames))[:cfg.max_frames]
    n_cal = max(5, int(round(cfg.calibration_fraction * len(order))))
    cal = [frames[i] for i in order[:n_cal]]
    fit = [frames[i] for i in order[n_cal:]]
    net = build_descriptor_net(preset, cfg).eval()
    descs, valids = [], []
    with torch.no_grad():
        for i, batch in enumerate(_batches(fit, preset)):
            d, v = net(torch.from_numpy(batch))
            descs.append(d.numpy())
            valids.append(v.numpy()[:, 0] > 0.5)
            if progress and (i * 8) % 40 == 0:
                progress(f'anomaly fit: features of {min((i + 1) * 8, len(fit))}/{len(fit)} good frames')
    d = np.concatenate(descs)                 # (N, C, h, w)
    v = np.concatenate(valids)                # (N, h, w)
    n, c, h, w = d.shape
    per = d.transpose(0, 2, 3, 1)             # (N, h, w, C)
    scale = np.array([per[..., k][v].std() for k in range(c)], dtype=np.float32) + 1e-6
    banks = np.full((h, cfg.bank_per_row, c), _PAD_DISTANCE, dtype=np.float32)
    for r in range(h):
        rows = per[:, r][v[:, r]] / scale
        if len(rows) == 0:
            continue
        keep = greedy_coreset(rows, cfg.bank_per_row, cfg.seed + r)
        banks[r, :len(keep)] = rows[keep]
        if progress and r % 6 == 0:
            progress(f'anomaly fit: coreset of patch row {r + 1}/{h} ({len(rows)} -> {len(keep)} patches)')
    model = FittedAnomalyModel(preset, cfg, scale, banks, Thresholds(1.0, 2.0, 4.0))
    scores = frame_scores(model, cal)
    pot = float(np.quantile(scores, cfg.potential_quantile))
    insp = float(np.quantile(scores, cfg.inspect_quantile)) * cfg.inspect_margin
    insp = max(insp, pot * 1.01)
    model.thresholds = Thresholds(pot, insp, 2.0 * insp)
    model.calibration = {
        'calibration_frames': len(cal), 'fit_frames': len(fit),
        'false_alarm_potential': float(np.mean(scores >= pot)),
        'false_alarm_inspect': float(np.mean(scores >= insp)),
        'false_alarm_critical': float(np.mean(scores >= 2.0 * insp)),
        'good_score_median': float(np.median(scores)), 'good_score_max': float(scores.max())}
    model.fit_seconds = time.monotonic() - t0
    if progress:
        progress(f'anomaly fit: {len(fit)} frames, bank {h} rows x {cfg.bank_per_row}, thresholds '
                 f'potential {pot:.3f} inspect {insp:.3f} critical {2 * insp:.3f} '
                 f'({model.fit_seconds:.0f} s)')
    return model


def anomaly_maps(model: FittedAnomalyModel, frames: Sequence) -> np.ndarray:
    """Raw anomaly maps (N, h, w) of frames, with the torch scorer."""
    torch = _torch()
    scorer = model.scorer()
    out = []
    with torch.no_grad():
        for batch in _batches(frames, model.preset):
            out.append(scorer(torch.from_numpy(batch)).numpy())
    return np.concatenate(out)


def frame_scores(model: FittedAnomalyModel, frames: Sequence) -> np.ndarray:
    return anomaly_maps(model, frames).reshape(len(frames), -1).max(axis=1)


def export_anomaly(model: FittedAnomalyModel, path: str | Path, version: str, metrics: Optional[dict] = None,
                   opset: int = 17, parity_frames: Sequence = ()) -> Path:
    """Write the ONNX model (bank inside the graph, weld.* contract with kind 'anomaly'); with
    parity_frames, check ONNX Runtime's maps against the torch scorer's."""
    import onnx
    torch = _torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scorer = model.scorer()
    p = model.preset
    dummy = torch.zeros(1, p.num_channels, p.input_height, p.input_width)
    tmp = path.with_suffix('.tmp.onnx')
    torch.onnx.export(scorer, (dummy,), str(tmp), input_names=[ANOMALY_INPUT], output_names=[ANOMALY_OUTPUT],
                      opset_version=opset, dynamic_axes={ANOMALY_INPUT: {0: 'n'}, ANOMALY_OUTPUT: {0: 'n'}},
                      dynamo=False)
    graph = onnx.load(str(tmp))
    contract = AnomalyContract(preprocess=p, model_version=version, thresholds=model.thresholds,
                               patch_px=model.config.patch_px,
                               metrics={**(metrics or {}), **model.calibration})
    onnx.helper.set_model_props(graph, contract.to_metadata())
    onnx.save(graph, str(path))
    tmp.unlink(missing_ok=True)
    if parity_frames:
        import onnxruntime as ort
        sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
        x = _tensor(parity_frames, p)
        (onnx_map,) = sess.run([ANOMALY_OUTPUT], {ANOMALY_INPUT: x})
        with torch.no_grad():
            torch_map = scorer(torch.from_numpy(x)).numpy()
        # distances come from |q|^2 - 2 q.b + |b|^2 (matmul): float32 rounding near a zero
        # distance is amplified by the square root, so parity is judged on the levels' scale
        err = float(np.abs(onnx_map - torch_map).max())
        if err > PARITY_OF_INSPECT * model.thresholds.inspect:
            raise AnomalyFitError(f'ONNX export differs from the torch scorer by {err:.2e}, more than '
                                  f'{PARITY_OF_INSPECT:.0%} of the inspect threshold {model.thresholds.inspect:.3f}')
    return path


def roc_auc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """Area under the ROC curve of positives against negatives (ties count half)."""
    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    if not len(neg) or not len(pos):
        return float('nan')
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def good_frames_from_bags(bags: Sequence[str | Path], good_label: str = 'good', limit: int = 100000) -> list:
    """The frames labelled `good_label` in bags (labels from the label topic or a sidecar)."""
    from .bags import find_bags, iter_bag_frames
    out = []
    for bag in find_bags(bags):
        for f in iter_bag_frames(bag):
            if f.label == good_label and f.intrinsics is not None:
                out.append(f)
                if len(out) >= limit:
                    return out
    return out


def fit_and_export(bags: Sequence[str | Path], out: str | Path, version: str, cfg: AnomalyFitConfig,
                   registry: Optional[str] = None, good_label: str = 'good') -> dict:
    """`weld-train anomaly`: good frames of the bags -> fitted, calibrated, exported, registered."""
    from .deploy import file_sha256
    frames = good_frames_from_bags(bags, good_label)
    if len(frames) < 10:
        raise AnomalyFitError(f'{len(frames)} frames labelled {good_label!r} in {", ".join(map(str, bags))}; '
                              'an anomaly model needs at least 10 (record a good-only weld and label it good)')
    print(f'[anomaly] {len(frames)} good frames from {len(list(bags))} bag(s)', flush=True)
    model = fit_anomaly(frames, cfg, progress=lambda m: print(f'[anomaly] {m}', flush=True))
    path = export_anomaly(model, out, version, parity_frames=frames[:2])
    print(f'[anomaly] exported {path} (ONNX parity with the torch scorer checked on 2 frames)', flush=True)
    summary = {'version': version, 'onnx': str(path), 'frames': len(frames), 'fit_seconds': model.fit_seconds,
               'thresholds': asdict(model.thresholds), 'calibration': model.calibration}
    Path(path).with_suffix('.json').write_text(json.dumps(summary, indent=1))
    if registry:
        from .registry import Registry
        Registry(registry).register_model(version, path, file_sha256(Path(path)), ['anomaly'],
                                          {'kind': 'anomaly', **model.calibration,
                                           'thresholds': asdict(model.thresholds)},
                                          config={'anomaly': asdict(model.config)})
        print(f'[anomaly] registered {version} (kind anomaly) in {registry}', flush=True)
    return summary
