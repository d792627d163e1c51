#!/usr/bin/env python3
"""Benchmark of the ONNX classifier and the hybrid cascade on one CPU core.

    python benchmarks/bench_onnx.py                    # default model, about 1-2 minutes
    python benchmarks/bench_onnx.py --model runs/weld/model.onnx   # a trained export
    python benchmarks/bench_onnx.py --frames 24 --repeats 100      # quick look

Model: --model, by default the bundled demo model (config/models/weld_demo.onnx); with
no bundled model, the training default architecture and preprocessing (weld_training/
configs/default.yaml) with random weights, exported the way weld_training.export does. int8:
the model's sibling <stem>.int8.onnx (as `weld-train export --quantize` writes it) when it
exists, else made here by static QDQ quantization (per-channel int8 weights, uint8
activations, as the export does), calibrated on other synthetic frames.

ML latency per frame: OnnxClassifier.classify on 640x480 synthetic frames = the shared
preprocessing (seam crop, relief channel, normalisation) + inference, intra_op_threads=1,
OpenCV on one thread; median and p99 over --repeats passes.

Hybrid against ml-only: HybridCascade with the real rule core (default RuleConfig) and
the fp32 model on --frames synthetic frames (classes in turn): per-frame cost of each
mode (median, p99) and the share of frames on which hybrid asked the model.

Input sizes (--sizes 1024x96,768x72,512x48): the training default architecture
(efficientnet_lite0, ImageNet weights) exported at each seam-strip size, fp32 and int8
(static QDQ, calibrated on synthetic frames), with the per-stage split: seam crop +
relief + normalisation (preprocess) and the network, one thread.

Writes the tables to --out-md (BENCHMARKS_onnx.md).
"""
from __future__ import annotations

import os

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Optional  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from weld_vision_ros.core.cascade import CascadeConfig, HybridCascade  # noqa: E402
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES  # noqa: E402
from weld_vision_ros.core.frames import RGBDFrame  # noqa: E402
from weld_vision_ros.core.model_contract import ModelContract  # noqa: E402
from weld_vision_ros.core.onnx_classifier import (OnnxClassifier, RuntimeOptions,  # noqa: E402
                                                  load_classifier)
from weld_vision_ros.core.preprocess import PreprocessPreset  # noqa: E402
from weld_vision_ros.core.rules import RuleConfig, inspect_frame  # noqa: E402
from weld_vision_ros.simulator.renderer import default_intrinsics, render_random  # noqa: E402

DEMO_MODEL = REPO / 'config' / 'models' / 'weld_demo.onnx'
ONE_CORE = RuntimeOptions(providers=('cpu',), intra_op_threads=1)


def _set_contract(path: Path, contract: ModelContract) -> None:
    import onnx
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, contract.to_metadata())
    onnx.save(proto, str(path))


def export_default_model(out_dir: Path, name: str, preset: PreprocessPreset, pretrained: str = 'none') -> Path:
    """The architecture with random (or pretrained backbone) weights and this preprocessing,
    exported with the contract."""
    import torch

    from weld_training.models import build_model
    torch.manual_seed(0)
    model = build_model(name, len(DEFAULT_CLASS_NAMES), in_channels=preset.num_channels,
                        pretrained=pretrained).eval()
    tag = f'{preset.channels}-{preset.input_width}x{preset.input_height}-{preset.crop}'
    path = out_dir / f'{name}_{tag}.onnx'
    example = torch.zeros(1, preset.num_channels, preset.input_height, preset.input_width)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, (example,), str(path), input_names=['image'], output_names=['logits'],
                          opset_version=17, dynamo=False, do_constant_folding=True,
                          dynamic_axes={'image': {0: 'batch'}, 'logits': {0: 'batch'}})
    _set_contract(path, ModelContract(
        class_names=DEFAULT_CLASS_NAMES, preprocess=preset, input_name='image', output_name='logits',
        output_kind='logits', model_version=f'{name}-{tag}-{"random" if pretrained == "none" else pretrained}',
        metrics={}))
    return path


