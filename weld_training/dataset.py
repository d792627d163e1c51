"""The dataset folder: extraction from bags (its own step, writing files) and a torch Dataset.

Layout written by `extract_dataset`:
  <root>/manifest.json       classes, provenance, per-class statistics, splits (see docs/training.md)
  <root>/rgb/000000.png      colour frame, 8-bit RGB (stored as PNG, lossless)
  <root>/depth/000000.png    aligned depth, 16-bit PNG in units of manifest['depth_scale_m'], 0 = no return

Training reads only this folder, never the bags.
"""
from __future__ import annotations

import json
import warnings
import shutil
import time
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import cv2
import numpy as np

from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_vision_ros.core.depth import decode_depth, encode_depth_16uc1
from weld_vision_ros.core.camera import Intrinsics
from weld_vision_ros.core.preprocess import CROP_SEAM, CroppedFrame, PreprocessPreset, crop_frame, to_tensor

from .bags import ReadStats, Topics, count_color_frames, find_bags, iter_bag_frames, make_typestore
from .splits import DEFAULT_FRACTIONS, SPLIT_NAMES, check_fractions, grouped_stratified_split, split_summary

MANIFEST = 'manifest.json'
FORMAT = 'weld_training.dataset/1'
STORED_DEPTH_SCALE_M = 0.0001  # 0.1 mm per unit: finer than the relief channel needs, up to 6.5 m


class DatasetError(ValueError):
    """A dataset folder or extraction request that cannot be used."""


def extract_dataset(bag_paths: Sequence[str | Path], out_dir: str | Path, *,
                    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
                    min_samples_per_class: int = 20,
                    fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 0,
                    topics: Topics = Topics(), tolerance_ns: int = 0, label_source: str = 'auto',
                    sidecar: Optional[str | Path] = None, bag_depth_scale_m: float = 0.001,
                    max_side_px: int = 0, overwrite: bool = False, progress: bool = True,
                    log: Callable[[str], None] = print) -> dict:
    """Read bags, write the dataset folder, split it, and return the manifest.

    class_names: the classes to keep (frames labelled otherwise are skipped and counted).
    min_samples_per_class: a class with fewer frames is refused (DatasetError naming it).
    max_side_px: downscale frames whose longer side exceeds this [px] (0 keeps the size).
    bag_depth_scale_m: metres per unit of 16UC1 depth in the bags (RealSense: 0.001).
    """
    out = Path(out_dir)
    if min_samples_per_class < 1:
        raise DatasetError(f'min_samples_per_class must be >= 1, got {min_samples_per_class}')
    if len(set(class_names)) != len(class_names) or len(class_names) < 2:
        raise DatasetError(f'class_names must list at least 2 distinct classes, got {list(class_names)}')
    fractions = check_fractions(fractions)
    if (out / MANIFEST).exists() and not overwrite:
        raise DatasetError(f'{out} already holds a dataset; pass overwrite to replace it')
    bags = find_bags(bag_paths)
    store = make_typestore()
    known = tuple(dict.fromkeys(tuple(DEFAULT_CLASS_NAMES) + tuple(class_names)))
    total = sum(count_color_frames(b, topics) for b in bags)
    log(f'extracting up to {total} frames from {len(bags)} bag(s) into {out}')

    for sub in ('rgb', 'depth'):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)

    from tqdm import tqdm
    t0 = time.perf_counter()
    stats = ReadStats()
    frames: list[dict] = []
    with tqdm(total=total, unit='frame', desc='extract', disable=not progress, dynamic_ncols=True) as bar:
        for bag in bags:
            for f in iter_bag_frames(bag, topics=topics, tolerance_ns=tolerance_ns,
                                     label_source=label_source, sidecar=sidecar, class_names=known,
                                     depth_scale_m=bag_depth_scale_m, typestore=store, stats=stats):
                if stats.color_messages - bar.n >= 20:
                    bar.update(stats.color_messages - bar.n)
                if f.label not in class_names:
                    stats.skipped[f'class {f.label!r} not selected'] += 1
                    continue
                frames.append(_write_frame(out, len(frames), f, topics, max_side_px))
            bar.update(stats.color_messages - bar.n)
    seconds = time.perf_counter() - t0

    counts = Counter(fr['label'] for fr in frames)
    per_class = {c: counts.get(c, 0) for c in class_names}
    log(format_class_table(per_class, stats))
    too_few = {c: n for c, n in per_class.items() if n < min_samples_per_class}
    if too_few:
        for sub in ('rgb', 'depth'):
            shutil.rmtree(out / sub)
        listing = ', '.join(f'{c!r} has {n}' for c, n in too_few.items())
        raise DatasetError(
            f'refusing to build the dataset: {listing} frame(s), fewer than min_samples_per_class='
            f'{min_samples_per_class}. Record more of these classes, lower --min-samples, or leave '
            f'them out with --classes (present: {", ".join(c for c, n in per_class.items() if n) or "none"})')

    manifest = {
        'format': FORMAT,
        'created_utc': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'class_names': list(class_names),
        'depth_scale_m': STORED_DEPTH_SCALE_M,
        'source': {'bags': [str(b) for b in bags], 'topics': asdict(topics), 'tolerance_ns': tolerance_ns, 'label_source': label_source,
                   'sidecar': str(sidecar) if sidecar else None, 'bag_depth_scale_m': bag_depth_scale_m,
                   'max_side_px': max_side_px},
        'stats': {'frames': len(frames), 'bags': len(bags), 'per_class': per_class,
                  'color_messages': stats.color_messages, 'skipped': dict(stats.skipped),
                  'salvaged': list(stats.salvaged),
                  'seconds': round(seconds, 3),
                  'frames_per_s': round(len(frames) / seconds, 2) if seconds > 0 else None},
        'frames': frames,
    }
    assign_splits(manifest, fractions, seed)
    write_manifest(out, manifest)
    log(format_split_table(manifest))
    active = [s for s, f in manifest['splits']['fractions'].items() if f > 0]
    for split, missing in manifest['splits']['missing'].items():
        message = (f'split {split} has no frame of {", ".join(missing)}: its metrics will be averaged over the '
                   f'other classes only. Record at least one weld of each of these classes per non-empty split '
                   f'({len(active)} welds of a class for {", ".join(active)}) to measure them.')
        log(f'WARNING: {message}')
        warnings.warn(message, stacklevel=2)
    return manifest


