"""Pinhole camera intrinsics and the pixel <-> millimetre conversions built on them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


class IntrinsicsError(ValueError):
    """Camera intrinsics that cannot describe a pinhole camera."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the color camera (depth is aligned to it).

    fx, fy: focal lengths [px]; cx, cy: principal point [px]; width, height: image size [px].
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (np.isfinite(self.fx) and np.isfinite(self.fy) and self.fx > 0 and self.fy > 0):
            raise IntrinsicsError(f'focal lengths must be positive and finite, got fx={self.fx}, fy={self.fy}')
        if not (np.isfinite(self.cx) and np.isfinite(self.cy)):
            raise IntrinsicsError(f'principal point must be finite, got cx={self.cx}, cy={self.cy}')
        if self.width <= 0 or self.height <= 0:
            raise IntrinsicsError(f'image size must be positive, got {self.width}x{self.height}')

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> 'Intrinsics':
        """Build from a row-major 3x3 camera matrix K (as in sensor_msgs/CameraInfo.k)."""
        k = [float(v) for v in k]
        if len(k) != 9:
            raise IntrinsicsError(f'K must have 9 elements, got {len(k)}')
        return cls(fx=k[0], fy=k[4], cx=k[2], cy=k[5], width=int(width), height=int(height))

    @property
    def k(self) -> list[float]:
        """Row-major 3x3 camera matrix."""
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    def scaled(self, width: int, height: int) -> 'Intrinsics':
        """The same camera at another resolution (intrinsics scale with the image)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    def backproject(self, depth_m: np.ndarray) -> np.ndarray:
        """Points [m] in the camera frame for a depth image [m]: array (H, W, 3), NaN kept."""
        h, w = depth_m.shape
        u = (np.arange(w, dtype=np.float32) - self.cx) / self.fx
        v = (np.arange(h, dtype=np.float32) - self.cy) / self.fy
        z = depth_m.astype(np.float32, copy=False)
        return np.stack([z * u[None, :], z * v[:, None], z], axis=-1)

    def mm_per_px(self, depth_m: float) -> float:
        """Size of one pixel on a fronto-parallel surface at `depth_m` [mm/px]."""
        return 1000.0 * depth_m / (0.5 * (self.fx + self.fy))
