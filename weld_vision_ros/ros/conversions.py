"""rclpy messages for the core's arrays and dataclasses: Image/CameraInfo built from the frame
codec's fields (ros.codec, which also decodes them), WeldDefect, BeadMeasurement and
WeldGroundTruth from Verdict, BeadMeasurement and GroundTruth.

cv_bridge is not used: its PyPI port breaks with numpy 2, and the codec is a few lines of
numpy (row padding and byte order included).
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from weld_vision_ros.core.camera import Intrinsics
from weld_vision_ros.core.results import (STATUS_INSPECTED, BeadMeasurement, DefectRegion, GroundTruth,
                                          Verdict)
from weld_vision_ros.ros import codec


def array_to_image(arr: np.ndarray, encoding: str, header=None) -> Image:
    """An Image message holding `arr` (rgb8/bgr8 (H, W, 3) uint8, 16UC1 uint16, 32FC1 float32)."""
    fields = codec.image_fields(arr, encoding)
    msg = Image(height=fields['height'], width=fields['width'], encoding=encoding,
                is_bigendian=fields['is_bigendian'], step=fields['step'])
    if header is not None:
        msg.header = header
    msg.data = fields['data'].tobytes()
    return msg


def intrinsics_to_camera_info(intr: Intrinsics, header=None) -> CameraInfo:
    msg = CameraInfo(**codec.camera_info_fields(intr))
    if header is not None:
        msg.header = header
    return msg


def ns_to_stamp(ns: int):
    from builtin_interfaces.msg import Time
    sec, nanosec = codec.ns_to_sec_nanosec(ns)
    return Time(sec=sec, nanosec=nanosec)


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
        score=float(bead.score), axis_along_seam_mm=float(bead.axis_along_seam_mm))


def ground_truth_to_msg(truth: GroundTruth, header):
    from weld_vision_ros.msg import WeldGroundTruth
    return WeldGroundTruth(
        header=header, defect_class=truth.defect_class, weld_id=truth.weld_id,
        width_mm=float(truth.width_mm), width_std_mm=float(truth.width_std_mm),
        height_mm=float(truth.height_mm), undercut_depth_mm=float(truth.undercut_depth_mm),
        seam_angle_deg=float(truth.seam_angle_deg), plate_distance_m=float(truth.plate_distance_m),
        regions=[region_to_msg(r) for r in truth.regions])


def bead_from_msg(msg) -> BeadMeasurement:
    return BeadMeasurement(
        valid=bool(msg.valid), reason=msg.reason, width_mm=msg.width_mm, width_std_mm=msg.width_std_mm,
        width_min_mm=msg.width_min_mm, width_max_mm=msg.width_max_mm, height_mm=msg.height_mm,
        height_max_mm=msg.height_max_mm, undercut_depth_mm=msg.undercut_depth_mm,
        seam_length_mm=msg.seam_length_mm, seam_angle_deg=msg.seam_angle_deg,
        within_tolerance=bool(msg.within_tolerance), score=msg.score,
        axis_along_seam_mm=msg.axis_along_seam_mm)
