"""Depth image decoding: camera encodings to float32 metres with NaN for no return."""
from __future__ import annotations

import numpy as np


class DepthError(ValueError):
    """A depth image that cannot be decoded or holds no valid depth."""


SUPPORTED_DEPTH_ENCODINGS = ('16UC1', 'mono16', '32FC1')
# Encodings that carry integer units of depth_scale_m (quantized depth).
INTEGER_DEPTH_ENCODINGS = ('16UC1', 'mono16')


def decode_depth(raw: np.ndarray, encoding: str, depth_scale_m: float = 0.001) -> np.ndarray:
    """Convert a depth image to float32 metres, NaN where there is no return.

    raw: (H, W) array as carried by sensor_msgs/Image. 16UC1 (and mono16) hold integer
    units of `depth_scale_m` metres (RealSense: 1 mm); 0 means no return. 32FC1 holds
    metres; 0, negative, NaN and inf mean no return.
    """
    if depth_scale_m <= 0 or not np.isfinite(depth_scale_m):
        raise DepthError(f'depth_scale_m must be a positive number, got {depth_scale_m}')
    if raw.ndim != 2:
        raise DepthError(f'depth must be a single-channel (H, W) image, got shape {raw.shape}')
    if encoding in INTEGER_DEPTH_ENCODINGS:
        if raw.dtype != np.uint16:
            raise DepthError(f'{encoding} depth must be uint16, got {raw.dtype}')
        depth_m = raw.astype(np.float32) * np.float32(depth_scale_m)
        depth_m[raw == 0] = np.nan
    elif encoding == '32FC1':
        if raw.dtype != np.float32:
            raise DepthError(f'32FC1 depth must be float32, got {raw.dtype}')
        depth_m = raw.astype(np.float32, copy=True)
        depth_m[~(depth_m > 0) | ~np.isfinite(depth_m)] = np.nan
    else:
        raise DepthError(f'unsupported depth encoding {encoding!r}; expected one of '
                         f'{", ".join(SUPPORTED_DEPTH_ENCODINGS)}')
    return depth_m


def encode_depth_16uc1(depth_m: np.ndarray, depth_scale_m: float = 0.001) -> np.ndarray:
    """float32 metres (NaN = no return) to uint16 units of `depth_scale_m` (0 = no return)."""
    units = np.round(np.nan_to_num(depth_m, nan=0.0) / depth_scale_m)
    return np.clip(units, 0, 65535).astype(np.uint16)

