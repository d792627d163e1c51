"""Write docs/weld_report_sample.png and docs/weld_report_sample.json: the report of the
scanned demo weld (config/scans/demo_weld.yaml) as the report node builds it, graded against
the example acceptance table. Run: scripts/with_env.sh python scripts/make_sample_report.py"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from weld_vision_ros.core.frames import RGBDFrame  # noqa: E402
from weld_vision_ros.core.grading import AcceptanceTable  # noqa: E402
from weld_vision_ros.core.report_io import write_json, write_seam_map  # noqa: E402
from weld_vision_ros.core.rules import inspect_frame  # noqa: E402
from weld_vision_ros.core.weld_report import FrameRecord, build_report, placement_from_pose  # noqa: E402
from weld_vision_ros.simulator.seam_scan import SeamScanner, load_scan_plan  # noqa: E402


def main() -> None:
    plan = load_scan_plan(str(REPO / 'config/scans/demo_weld.yaml'))
    records = []
    for f in SeamScanner(plan, seed=3).frames():
        r = inspect_frame(RGBDFrame(f.frame.rgb, f.frame.depth_m, f.frame.intrinsics))
        records.append(FrameRecord(int(f.index), placement_from_pose(
            f.position_m, f.orientation_xyzw, r.measurement.seam_angle_deg, 1.0), r.measurement, r.verdict))
    # leave out three frames in the middle: the report shows the stretch no frame saw
    records = records[:6] + records[12:]
    report = build_report('demo-weld', records, plan.weld_length_mm, plan.plate_thickness_mm,
                          table=AcceptanceTable.load(REPO / 'config/acceptance/iso5817_example.yaml'),
                          quality_level=plan.quality_level)
    write_seam_map(report, REPO / 'docs/weld_report_sample.png')
    write_json(report, REPO / 'docs/weld_report_sample.json')
    print(f'{len(report.findings)} findings, unseen {report.unseen}, met {report.grade.met_level!r}')


if __name__ == '__main__':
    main()
