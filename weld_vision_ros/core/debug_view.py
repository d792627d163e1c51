"""Annotated debug image of one rule inspection: bead toes, defect regions, numbers.

Pure OpenCV drawing on a copy of the RGB frame, so that it is tested without ROS; the
rule node publishes it on weld/debug_image when asked to.
"""
from __future__ import annotations

import numpy as np
import cv2

from .rules import Inspection

# RGB colours per class (the image is RGB, not BGR).
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    'good': (60, 220, 60), 'porosity': (255, 80, 80), 'undercut': (255, 170, 0),
    'spatter': (255, 255, 0), 'gap': (255, 0, 255), 'crack': (0, 200, 255),
}
_TOE_COLOR = (0, 255, 120)
_CENTRE_COLOR = (255, 255, 255)


def draw_inspection(rgb: np.ndarray, inspection: Inspection, max_regions: int = 60) -> np.ndarray:
    """A copy of `rgb` (uint8 H x W x 3, RGB) with the inspection drawn on it.

    Toe lines of the measured bead (green), its centre line (dotted white), one box per
    defect region with class and confidence, and a text panel with the bead numbers and
    the verdict. With no bead measured, the panel says why.
    """
    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    scale = max(0.4, min(1.2, w / 1100.0))
    thick = 1 if w < 1000 else 2
    geom = inspection.geometry
    if geom is not None:
        ok = geom.chunk_ok
        s = geom.chunk_s_mm[ok]
        c = geom.chunk_centre_mm[ok]
        half = 0.5 * geom.chunk_width_mm[ok]
        for t in (c - half, c + half):
            x, y = geom.frame.to_pixels(s, t)
            pts = np.stack([x, y], axis=1)
            # break the polyline where chunks are missing (gaps, image border)
            jumps = np.flatnonzero(np.diff(np.flatnonzero(ok)) > 1) + 1
            for seg in np.split(pts, jumps):
                if len(seg) >= 2:
                    cv2.polylines(img, [np.round(seg).astype(np.int32)], False, _TOE_COLOR, thick,
                                  cv2.LINE_AA)
        x, y = geom.frame.to_pixels(s[::3], c[::3])
        for xi, yi in zip(x.astype(int).tolist(), y.astype(int).tolist()):
            cv2.circle(img, (xi, yi), 1, _CENTRE_COLOR, -1)
    verdict = inspection.verdict
    if verdict is not None:
        for r in verdict.regions[:max_regions]:
            color = CLASS_COLORS.get(r.defect_class, (255, 255, 255))
            cv2.rectangle(img, (r.x_px, r.y_px), (r.x_px + r.width_px - 1, r.y_px + r.height_px - 1),
                          color, thick)
            cv2.putText(img, f'{r.defect_class} {r.confidence:.2f}', (r.x_px, max(10, r.y_px - 3)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, color, 1, cv2.LINE_AA)
    m = inspection.measurement
    if m.valid:
        lines = [f'W {m.width_mm:.2f} mm (sd {m.width_std_mm:.2f}, {m.width_min_mm:.1f}-{m.width_max_mm:.1f})',
                 f'H {m.height_mm:.2f} mm (max {m.height_max_mm:.2f})  undercut {m.undercut_depth_mm:.2f} mm',
                 f'seam {m.seam_length_mm:.0f} mm at {m.seam_angle_deg:.1f} deg  '
                 f'score {m.score:.0f} {"in" if m.within_tolerance else "OUT of"} tolerance']
    else:
        lines = [f'no measurement: {m.reason}']
    if verdict is not None:
        lines.append(f'{verdict.defect_class} {verdict.confidence:.2f} ({verdict.latency_ms:.1f} ms)')
    line_h = int(22 * scale) + 4
    cv2.rectangle(img, (0, 0), (min(w - 1, int(560 * scale)), line_h * len(lines) + 6), (0, 0, 0), -1)
    for i, text in enumerate(lines):
        color = CLASS_COLORS.get(verdict.defect_class, (255, 255, 255)) \
            if verdict is not None and i == len(lines) - 1 else (255, 255, 255)
        cv2.putText(img, text, (5, line_h * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, color, 1,
                    cv2.LINE_AA)
    return img
