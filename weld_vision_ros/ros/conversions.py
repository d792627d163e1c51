"""Conversions between ROS messages and the core's numpy arrays and dataclasses.

cv_bridge is not used: its PyPI port breaks with numpy 2, and these conversions are a
few lines of numpy each (row padding and byte order included).
"""
from __future__ import annotations

import sys

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from weld_vision_ros.core.camera import Intrinsics, IntrinsicsError
from weld_vision_ros.core.results import (STATUS_INSPECTED, BeadMeasurement, DefectRegion, GroundTruth,
                                          Verdict)

_COLOR_ENCODINGS = {'rgb8': (3, False), 'bgr8': (3, True), 'rgba8': (4, False), 'bgra8': (4, True)}
_DTYPES = {'rgb8': np.uint8, 'bgr8': np.uint8, 'rgba8': np.uint8, 'bgra8': np.uint8,
           'mono8': np.uint8, '16UC1': np.uint16, 'mono16': np.uint16, '32FC1': np.float32}
_CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, '16UC1': 1, 'mono16': 1,
             '32FC1': 1}


class ImageEncodingError(ValueError):
    """An Image message whose encoding or layout cannot be read."""


def image_to_array(msg: Image) -> np.ndarray:
    """View an Image message as an (H, W) or (H, W, C) array in its own encoding."""
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
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < step * h:
        raise ImageEncodingError(f'data holds {buf.size} bytes, {enc} {w}x{h} with step {step} '
                                 f'needs {step * h}')
    rows = buf[:step * h].reshape(h, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dtype)
    if dtype.itemsize > 1 and bool(msg.is_bigendian) != (sys.byteorder == 'big'):
        arr = arr.byteswap()
    return arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)


def color_to_rgb(msg: Image) -> np.ndarray:
    """An rgb8/bgr8/rgba8/bgra8 Image as uint8 (H, W, 3) RGB."""
    if msg.encoding not in _COLOR_ENCODINGS:
        raise ImageEncodingError(f'color image encoding {msg.encoding!r} is not supported; '
                                 f'expected one of {", ".join(_COLOR_ENCODINGS)}')
    arr = image_to_array(msg)
    _, swap = _COLOR_ENCODINGS[msg.encoding]
    arr = arr[..., :3]
    return np.ascontiguousarray(arr[..., ::-1] if swap else arr)


def array_to_image(arr: np.ndarray, encoding: str, header=None) -> Image:
    """An Image message holding `arr` (rgb8/bgr8 (H, W, 3) uint8, 16UC1 uint16, 32FC1 float32)."""
    if encoding not in _DTYPES:
        raise ImageEncodingError(f'unsupported image encoding {encoding!r}')
    expected = np.dtype(_DTYPES[encoding])
    if arr.dtype != expected:
        raise ImageEncodingError(f'{encoding} needs {expected} data, got {arr.dtype}')
    channels = _CHANNELS[encoding]
    if (channels == 1 and arr.ndim != 2) or (channels > 1 and (arr.ndim != 3 or arr.shape[2] != channels)):
        raise ImageEncodingError(f'{encoding} needs {channels} channel(s), got shape {arr.shape}')
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == 'big')
    msg.step = int(arr.shape[1] * channels * expected.itemsize)
    msg.data = np.ascontiguousarray(arr).tobytes()
    return msg


def camera_info_to_intrinsics(msg: CameraInfo) -> Intrinsics:
    """Intrinsics from CameraInfo.k; raises IntrinsicsError for an uncalibrated (zero) K."""
    if msg.width == 0 or msg.height == 0:
        raise IntrinsicsError('camera_info has no image size (width/height 0)')
    return Intrinsics.from_k(list(msg.k), msg.width, msg.height)


def intrinsics_to_camera_info(intr: Intrinsics, header=None) -> CameraInfo:
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = intr.width, intr.height
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.0] * 5
    msg.k = intr.k
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int):
    from builtin_interfaces.msg import Time
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def region_to_msg(region: DefectRegion):
    from weld_vision_ros.msg import DefectRegion as DefectRegionMsg
    return DefectRegionMsg(
        defect_class=region.defect_class, confidence=float(region.confidence),
        x_px=int(region.x_px), y_px=int(region.y_px), width_px=int(region.width_px),
        height_px=int(region.height_px), length_mm=float(region.length_mm),
        width_mm=float(region.width_mm), position_along_seam_mm=float(region.position_along_seam_mm))


def region_from_msg(msg) -> DefectRegion:
    return DefectRegion(msg.defect_class, msg.confidence, msg.x_px, msg.y_px, msg.width_px,
                        msg.height_px, msg.length_mm, msg.width_mm, msg.position_along_seam_mm)


def verdict_to_msg(verdict: Verdict, header):
    """WeldDefect for a core Verdict; the header is the input frame's (stamp and frame_id)."""
    from weld_vision_ros.msg import WeldDefect
    return WeldDefect(
        header=header, defect_class=verdict.defect_class, confidence=float(verdict.confidence),
        class_names=list(verdict.class_names),
        probabilities=[float(p) for p in verdict.probabilities], method=verdict.method,
        model_version=verdict.model_version, latency_ms=float(verdict.latency_ms),
        regions=[region_to_msg(r) for r in verdict.regions], status=verdict.status,
        status_reason=verdict.status_reason, status_detail=verdict.status_detail,
        checks_not_made=list(verdict.checks_not_made))


def verdict_from_msg(msg) -> Verdict:
    return Verdict(msg.defect_class, msg.confidence, tuple(msg.class_names),
                   tuple(float(p) for p in msg.probabilities), msg.method, msg.model_version,
                   msg.latency_ms, tuple(region_from_msg(r) for r in msg.regions),
                   msg.status or STATUS_INSPECTED, msg.status_reason, msg.status_detail,
                   tuple(msg.checks_not_made))


def bead_to_msg(bead: BeadMeasurement, header):
    """BeadMeasurement message; the header is the input frame's."""
    from weld_vision_ros.msg import BeadMeasurement as BeadMeasurementMsg
    return BeadMeasurementMsg(
        header=header, valid=bool(bead.valid), reason=bead.reason,
        width_mm=float(bead.width_mm), width_std_mm=float(bead.width_std_mm),
        width_min_mm=float(bead.width_min_mm), width_max_mm=float(bead.width_max_mm),
        height_mm=float(bead.height_mm), height_max_mm=float(bead.height_max_mm),
        undercut_depth_mm=float(bead.undercut_depth_mm), seam_length_mm=float(bead.seam_length_mm),
        seam_angle_deg=float(bead.seam_angle_deg), within_tolerance=bool(bead.within_tolerance),
        score=float(bead.score))


def ground_truth_to_msg(truth: GroundTruth, header):
    from weld_vision_ros.msg import WeldGroundTruth
    return WeldGroundTruth(
        header=header, defect_class=truth.defect_class, weld_id=truth.weld_id,
        width_mm=float(truth.width_mm), width_std_mm=float(truth.width_std_mm),
        height_mm=float(truth.height_mm), undercut_depth_mm=float(truth.undercut_depth_mm),
        seam_angle_deg=float(truth.seam_angle_deg), plate_distance_m=float(truth.plate_distance_m),
        regions=[region_to_msg(r) for r in truth.regions])


def ground_truth_from_msg(msg) -> GroundTruth:
    return GroundTruth(msg.defect_class, msg.width_mm, msg.width_std_mm, msg.height_mm,
                       msg.undercut_depth_mm, msg.seam_angle_deg, msg.plate_distance_m,
                       msg.weld_id, tuple(region_from_msg(r) for r in msg.regions))
