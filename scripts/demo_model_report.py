"""Score an exported model on held-out bags as the ONNX node runs it and write its Markdown report.

Frames are read straight from the bags at full resolution, turned into RGBDFrames and
preprocessed by the loaded `OnnxClassifier` (the node's loader: the model's own contract
and the shared preprocessing); used by scripts/make_demo_model.sh for weld_demo.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def score(model: Path, heldout: Path) -> tuple[dict, object]:
    from weld_training.bags import find_bags, iter_bag_frames
    from weld_training.evaluate import classification_metrics
    from weld_vision_ros.core.frames import RGBDFrame
    from weld_vision_ros.core.onnx_classifier import RuntimeOptions, load_classifier

    clf = load_classifier(model.name, models_dir=str(model.parent), options=RuntimeOptions(intra_op_threads=2))
    names = list(clf.contract.class_names)
    ys, probs, no_seam = [], [], 0
    for bag in find_bags([heldout]):
        for f in iter_bag_frames(bag):
            x, crop = clf.prepare(RGBDFrame(f.rgb, f.depth_m, f.intrinsics))
            no_seam += not crop.seam_found
            probs.append(clf.probabilities(x)[0])
            ys.append(names.index(f.label))
    metrics = classification_metrics(np.array(ys), np.array(probs), clf.contract.class_names)
    metrics['seam_not_found'] = no_seam
    return metrics, clf


def report(model: Path, heldout: Path, run: Path | None, recipe: str) -> str:
    metrics, clf = score(model, heldout)
    preset = clf.preset
    lines = [f'# Demo model `{model.name}`', '',
             f'Version `{clf.version}`, sha256 `{clf.info.sha256}`, {clf.info.size_bytes / 1e6:.1f} MB, '
             f'mobilenet_v3_small, {preset.channels}, input {preset.input_width}x{preset.input_height}, '
             f'crop `{preset.crop}` ({preset.strip_length_mm:g} x {preset.strip_width_mm:g} mm strip). '
             f'Reproduce with `{recipe}`.', '',
             '## Data', '',
             '- Training pool: `weld-sim record` seeds 100, 101, 102, 103 (4 bags, sqlite3 + mcap), '
             '640x480, noise_scale 1.0, 5 frames per weld, classes drawn at random; split 85/15 '
             'train/val grouped by weld (split seed 0), training seed 0.',
             '- Held-out evaluation: seeds 200 and 201 (2 bags), never seen in training; the demo camera '
             'runs seed 7.', '']
    if run is not None and (run / 'history.json').is_file():
        hist = json.loads((run / 'history.json').read_text())  # as weld_training.train writes it
        epochs = hist['epochs']
        lines += ['## Training', '',
                  f'{len(epochs)} epochs on the CPU; the exported weights are those of the best validation '
                  f'epoch ({hist["summary"]["best_epoch"]}).', '',
                  '| epoch | train loss | val loss | val accuracy | val macro-F1 | images/s | seconds |',
                  '| --- | --- | --- | --- | --- | --- | --- |']
        lines += [f'| {e["epoch"]} | {e["train_loss"]:.4f} | {e["val_loss"]:.4f} | {e["val_accuracy"]:.4f} | '
                  f'{e["val_macro_f1"]:.4f} | {e["images_per_s"]:.1f} | {e["seconds"]:.0f} |' for e in epochs]
        lines += ['']
    lines += ['## Held-out evaluation (ONNX model, node loader and preprocessing, full-resolution bag frames)', '',
              f'{metrics["samples"]} frames: macro-F1 **{metrics["macro_f1"]:.4f}**, accuracy '
              f'{metrics["accuracy"]:.4f}, balanced accuracy {metrics["balanced_accuracy"]:.4f}, macro ROC-AUC '
              f'{metrics["roc_auc_macro"]:.4f}; frames without a seam found (centre strip used): '
              f'{metrics["seam_not_found"]}.', '',
              '| class | precision | recall | F1 | support |', '| --- | --- | --- | --- | --- |']
    lines += [f'| {c} | {v["precision"]:.3f} | {v["recall"]:.3f} | {v["f1"]:.3f} | {v["support"]} |'
              for c, v in metrics['per_class'].items()]
    lines += ['', f'Written {datetime.now(timezone.utc).isoformat(timespec="seconds")} by '
              '`scripts/demo_model_report.py`.', '']
    return '\n'.join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('model', type=Path)
    p.add_argument('heldout', type=Path, help='folder of held-out bags')
    p.add_argument('--run', type=Path, default=None, help='the training run folder (for its history)')
    p.add_argument('--out', type=Path, required=True, help='Markdown report to write')
    p.add_argument('--recipe', default='scripts/make_demo_model.sh')
    a = p.parse_args(argv)
    text = report(a.model.resolve(), a.heldout, a.run, a.recipe)
    a.out.write_text(text)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
