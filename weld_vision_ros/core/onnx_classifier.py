"""ONNX Runtime defect classifier that reads how to use a model from the model itself.

`load_classifier` turns a model file into an `OnnxClassifier` only after the model has
proved usable; anything else raises `ModelValidationError` whose message says what was
wrong and what was expected. The checks, in order:

1. the path lies inside the allowed models directory (symlinks resolved first) and is a
   regular file; a relative path is taken relative to that directory;
2. the optional sha256 matches the file's bytes (the bytes hashed are the bytes loaded,
   so the file cannot change between the check and the load);
3. ONNX Runtime opens it with the requested execution providers;
4. the weld.* metadata contract is present and well formed (`ModelContract`);
5. the input named by the contract is float32 (N, C, H, W) with the contract's channels
   and size, and the output is (N, number of class names);
6. warm-up inferences on preprocessed frames return finite probabilities of the
   declared shape (and, for output_kind 'probabilities', values that sum to 1).

Bounds (`ModelLimits`, checked before the work they bound): the file's size before it is
read (a 1 GB file is refused from its size, never read whole), the declared input size
before anything is allocated for it (a 1 KB model declaring a 12000x12000 input is refused
at once), and the warm-up inference time per frame (the fastest of the warm-up frames, so
one scheduler hiccup does not refuse a good model; a model too slow to keep up with the
camera is refused rather than served). An empty expected sha256 is refused when the
limits require one (`require_sha256`).

Preprocessing is `core.preprocess.preprocess` with the preset stored in the model and
the frame's intrinsics: the function and inputs training's evaluation uses. With a
seam-crop preset, a frame on which no seam is found is still classified (on the centre
strip, see `core.preprocess`) and counted in `OnnxClassifier.seam_not_found`.

Execution providers are named 'cpu', 'cuda', 'tensorrt', 'openvino', in order of
preference. A provider this onnxruntime build does not offer is skipped when a later one
in the list is offered (list 'cpu' last to allow falling back to the CPU); when none of
them is offered, or ONNX Runtime could not start the first one it was given and the list
does not name 'cpu', loading fails with `ProviderUnavailableError`.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .frames import RGBDFrame
from .model_contract import ModelContract, ModelContractError
from .measure import SeamLocation
from .preprocess import CropInfo, PreprocessError, PreprocessPreset, preprocess_with_info, reuses_seam
from .results import METHOD_ML, Verdict

PROVIDERS = {
    'cpu': 'CPUExecutionProvider',
    'cuda': 'CUDAExecutionProvider',
    'tensorrt': 'TensorrtExecutionProvider',
    'openvino': 'OpenVINOExecutionProvider',
}
PROBABILITY_SUM_TOLERANCE = 1e-3
_SHA256_RE = re.compile(r'^[0-9a-f]{64}$')


class ModelValidationError(ValueError):
    """A model that must not be used; the message says why and what was expected."""


class ProviderUnavailableError(ModelValidationError):
    """None of the requested execution providers can run in this onnxruntime build."""


class InferenceError(RuntimeError):
    """A validated model failed or returned non-finite values on a frame."""


@dataclass(frozen=True)
class RuntimeOptions:
    """How ONNX Runtime runs a model.

    providers: execution providers in order of preference (keys of PROVIDERS).
    intra_op_threads: threads one inference may use; 0 lets ONNX Runtime pick (all cores).
    """

    providers: tuple[str, ...] = ('cpu',)
    intra_op_threads: int = 1

    def __post_init__(self) -> None:
        if not self.providers:
            raise ValueError(f'providers must name at least one of {", ".join(PROVIDERS)}')
        unknown = [p for p in self.providers if p not in PROVIDERS]
        if unknown:
            raise ValueError(f'providers names unknown execution provider(s) {", ".join(map(repr, unknown))}; '
                             f'valid: {", ".join(PROVIDERS)}')
        if len(set(self.providers)) != len(self.providers):
            raise ValueError(f'providers lists a provider twice: {list(self.providers)}')
        if not 0 <= self.intra_op_threads <= 256:
            raise ValueError(f'intra_op_threads must be in 0..256 (0 = ONNX Runtime default), '
                             f'got {self.intra_op_threads}')


@dataclass(frozen=True)
class ModelLimits:
    """What a model may cost before it is refused (see the module docstring).

    Defaults suit the edge board (8 Cortex-A55 cores): the project's models are 2-20 MB
    with inputs of 0.05-0.1 MPx and run in tens of milliseconds there.
    max_file_mb: file size [MB]. max_input_pixels: declared input height x width [px].
    max_inference_ms: warm-up inference time per frame, fastest of the warm-up frames [ms].
    require_sha256: refuse a load that names no expected sha256.
    """

    max_file_mb: float = 256.0
    max_input_pixels: int = 2_000_000
    max_inference_ms: float = 2000.0
    require_sha256: bool = False

    def __post_init__(self) -> None:
        if not self.max_file_mb > 0:
            raise ValueError(f'max_file_mb must be > 0, got {self.max_file_mb}')
        if self.max_input_pixels < 1:
            raise ValueError(f'max_input_pixels must be >= 1, got {self.max_input_pixels}')
        if not self.max_inference_ms > 0:
            raise ValueError(f'max_inference_ms must be > 0, got {self.max_inference_ms}')


@dataclass(frozen=True)
class ModelInfo:
    """Identity of a loaded model, for diagnostics and the latched active-model topic."""

    version: str
    path: str
    sha256: str
    size_bytes: int
    class_names: tuple[str, ...]
    input_width_px: int
    input_height_px: int
    channels: str
    output_kind: str
    providers: tuple[str, ...]
    skipped_providers: tuple[str, ...] = ()
    metrics: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({
            'version': self.version, 'path': self.path, 'sha256': self.sha256,
            'size_bytes': self.size_bytes, 'class_names': list(self.class_names),
            'input_size_px': [self.input_width_px, self.input_height_px],
            'channels': self.channels, 'output_kind': self.output_kind,
            'providers': list(self.providers), 'skipped_providers': list(self.skipped_providers),
            'metrics': self.metrics}, sort_keys=True)


def _ort():
    import onnxruntime
    return onnxruntime


def _ort_errors() -> tuple[type[BaseException], ...]:
    """The exception types ONNX Runtime raises (its pybind errors derive from Exception)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state
    names = ('Fail', 'InvalidArgument', 'NoSuchFile', 'NoModel', 'EngineError', 'RuntimeException',
             'InvalidProtobuf', 'ModelLoaded', 'NotImplemented', 'InvalidGraph', 'EPFail',
             'ModelLoadCanceled', 'ModelRequiresCompilation', 'NotFound')
    return tuple(getattr(state, n) for n in names if hasattr(state, n)) + (RuntimeError,)


