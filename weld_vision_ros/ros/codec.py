"""The frame codec: camera messages <-> the core's arrays, for rclpy and rosbags messages alike.

One ROS-free home for what a camera frame looks like on the wire, used by the nodes
(through RgbdInput and conversions), the recorders (weld-sim record, the capture node) and
training (weld_training.bags), so that training and serving decode every frame the same way:

- topic names (relative, as the nodes subscribe; bags record them absolute, `bag_topic`);
- Image decoding: color rgb8/bgr8/rgba8/bgra8 to RGB, depth 16UC1/mono16/32FC1 to metres
  (core.depth), row padding and byte order included. mono8 colour is refused everywhere:
  the rules and the models were made on colour, and a grey image repeated three times is
  not an input either was ever checked on;
- CameraInfo to Intrinsics, header stamps to integer nanoseconds;
- the fields of Image and CameraInfo messages for arrays (`image_fields`,
  `camera_info_fields`), filled into rclpy messages by ros.conversions and into rosbags
  messages by ros.dataset_bag.

Decoders read messages by attribute only (height, width, step, encoding, is_bigendian,
data; k; header.stamp.sec/nanosec), which rclpy and rosbags messages both have.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from weld_vision_ros.core.camera import Intrinsics, IntrinsicsError
from weld_vision_ros.core.depth import decode_depth, encode_depth_16uc1

# --- topics: relative, so that a namespace or a remap applies ----------------------------------
COLOR_TOPIC = 'camera/color/image_raw'
DEPTH_TOPIC = 'camera/aligned_depth_to_color/image_raw'
CAMERA_INFO_TOPIC = 'camera/color/camera_info'
GROUND_TRUTH_TOPIC = 'camera/ground_truth'
LABEL_TOPIC = 'weld/label'

NS_PER_S = 1_000_000_000


def bag_topic(relative: str) -> str:
    """The absolute name a topic has in a bag recorded in the root namespace."""
    return relative if relative.startswith('/') else '/' + relative


# --- encodings ---------------------------------------------------------------------------------
COLOR_ENCODINGS = {'rgb8': (3, False), 'bgr8': (3, True), 'rgba8': (4, False), 'bgra8': (4, True)}
DEPTH_ENCODINGS = ('32FC1', '16UC1')          # what our cameras and recorders write
_DTYPES = {'rgb8': np.uint8, 'bgr8': np.uint8, 'rgba8': np.uint8, 'bgra8': np.uint8,
           'mono8': np.uint8, '16UC1': np.uint16, 'mono16': np.uint16, '32FC1': np.float32}
_CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, '16UC1': 1, 'mono16': 1,
             '32FC1': 1}


class ImageEncodingError(ValueError):
    """An Image message whose encoding or layout cannot be read."""


def _bytes_of(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):            # rosbags: uint8 array
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)  # rclpy: bytes or array('B')


def image_to_array(msg: Any) -> np.ndarray:
    """An Image message as an (H, W) or (H, W, C) array in its own encoding (native byte order)."""
    enc = msg.encoding
    if enc not in _DTYPES:
        raise ImageEncodingError(f'unsupported image encoding {enc!r}; expected one of '
                                 f'{", ".join(sorted(_DTYPES))}')
    dtype = np.dtype(_DTYPES[enc])
    channels = _CHANNELS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = w * channels * dtype.itemsize
    if h == 0 or w == 0:
        raise ImageEncodingError(f'image is empty ({w}x{h})')
    if step < row_bytes:
        raise ImageEncodingError(f'step {step} is shorter than a {w}-pixel {enc} row ({row_bytes} bytes)')
    buf = _bytes_of(msg.data)
    if buf.size < step * h:
        raise ImageEncodingError(f'data holds {buf.size} bytes, {enc} {w}x{h} with step {step} '
                                 f'needs {step * h}')
    rows = buf[:step * h].reshape(h, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dtype)
    if dtype.itemsize > 1 and bool(msg.is_bigendian) != (sys.byteorder == 'big'):
        arr = arr.byteswap()
    return arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)


def decode_color(msg: Any) -> np.ndarray:
    """An rgb8/bgr8/rgba8/bgra8 Image as uint8 (H, W, 3) RGB; anything else is an ImageEncodingError."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise ImageEncodingError(f'color image encoding {msg.encoding!r} is not supported; '
                                 f'expected one of {", ".join(COLOR_ENCODINGS)}')
    arr = image_to_array(msg)
    _, swap = COLOR_ENCODINGS[msg.encoding]
    arr = arr[..., :3]
    return np.ascontiguousarray(arr[..., ::-1] if swap else arr)


