"""A weld report written for people: JSON and a seam-map PNG (OpenCV drawing, no plotting
library, so it runs on the cell)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .weld_report import WeldReport

_COLOURS = {'porosity': (40, 40, 220), 'undercut': (0, 150, 255), 'spatter': (200, 120, 0),
            'gap': (160, 0, 160), 'crack': (0, 0, 140)}      # BGR


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.' + path.name)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(report: WeldReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(report.to_dict(), indent=1, default=float).encode())
    return path


def seam_map(report: WeldReport, width: int = 1400) -> np.ndarray:
    """The weld as a picture: coverage, width and height along the seam, the findings, the grade."""
    h = 440
    img = np.full((h, width, 3), 255, np.uint8)
    left, right = 70, width - 30
    length = max(report.weld_length_mm, 1e-6)

    def x_of(mm: float) -> int:
        return int(round(left + (right - left) * mm / length))

    def text(s: str, org, scale=0.5, colour=(20, 20, 20), thick=1):
        cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)

    g = report.grade
    title = f'weld {report.weld_id}: {report.weld_length_mm:.0f} mm, {report.frames_inspected}/{report.frames_total} frames inspected, coverage {100 * report.coverage_fraction:.0f} %'
    text(title, (left, 24), 0.6, thick=1)
    if g is not None:
        verdict = (f'level {g.requested_level} {"MET" if g.passed else "NOT MET"}; strictest level met: '
                   f'{g.met_level or "none"} (t = {g.plate_thickness_mm:g} mm, {report.table_name})')
        text(verdict, (left, 48), 0.55, (0, 120, 0) if g.passed else (0, 0, 200), 1)
    else:
        text('not graded', (left, 48), 0.55, (90, 90, 90))
    # coverage bar
    y0, y1 = 64, 84
    cv2.rectangle(img, (left, y0), (right, y1), (210, 210, 210), -1)
    for a, b in report.seen:
        cv2.rectangle(img, (x_of(a), y0), (x_of(b), y1), (90, 190, 90), -1)
    for a, b in report.unseen:
        cv2.rectangle(img, (x_of(a), y0), (x_of(b), y1), (60, 60, 230), -1)
        text('not seen', (x_of(a) + 2, y1 - 5), 0.4, (255, 255, 255))
    text('seen', (8, y1 - 4), 0.45)
    # width and height profiles
    seg = [s for s in report.segments if s.seen]
    panels = (('width', 'width_mm', 110, 200), ('height', 'height_mm', 220, 300))
    for name, attr, top, bottom in panels:
        cv2.rectangle(img, (left, top), (right, bottom), (235, 235, 235), 1)
        text(f'{name}', (8, top + 14), 0.45)
        if not seg:
            continue
        vals = np.array([getattr(s, attr) for s in seg])
        lo, hi = float(vals.min()), float(vals.max())
        pad = max(0.1, 0.15 * (hi - lo))
        lo, hi = lo - pad, hi + pad
        text(f'{hi:.2f}', (8, top + 30), 0.4, (90, 90, 90))
        text(f'{lo:.2f} mm', (8, bottom - 2), 0.4, (90, 90, 90))
        pts = [(x_of(0.5 * (s.start_mm + s.end_mm)),
                int(bottom - (bottom - top) * (getattr(s, attr) - lo) / (hi - lo))) for s in seg]
        for p, q in zip(pts, pts[1:]):
            cv2.line(img, p, q, (120, 60, 0), 2, cv2.LINE_AA)
    # findings along the seam
    fy = 350
    cv2.line(img, (left, fy), (right, fy), (120, 120, 120), 1)
    for i, f in enumerate(report.findings + report.unconfirmed):
        colour = _COLOURS.get(f.defect_class, (0, 0, 0)) if f.confirmed else (170, 170, 170)
        if f.end_mm - f.start_mm > 3.0 and f.defect_class in ('undercut', 'gap', 'crack'):
            cv2.rectangle(img, (x_of(f.start_mm), fy - 6), (x_of(f.end_mm), fy + 6), colour, -1)
        else:
            cv2.circle(img, (x_of(f.position_mm), fy), 7, colour, -1, cv2.LINE_AA)
        size = f'{f.size_mm:.1f}' + (f'x{f.depth_mm:.2f}' if f.depth_mm else '')
        text(f'{f.defect_class} {f.position_mm:.0f}+-{f.position_uncertainty_mm:.0f} ({size} mm)',
             (x_of(f.position_mm) - 40, fy + 24 + 16 * (i % 3)), 0.4, colour)
    # axis
    for mm in np.linspace(0, length, 7):
        text(f'{mm:.0f}', (x_of(mm) - 10, h - 8), 0.4, (90, 90, 90))
    return img


def write_seam_map(report: WeldReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode('.png', seam_map(report))
    if not ok:
        raise OSError(f'{path}: the seam map could not be encoded')
    _atomic_write(path, png.tobytes())
    return path