def available_providers() -> tuple[str, ...]:
    """Short names of the execution providers this onnxruntime build offers."""
    offered = set(_ort().get_available_providers())
    return tuple(short for short, full in PROVIDERS.items() if full in offered)


def resolve_providers(requested: Sequence[str], offered: Sequence[str]) -> tuple[list[str], list[str]]:
    """(providers to use, providers skipped as not offered), both as short names.

    Raises ProviderUnavailableError when none of `requested` is in `offered`.
    """
    use = [p for p in requested if p in offered]
    skipped = [p for p in requested if p not in offered]
    if not use:
        raise ProviderUnavailableError(
            f'none of the requested execution providers ({", ".join(requested)}) is available in '
            f'this onnxruntime build, which offers: {", ".join(offered) or "none"}; install the '
            f'matching onnxruntime package or add \'cpu\' to providers to run on the CPU')
    return use, skipped


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalize_sha256(text: str) -> str:
    """Lower-case hex digest from '', 'ABC...', or 'sha256:abc...'; ValueError otherwise."""
    s = text.strip().lower()
    if s.startswith('sha256:'):
        s = s[len('sha256:'):]
    if s and not _SHA256_RE.match(s):
        raise ValueError(f'a sha256 must be 64 hexadecimal digits (optionally prefixed '
                         f'"sha256:"), got {text!r}')
    return s


def resolve_model_path(model_path: str, models_dir: str) -> Path:
    """The real path of `model_path`, refused unless it is a file inside `models_dir`.

    A relative `model_path` is relative to `models_dir`. Symlinks are resolved before the
    check, so a link inside the directory that points outside it is refused.
    """
    if not models_dir:
        raise ModelValidationError('models_dir is not set: set it to the directory models may '
                                   'be loaded from before setting model_path')
    root = Path(models_dir).expanduser()
    try:
        root = root.resolve(strict=True)
    except (FileNotFoundError, RuntimeError) as exc:
        raise ModelValidationError(f'models_dir {models_dir!r} does not exist ({exc})') from None
    if not root.is_dir():
        raise ModelValidationError(f'models_dir {models_dir!r} is not a directory')
    candidate = Path(model_path).expanduser()
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        real = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise ModelValidationError(f'model file {model_path!r} does not exist') from None
    except RuntimeError as exc:  # symlink loop
        raise ModelValidationError(f'model path {model_path!r} cannot be resolved: {exc}') from None
    if not real.is_relative_to(root):
        shown = f'{model_path!r}' + (f' (which resolves to {str(real)!r})' if str(real) != model_path else '')
        raise ModelValidationError(f'model path {shown} lies outside models_dir {str(root)!r}; '
                                   'copy the model into that directory')
    if not real.is_file():
        raise ModelValidationError(f'model path {str(real)!r} is not a regular file')
    return real


