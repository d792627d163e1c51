"""Anomaly models on the cell: a score, a severity level and regions for one frame.

An anomaly model (fitted on good welds only by `weld-train anomaly`) is an ONNX graph that
maps the seam strip (core.preprocess, the preset in its contract) to an anomaly map: per
patch of the strip, the distance to the nearest good patch at the same position across the
seam (the memory bank is inside the graph). Its metadata carries the weld.* contract with
`weld.kind` 'anomaly', the calibrated thresholds and the patch size.

The raw score (the map's maximum) is mapped onto the scale people read, with the levels'
cut points at 0.3, 0.5 and 0.8:

    0 - 0.3 normal, 0.3 - 0.5 potential, 0.5 - 0.8 inspect, 0.8 - 1 critical

(raw potential -> 0.3, inspect -> 0.5, critical -> 0.8, linear between, 1 at 1.5 x critical).
Regions are the connected patches at or above the inspect threshold: a pixel box in the
colour image and their length along the seam [mm].
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

import cv2
import numpy as np

from .frames import RGBDFrame
from .measure import SeamLocation
from .model_contract import KIND_ANOMALY, PREFIX, ModelContractError
from .onnx_classifier import (InferenceError, ModelLimits, ModelValidationError, RuntimeOptions,
                              _ort_errors, open_session, read_model_file)
from .preprocess import CropInfo, PreprocessError, PreprocessPreset, preprocess_with_info, reuses_seam
from .results import DefectRegion

ANOMALY_INPUT, ANOMALY_OUTPUT = 'strip', 'anomaly_map'
NORMAL, POTENTIAL, INSPECT, CRITICAL = 'normal', 'potential', 'inspect', 'critical'
LEVELS = (NORMAL, POTENTIAL, INSPECT, CRITICAL)
LEVEL_CUTS = (0.3, 0.5, 0.8)        # score where potential, inspect, critical begin
ANOMALY_CLASS = 'anomaly'           # defect_class of an anomaly region


@dataclass(frozen=True)
class Thresholds:
    """Raw map values where the levels begin (calibrated on held-out good frames)."""

    potential: float
    inspect: float
    critical: float

    def __post_init__(self) -> None:
        if not (0 < self.potential < self.inspect < self.critical):
            raise ValueError(f'thresholds must rise: potential < inspect < critical, got {self}')

    def normalise(self, raw: float | np.ndarray) -> np.ndarray:
        xs = [0.0, self.potential, self.inspect, self.critical, 1.5 * self.critical]
        return np.interp(raw, xs, [0.0, *LEVEL_CUTS, 1.0])


def level_of(score: float) -> str:
    return LEVELS[int(np.searchsorted(LEVEL_CUTS, score, side='right'))]


@dataclass(frozen=True)
class AnomalyContract:
    preprocess: PreprocessPreset
    model_version: str
    thresholds: Thresholds
    patch_px: int
    input_name: str = ANOMALY_INPUT
    output_name: str = ANOMALY_OUTPUT
    metrics: dict = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        return {PREFIX + 'kind': KIND_ANOMALY, PREFIX + 'preprocess': self.preprocess.to_json(),
                PREFIX + 'input_name': self.input_name, PREFIX + 'output_name': self.output_name,
                PREFIX + 'model_version': self.model_version,
                PREFIX + 'thresholds': json.dumps(asdict(self.thresholds)),
                PREFIX + 'patch_px': str(self.patch_px),
                PREFIX + 'metrics': json.dumps(self.metrics, sort_keys=True)}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> 'AnomalyContract':
        kind = meta.get(PREFIX + 'kind', 'classifier')
        if kind != KIND_ANOMALY:
            raise ModelContractError(f'this is a defect classifier (weld.kind {kind!r}), not an anomaly '
                                     'model: set it as model_path, not anomaly_model_path')
        try:
            t = json.loads(meta[PREFIX + 'thresholds'])
            return cls(preprocess=PreprocessPreset.from_dict(json.loads(meta[PREFIX + 'preprocess'])),
                       model_version=meta[PREFIX + 'model_version'],
                       thresholds=Thresholds(float(t['potential']), float(t['inspect']), float(t['critical'])),
                       patch_px=int(meta[PREFIX + 'patch_px']), input_name=meta[PREFIX + 'input_name'],
                       output_name=meta[PREFIX + 'output_name'],
                       metrics=json.loads(meta.get(PREFIX + 'metrics') or '{}'))
        except (KeyError, ValueError, TypeError, PreprocessError) as exc:
            raise ModelContractError(f'anomaly model metadata is malformed or incomplete: {exc!r}') from None


@dataclass(frozen=True)
class AnomalyResult:
    score: float                      # 0..1 on the levels' scale
    raw_score: float
    level: str
    regions: tuple[DefectRegion, ...]
    anomaly_map: np.ndarray           # (h, w) on the levels' scale
    crop: CropInfo
    model_version: str
    latency_ms: float = 0.0

    @property
    def flags(self) -> bool:
        """Inspect or critical: not to be passed as good."""
        return self.level in (INSPECT, CRITICAL)


class AnomalyModel:
    def __init__(self, session: Any, contract: AnomalyContract, path: str, sha256: str) -> None:
        self._session = session
        self.contract = contract
        self.path, self.sha256 = path, sha256
        self._lock = threading.Lock()
        self.scored = 0

    @property
    def version(self) -> str:
        return self.contract.model_version

    def raw_map(self, batch: np.ndarray) -> np.ndarray:
        c = self.contract
        try:
            (out,) = self._session.run([c.output_name], {c.input_name: batch})
        except _ort_errors() as exc:
            raise InferenceError(f'anomaly model {self.version} failed: {exc}') from None
        out = np.asarray(out, dtype=np.float32)
        p = c.preprocess
        want = (batch.shape[0], p.input_height // c.patch_px, p.input_width // c.patch_px)
        if out.shape != want:
            raise InferenceError(f'anomaly model {self.version} returned shape {out.shape}, expected {want}')
        if not np.isfinite(out).all():
            raise InferenceError(f'anomaly model {self.version} returned non-finite values')
        return out

    def score(self, frame: RGBDFrame, seam: Optional[SeamLocation] = None) -> AnomalyResult:
        t0 = time.perf_counter()
        c = self.contract
        seam = seam if reuses_seam(c.preprocess, seam) else None
        try:
            x, crop = preprocess_with_info(frame.rgb, frame.depth_m, c.preprocess, frame.intrinsics, seam)
        except PreprocessError as exc:
            raise InferenceError(f'cannot preprocess the frame for anomaly model {self.version}: {exc}') from None
        raw = self.raw_map(x[None])[0]
        norm = c.thresholds.normalise(raw).astype(np.float32)
        score = float(norm.max())
        regions = self.regions(raw, crop) if crop.strip_to_image is not None else ()
        with self._lock:
            self.scored += 1
        return AnomalyResult(score, float(raw.max()), level_of(score), regions, norm, crop, self.version,
                             (time.perf_counter() - t0) * 1000.0)

    def regions(self, raw: np.ndarray, crop: CropInfo) -> tuple[DefectRegion, ...]:
        c = self.contract
        mask = (raw >= c.thresholds.inspect).astype(np.uint8)
        if not mask.any():
            return ()
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        p = c.patch_px
        out = []
        for k in range(1, n):
            x, y, w, h, _area = stats[k]
            peak = float(c.thresholds.normalise(raw[labels == k].max()))
            # strip pixel box -> image: the four corners through the strip's homography
            xs = np.array([x, x + w, x, x + w], dtype=np.float64) * p - 0.5
            ys = np.array([y, y, y + h, y + h], dtype=np.float64) * p - 0.5
            ix, iy = crop.to_image(xs, ys)
            x0, y0 = int(np.floor(ix.min())), int(np.floor(iy.min()))
            x1, y1 = int(np.ceil(ix.max())), int(np.ceil(iy.max()))
            along = float(w * p * crop.mm_per_px)
            across = float(h * p * c.preprocess.strip_width_mm / c.preprocess.input_height)
            centre = float((x + 0.5 * w) * p * crop.mm_per_px)
            out.append(DefectRegion(ANOMALY_CLASS, peak, x0, y0, max(1, x1 - x0), max(1, y1 - y0),
                                    length_mm=along, width_mm=across, position_along_seam_mm=centre))
        out.sort(key=lambda r: -r.confidence)
        return tuple(out[:20])


def load_anomaly_model(model_path: str, *, models_dir: str, expected_sha256: str = '',
                       options: RuntimeOptions = RuntimeOptions(),
                       limits: ModelLimits = ModelLimits()) -> AnomalyModel:
    """Load and validate an anomaly model (file checks as a classifier's, then its contract, its
    input size bound and a warm-up on synthetic frames); ModelValidationError if unusable."""
    real, data, digest = read_model_file(model_path, models_dir, expected_sha256, limits)
    session, _use, _active, _skipped = open_session(data, real, options)
    try:
        contract = AnomalyContract.from_metadata(session.get_modelmeta().custom_metadata_map)
    except ModelContractError as exc:
        raise ModelValidationError(str(exc)) from None
    p = contract.preprocess
    if p.input_width * p.input_height > limits.max_input_pixels:
        raise ModelValidationError(f'{str(real)!r} declares a {p.input_width}x{p.input_height} input, more '
                                   f'than max_model_input_pixels {limits.max_input_pixels}')
    names_in = [i.name for i in session.get_inputs()]
    names_out = [o.name for o in session.get_outputs()]
    if contract.input_name not in names_in or contract.output_name not in names_out:
        raise ModelValidationError(f'{str(real)!r}: the graph has inputs {names_in} and outputs {names_out}, '
                                   f'the contract names {contract.input_name!r} and {contract.output_name!r}')
    model = AnomalyModel(session, contract, str(real), digest)
    from .onnx_classifier import warmup_frames
    fastest = float('inf')
    for f in warmup_frames(p):
        t0 = time.perf_counter()
        try:
            model.score(f)
        except InferenceError as exc:
            raise ModelValidationError(f'warm-up of the anomaly model failed: {exc}') from None
        fastest = min(fastest, (time.perf_counter() - t0) * 1000.0)
    if fastest > limits.max_inference_ms:
        raise ModelValidationError(f'the anomaly model takes {fastest:.0f} ms per frame, more than '
                                   f'max_inference_ms {limits.max_inference_ms:.0f} ms')
    model.scored = 0
    return model


def info_json(model: Optional[AnomalyModel]) -> str:
    if model is None:
        return json.dumps({'version': '', 'path': '', 'sha256': ''})
    return json.dumps({'version': model.version, 'path': model.path, 'sha256': model.sha256,
                       'thresholds': asdict(model.contract.thresholds)}, sort_keys=True)
