"""The dashboard's HTTP app: the page, and the JSON API it is built on (OpenAPI at
/openapi.json), so that a plant's MES or a script reads the same results and triggers the
same actions.

Reading needs nothing; every request that changes something (capture, alarm
acknowledgement, training start/cancel, promote, delete, deploy, roll back) needs the token
given at start, as `Authorization: Bearer <token>` or `X-Weld-Token: <token>`. The app is
built from ROS-free parts; `bridge` is None where no ROS runs (a training desktop), and
the live and capture endpoints then answer 503 saying so.
"""
from __future__ import annotations

import asyncio
import hmac
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from weld_training.registry import Registry, RegistryError
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES

from .live import LiveState
from .models import ModelActionError, ModelActions
from .paths import Folders, PathNotAllowed
from .training_jobs import JobError, JobRequest, TrainingJobs

STATIC = Path(__file__).resolve().parent / 'static'
MJPEG_BOUNDARY = 'weldframe'
MJPEG_RESEND_S = 1.0     # the last frame again after this long without a new one
FOXGLOVE_URL = 'https://app.foxglove.dev'


@dataclass
class DashboardContext:
    """What the app serves: the live state, the ROS bridge (None: no ROS), jobs and models."""

    token: str
    folders: Folders
    live: LiveState
    jobs: TrainingJobs
    models: ModelActions
    bridge: Any = None
    review: Any = None          # review.ReviewBags, None: no review screen
    class_names: tuple[str, ...] = DEFAULT_CLASS_NAMES
    min_samples_per_class: int = 20
    stopping: threading.Event = field(default_factory=threading.Event)


# --- request bodies -----------------------------------------------------------------------
class CaptureBody(BaseModel):
    label: str = Field(description='class name, one of the capture node\'s labels')
    weld_id: str = Field('', description='weld identifier; empty keeps the current one')


class ReviewLabelBody(BaseModel):
    stamp_ns: int = Field(description="the frame's stamp [ns], as in the bag's review.yaml")
    label: str = Field(description='class name')


class JobBody(BaseModel):
    source: str = Field('dataset', description="'dataset' (weld-train train) or 'bags' (weld-train pipeline)")
    dataset: str = Field('', description='dataset folder name inside the configured datasets folder')
    bags: list[str] = Field(default_factory=list, description='bag names inside the configured bags folder')
    model: str = 'mobilenet_v3_small'
    epochs: int = 10
    channels: str = 'rgbd'
    overrides: list[str] = Field(default_factory=list, description='config updates key=value (weld-train --set)')
    name: str = Field('', description='run folder name (default job-<time>)')


def _lifespan(ctx: DashboardContext):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        ctx.stopping.set()   # open MJPEG streams end instead of holding the shutdown up
    return lifespan


LOOPBACK_HOSTS = ('127.0.0.1', 'localhost', '::1', '[::1]')