def probabilities_from_output(raw: np.ndarray, output_kind: str, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities (float64) from one output row: softmax(logits / temperature) for
    'logits' (the contract's calibrated temperature), the row itself for 'probabilities'."""
    x = np.asarray(raw, dtype=np.float64).reshape(-1)
    if output_kind == 'logits':
        x = x / temperature
        e = np.exp(x - np.max(x))
        return e / e.sum()
    return x


class OnnxClassifier:
    """A validated model: `classify(frame)` gives a Verdict with method 'ml'.

    Thread-safe for concurrent `classify` calls (ONNX Runtime sessions are). Build it with
    `load_classifier`, which validates first.
    """

    def __init__(self, session: Any, contract: ModelContract, info: ModelInfo) -> None:
        self._session = session
        self.contract = contract
        self.info = info
        self._lock = threading.Lock()
        self._seam_not_found = 0
        self._seam_reused = 0
        self.last_seam_problem = ''

    @property
    def seam_not_found(self) -> int:
        """Frames classified since loading on which the seam crop found no seam (centre strip used)."""
        return self._seam_not_found

    @property
    def version(self) -> str:
        return self.contract.model_version

    @property
    def preset(self) -> PreprocessPreset:
        return self.contract.preprocess

    @property
    def seam_reused(self) -> int:
        """Frames classified since loading whose seam strip was cut from the seam the rule stage
        had located (found with this model's seam finder), without locating it again."""
        return self._seam_reused

    def prepare(self, frame: RGBDFrame, seam: Optional[SeamLocation] = None) -> tuple[np.ndarray, CropInfo]:
        """The (1, C, H, W) float32 network input for a frame (the training preprocessing),
        and how the frame was cropped. seam: the seam already located on this frame (the rule
        stage's); used only when found with this model's seam finder (core.preprocess)."""
        depth = frame.depth_m if self.preset.needs_depth else None
        if reuses_seam(self.preset, seam):
            with self._lock:
                self._seam_reused += 1
        x, crop = preprocess_with_info(frame.rgb, depth, self.preset, frame.intrinsics, seam)
        return x[None], crop

    def input_tensor(self, frame: RGBDFrame) -> np.ndarray:
        """The (1, C, H, W) float32 network input for a frame (the training preprocessing)."""
        return self.prepare(frame)[0]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, num_classes) probabilities for a preprocessed (N, C, H, W) batch."""
        try:
            (out,) = self._session.run([self.contract.output_name], {self.contract.input_name: batch})
        except _ort_errors() as exc:
            raise InferenceError(f'model {self.version} failed: {exc}') from None
        out = np.asarray(out)
        if out.dtype.kind not in 'fiu':
            raise InferenceError(f'model {self.version} returned {out.dtype} values, expected numbers')
        n = len(self.contract.class_names)
        if out.ndim != 2 or out.shape != (batch.shape[0], n):
            raise InferenceError(f'model {self.version} returned shape {out.shape}, expected '
                                 f'({batch.shape[0]}, {n})')
        probs = np.stack([probabilities_from_output(row, self.contract.output_kind, self.contract.temperature)
                          for row in out])
        if not np.isfinite(probs).all():
            raise InferenceError(f'model {self.version} returned non-finite outputs '
                                 f'{np.array2string(out, precision=3)}')
        return probs

    def classify(self, frame: RGBDFrame, seam: Optional[SeamLocation] = None) -> Verdict:
        """The model's verdict on one frame (latency_ms 0: reception to verdict is the node's to
        fill). seam: see `prepare`."""
        try:
            batch, crop = self.prepare(frame, seam)
        except PreprocessError as exc:
            raise InferenceError(f'cannot preprocess the frame for model {self.version}: {exc}') from None
        if not crop.seam_found:
            with self._lock:
                self._seam_not_found += 1
                self.last_seam_problem = crop.reason
        probs = self.probabilities(batch)[0]
        best = int(np.argmax(probs))
        return Verdict(defect_class=self.contract.class_names[best], confidence=float(probs[best]),
                       class_names=self.contract.class_names,
                       probabilities=tuple(float(p) for p in probs), method=METHOD_ML,
                       model_version=self.version)


def warmup_frames(preset: PreprocessPreset, seed: int = 0) -> list[RGBDFrame]:
    """Two frames for the warm-up check: a flat grey plate and a noisy one with a ridge."""
    from .camera import Intrinsics
    h, w = max(preset.input_height, 48), max(preset.input_width, 64)
    intr = Intrinsics(fx=600.0, fy=600.0, cx=w / 2, cy=h / 2, width=w, height=h)
    rng = np.random.default_rng(seed)
    flat_rgb = np.full((h, w, 3), 128, np.uint8)
    flat_depth = np.full((h, w), 0.3, np.float32)
    noisy_rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    noisy_depth = flat_depth.copy()
    noisy_depth[:, w // 2 - 3:w // 2 + 3] -= 0.002  # a 2 mm bead
    noisy_depth[rng.random((h, w)) < 0.05] = np.nan
    return [RGBDFrame(flat_rgb, flat_depth, intr), RGBDFrame(noisy_rgb, noisy_depth, intr)]


def _dims(shape: Sequence[Any]) -> str:
    return '(' + ', '.join(str(d) if d not in (None, '') else '?' for d in shape) + ')'


def _check_io(session: Any, contract: ModelContract) -> None:
    preset = contract.preprocess
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if contract.input_name not in inputs:
        raise ModelValidationError(f'weld.input_name is {contract.input_name!r} but the graph\'s '
                                   f'inputs are {sorted(inputs)}')
    extra = [n for n in inputs if n != contract.input_name]
    if extra:
        raise ModelValidationError(f'the graph has inputs besides {contract.input_name!r}: {extra}; '
                                   'the node feeds exactly one image input')
    if contract.output_name not in outputs:
        raise ModelValidationError(f'weld.output_name is {contract.output_name!r} but the graph\'s '
                                   f'outputs are {sorted(outputs)}')
    inp = inputs[contract.input_name]
    if inp.type != 'tensor(float)':
        raise ModelValidationError(f'input {inp.name!r} has type {inp.type}, expected tensor(float)')
    expected = (None, preset.num_channels, preset.input_height, preset.input_width)
    shape = list(inp.shape)
    bad = len(shape) != 4 or any(isinstance(d, int) and e is not None and d != e
                                 for d, e in zip(shape[1:], expected[1:]))
    if bad or (isinstance(shape[0], int) and shape[0] < 1):
        raise ModelValidationError(
            f'input {inp.name!r} has shape {_dims(shape)} but the metadata preset asks for '
            f'(N, {preset.num_channels}, {preset.input_height}, {preset.input_width}) '
            f'({preset.channels}, {preset.input_width}x{preset.input_height} px)')
    out = outputs[contract.output_name]
    n = len(contract.class_names)
    oshape = list(out.shape)
    if len(oshape) != 2 or (isinstance(oshape[1], int) and oshape[1] != n):
        raise ModelValidationError(
            f'output {out.name!r} has shape {_dims(oshape)} but weld.class_names lists {n} classes '
            f'({", ".join(contract.class_names)}); expected (N, {n})')


def _warm_up(classifier: OnnxClassifier, limits: ModelLimits = ModelLimits()) -> float:
    """Warm-up inferences (see the module docstring); returns the fastest one [ms]."""
    batch = np.concatenate([classifier.input_tensor(f) for f in warmup_frames(classifier.preset)])
    fastest = float('inf')
    for row in batch:
        t0 = time.perf_counter()
        try:
            probs = classifier.probabilities(row[None])[0]
        except InferenceError as exc:
            raise ModelValidationError(f'warm-up inference failed: {exc}') from None
        fastest = min(fastest, (time.perf_counter() - t0) * 1000.0)
        if classifier.contract.output_kind == 'probabilities':
            total = float(probs.sum())
            if (probs < -PROBABILITY_SUM_TOLERANCE).any() or abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
                raise ModelValidationError(
                    f'weld.output_kind is \'probabilities\' but the warm-up outputs '
                    f'{np.array2string(probs, precision=3)} sum to {total:.4f}, not 1; export '
                    'with output_kind \'logits\' when the graph ends without a softmax')
    if fastest > limits.max_inference_ms:
        raise ModelValidationError(
            f'the model takes {fastest:.0f} ms per frame (fastest warm-up inference), more than '
            f'max_inference_ms {limits.max_inference_ms:.0f} ms: it cannot keep up with the camera here')
    return fastest


def _session_options(options: RuntimeOptions):
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only: the node reports problems itself
    return so


def read_model_file(model_path: str, models_dir: str, expected_sha256: str,
                    limits: ModelLimits) -> tuple[Path, bytes, str]:
    """The model file's resolved path, bytes and sha256, after every check that needs no
    ONNX Runtime (models_dir, sha256, size); ModelValidationError if refused."""
    real = resolve_model_path(model_path, models_dir)
    try:
        expected = normalize_sha256(expected_sha256)
    except ValueError as exc:
        raise ModelValidationError(f'model_sha256: {exc}') from None
    if limits.require_sha256 and not expected:
        raise ModelValidationError(f'{str(real)!r}: model_sha256 is required on this node '
                                   '(require_model_sha256): name the approved file\'s sha256')
    try:
        size = real.stat().st_size
    except OSError as exc:
        raise ModelValidationError(f'cannot read model file {str(real)!r}: {exc}') from None
    if size > limits.max_file_mb * 1e6:
        raise ModelValidationError(f'{str(real)!r} is {size / 1e6:.1f} MB, more than max_model_mb '
                                   f'{limits.max_file_mb:g} MB: refused without reading it')
    try:
        data = real.read_bytes()
    except OSError as exc:
        raise ModelValidationError(f'cannot read model file {str(real)!r}: {exc}') from None
    if not data:
        raise ModelValidationError(f'model file {str(real)!r} is empty')
    digest = sha256_hex(data)
    if expected and digest != expected:
        raise ModelValidationError(f'sha256 of {str(real)!r} is {digest}, but model_sha256 expects '
                                   f'{expected}: the file is not the model that was approved')
    return real, data, digest


def open_session(data: bytes, real: Path, options: RuntimeOptions) -> tuple[Any, list, tuple, list]:
    """An ONNX Runtime session of a model's bytes: (session, providers asked, active, skipped)."""
    offered = available_providers()
    use, skipped = resolve_providers(options.providers, offered)
    ort = _ort()
    try:
        session = ort.InferenceSession(data, sess_options=_session_options(options),
                                       providers=[PROVIDERS[p] for p in use])
    except _ort_errors() as exc:
        text = str(exc).split(' : ')[-1].strip()
        raise ModelValidationError(
            f'{str(real)!r} ({len(data)} bytes) cannot be opened as an ONNX model: {text} '
            '(not an ONNX file, a truncated copy, or a model that needs external data files; '
            'export a single self-contained .onnx file)') from None
    active = tuple(s for s, full in PROVIDERS.items() if full in session.get_providers())
    if use[0] not in active and 'cpu' not in options.providers:
        raise ProviderUnavailableError(
            f'onnxruntime could not start the {use[0]} execution provider (active: '
            f'{", ".join(active)}); check its drivers or add \'cpu\' to providers')
    if use[0] not in active:
        skipped.append(use[0])
    return session, use, active, skipped


