"""The RGB-D frame handed from the nodes (or the synthetic camera) to the core."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import Intrinsics


class FrameError(ValueError):
    """A frame whose images cannot be used (sizes, types, empty depth)."""


@dataclass(frozen=True)
class RGBDFrame:
    """One synchronized color + aligned depth frame.

    rgb: uint8 (H, W, 3) in RGB order. depth_m: float32 (H, W) in metres, NaN where the
    camera had no return. stamp_ns: capture time [ns]. frame_id: optical frame name.
    depth_unit_m: quantization step of the depth values [m] where the camera sent integer
    units (16UC1: one unit of depth_scale_m); 0 for continuous depth (32FC1). The core also
    recognises quantized values on its own (core.resolution.detect_depth_step_m).
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    intrinsics: Intrinsics
    stamp_ns: int = 0
    frame_id: str = 'camera_color_optical_frame'
    depth_unit_m: float = 0.0

    def __post_init__(self) -> None:
        validate_rgbd(self.rgb, self.depth_m, self.intrinsics)
        if not (np.isfinite(self.depth_unit_m) and self.depth_unit_m >= 0):
            raise FrameError(f'depth_unit_m must be a finite number >= 0 (0: continuous depth), '
                             f'got {self.depth_unit_m}')


def validate_rgbd(rgb: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics) -> None:
    """Raise FrameError unless rgb, depth and intrinsics describe the same image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise FrameError(f'rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}')
    if depth_m.ndim != 2 or depth_m.dtype != np.float32:
        raise FrameError(f'depth must be float32 (H, W) in metres, got {depth_m.dtype} {depth_m.shape}')
    if rgb.shape[:2] != depth_m.shape:
        raise FrameError(f'rgb {rgb.shape[1]}x{rgb.shape[0]} and depth '
                         f'{depth_m.shape[1]}x{depth_m.shape[0]} differ in size; depth must be aligned to color')
    if (intrinsics.width, intrinsics.height) != (rgb.shape[1], rgb.shape[0]):
        raise FrameError(f'camera_info is for {intrinsics.width}x{intrinsics.height} but the images are '
                         f'{rgb.shape[1]}x{rgb.shape[0]}')
