"""Training augmentation, between the shared crop and the normalisation.

It acts on the cropped input-size frame (`core.preprocess.crop_frame`: the seam strip or
the resized frame) and its relief plane, so the crop itself, which needs the camera
geometry, is exactly the node's. Geometric transforms (flips, rotation, scale, shift)
are one affine warp applied identically to RGB and the relief/depth plane, so the relief
channel stays registered with the colour; that plane is warped with nearest-neighbour
sampling so that no-return pixels are not smeared into their neighbours. Photometric transforms (brightness, contrast,
saturation, gamma, blur, noise) touch RGB only. The relief plane has perturbations of its
own, the ways a depth camera errs (all off by default): a gain on the relief (bead height,
depth scale), Gaussian noise, quantization to a depth step, and dropout blobs (no return,
0 in the relief channel), sized in mm through the preset's depth range. Rare classes are augmented harder: strength scales with
sqrt(count of the largest class / count of the class), capped at `max_boost`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Optional, Sequence

import cv2
import numpy as np


class AugmentError(ValueError):
    """Augmentation settings out of range."""


@dataclass(frozen=True)
class AugmentConfig:
    """Base augmentation strengths (for the most frequent class).

    rotate_deg: max rotation [deg]. scale: max relative zoom. shift: max shift as a
    fraction of the image size. hflip, vflip: probabilities. brightness, contrast,
    saturation: max relative change. gamma: max log-gamma change. blur_p: probability of
    a Gaussian blur. noise_std: RGB noise std [0..255 units]. max_boost: cap on the
    rare-class multiplier (1 disables class-dependent strength).
    Relief (depth) plane: relief_gain: max relative change of the relief. depth_noise_mm:
    max std of added Gaussian noise [mm] (drawn per frame). depth_quant_p: probability of
    quantizing the relief to a step of up to depth_quant_mm [mm]. depth_dropout: max
    fraction of the strip lost to no-return blobs.
    """

    enabled: bool = True
    hflip: float = 0.5
    vflip: float = 0.5
    rotate_deg: float = 15.0
    scale: float = 0.10
    shift: float = 0.06
    brightness: float = 0.20
    contrast: float = 0.20
    saturation: float = 0.20
    gamma: float = 0.15
    blur_p: float = 0.15
    noise_std: float = 3.0
    max_boost: float = 2.0
    relief_gain: float = 0.0
    depth_noise_mm: float = 0.0
    depth_quant_p: float = 0.0
    depth_quant_mm: float = 0.0
    depth_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ('hflip', 'vflip', 'blur_p', 'depth_quant_p', 'depth_dropout'):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise AugmentError(f'augment.{name} is a probability in [0, 1], got {v}')
        for name in ('rotate_deg', 'scale', 'shift', 'brightness', 'contrast', 'saturation',
                     'gamma', 'noise_std', 'relief_gain', 'depth_noise_mm', 'depth_quant_mm'):
            if getattr(self, name) < 0:
                raise AugmentError(f'augment.{name} must be >= 0, got {getattr(self, name)}')
        if self.scale >= 1 or self.shift >= 0.5:
            raise AugmentError(f'augment.scale must be < 1 and augment.shift < 0.5, got '
                               f'{self.scale} and {self.shift}')
        if self.max_boost < 1:
            raise AugmentError(f'augment.max_boost must be >= 1, got {self.max_boost}')

    @classmethod
    def from_dict(cls, d: Mapping) -> 'AugmentConfig':
        valid = set(asdict(cls()))
        unknown = set(d) - valid
        if unknown:
            raise AugmentError(f'unknown augment option(s) {sorted(unknown)}; valid: {", ".join(sorted(valid))}')
        return cls(**d)


def class_boosts(counts: Sequence[int], max_boost: float) -> np.ndarray:
    """Augmentation multiplier per class: sqrt(max count / count), in [1, max_boost]."""
    c = np.maximum(np.asarray(counts, np.float64), 1.0)
    return np.clip(np.sqrt(c.max() / c), 1.0, max_boost)


class Augmenter:
    """Random train-time transform of (rgb, depth_m) with class-dependent strength."""

    def __init__(self, config: AugmentConfig, class_counts: Optional[Sequence[int]] = None,
                 depth_range_mm: float = 4.0) -> None:
        """depth_range_mm: the relief channel's scale (preset.depth_range_mm): +-1 is this height."""
        self.config = config
        self.depth_range_mm = float(depth_range_mm)
        self.boosts = (class_boosts(class_counts, config.max_boost) if class_counts is not None
                       else None)

    def strength(self, label: int) -> float:
        return 1.0 if self.boosts is None else float(self.boosts[label])

    def __call__(self, rgb: np.ndarray, depth_m: np.ndarray, label: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if not self.config.enabled:
            return rgb, depth_m
        k = self.strength(label)
        rgb, depth_m = self.geometric(rgb, depth_m, k, rng)
        return self.photometric(rgb, k, rng), self.relief(depth_m, k, rng)

    def relief(self, relief: np.ndarray, k: float, rng: np.random.Generator) -> np.ndarray:
        """Depth-camera errors on the relief plane ([-1, 1] = +-depth_range_mm; 0: no return)."""
        c = self.config
        if not (c.relief_gain or c.depth_noise_mm or c.depth_quant_p or c.depth_dropout):
            return relief
        scale = np.float32(1.0 / self.depth_range_mm)  # relief units per mm
        lost = relief == 0.0
        out = relief.astype(np.float32, copy=True)
        if c.relief_gain:
            out *= np.float32(1.0 + rng.uniform(-1, 1) * min(c.relief_gain * k, 0.9))
        if c.depth_noise_mm:
            out += rng.normal(0.0, rng.uniform(0.0, c.depth_noise_mm * k), out.shape).astype(np.float32) * scale
        if c.depth_quant_mm and rng.random() < c.depth_quant_p:
            step = np.float32(rng.uniform(0.25, 1.0) * c.depth_quant_mm * scale)
            out = np.round(out / step) * step
        if c.depth_dropout:
            h, w = out.shape
            target = rng.uniform(0.0, min(c.depth_dropout * k, 0.5)) * h * w
            mask = np.zeros((h, w), np.uint8)
            while mask.sum() < target:
                r = int(rng.integers(1, max(2, h // 6)))
                cv2.ellipse(mask, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                            (int(r * rng.uniform(1, 4)), r), 0.0, 0.0, 360.0, 1, -1)
            lost |= mask.astype(bool)
        out[lost] = 0.0
        return np.clip(out, -1.0, 1.0, out=out)

    def geometric(self, rgb: np.ndarray, depth_m: np.ndarray, k: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        h, w = rgb.shape[:2]
        if rng.random() < c.hflip:
            rgb, depth_m = rgb[:, ::-1], depth_m[:, ::-1]
        if rng.random() < c.vflip:
            rgb, depth_m = rgb[::-1], depth_m[::-1]
        angle = rng.uniform(-1, 1) * min(c.rotate_deg * k, 180.0)
        zoom = 1.0 + rng.uniform(-1, 1) * min(c.scale * k, 0.5)
        shift = min(c.shift * k, 0.45)
        m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, zoom)
        m[0, 2] += rng.uniform(-1, 1) * shift * w
        m[1, 2] += rng.uniform(-1, 1) * shift * h
        rgb = cv2.warpAffine(np.ascontiguousarray(rgb), m, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
        depth_m = cv2.warpAffine(np.ascontiguousarray(depth_m), m, (w, h), flags=cv2.INTER_NEAREST,
                                 borderMode=cv2.BORDER_REFLECT_101)
        return rgb, depth_m

    def photometric(self, rgb: np.ndarray, k: float, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast and gamma as one lookup table, then saturation, blur, noise.

        uint8 throughout (OpenCV): at 320x240 this costs about a millisecond, not the
        several that float arithmetic on every pixel would.
        """
        c = self.config
        rgb = np.ascontiguousarray(rgb)
        brightness = 1.0 + rng.uniform(-1, 1) * c.brightness * k
        contrast = 1.0 + rng.uniform(-1, 1) * c.contrast * k
        gamma = float(np.exp(rng.uniform(-1, 1) * c.gamma * k))
        mean = float(rgb.mean()) / 255.0 * brightness
        v = np.arange(256, dtype=np.float64) / 255.0 * brightness
        v = np.clip((v - mean) * contrast + mean, 0.0, 1.0) ** gamma
        x = cv2.LUT(rgb, np.round(v * 255.0).astype(np.uint8))
        saturation = 1.0 + rng.uniform(-1, 1) * c.saturation * k
        gray = cv2.cvtColor(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        x = cv2.addWeighted(x, saturation, gray, 1.0 - saturation, 0.0)
        if rng.random() < min(c.blur_p * k, 1.0):
            x = cv2.GaussianBlur(x, (0, 0), sigmaX=float(rng.uniform(0.3, 1.0)))
        if c.noise_std > 0:
            noise = np.empty(x.shape, np.int16)
            cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))  # keeps seeded runs repeatable
            cv2.randn(noise, 0.0, c.noise_std * k)
            x = np.clip(x.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        return x