def load_classifier(model_path: str, *, models_dir: str, expected_sha256: str = '',
                    options: RuntimeOptions = RuntimeOptions(),
                    limits: ModelLimits = ModelLimits()) -> OnnxClassifier:
    """Load and validate a model (see the module docstring); ModelValidationError if unusable."""
    real, data, digest = read_model_file(model_path, models_dir, expected_sha256, limits)
    session, use, active, skipped = open_session(data, real, options)
    try:
        contract = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map)
    except ModelContractError as exc:
        raise ModelValidationError(str(exc)) from None
    preset = contract.preprocess
    pixels = preset.input_width * preset.input_height
    if pixels > limits.max_input_pixels:
        raise ModelValidationError(
            f'{str(real)!r} declares a {preset.input_width}x{preset.input_height} input '
            f'({pixels / 1e6:.2f} MPx), more than max_model_input_pixels {limits.max_input_pixels}: '
            'refused before allocating for it')
    _check_io(session, contract)
    info = ModelInfo(version=contract.model_version, path=str(real), sha256=digest,
                     size_bytes=len(data), class_names=contract.class_names,
                     input_width_px=preset.input_width, input_height_px=preset.input_height,
                     channels=preset.channels, output_kind=contract.output_kind,
                     providers=tuple(p for p in use if p in active), skipped_providers=tuple(skipped),
                     metrics=dict(contract.metrics))
    classifier = OnnxClassifier(session, contract, info)
    _warm_up(classifier, limits)
    return classifier

