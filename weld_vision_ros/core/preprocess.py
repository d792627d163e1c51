"""The one preprocessing preset shared by training (eval) and the ONNX node.

Training's evaluation transform and the node's inference both call `preprocess`; the
preset travels inside the exported model's metadata, so a model is always fed the way
it was trained.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Mapping

import cv2
import numpy as np

CHANNELS_RGB = 'rgb'
CHANNELS_RGBD = 'rgbd'
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PreprocessError(ValueError):
    """Inputs or a preset that preprocessing cannot use."""


@dataclass(frozen=True)
class PreprocessPreset:
    """How a frame becomes a model input.

    input_height, input_width: network input size [px]. channels: 'rgb' (3 channels) or
    'rgbd' (RGB + a relief channel). mean/std: per-channel normalisation of values in
    [0, 1] (RGB) and of the relief channel. depth_range_mm: relief is the height above the
    frame's median depth [mm] divided by this and clipped to [-1, 1]; no return is 0.
    """

    input_height: int = 224
    input_width: int = 224
    channels: str = CHANNELS_RGB
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    depth_range_mm: float = 5.0

    def __post_init__(self) -> None:
        if self.channels not in (CHANNELS_RGB, CHANNELS_RGBD):
            raise PreprocessError(f"channels must be 'rgb' or 'rgbd', got {self.channels!r}")
        if self.input_height < 16 or self.input_width < 16:
            raise PreprocessError(f'input size must be at least 16x16, got '
                                  f'{self.input_width}x{self.input_height}')
        n = self.num_channels
        if len(self.mean) != n or len(self.std) != n:
            raise PreprocessError(f'mean and std need {n} values for {self.channels!r}, got '
                                  f'{len(self.mean)} and {len(self.std)}')
        if any(s <= 0 for s in self.std):
            raise PreprocessError(f'std values must be positive, got {self.std}')
        if self.depth_range_mm <= 0:
            raise PreprocessError(f'depth_range_mm must be positive, got {self.depth_range_mm}')

    @property
    def num_channels(self) -> int:
        return 3 if self.channels == CHANNELS_RGB else 4

    @classmethod
    def for_channels(cls, channels: str, input_size: int = 224) -> 'PreprocessPreset':
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if channels == CHANNELS_RGBD:
            mean, std = mean + (0.0,), std + (0.5,)
        return cls(input_height=input_size, input_width=input_size, channels=channels,
                   mean=mean, std=std)

    def to_dict(self) -> dict:
        d = asdict(self)
        d['mean'], d['std'] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> 'PreprocessPreset':
        try:
            return cls(input_height=int(d['input_height']), input_width=int(d['input_width']),
                       channels=str(d['channels']), mean=tuple(float(v) for v in d['mean']),
                       std=tuple(float(v) for v in d['std']),
                       depth_range_mm=float(d.get('depth_range_mm', 5.0)))
        except KeyError as exc:
            raise PreprocessError(f'preprocess preset lacks {exc.args[0]!r}') from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def relief_channel(depth_m: np.ndarray, depth_range_mm: float) -> np.ndarray:
    """Height above the frame's median depth, scaled to [-1, 1]; 0 where no return."""
    finite = np.isfinite(depth_m)
    if not finite.any():
        return np.zeros(depth_m.shape, np.float32)
    median_m = float(np.median(depth_m[finite]))
    relief = (median_m - depth_m) * np.float32(1000.0 / depth_range_mm)
    relief = np.where(finite, relief, 0.0).astype(np.float32)
    return np.clip(relief, -1.0, 1.0, out=relief)


def preprocess(rgb: np.ndarray, depth_m: np.ndarray | None, preset: PreprocessPreset) -> np.ndarray:
    """One frame to a float32 (C, H, W) network input.

    rgb: uint8 (H, W, 3) RGB. depth_m: float32 (H, W) metres with NaN for no return;
    needed only when preset.channels is 'rgbd'.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise PreprocessError(f'rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}')
    size = (preset.input_width, preset.input_height)
    x = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1 / 255)
    planes = [x[..., 0], x[..., 1], x[..., 2]]
    if preset.channels == CHANNELS_RGBD:
        if depth_m is None or depth_m.shape != rgb.shape[:2]:
            raise PreprocessError('rgbd preset needs a depth image the size of the rgb image')
        relief = relief_channel(depth_m, preset.depth_range_mm)
        planes.append(cv2.resize(relief, size, interpolation=cv2.INTER_AREA))
    out = np.stack(planes, axis=0)
    mean = np.asarray(preset.mean, np.float32)[:, None, None]
    std = np.asarray(preset.std, np.float32)[:, None, None]
    return (out - mean) / std