def decode_depth_image(msg: Any, depth_scale_m: float = 0.001) -> np.ndarray:
    """A depth Image (16UC1/mono16 in depth_scale_m units, 32FC1 in m) as float32 metres, NaN
    for no return. Raises ImageEncodingError (layout) or core.depth.DepthError (encoding)."""
    return decode_depth(image_to_array(msg), msg.encoding, depth_scale_m)


def intrinsics_from_camera_info(msg: Any) -> Intrinsics:
    """Intrinsics from CameraInfo.k; raises IntrinsicsError for no size or an uncalibrated K."""
    if int(msg.width) == 0 or int(msg.height) == 0:
        raise IntrinsicsError('camera_info has no image size (width/height 0)')
    return Intrinsics.from_k([float(v) for v in msg.k], int(msg.width), int(msg.height))


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time as integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def header_stamp_ns(msg: Any) -> int:
    """A stamped message's header stamp [ns]."""
    return stamp_to_ns(msg.header.stamp)


def ns_to_sec_nanosec(ns: int) -> tuple[int, int]:
    """Integer nanoseconds as the (sec, nanosec) of a builtin_interfaces/Time."""
    return int(ns // NS_PER_S), int(ns % NS_PER_S)


# --- encoding ----------------------------------------------------------------------------------

def image_fields(arr: np.ndarray, encoding: str) -> dict[str, Any]:
    """The Image fields (height, width, encoding, is_bigendian, step, data as uint8 array) that
    carry `arr` (rgb8/bgr8 (H, W, 3) uint8, 16UC1 uint16, 32FC1 float32) in `encoding`."""
    if encoding not in _DTYPES:
        raise ImageEncodingError(f'unsupported image encoding {encoding!r}')
    expected = np.dtype(_DTYPES[encoding])
    if arr.dtype != expected:
        raise ImageEncodingError(f'{encoding} needs {expected} data, got {arr.dtype}')
    channels = _CHANNELS[encoding]
    if (channels == 1 and arr.ndim != 2) or (channels > 1 and (arr.ndim != 3 or arr.shape[2] != channels)):
        raise ImageEncodingError(f'{encoding} needs {channels} channel(s), got shape {arr.shape}')
    data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return dict(height=int(arr.shape[0]), width=int(arr.shape[1]), encoding=encoding,
                is_bigendian=int(sys.byteorder == 'big'),
                step=int(arr.shape[1] * channels * expected.itemsize), data=data)


def color_image_fields(rgb: np.ndarray, encoding: str = 'rgb8') -> dict[str, Any]:
    """Image fields of an RGB uint8 (H, W, 3) frame as rgb8 or bgr8."""
    if encoding not in ('rgb8', 'bgr8'):
        raise ImageEncodingError(f"color encoding must be 'rgb8' or 'bgr8', got {encoding!r}")
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return image_fields(np.ascontiguousarray(rgb[..., ::-1]) if encoding == 'bgr8' else rgb, encoding)


def depth_image_fields(depth_m: np.ndarray, encoding: str) -> dict[str, Any]:
    """Image fields of a depth frame [m]: 32FC1 keeps metres and NaN for no return (REP 118);
    16UC1 is whole millimetres, 0 for no return (what a RealSense publishes)."""
    if encoding == '32FC1':
        return image_fields(np.ascontiguousarray(depth_m, dtype=np.float32), encoding)
    if encoding == '16UC1':
        return image_fields(encode_depth_16uc1(depth_m), encoding)
    raise ImageEncodingError(f'depth encoding must be one of {", ".join(DEPTH_ENCODINGS)}; got {encoding!r}')


def camera_info_fields(intr: Intrinsics) -> dict[str, Any]:
    """The CameraInfo fields of pinhole intrinsics (no distortion, identity rectification)."""
    return dict(width=int(intr.width), height=int(intr.height), distortion_model='plumb_bob',
                d=[0.0] * 5, k=[float(v) for v in intr.k],
                r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                p=[intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0])
