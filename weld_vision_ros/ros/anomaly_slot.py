"""The ONNX node's second model slot: an anomaly model beside the defect classifier.

Parameters (declared on the ONNX node, validated and swapped on their own through the
parameter service, like model_path):

    anomaly_model_path / anomaly_model_sha256   the anomaly model (core.anomaly), relative to
                                                models_dir; empty serves none. A classifier
                                                set here, or a model that fails validation,
                                                is refused with the reason and the serving
                                                anomaly model keeps serving.
    anomaly_frames                              which frames it scores: rule_good (default:
                                                frames whose final verdict is good), all
                                                (every inspected frame), off
    publish_anomaly_map                         the map as an image on weld/anomaly_map

A frame whose final verdict is good but which the anomaly model places at inspect or
critical is published not inspected, status_reason unknown_appearance (a controller
re-scans it or sends the part for a look; controller_policy: RESCAN), never as good; it is
counted in diagnostics (`anomaly.good_overridden`). Every scored verdict carries the score,
level, regions and the anomaly model's version.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional

import cv2
import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from weld_vision_ros.core.anomaly import AnomalyModel, info_json, load_anomaly_model
from weld_vision_ros.core.classes import GOOD
from weld_vision_ros.core.frames import RGBDFrame
from weld_vision_ros.core.onnx_classifier import (InferenceError, ModelLimits, ModelValidationError,
                                                  RuntimeOptions, normalize_sha256)
from weld_vision_ros.core.results import REASON_UNKNOWN_APPEARANCE, Verdict
from weld_vision_ros.ros.conversions import array_to_image
from weld_vision_ros.ros.params import LiveParameters, ParamSpec
from weld_vision_ros.ros.qos import latched_qos

ANOMALY_FRAMES = ('rule_good', 'all', 'off')
ANOMALY_MAP_TOPIC = 'weld/anomaly_map'
ACTIVE_ANOMALY_TOPIC = '~/active_anomaly_model'
SLOT_PARAMS = frozenset({'anomaly_model_path', 'anomaly_model_sha256'})

ANOMALY_PARAMS = (
    ParamSpec('anomaly_model_path', '',
              'Anomaly model (trained on good welds, `weld-train anomaly`) served beside the '
              'classifier: absolute, or relative to models_dir; empty serves none. Validated before '
              'the set is answered; a refused model leaves the current one serving'),
    ParamSpec('anomaly_model_sha256', '', 'sha256 the anomaly model file must have; empty skips the check'),
    ParamSpec('anomaly_frames', 'rule_good',
              'Frames the anomaly model scores: rule_good (those whose verdict is good; a flagged one '
              'is published not inspected, unknown_appearance), all (every inspected frame), off',
              choices=ANOMALY_FRAMES),
    ParamSpec('publish_anomaly_map', False, 'Publish the anomaly map of each scored frame on weld/anomaly_map'),
)


@dataclass(frozen=True)
class AnomalySlotConfig:
    path: str
    sha256: str
    frames: str
    publish_map: bool

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> 'AnomalySlotConfig':
        try:
            sha = normalize_sha256(str(v['anomaly_model_sha256']))
        except ValueError as exc:
            raise ValueError(f'anomaly_model_sha256: {exc}') from None
        return cls(str(v['anomaly_model_path']).strip(), sha, str(v['anomaly_frames']),
                   bool(v['publish_anomaly_map']))


@dataclass(frozen=True)
class _Change:
    model: Optional[AnomalyModel]


def heat_image(norm_map: np.ndarray, scale: int = 4) -> np.ndarray:
    """An RGB heat map (jet) of a 0..1 anomaly map, each patch `scale` pixels."""
    u8 = np.clip(norm_map * 255.0, 0, 255).astype(np.uint8)
    big = cv2.resize(u8, (u8.shape[1] * scale, u8.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(cv2.applyColorMap(big, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


class AnomalySlot:
    def __init__(self, node: Node, models_dir: Callable[[], str], runtime: Callable[[], RuntimeOptions],
                 limits: Callable[[], ModelLimits], loader: Callable[..., AnomalyModel] = load_anomaly_model) -> None:
        self._node = node
        self._models_dir, self._runtime, self._limits, self._loader = models_dir, runtime, limits, loader
        self.model: Optional[AnomalyModel] = None
        self.counts: Counter[str] = Counter()
        self.last_refusal = ''
        self.latency_ms: deque = deque(maxlen=200)
        self._pub_model = node.create_publisher(String, ACTIVE_ANOMALY_TOPIC, latched_qos())
        self._pub_map = node.create_publisher(Image, ANOMALY_MAP_TOPIC, 1)
        self.params = LiveParameters(node, ANOMALY_PARAMS, AnomalySlotConfig.from_values,
                                     on_change=self._on_change, prepare=self._prepare)
        cfg = self.params.config
        if cfg.path:
            try:
                self.model = self._load(cfg)
            except ModelValidationError as exc:
                self.last_refusal = f'{cfg.path!r}: {exc}'
                node.get_logger().error(f'anomaly_model_path refused at start: {exc}; serving no anomaly model')
        self._announce()

    def _load(self, cfg: AnomalySlotConfig) -> Optional[AnomalyModel]:
        if not cfg.path:
            return None
        try:
            return self._loader(cfg.path, models_dir=self._models_dir(), expected_sha256=cfg.sha256,
                                options=self._runtime(), limits=self._limits())
        except ModelValidationError:
            raise
        except Exception as exc:  # noqa: BLE001 - the ROS boundary: a model must not crash the node
            raise ModelValidationError(f'unexpected error while validating the anomaly model: {exc!r}') from None

    def _prepare(self, cfg: AnomalySlotConfig, changed: frozenset) -> Optional[_Change]:
        if not changed & SLOT_PARAMS:
            return None
        try:
            return _Change(self._load(cfg))
        except ModelValidationError as exc:
            self.counts['refused'] += 1
            keeps = f'anomaly model {self.model.version} keeps serving' if self.model else 'no anomaly model is serving'
            self.last_refusal = f'{cfg.path!r}: {exc}'
            self._node.get_logger().warning(f'anomaly model refused ({keeps}): {exc}')
            raise ModelValidationError(f'anomaly model refused, {keeps}: {exc}') from None

    def _on_change(self, cfg: AnomalySlotConfig, changed: frozenset, change: Optional[_Change]) -> None:
        if change is None:
            return
        old, self.model = self.model, change.model       # one assignment: between two frames
        self.counts['swaps'] += 1
        self._node.get_logger().info(f'anomaly model: now {self.model.version if self.model else "none"} '
                                     f'(was {old.version if old else "none"})')
        self._announce()

    def _announce(self) -> None:
        self._pub_model.publish(String(data=info_json(self.model)))

    def apply(self, frame: RGBDFrame, final: Optional[Verdict], header) -> Optional[Verdict]:
        """The final verdict with the anomaly model's opinion (unchanged when it does not score)."""
        model = self.model                                 # read once: one model per frame
        cfg = self.params.config
        if model is None or final is None or not final.inspected or cfg.frames == 'off':
            return final
        if cfg.frames == 'rule_good' and final.defect_class != GOOD:
            return final
        try:
            result = model.score(frame)
        except InferenceError as exc:
            self.counts['errors'] += 1
            self._node.get_logger().warning(f'anomaly model not applied: {exc}', throttle_duration_sec=10.0)
            return final
        self.counts['scored'] += 1
        self.counts[f'level.{result.level}'] += 1
        self.latency_ms.append(result.latency_ms)
        fields = dict(anomaly_score=result.score, anomaly_level=result.level, anomaly_regions=result.regions,
                      anomaly_model_version=model.version)
        if cfg.publish_map:
            self._pub_map.publish(array_to_image(heat_image(result.anomaly_map), 'rgb8', header))
        if final.defect_class == GOOD and result.flags:
            self.counts['good_overridden'] += 1
            return Verdict.not_inspected(
                REASON_UNKNOWN_APPEARANCE,
                f'anomaly {result.level} ({result.score:.2f}) on a frame the {final.method} verdict calls good',
                final.class_names, final.method, model_version=final.model_version, **fields)
        return replace(final, **fields)

    def diagnostic_values(self) -> dict[str, Any]:
        lat = sorted(self.latency_ms)
        return {'anomaly.model_version': self.model.version if self.model else '',
                'anomaly.frames': self.params.config.frames,
                'anomaly.scored': self.counts['scored'], 'anomaly.good_overridden': self.counts['good_overridden'],
                'anomaly.errors': self.counts['errors'], 'anomaly.refused': self.counts['refused'],
                'anomaly.latency_p50_ms': lat[len(lat) // 2] if lat else 0.0,
                **{f'anomaly.{k}': n for k, n in sorted(self.counts.items()) if k.startswith('level.')},
                'anomaly.last_refusal': self.last_refusal}