def quantize_int8(fp32: OnnxClassifier, out_path: Path, calibration: list[RGBDFrame]) -> Path:
    """Static QDQ int8 (per-channel int8 weights, uint8 activations), contract carried over."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter([fp32.input_tensor(f) for f in calibration])

        def get_next(self):
            x = next(self._items, None)
            return None if x is None else {fp32.contract.input_name: x}

    prepped = out_path.with_suffix('.prep.onnx')
    quant_pre_process(fp32.info.path, str(prepped), skip_symbolic_shape=True)
    try:
        quantize_static(str(prepped), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        prepped.unlink(missing_ok=True)
    _set_contract(out_path, replace(fp32.contract, model_version=fp32.contract.model_version + '-int8'))
    return out_path


def render_frames(n: int, width: int, height: int, seed: int) -> list[RGBDFrame]:
    rng = np.random.default_rng(seed)
    intr = default_intrinsics(width, height)
    frames = []
    for i in range(n):
        f = render_random(rng, intr, DEFAULT_CLASS_NAMES[i % len(DEFAULT_CLASS_NAMES)])
        frames.append(RGBDFrame(f.rgb, f.depth_m, f.intrinsics, stamp_ns=i))
    return frames


def timed(fn: Callable[[RGBDFrame], object], frames: list[RGBDFrame], repeats: int) -> np.ndarray:
    """(2, repeats) array: wall-clock and process CPU time [ms] of each call of fn, cycling
    through `frames` after a short warm-up. On a shared machine the wall clock includes
    time spent waiting for a core; the CPU time does not."""
    for f in frames[:3]:
        fn(f)
    out = []
    for r in range(repeats):
        f = frames[r % len(frames)]
        t0, c0 = time.perf_counter(), time.process_time()
        fn(f)
        out.append(((time.perf_counter() - t0) * 1000.0, (time.process_time() - c0) * 1000.0))
    return np.asarray(out).T


def stats(ms: np.ndarray) -> tuple[float, float, float]:
    """(median, p99, CPU median) [ms] of a timed() result."""
    return float(np.median(ms[0])), float(np.percentile(ms[0], 99)), float(np.median(ms[1]))


def cascade_cost(mode: str, classifier: Optional[OnnxClassifier], frames: list[RGBDFrame],
                 threshold: float) -> tuple[np.ndarray, float]:
    config = RuleConfig()
    cascade = HybridCascade(lambda f: inspect_frame(f, config), CascadeConfig(mode, threshold), classifier)
    ms = timed(cascade.run, frames, len(frames) * 2)
    return ms, cascade.stats.ml_invocations / cascade.stats.frames


def stage_latency(clf: OnnxClassifier, frames: list[RGBDFrame], repeats: int) -> tuple:
    """(preprocess, inference, classify) stats of one classifier."""
    prep = timed(clf.input_tensor, frames, repeats)
    total = timed(clf.classify, frames, repeats)
    batches = [clf.input_tensor(f) for f in frames]
    infer = timed(lambda f: clf.probabilities(batches[f.stamp_ns]), frames, repeats)
    return stats(prep), stats(infer), stats(total)


def size_sweep(sizes: list[tuple[int, int]], work: Path, frames: list[RGBDFrame],
               calibration: list[RGBDFrame], repeats: int) -> list[str]:
    """Table lines: the default architecture at each input size, fp32 and int8, per stage."""
    from weld_training.config import load_config
    from weld_training.train import preset_from_config

    lines = ['', '## Input sizes: the training default architecture, per stage, one core', '',
             'Wall clock median / p99 [ms]; preprocess = seam crop + relief + normalisation.', '',
             '| model | input | mm per px | preprocess | inference | classify = both | int8 inference | '
             'int8 classify | int8 / fp32 top-1 agreement |',
             '|---|---|---|---|---|---|---|---|---|']
    for width, height in sizes:
        cfg = load_config(overrides=[f'model.input_size=[{width}, {height}]'])
        name = cfg['model']['name']
        preset = preset_from_config(cfg)
        print(f'[bench] {name} at {width}x{height}', flush=True)
        path = export_default_model(work, name, preset, pretrained=cfg['model']['pretrained'])
        fp32 = load_classifier(str(path), models_dir=str(work), options=ONE_CORE)
        int8 = load_classifier(str(quantize_int8(fp32, path.with_name(path.stem + '.int8.onnx'), calibration)),
                               models_dir=str(work), options=ONE_CORE)
        prep, infer, total = stage_latency(fp32, frames, repeats)
        _, infer8, total8 = stage_latency(int8, frames, repeats)
        agree = np.mean([fp32.classify(f).defect_class == int8.classify(f).defect_class for f in frames])
        lines.append(f'| {name} | {width}x{height} | {preset.strip_length_mm / width:.2f} | '
                     f'{prep[0]:.2f} / {prep[1]:.2f} | {infer[0]:.2f} / {infer[1]:.2f} | '
                     f'{total[0]:.2f} / {total[1]:.2f} | {infer8[0]:.2f} / {infer8[1]:.2f} | '
                     f'{total8[0]:.2f} / {total8[1]:.2f} | {agree:.2f} |')
    lines += ['', '- ImageNet backbone with an untrained head: latency does not depend on the weights; the '
              'int8 agreement is of an untrained head, so it checks the quantized graph, not accuracy.']
    return lines


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', type=Path, default=None, help='an exported model (default: see above)')
    p.add_argument('--frames', type=int, default=60, help='synthetic frames (default 60)')
    p.add_argument('--repeats', type=int, default=300, help='timed classify calls per model (default 300)')
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=480)
    p.add_argument('--threshold', type=float, default=0.70, help='hybrid threshold (default 0.70)')
    p.add_argument('--seed', type=int, default=5_000_000, help='synthetic frame seed')
    p.add_argument('--out-md', type=Path, default=REPO / 'BENCHMARKS_onnx.md')
    p.add_argument('--sizes', default='', help='also time the default architecture at these input sizes, '
                                               'e.g. 1024x96,768x72,512x48')
    args = p.parse_args(argv)
    if args.frames < 6 or args.repeats < 10:
        p.error('--frames must be >= 6 and --repeats >= 10')
    cv2.setNumThreads(1)
    load_start = os.getloadavg()
    t_start = time.perf_counter()

    work = Path(tempfile.mkdtemp(prefix='bench_onnx_'))
    print(f'[bench] rendering {args.frames} synthetic frames {args.width}x{args.height}', flush=True)
    frames = render_frames(args.frames, args.width, args.height, args.seed)
    calibration = render_frames(32, args.width, args.height, args.seed + 1)

    random_weights = args.model is None and not DEMO_MODEL.is_file()
    if random_weights:
        from weld_training.config import load_config
        from weld_training.train import preset_from_config
        cfg = load_config()
        name = cfg['model']['name']
        print(f'[bench] no bundled model: exporting {name} with random weights', flush=True)
        fp32_path = export_default_model(work, name, preset_from_config(cfg))
        source = (f'`{name}` with random weights (no bundled model), exported like `weld_training.export` '
                  'with the training defaults\' preprocessing')
    else:
        fp32_path = (args.model or DEMO_MODEL).resolve()
        source = f'`{fp32_path.relative_to(REPO) if fp32_path.is_relative_to(REPO) else fp32_path}`'
    fp32 = load_classifier(str(fp32_path), models_dir=str(fp32_path.parent), options=ONE_CORE)
    int8_path = fp32_path.with_name(fp32_path.stem + '.int8.onnx')
    if not int8_path.exists():
        int8_path = work / (fp32_path.stem + '.int8.onnx')
        print(f'[bench] static int8 quantization of {fp32.version} (calibrated on synthetic frames)', flush=True)
        quantize_int8(fp32, int8_path, calibration)
        source += (f'; its int8 version made here by static quantization calibrated on '
                   f'{len(calibration)} other synthetic frames')
    int8 = load_classifier(str(int8_path), models_dir=str(int8_path.parent), options=ONE_CORE)

    rows = []
    for label, clf in (('fp32', fp32), ('int8', int8)):
        print(f'[bench] latency {clf.version}', flush=True)
        rows.append((label, clf, *stage_latency(clf, frames, args.repeats)))
    p32 = np.array([fp32.classify(f).probabilities for f in frames])
    p8 = np.array([int8.classify(f).probabilities for f in frames])
    notes = [f'`{fp32.version}`: int8 / fp32 inference median {rows[1][3][0] / rows[0][3][0]:.2f}x (CPU time '
             f'{rows[1][3][2] / rows[0][3][2]:.2f}x); on the {len(frames)} frames top-1 agreement '
             f'{np.mean(p32.argmax(1) == p8.argmax(1)):.2f}, largest probability difference '
             f'{np.abs(p32 - p8).max():.3f}.']

    print('[bench] cascade modes', flush=True)
    cascade = {mode: cascade_cost(mode, fp32, frames, args.threshold) for mode in ('ml', 'rule', 'hybrid')}
    # The worst case for hybrid: rules unsure on (nearly) every frame.
    cascade['hybrid, threshold 1.0'] = cascade_cost('hybrid', fp32, frames, 1.0)
    rule_conf = []
    for f in frames:
        v = inspect_frame(f, RuleConfig()).verdict
        rule_conf.append(v.confidence if v is not None else float('nan'))
    rule_conf = np.asarray(rule_conf)

    shown_args = argv if argv is not None else sys.argv[1:]
    sweep = []
    if args.sizes:
        sizes = [tuple(int(v) for v in text.split('x')) for text in args.sizes.split(',')]
        sweep = size_sweep(sizes, work, frames, calibration, args.repeats)
    load_end = os.getloadavg()
    ml_med = stats(cascade['ml'][0])[0]
    lines = [
        '# ONNX classifier and hybrid cascade: benchmark',
        '',
        f'`python benchmarks/bench_onnx.py{" " + " ".join(shown_args) if shown_args else ""}`: {cpu_name()}, '
        f'{os.cpu_count()} logical CPUs, Python {platform.python_version()}, onnxruntime '
        f'{__import__("onnxruntime").__version__}; everything on ONE thread (intra_op_threads=1, '
        f'OpenCV and BLAS 1 thread). Load average {load_start[0]:.1f} at the start and '
        f'{load_end[0]:.1f} at the end (a shared machine: other work ran beside it); '
        f'{time.perf_counter() - t_start:.0f} s in all.',
        '',
        f'Model: {source}. Frames: {args.frames} synthetic {args.width}x{args.height} RGB-D frames '
        f'(`render_random`, classes in turn, seed {args.seed}).',
        '',
        '## ML latency per frame (preprocess + inference), one core',
        '',
        'Wall clock median / p99, and the median CPU time of the process (the wall clock includes '
        'waiting for a core on this shared machine, the CPU time does not).',
        '',
        '| model | file size | preprocess [ms] | inference [ms] | classify = both [ms] | classify CPU [ms] |',
        '|---|---|---|---|---|---|',
    ]
    for label, clf, prep, infer, total in rows:
        lines.append(f'| {label} (`{clf.version}`) | {clf.info.size_bytes / 1e6:.2f} MB | '
                     f'{prep[0]:.2f} / {prep[1]:.2f} | {infer[0]:.2f} / {infer[1]:.2f} | '
                     f'{total[0]:.2f} / {total[1]:.2f} | {total[2]:.2f} |')
    lines += [''] + [f'- {n}' for n in notes] + [
        ('- Random weights: the int8 comparison checks the quantized graph, not accuracy; the '
         'training export reports int8 accuracy on real frames.' if random_weights else
         '- Agreement is measured on these synthetic frames; `weld-train export --quantize` reports '
         'the int8 accuracy change on the validation split.'),
        ('- Preprocessing: the seam finder and one perspective warp of a '
         f'{fp32.preset.strip_length_mm:g} x {fp32.preset.strip_width_mm:g} mm strip along the seam to '
         f'{fp32.preset.input_width}x{fp32.preset.input_height} px, with the relief channel above the fitted '
         'plate (core/preprocess.py).' if fp32.preset.crop == 'seam' else
         '- Preprocessing: the whole frame resized, and for rgbd the relief channel.')]
    lines += [
        '',
        f'## Hybrid (threshold {args.threshold:.2f}) against ml-only and rule-only, per frame, one core '
        f'(model `{fp32.version}`)',
        '',
        '| mode | median [ms] | p99 [ms] | CPU median [ms] | model asked on | cost / ml-only (median) |',
        '|---|---|---|---|---|---|',
    ]
    for mode in cascade:
        ms, ratio = cascade[mode]
        med, p99, cpu = stats(ms)
        lines.append(f'| {mode} | {med:.2f} | {p99:.2f} | {cpu:.2f} | {100 * ratio:.0f} % of frames | '
                     f'{med / ml_med:.2f}x |')
    unsure = np.mean(~(rule_conf >= args.threshold))
    rule_med, hybrid_med = stats(cascade['rule'][0])[0], stats(cascade['hybrid'][0])[0]
    lines += [
        '',
        f'The rules were unsure (confidence < {args.threshold:.2f}, or no bead measured) on '
        f'{100 * unsure:.0f} % of these frames. Hybrid always pays for the rule core and adds the '
        f'model on the unsure frames: here the rule core ({rule_med:.2f} ms) is '
        f'{"cheaper" if rule_med < ml_med else "dearer"} than the model ({ml_med:.2f} ms), so hybrid '
        f'costs {hybrid_med / ml_med:.2f}x ml-only per frame (median), and its verdicts on the frames '
        'the rules are sure about come with measurements and regions.',
        '',
    ]
    lines += sweep
    args.out_md.write_text('\n'.join(lines))
    print('\n'.join(lines))
    print(f'[bench] wrote {args.out_md}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
