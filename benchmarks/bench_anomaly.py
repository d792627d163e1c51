"""Anomaly detection benchmark: fit on good frames only, score held-out frames of other seeds,
in range and with the renderer's variety pushed beyond the fit range.

    scripts/with_env.sh python benchmarks/bench_anomaly.py [--fit 300] [--quick]

Prints and writes BENCHMARKS_anomaly.md and docs/anomaly_examples.png:
- image-level AUROC, good against each defect class and against all;
- false-alarm rate of good frames at the inspect level (and potential, critical);
- localisation: share of defect frames with a ground-truth region on which a predicted
  region matches one (MATCH_RULE), and false regions per good frame;
- fit time (300 frames), scoring latency in ONNX Runtime on one thread (median, p99), with
  and without the preprocessing, and what that costs at 30 fps.
The pushed ranges are fixed here (PUSHED_RANGES); their seeds are never used for fitting.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES  # noqa: E402
from weld_vision_ros.simulator.renderer import default_intrinsics, render, sample_scene  # noqa: E402

DEFECTS = DEFAULT_CLASS_NAMES[1:]
FIT_SEED, TEST_SEED, PUSHED_SEED = 900_000, 910_000, 920_000
# The renderer's ranges pushed beyond what the model was fitted on (sample_scene draws plate
# distance 0.15-0.30 m, tilt 0-6 deg, lighting gain 0.6-1.4, depth noise 0.02-0.2 mm, bead
# width 5-12 mm). Fixed before any tuning.
PUSHED_RANGES = {
    'plate_distance_m': (0.30, 0.36),
    'tilt_deg': (6.0, 10.0),
    'lighting_gain': (1.4, 1.7),
    'noise_mm': (0.2, 0.35),
    'bead_width_mm': (12.0, 14.0),
}
MATCH_MM = 2.0
MATCH_RULE = (f'a predicted region matches a ground-truth region when the region centre lies inside the '
              f'predicted pixel box or within {MATCH_MM:g} mm of it (for ground-truth regions longer than '
              f'10 mm along the seam: when the two boxes are within {MATCH_MM:g} mm of each other); mm from '
              'pixels at the plate distance')


def frames(seed: int, n_good: int, n_per_defect: int, pushed: bool = False) -> list:
    rng = np.random.default_rng(seed)
    intr = default_intrinsics()
    out = []
    for cls in ['good'] * n_good + [c for c in DEFECTS for _ in range(n_per_defect)]:
        for _attempt in range(5):
            scene = sample_scene(rng, cls)
            if pushed:
                scene = replace(scene, **{k: float(rng.uniform(*r)) for k, r in PUSHED_RANGES.items()})
            try:
                out.append((cls, render(scene, intr, rng)))
                break
            except Exception:  # noqa: BLE001 - a view that shows too little seam: draw another
                continue
    return out


def _box_distance_px(px: tuple, box: tuple) -> float:
    x, y = px
    x0, y0, w, h = box
    dx = max(x0 - x, 0.0, x - (x0 + w))
    dy = max(y0 - y, 0.0, y - (y0 + h))
    return math.hypot(dx, dy)


def _boxes_distance_px(a: tuple, b: tuple) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    dx = max(bx0 - (ax0 + aw), 0.0, ax0 - (bx0 + bw))
    dy = max(by0 - (ay0 + ah), 0.0, ay0 - (by0 + bh))
    return math.hypot(dx, dy)


def localised(pred, truth, mm_per_px: float) -> bool:
    for g in truth.regions:
        gbox = (g.x_px, g.y_px, g.width_px, g.height_px)
        centre = (g.x_px + 0.5 * g.width_px, g.y_px + 0.5 * g.height_px)
        for p in pred:
            pbox = (p.x_px, p.y_px, p.width_px, p.height_px)
            if g.length_mm > 10.0:
                d = _boxes_distance_px(pbox, gbox)
            else:
                d = _box_distance_px(centre, pbox)
            if d * mm_per_px <= MATCH_MM:
                return True
    return False


def auroc(neg, pos) -> float:
    from weld_training.anomaly import roc_auc
    return roc_auc(neg, pos)


def evaluate(served, data) -> dict:
    from weld_vision_ros.core.frames import RGBDFrame
    scores, levels, loc_hits, loc_total, false_regions, lat = {}, {}, 0, 0, 0, []
    for cls, f in data:
        r = served.score(RGBDFrame(f.rgb, f.depth_m, f.intrinsics))
        lat.append(r.latency_ms)
        scores.setdefault(cls, []).append(r.score)
        levels.setdefault(cls, []).append(r.level)
        if cls == 'good':
            false_regions += len(r.regions)
        elif f.truth.regions:
            loc_total += 1
            mm_px = 1000.0 * f.truth.plate_distance_m / f.intrinsics.fx
            loc_hits += localised(r.regions, f.truth, mm_px)
    good = scores['good']
    out = {'auroc': {c: auroc(good, scores[c]) for c in DEFECTS},
           'auroc_all': auroc(good, [s for c in DEFECTS for s in scores[c]]),
           'fa_inspect': float(np.mean([lv in ('inspect', 'critical') for lv in levels['good']])),
           'fa_potential': float(np.mean([lv != 'normal' for lv in levels['good']])),
           'fa_critical': float(np.mean([lv == 'critical' for lv in levels['good']])),
           'detected_inspect': {c: float(np.mean([lv in ('inspect', 'critical') for lv in levels[c]])) for c in DEFECTS},
           'localised': loc_hits / max(loc_total, 1), 'localised_n': (loc_hits, loc_total),
           'false_regions_per_good': false_regions / max(len(good), 1),
           'latency_median_ms': float(np.median(lat)), 'latency_p99_ms': float(np.percentile(lat, 99)),
           'n_good': len(good), 'n_defect': sum(len(scores[c]) for c in DEFECTS)}
    return out


def network_latency(served, data, n: int = 40) -> tuple[float, float]:
    from weld_vision_ros.core.preprocess import preprocess
    p = served.contract.preprocess
    xs = [preprocess(f.rgb, f.depth_m, p, f.intrinsics)[None] for _, f in data[:n]]
    times = []
    for x in xs:
        t0 = time.perf_counter()
        served.raw_map(x)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times)), float(np.percentile(times, 99))


def picture(served, data, path: Path) -> None:
    import cv2
    from weld_vision_ros.core.frames import RGBDFrame
    from weld_vision_ros.ros.anomaly_slot import heat_image
    tiles = []
    for cls in DEFAULT_CLASS_NAMES:
        cls_frames = [f for c, f in data if c == cls]
        f = cls_frames[0]
        r = served.score(RGBDFrame(f.rgb, f.depth_m, f.intrinsics))
        img = f.rgb.copy()
        for g in f.truth.regions:
            cv2.rectangle(img, (g.x_px, g.y_px), (g.x_px + g.width_px, g.y_px + g.height_px), (0, 255, 0), 1)
        for reg in r.regions:
            cv2.rectangle(img, (reg.x_px - 2, reg.y_px - 2), (reg.x_px + reg.width_px + 2, reg.y_px + reg.height_px + 2),
                          (255, 40, 40), 2)
        img = cv2.resize(img, (512, 384), interpolation=cv2.INTER_AREA)
        cv2.putText(img, f'{cls}: {r.level} {r.score:.2f}', (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 0), 2)
        heat = cv2.resize(heat_image(r.anomaly_map), (512, 48), interpolation=cv2.INTER_NEAREST)
        tiles.append(np.vstack([img, heat]))
    rows = [np.hstack(tiles[i:i + 3]) for i in range(0, len(tiles), 3)]
    grid = np.vstack(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--fit', type=int, default=300, help='good frames to fit on (default 300)')
    ap.add_argument('--good', type=int, default=80, help='held-out good frames per set')
    ap.add_argument('--per-defect', type=int, default=30, help='held-out frames per defect class')
    ap.add_argument('--quick', action='store_true', help='a small run (fit 60, 20 good, 6 per class)')
    ap.add_argument('--out', default=str(REPO / 'BENCHMARKS_anomaly.md'))
    args = ap.parse_args()
    if args.quick:
        args.fit, args.good, args.per_defect = 60, 20, 6
    import torch
    torch.set_num_threads(2)
    from weld_training.anomaly import AnomalyFitConfig, export_anomaly, fit_anomaly
    from weld_vision_ros.core.anomaly import load_anomaly_model
    from weld_vision_ros.core.onnx_classifier import RuntimeOptions

    t0 = time.monotonic()
    fit_frames = [f for _, f in frames(FIT_SEED, args.fit, 0)]
    render_s = time.monotonic() - t0
    print(f'rendered {len(fit_frames)} good frames for the fit in {render_s:.0f} s', flush=True)
    model = fit_anomaly(fit_frames, AnomalyFitConfig(max_frames=args.fit))
    out_dir = REPO / 'benchmarks' / 'results'
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = Path('/tmp') / f'bench_anomaly_{os.getpid()}.onnx'
    export_anomaly(model, onnx_path, 'bench-anomaly', parity_frames=fit_frames[:2])
    size_mb = onnx_path.stat().st_size / 1e6
    served = load_anomaly_model(onnx_path.name, models_dir=str(onnx_path.parent), options=RuntimeOptions(('cpu',), 1))
    print('rendering held-out sets ...', flush=True)
    in_range = frames(TEST_SEED, args.good, args.per_defect)
    pushed = frames(PUSHED_SEED, max(args.good // 2, 10), max(args.per_defect // 2, 4), pushed=True)
    res_in = evaluate(served, in_range)
    res_out = evaluate(served, pushed)
    net_med, net_p99 = network_latency(served, in_range)
    picture(served, in_range, REPO / 'docs' / 'anomaly_examples.png')
    onnx_path.unlink(missing_ok=True)
    load = os.getloadavg()[0]

    def row(name, r):
        per = ' | '.join(f'{r["auroc"][c]:.3f}' for c in DEFECTS)
        return (f'| {name} | {r["n_good"]} / {r["n_defect"]} | **{r["auroc_all"]:.3f}** | {per} | '
                f'{100 * r["fa_inspect"]:.1f} % | {100 * r["fa_potential"]:.1f} % | '
                f'{100 * r["localised"]:.0f} % ({r["localised_n"][0]}/{r["localised_n"][1]}) | '
                f'{r["false_regions_per_good"]:.2f} |')
    lines = [
        '# Anomaly detection benchmark', '',
        f'`benchmarks/bench_anomaly.py` (fit {len(fit_frames)} good frames, seeds {FIT_SEED}+; held out: seeds '
        f'{TEST_SEED}+ in range, {PUSHED_SEED}+ pushed). Machine load average during the run: {load:.1f} '
        '(2 cores; timings on a loaded machine are upper bounds).', '',
        'Model: position-aware patch memory bank (one bank per strip row, greedy coreset of '
        f'{model.config.bank_per_row} patches each) of along-seam residual descriptors on the 1024x96 seam '
        f'strip, 4x4-pixel patches (1.6 mm); ONNX {size_mb:.1f} MB with the bank inside. See '
        '`weld_training/anomaly.py` for what was measured before choosing it (frozen ImageNet Lite0 '
        'features: AUROC 0.69-0.72).', '',
        '| set | good / defect frames | AUROC all | ' + ' | '.join(DEFECTS)
        + ' | false alarm at inspect | at potential | localised | false regions per good frame |',
        '|---|---|---|' + '---|' * len(DEFECTS) + '---|---|---|---|',
        row('in range', res_in), row('pushed', res_out), '',
        'Pushed ranges: ' + ', '.join(f'{k} {a:g}-{b:g}' for k, (a, b) in PUSHED_RANGES.items())
        + ' (the fit saw plate distance 0.15-0.30 m, tilt 0-6 deg, lighting gain 0.6-1.4, noise 0.02-0.2 mm, '
        'bead width 5-12 mm).', '',
        'Defect frames reaching inspect or critical (in range): '
        + ', '.join(f'{c} {100 * res_in["detected_inspect"][c]:.0f} %' for c in DEFECTS) + '.', '',
        f'Localisation rule: {MATCH_RULE}.', '',
        '| cost | value |', '|---|---|',
        f'| fit ({len(fit_frames)} frames, 2 threads; rendering not counted) | {model.fit_seconds:.0f} s |',
        f'| calibration (held-out good of the fit set) | {model.calibration["calibration_frames"]} frames, '
        f'false alarm at inspect {100 * model.calibration["false_alarm_inspect"]:.1f} % |',
        f'| score one frame, ONNX Runtime 1 thread, with preprocessing (median / p99) | '
        f'{res_in["latency_median_ms"]:.1f} / {res_in["latency_p99_ms"]:.1f} ms |',
        f'| network only (median / p99) | {net_med:.1f} / {net_p99:.1f} ms |',
        f'| every frame at 30 fps | {30 * res_in["latency_median_ms"] / 10:.0f} % of one core |', '',
        'On the cell the default (`anomaly_frames: rule_good`) scores only the frames whose verdict is '
        'good, so its cost scales with the share of good frames; `all` scores every inspected frame.', '',
        'On the pushed set the scores rise on good welds too: the model meets conditions its bank never '
        'held (that is its job). To refit for a new camera distance, lighting or bead, record a weld that '
        'is known good under the new conditions, label it good, and run `weld-train anomaly --bags ...`; '
        'the calibration is redone on its held-out good frames.', '',
        '![anomaly examples](docs/anomaly_examples.png)', '',
        'Frames of every class (held-out, in range): green boxes are the synthetic camera\'s ground truth, '
        'red boxes the predicted regions; under each frame its anomaly map along the seam strip.', '']
    Path(args.out).write_text('\n'.join(lines))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
