"""The dashboard's one link to ROS: a node in its own rclpy context, spun in a thread.

It subscribes to the cell's results and hands each message, turned into plain values, to
`LiveState`; it calls the capture node's services for the capture screen; it reads the
weld spec from the rule node's parameters; and it keeps which nodes are on the graph, so
the page can say that a node is down. The HTTP app never touches rclpy: it calls the
methods below, which wait on futures that this thread's executor completes.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Optional

from weld_vision_ros.core.spec import WeldSpec
from weld_vision_ros.core.fields import tunable_fields
from weld_vision_ros.ros import codec

from .live import LiveState

VERDICT_TOPIC = 'weld/defect'
BEAD_TOPIC = 'weld/bead'
DEBUG_IMAGE_TOPIC = 'weld/debug_image'
CELL_STATUS_TOPIC = 'weld/cell_status'
DIAGNOSTICS_TOPIC = '/diagnostics'
RULE_NODE = 'rule_defect_node'
ONNX_NODE = 'onnx_defect_node'
CAPTURE_NODE = 'dataset_capture_node'
WATCHED_NODES = (RULE_NODE, ONNX_NODE, CAPTURE_NODE)
SPEC_PARAMS = tuple(f'spec.{name}' for name, _, _ in tunable_fields(WeldSpec))
GRAPH_PERIOD_S = 1.0


class BridgeError(RuntimeError):
    """A ROS request that got no answer (node not running, service timed out)."""


def verdict_fields(msg) -> dict[str, Any]:
    """A WeldDefect as plain values."""
    return {'stamp_s': msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec,
            'frame_id': msg.header.frame_id, 'defect_class': msg.defect_class,
            'confidence': float(msg.confidence), 'method': msg.method, 'model_version': msg.model_version,
            'latency_ms': float(msg.latency_ms), 'status': msg.status, 'status_reason': msg.status_reason,
            'status_detail': msg.status_detail, 'checks_not_made': list(msg.checks_not_made),
            'probabilities': dict(zip(msg.class_names, (float(p) for p in msg.probabilities))),
            'regions': len(msg.regions), **anomaly_fields(msg)}


def anomaly_fields(msg) -> dict[str, Any]:
    """The anomaly model's score of a verdict, where the message carries one (anomaly_score
    >= 0; -1 or no such field: no anomaly model scored the frame)."""
    score = float(getattr(msg, 'anomaly_score', -1.0))
    if score < 0:
        return {}
    return {'anomaly_score': score, 'anomaly_level': getattr(msg, 'anomaly_level', ''),
            'anomaly_model_version': getattr(msg, 'anomaly_model_version', '')}


def bead_fields(msg) -> dict[str, Any]:
    out = {'stamp_s': msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec,
           'valid': bool(msg.valid), 'reason': msg.reason,
           'within_tolerance': bool(msg.within_tolerance), 'score': float(msg.score)}
    for name in ('width_mm', 'width_std_mm', 'width_min_mm', 'width_max_mm', 'height_mm', 'height_max_mm',
                 'undercut_depth_mm', 'seam_length_mm', 'seam_angle_deg'):
        out[name] = float(getattr(msg, name))
    return out


class RosBridge:
    """start() spins the bridge node in a background thread; stop() ends it."""

    def __init__(self, live: LiveState, namespace: str = '', debug_image: bool = True,
                 service_timeout_s: float = 5.0) -> None:
        self.live = live
        self.namespace = namespace.strip('/')
        self.debug_image = debug_image
        self.service_timeout_s = service_timeout_s
        self._nodes_seen: dict[str, bool] = {n: False for n in WATCHED_NODES}
        self._spec: Optional[dict[str, float]] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self.error = ''
        self.messages = 0

    def _fq(self, node: str) -> str:
        return f'/{self.namespace}/{node}' if self.namespace else f'/{node}'

    # --- lifecycle -----------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('weld_dashboard', namespace=self.namespace or None,
                                      context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._subscribe()
        from weld_vision_ros.srv import CaptureFrame, GetDatasetCounts
        self._capture_client = self.node.create_client(CaptureFrame, f'{self._fq(CAPTURE_NODE)}/capture')
        self._counts_client = self.node.create_client(GetDatasetCounts, f'{self._fq(CAPTURE_NODE)}/counts')
        from rcl_interfaces.srv import GetParameters
        self._spec_client = self.node.create_client(GetParameters, f'{self._fq(RULE_NODE)}/get_parameters')
        self.node.create_timer(GRAPH_PERIOD_S, self._check_graph)
        self._thread = threading.Thread(target=self._spin, name='weld_dashboard_ros', daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.2)
        except (ExternalShutdownException, KeyboardInterrupt):
            pass
        except Exception as exc:  # noqa: BLE001 - the page reports it instead of a dead thread
            self.error = f'{type(exc).__name__}: {exc}'

    def stop(self) -> None:
        if self._thread is None:
            return
        self._rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)
        self.executor.shutdown()
        self.node.destroy_node()
        self._thread = None

    # --- subscriptions ---------------------------------------------------------------------
    def _subscribe(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from weld_vision_ros.msg import BeadMeasurement, CellStatus, WeldDefect
        from weld_vision_ros.ros.qos import latched_qos, results_qos
        n = self.node
        n.create_subscription(WeldDefect, VERDICT_TOPIC, self._on_verdict, results_qos())
        n.create_subscription(BeadMeasurement, BEAD_TOPIC, self._on_bead, results_qos())
        # Diagnostics: reliable, like the publishers (results_qos); a late one is still news.
        n.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, results_qos())
        # Latched on the publishers' side: a dashboard started later still learns the state.
        n.create_subscription(CellStatus, CELL_STATUS_TOPIC, self._on_cell_status, latched_qos())
        n.create_subscription(String, f'{self._fq(ONNX_NODE)}/active_model', self._on_active_model,
                              latched_qos())
        if self.debug_image:
            # Only the newest image matters; depth 1 so a busy dashboard never queues frames.
            n.create_subscription(Image, DEBUG_IMAGE_TOPIC, self._on_image,
                                  QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                             reliability=ReliabilityPolicy.RELIABLE))

    def _on_verdict(self, msg) -> None:
        self.messages += 1
        self.live.on_verdict(verdict_fields(msg))

    def _on_bead(self, msg) -> None:
        self.live.on_bead(bead_fields(msg))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            self.live.on_diagnostics(status.name, int.from_bytes(status.level, 'little')
                                     if isinstance(status.level, bytes) else int(status.level),
                                     status.message, {kv.key: kv.value for kv in status.values})

    def _on_cell_status(self, msg) -> None:
        self.live.on_cell_status({'state': msg.state, 'detail': msg.detail,
                                  'seconds_since_frame': float(msg.seconds_since_frame),
                                  'model_state': msg.model_state, 'model_version': msg.model_version,
                                  'model_problem': msg.model_problem})

    def _on_active_model(self, msg) -> None:
        try:
            info = json.loads(msg.data)
        except ValueError:
            info = {'problem': f'unreadable active_model: {msg.data[:80]!r}'}
        self.live.on_active_model(info if isinstance(info, dict) else {})

    def _on_image(self, msg) -> None:
        try:
            self.live.image.offer(codec.decode_color(msg))
        except codec.ImageEncodingError:
            pass  # a debug image we cannot show is no reason to stop showing results

    # --- graph ------------------------------------------------------------------------------
    def _check_graph(self) -> None:
        names = {(ns.rstrip('/') + '/' + name) for name, ns in self.node.get_node_names_and_namespaces()}
        for node in WATCHED_NODES:
            self._nodes_seen[node] = self._fq(node) in names
        if self._spec is None and self._nodes_seen[RULE_NODE] and self._spec_client.service_is_ready():
            from rcl_interfaces.srv import GetParameters
            future = self._spec_client.call_async(GetParameters.Request(names=list(SPEC_PARAMS)))
            future.add_done_callback(self._on_spec)

    def _on_spec(self, future) -> None:
        answer = future.result()
        if answer is None or len(answer.values) != len(SPEC_PARAMS):
            return
        spec = {name.split('.', 1)[1]: float(v.double_value) for name, v in zip(SPEC_PARAMS, answer.values)}
        self._spec = spec
        self.live.on_spec(spec)

    def nodes(self) -> dict[str, bool]:
        return dict(self._nodes_seen)

    # --- services ---------------------------------------------------------------------------
    def _call(self, client, request, what: str):
        if not client.service_is_ready() and not client.wait_for_service(timeout_sec=self.service_timeout_s):
            raise BridgeError(f'{what}: no service {client.srv_name}; is {CAPTURE_NODE} running?')
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(self.service_timeout_s):
            future.cancel()
            raise BridgeError(f'{what}: {client.srv_name} did not answer within {self.service_timeout_s} s')
        return future.result()

    def capture(self, label: str, weld_id: str = '') -> dict[str, Any]:
        from weld_vision_ros.srv import CaptureFrame
        r = self._call(self._capture_client, CaptureFrame.Request(label=label, weld_id=weld_id), 'capture')
        return {'success': bool(r.success), 'message': r.message, 'class_count': int(r.class_count),
                'stamp_s': r.stamp.sec + 1e-9 * r.stamp.nanosec}

    def dataset_counts(self) -> dict[str, Any]:
        from weld_vision_ros.srv import GetDatasetCounts
        r = self._call(self._counts_client, GetDatasetCounts.Request(), 'dataset counts')
        return {'bag_name': r.bag_path.rstrip('/').rsplit('/', 1)[-1],
                'counts': dict(zip(r.class_names, (int(c) for c in r.counts))), 'total': int(r.total)}

    def status(self) -> dict[str, Any]:
        return {'running': self._thread is not None and self._thread.is_alive(), 'error': self.error,
                'nodes': self.nodes(), 'messages': self.messages, 'spec': self._spec}
