"""ONNX defect node: the trained model on the cell, alone or behind the rules (hybrid), with
models deployed through the parameter service without stopping the line.

Subscribes to the synchronized RGB-D input (RgbdInput) and publishes:
  weld/defect/ml     WeldDefect, method 'ml', for every frame the model ran on
  weld/defect        the final verdict of the current mode (rule, ml or hybrid; see
                     core.cascade for the combination rule and the rule fallback); a
                     frame with no measurable bead that the model did not classify
                     gets none, as on the rule node
  ~/active_model     std_msgs/String, latched: JSON identity of the model now serving
and offers ~/upload_model (srv/UploadModel): a model's bytes and sha256 from another host,
written atomically into models_dir once validated like any model (core.model_upload), and
served when asked to (`weld-train deploy --remote`).
  /diagnostics       once per second: frames, per-method counts, ML invocation ratio,
                     latency p50/p99, swaps accepted/refused, model version, fallback state

The rule core (core.rules.inspect_frame) runs in this process with the rule node's parameters
(measure.*, rules.*, spec.*, ros.rule_params: the same names, descriptions and ranges, read
from the YAML's one `/**` section). One pass per frame in this node: when the model runs
behind the rules, its seam strip is cut from the seam the rule stage located (if found with
the model's own seam-finder settings, which its contract records; else it is located again
with those, so live re-tuning of measure.* never changes what the model sees). This node
does not republish the rule node's outputs (weld/bead, weld/defect/rule): run the rule node
beside it for those.

Model swap: setting `model_path` (and/or `model_sha256`, `providers`, `intra_op_threads`)
with any SetParameters client loads and validates the model inside the parameter
callback, so the answer carries successful=false and the reason when it is refused. The
node runs on a multi-threaded executor: the parameter services stay in the node's default
callback group, the camera subscriptions and the diagnostics timer in a group of their
own, so frames keep being served by the old model while the new one loads. A validated
model replaces the old one in one reference assignment; each frame reads that reference
once, so it is served entirely by one model, and a refused model changes nothing.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional

import cv2
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String

from weld_vision_ros.core.cascade import (DEFAULT_HYBRID_THRESHOLD, FALLBACK_ML_ERROR, FALLBACK_NO_MODEL,
                                          MODE_HYBRID, MODES, CascadeConfig, HybridCascade, RuleFn)
from weld_vision_ros.core.cell_status import MODEL_NONE, MODEL_REFUSED, MODEL_SERVING, CellStatusTracker
from weld_vision_ros.core.frames import RGBDFrame
from weld_vision_ros.core.model_upload import store_uploaded_model
from weld_vision_ros.core.onnx_classifier import (PROVIDERS, ModelValidationError, OnnxClassifier,
                                                  ModelLimits, RuntimeOptions, load_classifier, normalize_sha256)
from weld_vision_ros.core.rules import inspect_frame
from weld_vision_ros.core.stats import RollingLatency
from weld_vision_ros.msg import CellStatus, WeldDefect
from weld_vision_ros.srv import UploadModel
from weld_vision_ros.ros.conversions import verdict_to_msg
from weld_vision_ros.ros.diagnostics import OK, WARN, make_array, make_status
from weld_vision_ros.ros.executor import SteadyExecutor
from weld_vision_ros.ros.spin import create_publisher, run_node
from weld_vision_ros.ros.params import DIAGNOSTICS_PERIOD, OPENCV_THREADS, LiveParameters, ParamSpec
from weld_vision_ros.ros.qos import latched_qos, results_qos
from weld_vision_ros.ros.rgbd_input import RgbdInput
from weld_vision_ros.ros.rule_params import RULE_PARAMS, rule_config

ML_TOPIC = 'weld/defect/ml'
FINAL_TOPIC = 'weld/defect'
ACTIVE_MODEL_TOPIC = '~/active_model'
CELL_STATUS_TOPIC = 'weld/cell_status'
UPLOAD_SERVICE = '~/upload_model'
STATUS_CHECK_PERIOD_S = 0.1
DIAGNOSTICS_TOPIC = '/diagnostics'

# Parameters whose change means (re)loading the model.
MODEL_PARAMS = frozenset({'model_path', 'model_sha256', 'providers', 'intra_op_threads'})

PARAMS = (
    ParamSpec('model_path', '',
              'ONNX model to serve: absolute, or relative to models_dir; empty serves none '
              '(ml and hybrid then publish the rule verdict). Setting it loads and validates the '
              'model before the set is answered; a refused model leaves the current one serving'),
    ParamSpec('model_sha256', '',
              'sha256 the model file must have (64 hex digits); empty skips the check. Set it '
              'together with model_path (SetParametersAtomically) to approve one exact file'),
    ParamSpec('models_dir', '',
              'The only directory models may be loaded from (symlinks are resolved before the '
              'check); fixed at start so that a parameter client cannot widen it', read_only=True),
    ParamSpec('mode', MODE_HYBRID,
              'rule: the rule verdict; ml: the model on every frame; hybrid: the model only on '
              'frames whose rule confidence is below hybrid_threshold', choices=MODES),
    ParamSpec('hybrid_threshold', DEFAULT_HYBRID_THRESHOLD,
              'Rule confidence below which hybrid mode asks the model', unit='probability',
              min_value=0.0, max_value=1.0),
    ParamSpec('providers', ['cpu'],
              'ONNX Runtime execution providers in order of preference (' + ', '.join(PROVIDERS)
              + '); one this onnxruntime build lacks is skipped when a later one is available, '
              'so list cpu last to allow falling back to the CPU. Changing it reloads the model'),
    ParamSpec('intra_op_threads', 1,
              'Threads one inference may use (0: ONNX Runtime default, all cores); changing it '
              'reloads the model', unit='threads', min_value=0, max_value=64),
    ParamSpec('require_model_sha256', False,
              'Refuse any model_path set without model_sha256, so that a client on the DDS domain '
              'cannot swap in an unapproved file; fixed at start', read_only=True),
    ParamSpec('max_model_mb', 256.0,
              'Largest model file accepted; a larger one is refused from its size, unread; fixed '
              'at start', unit='MB', min_value=1.0, max_value=4096.0, read_only=True),
    ParamSpec('max_model_input_pixels', 2_000_000,
              'Largest declared model input (height x width) accepted, checked before anything '
              'is allocated for it; fixed at start', unit='px', min_value=1, max_value=100_000_000,
              read_only=True),
    ParamSpec('max_inference_ms', 2000.0,
              'Slowest warm-up inference per frame (fastest of the warm-up frames) accepted; a '
              'slower model is refused, not served; fixed at start', unit='ms', min_value=1.0,
              max_value=600_000.0, read_only=True),
    ParamSpec('stall_timeout_s', 0.6,
              'No frame pair for longer than this: weld/cell_status says camera_stalled (keep it '
              'above two frame periods of the camera)', unit='s', min_value=0.05, max_value=60.0),
    ParamSpec('not_inspectable_after', 5,
              'This many frames in a row not inspected: weld/cell_status says not_inspectable',
              unit='frames', min_value=1, max_value=10000),
    DIAGNOSTICS_PERIOD, OPENCV_THREADS,
)


@dataclass(frozen=True)
class OnnxNodeConfig:
    model_path: str
    model_sha256: str
    models_dir: str
    cascade: CascadeConfig
    runtime: RuntimeOptions
    limits: ModelLimits
    stall_timeout_s: float
    not_inspectable_after: int
    diagnostics_period_s: float
    opencv_threads: int

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> 'OnnxNodeConfig':
        try:
            sha = normalize_sha256(str(v['model_sha256']))
        except ValueError as exc:
            raise ValueError(f'model_sha256: {exc}') from None
        return cls(model_path=str(v['model_path']).strip(), model_sha256=sha,
                   models_dir=str(v['models_dir']).strip(),
                   cascade=CascadeConfig(str(v['mode']), float(v['hybrid_threshold'])),
                   runtime=RuntimeOptions(tuple(str(p).strip().lower() for p in v['providers']),
                                          int(v['intra_op_threads'])),
                   limits=ModelLimits(float(v['max_model_mb']), int(v['max_model_input_pixels']),
                                      float(v['max_inference_ms']), bool(v['require_model_sha256'])),
                   stall_timeout_s=float(v['stall_timeout_s']),
                   not_inspectable_after=int(v['not_inspectable_after']),
                   diagnostics_period_s=float(v['diagnostics_period_s']),
                   opencv_threads=int(v['opencv_threads']))


def _declare_rule_core(node: Node) -> tuple[LiveParameters, RuleFn]:
    """The rule core with its parameters (ros.rule_params, as the rule node's) declared on `node`."""
    params = LiveParameters(node, RULE_PARAMS, rule_config)

    return params, lambda frame: inspect_frame(frame, params.config)


@dataclass(frozen=True)
class _ModelChange:
    """A set's validated model (None: the set unloads the model)."""

    classifier: Optional[OnnxClassifier]


class OnnxDefectNode(Node):
    def __init__(self, *, rule_fn: Optional[RuleFn] = None,
                 loader: Callable[..., OnnxClassifier] = load_classifier, **kwargs) -> None:
        super().__init__('onnx_defect_node', **kwargs)
        self._loader = loader
        self.swaps_accepted = 0
        self.swaps_refused = 0
        self.uploads_accepted = 0
        self.uploads_refused = 0
        self.last_refusal = ''
        self._refused_last = False  # the last model asked for was refused
        self._start_problem = ''
        # Declared first: on a set, rclpy calls the newest callback first, so this one (which
        # may load a model) runs after the cheaper checks of the input and rule parameters.
        self.params = LiveParameters(self, PARAMS, OnnxNodeConfig.from_values,
                                     on_change=self._on_params, prepare=self._load_named_model)
        cfg = self.params.config
        cv2.setNumThreads(cfg.opencv_threads)
        self.rule_params: Optional[LiveParameters] = None
        if rule_fn is None:
            self.rule_params, rule_fn = _declare_rule_core(self)
        self.cascade = HybridCascade(rule_fn, cfg.cascade)
        self.latency = RollingLatency()
        self.ml_latency = RollingLatency()

        results = results_qos()  # verdicts: reliable, a controller must not miss one
        self._ml_pub = create_publisher(self, WeldDefect, ML_TOPIC, results)
        self._final_pub = create_publisher(self, WeldDefect, FINAL_TOPIC, results)
        # Latched, so a tool that connects later still learns which model is serving.
        self._model_pub = create_publisher(self, String, ACTIVE_MODEL_TOPIC, latched_qos())
        # Diagnostics: reliable and shallow, as diagnostic_aggregator expects.
        from diagnostic_msgs.msg import DiagnosticArray
        self._diag_pub = create_publisher(self, DiagnosticArray, DIAGNOSTICS_TOPIC, 10)

        # Frames (and the diagnostics that read their statistics) in one group of their own:
        # a model loading in a parameter callback (default group) does not hold them up.
        self.frames_group = MutuallyExclusiveCallbackGroup()
        self.input = RgbdInput(self, self._on_frame, callback_group=self.frames_group)
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics,
                          callback_group=self.frames_group)
        # Cell status: latched, checked in a group of its own so that a long frame or a model
        # load cannot delay the news that the camera stalled.
        self.status = CellStatusTracker(cfg.stall_timeout_s, cfg.not_inspectable_after)
        self._status_pub = create_publisher(self, CellStatus, CELL_STATUS_TOPIC, latched_qos())
        self._status_sent: Optional[tuple] = None
        self._load_initial(cfg)
        self.create_timer(STATUS_CHECK_PERIOD_S, self._publish_status,
                          callback_group=MutuallyExclusiveCallbackGroup())
        # Models sent from another host. In the default group, with the parameter services: an
        # upload that activates its model is decided in order with parameter sets, and frames
        # keep flowing (their own group) while it is validated.
        self.create_service(UploadModel, UPLOAD_SERVICE, self._on_upload)

    # --- model loading -------------------------------------------------------------------
    def _load(self, cfg: OnnxNodeConfig) -> Optional[OnnxClassifier]:
        """The validated model `cfg` names (None for an empty model_path)."""
        if not cfg.model_path:
            return None
        try:
            return self._loader(cfg.model_path, models_dir=cfg.models_dir,
                                expected_sha256=cfg.model_sha256, options=cfg.runtime,
                                limits=cfg.limits)
        except ModelValidationError:
            raise
        except Exception as exc:  # noqa: BLE001 - the ROS boundary: a model must not crash the node
            raise ModelValidationError(f'unexpected error while validating the model: {exc!r}') from None

    def _load_initial(self, cfg: OnnxNodeConfig) -> None:
        try:
            classifier = self._load(cfg)
        except ModelValidationError as exc:
            classifier = None
            self._start_problem = f'model_path {cfg.model_path!r} was refused at start: {exc}'
            self.get_logger().error(self._start_problem + '; serving without a model until a '
                                    'valid model_path is set')
        self.cascade.swap_classifier(classifier)
        self._announce(classifier, cfg)
        serving = (f'model {classifier.version} ({classifier.info.path}, providers '
                   f'{",".join(classifier.info.providers)})' if classifier else 'no model')
        self.get_logger().info(f'ready: {cfg.cascade.mode} mode, serving {serving}')

    def _load_named_model(self, cfg: OnnxNodeConfig, changed: frozenset) -> Optional[_ModelChange]:
        """Runs before a set is accepted: load and validate the model it names (None: the set
        changes no model parameter); a refusal refuses the set."""
        if not changed & MODEL_PARAMS:
            return None
        t0 = time.monotonic()
        try:
            classifier = self._load(cfg)
        except ModelValidationError as exc:
            self.swaps_refused += 1
            current = self.cascade.classifier
            keeps = f'model {current.version} keeps serving' if current else 'no model is serving'
            self.last_refusal = f'{cfg.model_path!r}: {exc}'
            self._refused_last = True
            self.get_logger().warning(f'model refused ({keeps}): {self.last_refusal}')
            raise ModelValidationError(f'model refused, {keeps}: {exc}') from None
        if classifier is not None:
            self.get_logger().info(f'model {classifier.version} validated in '
                                   f'{(time.monotonic() - t0) * 1000:.0f} ms')
        return _ModelChange(classifier)

    def _on_upload(self, request, response):
        """~/upload_model: store the bytes in models_dir once validated (core.model_upload);
        with `activate`, serve them through the same atomic parameter set a deploy makes."""
        cfg = self.params.config
        sha = request.sha256.strip().lower()

        def validate(path, digest: str) -> None:
            self._load(replace(cfg, model_path=str(path), model_sha256=digest))

        try:
            path = store_uploaded_model(cfg.models_dir, request.file_name, bytes(request.data), sha,
                                        max_file_mb=cfg.limits.max_file_mb, validate=validate)
        except (ModelValidationError, OSError) as exc:
            self.uploads_refused += 1
            current = self.cascade.classifier
            keeps = f'model {current.version} keeps serving' if current else 'no model is serving'
            response.accepted, response.reason = False, f'upload refused, {keeps}: {exc}'
            self.get_logger().warning(response.reason)
            return response
        response.model_path = str(path)
        if request.activate:
            from rclpy.parameter import Parameter
            result = self.set_parameters_atomically([Parameter('model_sha256', value=sha),
                                                     Parameter('model_path', value=str(path))])
            if not result.successful:
                self.uploads_refused += 1
                response.accepted, response.reason = False, result.reason
                return response
        self.uploads_accepted += 1
        response.accepted = True
        self.get_logger().info(f'upload {request.file_name} ({len(request.data)} bytes) stored as {path}'
                               + ('; now serving it' if request.activate else ''))
        return response

    def _on_params(self, cfg: OnnxNodeConfig, changed: frozenset, model: Optional[_ModelChange]) -> None:
        """Runs after a set was accepted: apply the new mode/threshold, swap in the model
        `_load_named_model` validated for this very set."""
        self.cascade.config = cfg.cascade
        if changed & {'stall_timeout_s', 'not_inspectable_after'}:
            self.status.stall_timeout_s = cfg.stall_timeout_s
            self.status.not_inspectable_after = cfg.not_inspectable_after
        if model is None:
            return
        classifier = model.classifier
        old = self.cascade.swap_classifier(classifier)  # one assignment: between two frames
        self._refused_last = False
        if old is None and classifier is None:
            return
        self.swaps_accepted += 1
        self._start_problem = ''
        self.get_logger().info(f'now serving {classifier.version if classifier else "no model"} '
                               f'(was {old.version if old else "no model"})')
        self._announce(classifier, cfg)

    def _announce(self, classifier: Optional[OnnxClassifier], cfg: OnnxNodeConfig) -> None:
        if classifier is not None:
            text = classifier.info.to_json()
        else:
            text = json.dumps({'version': '', 'path': '', 'sha256': '',
                               'problem': self._start_problem or 'model_path is empty'},
                              sort_keys=True)
        self._model_pub.publish(String(data=text))

    # --- frames --------------------------------------------------------------------------
    def _on_frame(self, frame: RGBDFrame, header, received_s: float) -> None:
        result = self.cascade.run(frame)
        latency_ms = (time.monotonic() - received_s) * 1000.0
        if result.final is not None:
            self.status.frame(received_s, result.final.inspected, result.final.status_reason)
        if result.ml is not None:
            self.ml_latency.add(result.ml_ms)
            self._ml_pub.publish(verdict_to_msg(replace(result.ml, latency_ms=latency_ms), header))
        if result.final is not None:
            self._final_pub.publish(verdict_to_msg(replace(result.final, latency_ms=latency_ms), header))
        self.latency.add(latency_ms)
        if result.fallback:
            self.get_logger().warning(f'rule verdict published in place of the model: '
                                      f'{result.fallback}', throttle_duration_sec=10.0)

    # --- cell status ---------------------------------------------------------------------
    def _model_state(self) -> tuple[str, str, str]:
        classifier = self.cascade.classifier
        problem = self._start_problem or (self.last_refusal if self._refused_last else '')
        if problem:
            return MODEL_REFUSED, classifier.version if classifier else '', problem
        if classifier is None:
            return MODEL_NONE, '', ''
        return MODEL_SERVING, classifier.version, ''

    def _publish_status(self) -> None:
        """Publish weld/cell_status when the state, or the model's, changes."""
        cell = self.status.state(time.monotonic())
        model = self._model_state()
        key = (cell.state, *model)
        if key == self._status_sent:
            return
        msg = CellStatus(state=cell.state, detail=cell.detail,
                         seconds_since_frame=float(cell.seconds_since_frame),
                         model_state=model[0], model_version=model[1], model_problem=model[2])
        msg.header.stamp = self.get_clock().now().to_msg()
        if not self._status_pub.publish(msg):
            return  # shutting down: nothing sent, and a log line could not reach /rosout either
        self._status_sent = key
        self.get_logger().info(f'cell status: {cell.state}'
                               + (f' ({cell.detail})' if cell.detail else '')
                               + f'; model {model[0]} {model[1]}'.rstrip())

    # --- diagnostics ---------------------------------------------------------------------
    def diagnostics_values(self) -> dict[str, Any]:
        s = self.cascade.stats
        cfg = self.params.config
        classifier = self.cascade.classifier
        fallback, why = self.cascade.fallback_state()
        if fallback and classifier is None and self._start_problem:
            why = f'{why}: {self._start_problem}'
        values: dict[str, Any] = {
            'mode': cfg.cascade.mode,
            'hybrid_threshold': cfg.cascade.hybrid_threshold,
            'frames': s.frames,
            'frames_rule': s.by_method.get('rule', 0),
            'frames_ml': s.by_method.get('ml', 0),
            'frames_hybrid': s.by_method.get('hybrid', 0),
            'frames_without_verdict': s.no_verdict,
            # Published as not inspected (no bead / no depth / bad frame), never as a class.
            'frames_not_inspected': sum(s.not_inspected.values()),
            **{f'not_inspected.{r}': n for r, n in sorted(s.not_inspected.items())},
            'ml_invocations': s.ml_invocations,
            'ml_invocation_ratio': s.ml_invocation_ratio,
            'ml_errors': s.ml_errors,
            # Frames the model saw through the centre strip because its seam crop found no seam.
            'ml_seam_not_found': classifier.seam_not_found if classifier else 0,
            # Frames whose strip was cut from the rule stage's seam (found with the model's own
            # seam-finder settings) instead of locating the seam again.
            'ml_seam_reused': classifier.seam_reused if classifier else 0,
            'latency_p50_ms': self.latency.percentile(50),
            'latency_p99_ms': self.latency.percentile(99),
            'ml_latency_p50_ms': self.ml_latency.percentile(50),
            'ml_latency_p99_ms': self.ml_latency.percentile(99),
            'swaps_accepted': self.swaps_accepted,
            'swaps_refused': self.swaps_refused,
            'uploads_accepted': self.uploads_accepted,
            'uploads_refused': self.uploads_refused,
            'last_refusal': self.last_refusal,
            'model_version': classifier.version if classifier else '',
            'model_sha256': classifier.info.sha256 if classifier else '',
            'model_providers': ','.join(classifier.info.providers) if classifier else '',
            'rule_fallback_active': fallback,
            'rule_fallback_reason': why,
            'fallback.no_model': s.fallbacks.get(FALLBACK_NO_MODEL, 0),
            'fallback.ml_error': s.fallbacks.get(FALLBACK_ML_ERROR, 0),
            **self.input.diagnostic_values(),
        }
        return values

    def _publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        if values['rule_fallback_active']:
            level, text = WARN, f'rule fallback: {values["rule_fallback_reason"]}'
        else:
            version = values['model_version'] or 'no model'
            level, text = OK, f'{values["mode"]} mode, {version}'
        status = make_status(f'{self.get_name()}: defect classification', text, values, level)
        self._diag_pub.publish(make_array(self.get_clock().now().to_msg(), status))


def main(args=None, **node_kwargs) -> None:
    """Run the node until Ctrl-C; node_kwargs go to OnnxDefectNode (e.g. rule_fn)."""
    # Two groups need two threads: frames keep flowing while a parameter callback loads a
    # model. SteadyExecutor: rclpy's MultiThreadedExecutor would spin a core (executor.py).
    run_node(lambda: OnnxDefectNode(**node_kwargs), args, executor=lambda: SteadyExecutor(num_threads=2))


if __name__ == '__main__':
    main()