def create_app(ctx: DashboardContext, allowed_hosts: Optional[Sequence[str]] = None) -> FastAPI:
    """allowed_hosts: Host headers served (others get 400), so that a web page elsewhere cannot
    reach a localhost dashboard through DNS rebinding; None serves any."""
    if not ctx.token:
        raise ValueError('the dashboard needs a token for its actions')
    app = FastAPI(title='weld_vision_ros dashboard',
                  description='Live inspection, dataset capture, training jobs and the model registry of '
                              'the weld cell. Requests that change something need the token '
                              '(Authorization: Bearer <token> or X-Weld-Token).',
                  version='1', docs_url=None, redoc_url=None, lifespan=_lifespan(ctx))
    app.state.ctx = ctx
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    def require_token(authorization: Optional[str] = Header(None),
                      x_weld_token: Optional[str] = Header(None)) -> None:
        given = x_weld_token or ''
        if not given and authorization and authorization.lower().startswith('bearer '):
            given = authorization[7:].strip()
        if not given:
            raise HTTPException(401, 'this action needs the dashboard token (Authorization: Bearer <token> '
                                     'or X-Weld-Token header)')
        if not hmac.compare_digest(given.encode(), ctx.token.encode()):
            raise HTTPException(403, 'wrong token')

    def need_bridge():
        if ctx.bridge is None:
            raise HTTPException(503, 'this dashboard runs without ROS (no bridge): live results and '
                                     'capture are not available here')
        return ctx.bridge

    from .review import ReviewScreenError

    @app.exception_handler(PathNotAllowed)
    @app.exception_handler(JobError)
    @app.exception_handler(ReviewScreenError)
    async def _bad_request(request: Request, exc: Exception):
        return JSONResponse({'detail': str(exc)}, status_code=400)

    @app.exception_handler(RegistryError)
    @app.exception_handler(ModelActionError)
    async def _conflict(request: Request, exc: Exception):
        return JSONResponse({'detail': str(exc)}, status_code=409)

    from .bridge import BridgeError  # no rclpy import at module level there

    @app.exception_handler(BridgeError)
    async def _unavailable(request: Request, exc: Exception):
        return JSONResponse({'detail': str(exc)}, status_code=503)

    token = [Depends(require_token)]

    # --- page -------------------------------------------------------------------------------
    @app.get('/', include_in_schema=False)
    def index():
        return FileResponse(STATIC / 'index.html')

    app.mount('/static', StaticFiles(directory=STATIC), name='static')

    # --- status -----------------------------------------------------------------------------
    @app.get('/api/status', summary='What is reachable: ROS bridge, nodes, registry')
    def status() -> dict[str, Any]:
        try:
            Registry(ctx.folders.registry)
            registry = {'reachable': True, 'problem': ''}
        except Exception as exc:  # noqa: BLE001 - the page says what is wrong
            registry = {'reachable': False, 'problem': f'{type(exc).__name__}: {exc}'}
        ros = ctx.bridge.status() if ctx.bridge is not None else {
            'running': False, 'error': 'started without ROS', 'nodes': {}}
        return {'ros': ros, 'registry': registry, 'foxglove_url': FOXGLOVE_URL,
                'folders': {'datasets': ctx.folders.datasets.name, 'runs': ctx.folders.runs.name,
                            'models': ctx.folders.models.name,
                            'bags': ctx.folders.bags.name if ctx.folders.bags else None}}

    @app.get('/api/auth/check', dependencies=token, summary='Check a token (200 when right)')
    def auth_check() -> dict[str, bool]:
        return {'ok': True}

    # --- live -------------------------------------------------------------------------------
    @app.get('/api/live', summary='Latest verdict, bead, statistics, cell status, alarm, history')
    def live() -> dict[str, Any]:
        snap = ctx.live.snapshot()
        snap['ros_running'] = ctx.bridge is not None
        return snap

    @app.post('/api/live/alarm/ack', dependencies=token, summary='Acknowledge the stop alarm')
    def ack_alarm() -> dict[str, bool]:
        return {'acknowledged': ctx.live.acknowledge_alarm()}

    @app.get('/api/live/image.jpg', summary='The newest annotated debug image (JPEG)',
             response_class=Response)
    def image_jpg():
        jpeg, seq = ctx.live.image.latest()
        if jpeg is None:
            raise HTTPException(404, 'no debug image yet (is the rule node publishing weld/debug_image?)')
        return Response(jpeg, media_type='image/jpeg', headers={'Cache-Control': 'no-store',
                                                                'X-Frame-Seq': str(seq)})

    @app.get('/api/live/stream.mjpeg', summary='The annotated debug image as MJPEG, rate-limited',
             response_class=StreamingResponse)
    async def stream(request: Request):
        period = ctx.live.image.min_period_s

        async def frames():
            # The newest frame whenever there is a new one; with none (a stopped camera) the
            # last one again every RESEND_S, since a browser shows a part of the stream only
            # once more data follows it.
            sent, sent_at = -1, 0.0
            while not ctx.stopping.is_set() and not await request.is_disconnected():
                jpeg, seq = await run_in_threadpool(ctx.live.image.latest)
                now = time.monotonic()
                if jpeg is not None and (seq != sent or now - sent_at >= MJPEG_RESEND_S):
                    sent, sent_at = seq, now
                    yield (f'--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n'
                           f'Content-Length: {len(jpeg)}\r\n\r\n').encode() + jpeg + b'\r\n'
                await asyncio.sleep(period)
        return StreamingResponse(frames(), media_type=f'multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}',
                                 headers={'Cache-Control': 'no-store'})

    # --- capture ----------------------------------------------------------------------------
    @app.get('/api/capture/counts', summary="The dataset bag's per-class counts and the goal")
    def capture_counts() -> dict[str, Any]:
        out = need_bridge().dataset_counts()
        out['min_samples_per_class'] = ctx.min_samples_per_class
        out['missing'] = {c: max(0, ctx.min_samples_per_class - n) for c, n in out['counts'].items()}
        return out

    @app.get('/api/capture/labels', summary='The labels a capture may carry')
    def capture_labels() -> dict[str, Any]:
        return {'labels': list(ctx.class_names), 'keys': {str(i + 1): c for i, c in enumerate(ctx.class_names)},
                'min_samples_per_class': ctx.min_samples_per_class}

    @app.post('/api/capture', dependencies=token, summary='Write the latest frame with this label into the bag')
    def capture(body: CaptureBody) -> dict[str, Any]:
        result = need_bridge().capture(body.label, body.weld_id)
        if not result['success']:
            return JSONResponse(result, status_code=409)
        return result

    # --- review -----------------------------------------------------------------------------
    def need_review():
        if ctx.review is None:
            raise HTTPException(503, 'this dashboard has no review folder (--review-dir)')
        return ctx.review

    @app.get('/api/review/bags', summary="The flywheel's review bags, with how many frames are labelled")
    def review_bags() -> list[dict[str, Any]]:
        return need_review().list_bags()

    @app.get('/api/review/bags/{name}', summary="A review bag's frames: verdicts, reasons, labels")
    def review_bag(name: str) -> dict[str, Any]:
        return need_review().entries(name)

    @app.get('/api/review/bags/{name}/frames/{stamp_ns}.jpg', response_class=Response,
             summary='One frame of a review bag (JPEG)')
    def review_frame(name: str, stamp_ns: int):
        return Response(need_review().frame_jpeg(name, stamp_ns), media_type='image/jpeg')

    @app.post('/api/review/bags/{name}/labels', dependencies=token,
              summary="Label one frame into the bag's labels.yaml")
    def review_label(name: str, body: ReviewLabelBody) -> dict[str, Any]:
        return need_review().label(name, body.stamp_ns, body.label)

    # --- training ---------------------------------------------------------------------------
    @app.get('/api/training/datasets', summary='Dataset folders training may use')
    def datasets() -> list[dict[str, Any]]:
        return ctx.jobs.datasets()

    @app.get('/api/training/bags', summary='Recorded bags a job may extract a dataset from')
    def bags() -> list[dict[str, Any]]:
        return ctx.jobs.bags()

    @app.get('/api/training/jobs', summary='Training jobs and registry runs with progress')
    def jobs() -> list[dict[str, Any]]:
        return ctx.jobs.list_jobs()

    @app.post('/api/training/jobs', dependencies=token, status_code=201,
              summary='Start weld-train train as a separate process')
    def start_job(body: JobBody) -> dict[str, Any]:
        job = ctx.jobs.start(JobRequest(dataset=body.dataset, source=body.source, bags=tuple(body.bags),
                                        model=body.model, epochs=body.epochs,
                                        channels=body.channels, overrides=tuple(body.overrides),
                                        name=body.name))
        return ctx.jobs.describe(job)

    @app.get('/api/training/jobs/{job_id}', summary='One job: progress, ETA, curves, log tail, report')
    def job(job_id: str) -> dict[str, Any]:
        return ctx.jobs.describe(ctx.jobs.get(job_id), curves=True)

    @app.post('/api/training/jobs/{job_id}/cancel', dependencies=token, summary='Cancel a running job')
    def cancel_job(job_id: str) -> dict[str, Any]:
        return ctx.jobs.cancel(job_id)

    @app.get('/api/training/runs/{run_id}', summary='A registry run with curves and report')
    def run(run_id: str) -> dict[str, Any]:
        return ctx.jobs.run_detail(run_id)

    # --- models -----------------------------------------------------------------------------
    @app.get('/api/models', summary='Registered models with metrics')
    def models() -> dict[str, Any]:
        return {'models': ctx.models.list_models(), 'node': ctx.models.node,
                'deploy_history': ctx.models.deploy_history()}

    @app.get('/api/models/compare', summary='Metrics of two or more models side by side')
    def compare(versions: list[str] = Query(...)) -> dict[str, Any]:
        return ctx.models.compare(versions)

    @app.post('/api/models/rollback', dependencies=token,
              summary='Deploy the model the node served before the current one')
    def rollback() -> dict[str, Any]:
        return ctx.models.rollback()

    @app.post('/api/models/{version}/promote', dependencies=token, summary='Make a model the active one')
    def promote(version: str) -> dict[str, Any]:
        return ctx.models.promote(version)

    @app.delete('/api/models/{version}', dependencies=token, summary='Delete a model (not the active one)')
    def delete(version: str) -> dict[str, Any]:
        return ctx.models.delete(version)

    @app.post('/api/models/{version}/deploy', dependencies=token,
              summary="Deploy to the running ONNX node; the node's answer")
    def deploy(version: str) -> dict[str, Any]:
        return ctx.models.deploy(version)

    return app
