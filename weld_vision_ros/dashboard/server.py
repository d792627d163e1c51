"""`weld-vision dashboard`: serve the operator dashboard.

    weld-vision dashboard --token-file /etc/weld/dashboard.token
    weld-vision dashboard --no-ros --registry runs/registry.sqlite     # a training desktop

Listens on 127.0.0.1 unless --host says otherwise. Actions need the token: --token,
--token-file, or WELD_DASHBOARD_TOKEN; with none given, one is generated and printed.
The page and the API name datasets, runs and models only inside --datasets-dir,
--bags-dir, --runs-dir and --models-dir.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Optional, Sequence

TOKEN_ENV = 'WELD_DASHBOARD_TOKEN'
DEFAULT_PORT = 8090
LOOPBACK = ('127.0.0.1', 'localhost', '::1')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='weld-vision dashboard', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--host', default='127.0.0.1', help='address to listen on (default 127.0.0.1: this machine only)')
    p.add_argument('--allowed-host', action='append', default=[], metavar='NAME',
                   help='a Host name the page may be reached by, besides localhost (repeatable; with a '
                        'non-loopback --host and none given, any)')
    p.add_argument('--port', type=int, default=DEFAULT_PORT, help=f'TCP port (default {DEFAULT_PORT})')
    p.add_argument('--token', default=None, help=f'token for actions (default: ${TOKEN_ENV}, else generated)')
    p.add_argument('--token-file', type=Path, default=None, help='read the token from this file')
    p.add_argument('--datasets-dir', type=Path, default=Path('datasets'), help='dataset folders training may use')
    p.add_argument('--runs-dir', type=Path, default=Path('runs'), help='where training jobs write their runs')
    p.add_argument('--models-dir', type=Path, default=Path('models'), help='model files that may be deployed')
    p.add_argument('--bags-dir', type=Path, default=Path('bags'),
                   help="folder of recorded bags a job may train on (e.g. the parent of the capture "
                        "node's bag_dir, where its finished bags lie)")
    p.add_argument('--review-dir', type=Path, default=Path('review'),
                   help="the review recorder's folder (its review_dir), for the review screen")
    p.add_argument('--registry', type=Path, default=None,
                   help='registry file (default: $WELD_REGISTRY, else <runs-dir>/registry.sqlite)')
    p.add_argument('--no-ros', action='store_true', help='serve training and models only (no ROS)')
    p.add_argument('--namespace', default='', help='namespace of the cell nodes')
    p.add_argument('--onnx-node', default=None,
                   help='node that deploys go to (default: onnx_defect_node in --namespace)')
    p.add_argument('--no-debug-image', action='store_true', help='do not subscribe to weld/debug_image')
    p.add_argument('--jpeg-fps', type=float, default=5.0, help='most debug images encoded per second')
    p.add_argument('--min-samples', type=int, default=20, help='per-class goal shown on the capture screen')
    return p


def read_token(args: argparse.Namespace) -> tuple[str, bool]:
    """(token, generated)."""
    if args.token:
        return args.token, False
    if args.token_file:
        text = args.token_file.read_text().strip()
        if not text:
            raise ValueError(f'token file {args.token_file} is empty')
        return text, False
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV], False
    return secrets.token_urlsafe(18), True


def onnx_node(args: argparse.Namespace) -> str:
    """The deploy target: --onnx-node, else the ONNX node in the cell's namespace."""
    if args.onnx_node:
        return args.onnx_node if args.onnx_node.startswith('/') else '/' + args.onnx_node
    ns = args.namespace.strip('/')
    return f'/{ns}/onnx_defect_node' if ns else '/onnx_defect_node'


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        token, generated = read_token(args)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    import uvicorn

    from weld_vision_ros.dashboard.app import DashboardContext, create_app
    from weld_vision_ros.dashboard.live import LiveConfig, LiveState
    from weld_vision_ros.dashboard.models import ModelActions
    from weld_vision_ros.dashboard.paths import Folders
    from weld_vision_ros.dashboard.training_jobs import TrainingJobs

    registry = args.registry or (Path(os.environ['WELD_REGISTRY']) if os.environ.get('WELD_REGISTRY')
                                 else args.runs_dir / 'registry.sqlite')
    folders = Folders(args.datasets_dir, args.runs_dir, args.models_dir, registry, args.bags_dir).resolved()
    folders.runs.mkdir(parents=True, exist_ok=True)     # jobs write there; the others are only read
    live = LiveState(LiveConfig(jpeg_max_fps=args.jpeg_fps))
    bridge = None
    if not args.no_ros:
        from weld_vision_ros.bringup import use_default_dds_profile
        from weld_vision_ros.dashboard.bridge import RosBridge
        use_default_dds_profile()
        bridge = RosBridge(live, namespace=args.namespace, debug_image=not args.no_debug_image)
        bridge.start()
    jobs = TrainingJobs(folders)
    from weld_vision_ros.dashboard.review import ReviewBags
    review = ReviewBags(args.review_dir.expanduser().resolve())
    ctx = DashboardContext(token=token, folders=folders, live=live, jobs=jobs,
                           models=ModelActions(folders, node=onnx_node(args)), bridge=bridge,
                           min_samples_per_class=args.min_samples, review=review)
    from weld_vision_ros.dashboard.app import LOOPBACK_HOSTS
    if args.host in LOOPBACK or args.allowed_host:
        allowed = list(LOOPBACK_HOSTS) + list(args.allowed_host)
        if args.host not in LOOPBACK:
            allowed.append(args.host)
    else:
        allowed = None
    app = create_app(ctx, allowed_hosts=allowed)
    if args.host not in LOOPBACK:
        print(f'[dashboard] listening on {args.host}: reachable from the network; reads need no token',
              file=sys.stderr, flush=True)
    if generated:
        print(f'[dashboard] token for actions (generated): {token}', flush=True)
    print(f'[dashboard] http://{args.host}:{args.port}/ (API: /openapi.json; ROS '
          f'{"off" if bridge is None else "on"}; registry {folders.registry})', flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level='warning', timeout_graceful_shutdown=2)
    finally:
        ctx.stopping.set()
        jobs.shutdown()
        if bridge is not None:
            bridge.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
