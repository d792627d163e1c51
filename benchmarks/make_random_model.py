#!/usr/bin/env python3
"""Export an UNTRAINED (random-weight, seeded) classifier with the weld.* contract, for timing.

The end-to-end benchmark needs a model of the deployed architecture to time the ONNX node
when no trained model is at hand. Its verdicts are meaningless; its cost per frame is that
of the real network (same graph, same input size). The contract says so: the model version
starts with 'untrained-' and metrics carry {"untrained": true}.

    python benchmarks/make_random_model.py --out log/bench_e2e/untrained.onnx
    python benchmarks/bench_e2e.py --model log/bench_e2e/untrained.onnx
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES  # noqa: E402
from weld_vision_ros.core.preprocess import CHANNELS_RGB, CHANNELS_RGBD, PreprocessPreset  # noqa: E402


def export_untrained(out: Path, arch: str, channels: str, input_size: int, seed: int) -> str:
    """Write the model to `out`; return its weld.model_version."""
    import onnx
    import torch

    from weld_training.export import INPUT_NAME, MIN_OPSET, OUTPUT_NAME, weights_sha256, write_contract
    from weld_training.models import build_model
    from weld_vision_ros.core.model_contract import ModelContract

    torch.manual_seed(seed)
    preset = PreprocessPreset.for_channels(channels, input_size)
    model = build_model(arch, len(DEFAULT_CLASS_NAMES), preset.num_channels).eval()
    example = torch.zeros(1, preset.num_channels, preset.input_height, preset.input_width)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')     # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (example,), str(out), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=MIN_OPSET, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}})
    proto = onnx.load(str(out))
    sha = weights_sha256(proto)
    version = f'untrained-{arch}-{channels}-seed{seed}'
    write_contract(proto, ModelContract(class_names=tuple(DEFAULT_CLASS_NAMES), preprocess=preset,
                                        input_name=INPUT_NAME, output_name=OUTPUT_NAME,
                                        output_kind='logits', model_version=version,
                                        metrics={'untrained': True}, weights_sha256=sha))
    onnx.save(proto, str(out))
    return version


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', type=Path, required=True, help='ONNX file to write')
    p.add_argument('--arch', default='mobilenet_v3_small',
                   help='torchvision architecture (default mobilenet_v3_small)')
    p.add_argument('--channels', choices=(CHANNELS_RGB, CHANNELS_RGBD), default=CHANNELS_RGBD,
                   help='network input channels, as the training default (rgbd)')
    p.add_argument('--input-size', type=int, default=128, help='square input [px], as the training default (128)')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    version = export_untrained(a.out, a.arch, a.channels, a.input_size, a.seed)
    print(f'wrote {a.out} ({version}): random weights, for timing only')
    return 0


if __name__ == '__main__':
    sys.exit(main())
