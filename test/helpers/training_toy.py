"""Toy RGB-D frames and bags for the weld_training tests (not a test module).

Each class has its own look, so that a tiny network learns it in a few epochs: a plate
of random brightness with a bead stripe, plus a class-specific mark in colour and in
relief. Frames of one weld share the plate brightness and stripe angle.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_training.bags import write_bag

MARK_RADIUS_PX = 10
MARK_RGB = {'good': (200, 200, 200), 'porosity': (40, 40, 40), 'undercut': (200, 60, 60),
            'spatter': (240, 240, 60), 'gap': (60, 60, 220), 'crack': (60, 200, 60)}


def toy_frame(label: str, rng: np.random.Generator, w: int = 64, h: int = 48,
              plate: int | None = None, angle: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    plate = int(rng.integers(90, 150)) if plate is None else plate
    angle = float(rng.uniform(-30, 30)) if angle is None else angle
    rgb = np.full((h, w, 3), plate, np.uint8)
    depth = np.full((h, w), 0.300, np.float32)
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    p0 = (int(w / 2 - c * w), int(h / 2 - s * w))
    p1 = (int(w / 2 + c * w), int(h / 2 + s * w))
    cv2.line(rgb, p0, p1, (170, 150, 120), 7)
    cv2.line(depth, p0, p1, 0.298, 7)  # bead 2 mm proud of the plate
    k = DEFAULT_CLASS_NAMES.index(label)
    cx, cy = int(rng.integers(w // 3, 2 * w // 3)), int(rng.integers(h // 3, 2 * h // 3))
    cv2.circle(rgb, (cx, cy), MARK_RADIUS_PX, MARK_RGB[label], -1)
    cv2.circle(depth, (cx, cy), MARK_RADIUS_PX, 0.300 + 0.0008 * (k - 2.5), -1)
    noise = rng.normal(0, 4, rgb.shape)
    rgb = np.clip(rgb + noise, 0, 255).astype(np.uint8)
    depth[rng.random(depth.shape) < 0.01] = np.nan
    return rgb, depth


def record_toy_bag(path: Path, welds: list[tuple[str, str]], frames_per_weld: int, rng: np.random.Generator,
                   storage: str = 'sqlite3', t0_ns: int = 1_700_000_000_000_000_000, period_ns: int = 33_333_333,
                   depth_encoding: str = '16UC1', color_encoding: str = 'rgb8', label_topic: bool = True,
                   size: tuple[int, int] = (64, 48)) -> tuple[Path, list[dict]]:
    """Record welds [(weld_id, label)] one after another; returns the bag and its label spans."""
    frames, labels, spans = [], [], []
    t = t0_ns
    for weld_id, label in welds:
        plate, angle = int(rng.integers(90, 150)), float(rng.uniform(-30, 30))
        labels.append({'stamp_ns': t, 'label': label, 'weld_id': weld_id})
        start = t
        for _ in range(frames_per_weld):
            rgb, depth = toy_frame(label, rng, size[0], size[1], plate, angle)
            frames.append({'stamp_ns': t, 'rgb': rgb, 'depth_m': depth})
            t += period_ns
        spans.append({'start_ns': start, 'end_ns': t - period_ns, 'label': label, 'weld_id': weld_id})
        t += period_ns
    write_bag(path, frames, storage=storage, labels=labels if label_topic else (),
              depth_encoding=depth_encoding, color_encoding=color_encoding)
    return path, spans


def toy_welds(n_per_class: int, prefix: str, classes=DEFAULT_CLASS_NAMES) -> list[tuple[str, str]]:
    """[(weld_id, label)], classes interleaved."""
    return [(f'{prefix}-w{i:03d}', classes[i % len(classes)]) for i in range(n_per_class * len(classes))]


# The trainer's machinery (loops, checkpoints, registry, export) is tested on the small
# torchvision model with the augmentation its toy tests were written for: fast on 2 cores.
# The default pretrained model has tests of its own (test_training_pretrained.py).
TOY_MODEL = 'mobilenet_v3_small'
TOY_AUGMENT = {'scale': 0.10, 'brightness': 0.20, 'contrast': 0.20, 'saturation': 0.20, 'gamma': 0.15,
               'blur_p': 0.15, 'noise_std': 3.0, 'relief_gain': 0.0, 'depth_noise_mm': 0.0,
               'depth_quant_p': 0.0, 'depth_dropout': 0.0}
# The same as `weld-train --set` options, for the tests that train through the CLI.
TOY_CLI = ['--set', f'model.name={TOY_MODEL}'] + [a for k, v in TOY_AUGMENT.items()
                                                  for a in ('--set', f'augment.{k}={v}')]


def toy_train_config(dataset: Path, out: Path, model_name: str = TOY_MODEL, **train) -> dict:
    """A small, fast training config over a toy dataset (2 CPU threads, 48 px input).

    Whole-frame crop: a toy frame's class mark sits anywhere, not along its bead stripe.
    """
    from weld_training.config import load_config

    t = {'epochs': 2, 'batch_size': 16, 'threads': 2, 'progress': False, 'precise_bn_batches': 4,
         'sample_images': 4, 'lr': 0.003}
    t.update(train)
    return load_config(updates=[{'data': {'dataset': str(dataset)}, 'output_dir': str(out),
                                 'model': {'name': model_name, 'input_size': 48, 'crop': 'frame'},
                                 'augment': TOY_AUGMENT if model_name == TOY_MODEL else {},
                                 'train': t}])


def make_toy_dataset(root: Path, n_per_class: int = 4, frames_per_weld: int = 6, seed: int = 0) -> Path:
    """Record two toy bags (sqlite3 and mcap) and extract them into root/ds."""
    from weld_training.dataset import extract_dataset

    rng = np.random.default_rng(seed)
    record_toy_bag(root / 'bags' / 'a', toy_welds(n_per_class // 2, 'a'), frames_per_weld, rng, 'sqlite3')
    record_toy_bag(root / 'bags' / 'b', toy_welds(n_per_class - n_per_class // 2, 'b'), frames_per_weld, rng,
                   'mcap', t0_ns=1_800_000_000_000_000_000, depth_encoding='32FC1', color_encoding='bgr8')
    extract_dataset([root / 'bags'], root / 'ds', min_samples_per_class=5, progress=False, log=lambda s: None)
    return root / 'ds'
