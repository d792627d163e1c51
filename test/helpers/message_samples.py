"""One filled instance of each custom message, shared by the publisher process and the test."""
from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from weld_vision_ros.msg import (BeadMeasurement, DefectRegion, WeldDefect, WeldGroundTruth,
                                 WeldLabel)


def header() -> Header:
    return Header(stamp=Time(sec=1700000123, nanosec=456789000), frame_id='camera_color_optical_frame')


def region(i: int) -> DefectRegion:
    return DefectRegion(defect_class='porosity' if i == 0 else 'spatter', confidence=0.25 + 0.5 * i,
                        x_px=10 + i, y_px=20 + i, width_px=30 + i, height_px=40 + i,
                        length_mm=1.5 + i, width_mm=2.5 + i, position_along_seam_mm=33.25 + i)


def samples() -> dict:
    return {
        'bead': BeadMeasurement(header=header(), valid=True, reason='', width_mm=8.25,
                                width_std_mm=0.125, width_min_mm=7.5, width_max_mm=9.0,
                                height_mm=2.25, height_max_mm=2.75, undercut_depth_mm=0.375,
                                seam_length_mm=120.5, seam_angle_deg=-33.5, within_tolerance=True,
                                score=87.5),
        'defect': WeldDefect(header=header(), defect_class='porosity', confidence=0.75,
                             class_names=['good', 'porosity', 'undercut', 'spatter', 'gap', 'crack'],
                             probabilities=[0.125, 0.75, 0.0625, 0.0625, 0.0, 0.0], method='hybrid',
                             model_version='mnv3s-2026.11.22', latency_ms=4.5,
                             regions=[region(0), region(1)]),
        'label': WeldLabel(header=header(), label='undercut', weld_id='weld-0042', source='operator'),
        'truth': WeldGroundTruth(header=header(), defect_class='crack', weld_id='sim-7', width_mm=9.5,
                                 width_std_mm=0.25, height_mm=2.0, undercut_depth_mm=0.0,
                                 seam_angle_deg=12.5, plate_distance_m=0.225, regions=[region(1)]),
    }


TOPICS = {'bead': 'test/bead', 'defect': 'test/defect', 'label': 'test/label', 'truth': 'test/truth'}
