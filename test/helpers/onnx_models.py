"""Tiny defect models for tests, exported the way training exports them.

`torch.onnx.export` of a small CNN, then the weld.* contract written into the model's
metadata_props (ModelContract.to_metadata). Broken variants (an input shape or a class
count that disagrees with the metadata, NaN output, no metadata, truncated, not ONNX) are
made from real exports, so the node sees what a faulty export would give it. Exports are
cached per process: a handful serve every test.
"""
from __future__ import annotations

import functools
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_vision_ros.core.model_contract import ModelContract
from weld_vision_ros.core.preprocess import PreprocessPreset

INPUT_SIZE = 64
INPUT_NAME = 'image'
OUTPUT_NAME = 'logits'


def _tiny_net(num_classes: int, channels: int, seed: int, nan_output: bool, nan_when_bright: bool):
    import torch

    class TinyNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(channels, 8, 3, stride=2, padding=1)
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.head = torch.nn.Linear(8, num_classes)

        def forward(self, x):
            logits = self.head(self.pool(torch.relu(self.conv(x))).flatten(1))
            if nan_output:
                logits = logits * torch.sqrt(torch.full_like(logits, -1.0))
            if nan_when_bright:  # finite on ordinary frames, NaN on a near-white one
                logits = logits * torch.sqrt(1.5 - x.mean())
            return logits

    torch.manual_seed(seed)
    net = TinyNet().eval()
    with torch.no_grad():  # large weights, so that different seeds give clearly different outputs
        for p in net.parameters():
            p.mul_(4.0)
    return net


@functools.lru_cache(maxsize=None)
def export_graph(*, num_classes: int = len(DEFAULT_CLASS_NAMES), channels: int = 3,
                 input_size: int = INPUT_SIZE, seed: int = 0, nan_output: bool = False,
                 nan_when_bright: bool = False) -> bytes:
    """Serialized ONNX graph of a tiny CNN (no metadata yet), exported with torch."""
    import torch
    net = _tiny_net(num_classes, channels, seed, nan_output, nan_when_bright)
    x = torch.zeros(1, channels, input_size, input_size)
    buf = io.BytesIO()
    # As weld_training.export does it: TorchScript exporter, opset 17, dynamic batch axis.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(net, (x,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=17, dynamo=False, do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}})
    return buf.getvalue()


def contract(version: str, *, class_names=DEFAULT_CLASS_NAMES, channels: str = 'rgb',
             input_size: int = INPUT_SIZE, output_kind: str = 'logits') -> ModelContract:
    return ModelContract(class_names=tuple(class_names),
                         preprocess=PreprocessPreset.for_channels(channels, input_size),
                         input_name=INPUT_NAME, output_name=OUTPUT_NAME, output_kind=output_kind,
                         model_version=version, metrics={'val_accuracy': 0.5})


def with_metadata(graph: bytes, metadata: Optional[dict[str, str]]) -> bytes:
    """The graph with `metadata` as its metadata_props (None: no metadata at all)."""
    import onnx
    model = onnx.load_model_from_string(graph)
    del model.metadata_props[:]
    if metadata:
        onnx.helper.set_model_props(model, metadata)
    return model.SerializeToString()


def write_model(path: Path, version: str, *, seed: int = 0, channels: str = 'rgb',
                nan_when_bright: bool = False) -> Path:
    """A valid model file for `version` (nan_when_bright: one that passes validation but
    returns NaN on a near-white frame)."""
    graph = export_graph(seed=seed, channels=3 if channels == 'rgb' else 4,
                         nan_when_bright=nan_when_bright)
    path.write_bytes(with_metadata(graph, contract(version, channels=channels).to_metadata()))
    return path


@dataclass(frozen=True)
class BadModel:
    kind: str
    path: Path
    sha256: str = ''        # model_sha256 to set with it ('' = none)
    reason_hint: str = ''   # a word the refusal reason must contain


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_bad_models(models_dir: Path, outside_dir: Path) -> list[BadModel]:
    """One file per kind of bad model; all but 'outside_models_dir' lie in models_dir."""
    good = with_metadata(export_graph(), contract('bad-base').to_metadata())
    bad: list[BadModel] = []

    def add(kind: str, data: bytes, hint: str, *, where: Path = models_dir, sha: str = '') -> None:
        p = where / f'{kind}.onnx'
        p.write_bytes(data)
        bad.append(BadModel(kind, p, sha, hint))

    add('not_onnx', b'name,width_mm\nweld_1,4.2\n' * 20, 'ONNX')
    add('truncated', good[:len(good) // 2], 'ONNX')
    # A 64x64 graph whose metadata says it was trained at 48x48.
    add('wrong_input_shape', with_metadata(export_graph(), contract('bad-shape', input_size=48)
                                           .to_metadata()), 'input')
    # A 6-class graph whose metadata names 4 classes.
    add('class_count_mismatch', with_metadata(export_graph(), contract(
        'bad-classes', class_names=DEFAULT_CLASS_NAMES[:4]).to_metadata()), 'class')
    add('nan_output', with_metadata(export_graph(nan_output=True),
                                    contract('bad-nan').to_metadata()), 'finite')
    add('outside_models_dir', with_metadata(export_graph(), contract('bad-outside').to_metadata()),
        'models_dir', where=outside_dir)
    add('sha_mismatch', with_metadata(export_graph(), contract('bad-sha').to_metadata()), 'sha256',
        sha=hashlib.sha256(b'the approved model').hexdigest())
    add('missing_metadata', with_metadata(export_graph(), None), 'weld.class_names')
    link = models_dir / 'link_to_outside.onnx'
    link.symlink_to(outside_dir / 'outside_models_dir.onnx')
    bad.append(BadModel('symlink_out_of_models_dir', link, '', 'outside'))
    return bad


def torch_logits(batch, *, seed: int = 0, channels: int = 3, num_classes: int = len(DEFAULT_CLASS_NAMES)):
    """The exported network's logits computed by torch itself, for a (N, C, H, W) array."""
    import torch
    net = _tiny_net(num_classes, channels, seed, False, False)
    with torch.no_grad():
        return net(torch.from_numpy(batch)).numpy()