def _write_frame(out: Path, index: int, f, topics: Topics, max_side_px: int) -> dict:
    rgb, depth_m = f.rgb, f.depth_m
    h, w = rgb.shape[:2]
    if max_side_px and max(h, w) > max_side_px:
        s = max_side_px / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        depth_m = cv2.resize(depth_m, size, interpolation=cv2.INTER_NEAREST)
    name = f'{index:06d}.png'
    if not cv2.imwrite(str(out / 'rgb' / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise DatasetError(f'cannot write {out / "rgb" / name}')
    cv2.imwrite(str(out / 'depth' / name), encode_depth_16uc1(depth_m, STORED_DEPTH_SCALE_M))
    intr = f.intrinsics
    if intr is not None and (intr.width, intr.height) != (rgb.shape[1], rgb.shape[0]):
        intr = intr.scaled(rgb.shape[1], rgb.shape[0])
    return {
        'id': index, 'rgb': f'rgb/{name}', 'depth': f'depth/{name}', 'label': f.label,
        'weld_id': f.weld_id, 'group': f.weld_id or f'bag:{Path(f.bag).name}',
        'bag': f.bag, 'stamp_ns': f.stamp_ns, 'label_source': f.label_source,
        'topics': {'color': topics.color, 'depth': topics.depth, 'camera_info': topics.camera_info},
        'intrinsics': None if intr is None else {'k': intr.k, 'width': intr.width, 'height': intr.height},
    }


def assign_splits(manifest: dict, fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 0) -> dict:
    """(Re)write the frames' splits in a manifest: stratified by class, grouped by weld."""
    frames = manifest['frames']
    labels = [f['label'] for f in frames]
    splits = grouped_stratified_split(labels, [f['group'] for f in frames], fractions, seed)
    for f, s in zip(frames, splits):
        f['split'] = s
    counts = split_summary(labels, splits, manifest['class_names'])
    fr = check_fractions(fractions)
    # Splits that are meant to hold frames (fraction > 0) but lack a class.
    missing = {s: [c for c in manifest['class_names'] if counts[s][c] == 0 and any(
        f['label'] == c for f in frames)] for s in SPLIT_NAMES if fr[s] > 0}
    manifest['splits'] = {'seed': seed, 'fractions': fr, 'group_by': 'weld_id', 'counts': counts,
                          'missing': {s: m for s, m in missing.items() if m}}
    return manifest


def write_manifest(root: str | Path, manifest: dict) -> None:
    path = Path(root) / MANIFEST
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(path)


def manifest_sha256(root: str | Path) -> str:
    """sha256 of the dataset's manifest.json: names every frame, label and split, so two runs
    with the same hash trained on the same data (the PNGs are written once, never edited)."""
    import hashlib

    path = Path(root) / MANIFEST
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ''


def load_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DatasetError(f'{root} is not a dataset folder (no {MANIFEST}); run `weld-train extract` first')
    manifest = json.loads(path.read_text())
    if manifest.get('format') != FORMAT:
        raise DatasetError(f'{path} has format {manifest.get("format")!r}, expected {FORMAT!r}')
    return manifest


def format_class_table(per_class: Mapping[str, int], stats: Optional[ReadStats] = None) -> str:
    total = sum(per_class.values()) or 1
    lines = ['class        frames   share']
    lines += [f'{c:<12} {n:>6}  {100.0 * n / total:5.1f}%' for c, n in per_class.items()]
    if stats is not None and stats.skipped:
        lines.append('skipped: ' + ', '.join(f'{k}: {v}' for k, v in sorted(stats.skipped.items())))
    return '\n'.join(lines)


def format_split_table(manifest: dict) -> str:
    counts = manifest['splits']['counts']
    names = manifest['class_names']
    lines = ['split  ' + ' '.join(f'{c[:9]:>9}' for c in names) + '    total']
    for s in SPLIT_NAMES:
        row = [counts[s][c] for c in names]
        lines.append(f'{s:<6} ' + ' '.join(f'{n:>9}' for n in row) + f' {sum(row):>8}')
    return '\n'.join(lines)


def load_frame(root: Path, frame: Mapping, depth_scale_m: float, need_depth: bool = True
               ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Read one dataset frame: (uint8 RGB (H, W, 3), float32 depth [m] with NaN or None)."""
    bgr = cv2.imread(str(root / frame['rgb']), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f'cannot read {root / frame["rgb"]}')
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if not need_depth:
        return rgb, None
    raw = cv2.imread(str(root / frame['depth']), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16:
        raise DatasetError(f'cannot read 16-bit depth {root / frame["depth"]}')
    return rgb, decode_depth(raw, '16UC1', depth_scale_m)


def frame_intrinsics(frame: Mapping) -> Optional[Intrinsics]:
    """The intrinsics stored for a dataset frame (scaled to the stored size), or None."""
    d = frame.get('intrinsics')
    return None if not d else Intrinsics.from_k(d['k'], d['width'], d['height'])


class WeldFrames:
    """torch-style Dataset over one split of a dataset folder.

    Returns (float32 tensor (C, H, W), class index). The tensor is
    `weld_vision_ros.core.preprocess.preprocess` of the stored frame with `preset` and the
    frame's intrinsics, the function and inputs the ONNX node uses: `crop_frame` then
    `to_tensor`. `augment` (training only) acts between the two, on the cropped
    input-size RGB and relief (geometry identically on both). With `cache`, the cropped
    frames are kept in memory (decoding and cropping happen once per frame).
    """

    def __init__(self, root: str | Path, split: Optional[str], preset: PreprocessPreset,
                 augment: Optional[Callable] = None, class_names: Optional[Sequence[str]] = None,
                 cache: bool = False) -> None:
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        if split is not None and split not in SPLIT_NAMES:
            raise DatasetError(f'unknown split {split!r}; valid splits are {", ".join(SPLIT_NAMES)}')
        self.class_names = list(class_names or self.manifest['class_names'])
        if self.class_names != self.manifest['class_names']:
            raise DatasetError(f'model classes {self.class_names} differ from the dataset\'s '
                               f'{self.manifest["class_names"]}')
        self.frames = [f for f in self.manifest['frames'] if split is None or f.get('split') == split]
        self.split = split
        self.preset = preset
        if preset.crop == CROP_SEAM:
            missing = sum(1 for f in self.frames if not f.get('intrinsics'))
            if missing:
                raise DatasetError(f"crop 'seam' needs camera intrinsics, but {missing} frame(s) of "
                                   f'{self.root} have none (record the camera_info topic, or train '
                                   f"with model.crop=frame)")
        self.augment = augment
        self.depth_scale_m = float(self.manifest['depth_scale_m'])
        self.labels = np.array([self.class_names.index(f['label']) for f in self.frames], np.int64)
        self._cache: Optional[dict] = {} if cache else None

    def __len__(self) -> int:
        return len(self.frames)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.class_names))

    def raw(self, index: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """The stored frame: (uint8 RGB, float32 depth [m] or None when the preset needs none)."""
        return load_frame(self.root, self.frames[index], self.depth_scale_m, self.preset.needs_depth)

    def cropped(self, index: int) -> CroppedFrame:
        """The frame cropped to the input size (cached when the dataset caches)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rgb, depth_m = self.raw(index)
        item = crop_frame(rgb, depth_m, self.preset, frame_intrinsics(self.frames[index]))
        if self._cache is not None:
            self._cache[index] = item
        return item

    def __getitem__(self, index: int):
        import torch

        c = self.cropped(index)
        rgb, relief = c.rgb, c.relief
        label = int(self.labels[index])
        if self.augment is not None:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
            plane = relief if relief is not None else np.zeros(rgb.shape[:2], np.float32)
            rgb, plane = self.augment(rgb, plane, label, rng)
            relief = None if relief is None else plane
        x = to_tensor(np.ascontiguousarray(rgb), None if relief is None else np.ascontiguousarray(relief),
                      self.preset)
        return torch.from_numpy(x), label
