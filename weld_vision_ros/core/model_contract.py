"""The contract an exported defect model carries in its ONNX metadata.

Training writes it (`weld_training` export), the ONNX node reads it; a model without it
is refused. Every value is a string (ONNX metadata_props), JSON where structured.

Keys (all prefixed `weld.`):
  class_names      JSON list of class names, in output order
  preprocess       JSON PreprocessPreset (input size, channels, mean/std, depth range)
  input_name       name of the image input, shape (N, C, H, W) float32
  output_name      name of the output, shape (N, num_classes)
  output_kind      'logits' (softmax applied by the reader) or 'probabilities'
  model_version    version string shown in every WeldDefect
  metrics          JSON dict of evaluation metrics (may be '{}')
  weights_sha256   sha256 of the graph's weights, written at export
  kind             'classifier' (absent: a classifier) or 'anomaly' (core.anomaly: an
                   anomaly model, served in its own slot; refused here)
  temperature      optional, default 1: the reader divides 'logits' by it before the softmax
                   (temperature scaling, calibrated on the validation split at export)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Mapping

from .preprocess import PreprocessError, PreprocessPreset

PREFIX = 'weld.'
REQUIRED_KEYS = ('class_names', 'preprocess', 'input_name', 'output_name', 'output_kind',
                 'model_version')
OUTPUT_KINDS = ('logits', 'probabilities')
KIND_CLASSIFIER, KIND_ANOMALY = 'classifier', 'anomaly'


class ModelContractError(ValueError):
    """A model whose metadata does not state how to use it."""


@dataclass(frozen=True)
class ModelContract:
    class_names: tuple[str, ...]
    preprocess: PreprocessPreset
    input_name: str
    output_name: str
    output_kind: str
    model_version: str
    metrics: dict = field(default_factory=dict)
    weights_sha256: str = ''
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ModelContractError(f'weld.temperature must be a finite number > 0, got {self.temperature!r}')
        if self.temperature != 1.0 and self.output_kind != 'logits':
            raise ModelContractError("weld.temperature applies to output_kind 'logits' only; a model that "
                                     'outputs probabilities carries its calibration in the graph')

    def to_metadata(self) -> dict[str, str]:
        return {
            PREFIX + 'class_names': json.dumps(list(self.class_names)),
            PREFIX + 'preprocess': self.preprocess.to_json(),
            PREFIX + 'input_name': self.input_name,
            PREFIX + 'output_name': self.output_name,
            PREFIX + 'output_kind': self.output_kind,
            PREFIX + 'model_version': self.model_version,
            PREFIX + 'metrics': json.dumps(self.metrics, sort_keys=True),
            PREFIX + 'weights_sha256': self.weights_sha256,
            PREFIX + 'temperature': repr(float(self.temperature)),
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> 'ModelContract':
        kind = meta.get(PREFIX + 'kind', KIND_CLASSIFIER)
        if kind != KIND_CLASSIFIER:
            raise ModelContractError(
                f'this is an {kind} model (weld.kind {kind!r}), not a defect classifier: set it as '
                f'anomaly_model_path, not model_path' if kind == KIND_ANOMALY else
                f'weld.kind must be {KIND_CLASSIFIER!r} for a defect classifier, got {kind!r}')
        missing = [PREFIX + k for k in REQUIRED_KEYS if not meta.get(PREFIX + k)]
        if missing:
            raise ModelContractError(
                f'model metadata lacks {", ".join(missing)}; export the model with '
                f'`weld-train export`, which writes the weld.* contract')
        try:
            class_names = tuple(json.loads(meta[PREFIX + 'class_names']))
            preset = PreprocessPreset.from_dict(json.loads(meta[PREFIX + 'preprocess']))
            metrics = json.loads(meta.get(PREFIX + 'metrics') or '{}')
        except (json.JSONDecodeError, TypeError, PreprocessError) as exc:
            raise ModelContractError(f'model metadata is malformed: {exc}') from None
        raw_t = meta.get(PREFIX + 'temperature') or '1.0'
        try:
            temperature = float(raw_t)
        except ValueError:
            raise ModelContractError(f'weld.temperature must be a finite number > 0, got {raw_t!r}') from None
        if len(class_names) < 2 or not all(isinstance(c, str) and c for c in class_names):
            raise ModelContractError(f'weld.class_names must list at least 2 names, got {class_names}')
        if len(set(class_names)) != len(class_names):
            raise ModelContractError(f'weld.class_names has duplicates: {class_names}')
        kind = meta[PREFIX + 'output_kind']
        if kind not in OUTPUT_KINDS:
            raise ModelContractError(f'weld.output_kind must be one of {OUTPUT_KINDS}, got {kind!r}')
        return cls(class_names=class_names, preprocess=preset,
                   input_name=meta[PREFIX + 'input_name'], output_name=meta[PREFIX + 'output_name'],
                   output_kind=kind, model_version=meta[PREFIX + 'model_version'],
                   metrics=metrics if isinstance(metrics, dict) else {},
                   weights_sha256=meta.get(PREFIX + 'weights_sha256', ''), temperature=temperature)
