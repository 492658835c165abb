"""The FastAPI application of ``fer_core.serve`` (docs/api.md).

Images are classified by the same code as ``fer_core.predict`` (:func:`fer_core.analysis.photos.classify_image`,
answered as :func:`fer_core.analysis.photos.image_entry`: one JSON schema for both), videos by the same pipeline as
the Video page (:mod:`fer_core.serve.videos`). Limits: a body size per route, the image decoder's pixel limit, a
number of image requests in flight (then 503 with Retry-After), a time limit per request; every error is problem
details (:mod:`fer_core.serve.problems`).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..analysis.photos import classify_image, heatmap_png, image_entry
from ..faces.detection import DEFAULT_DETECTOR, DETECTORS, make_detector
from ..faces.images import ImageLoadError
from ..labels import EMOTIONS
from ..model.artifacts import read_model_card
from ..model.backends import set_intra_op_threads
from ..model.inference import Predictor
from ..model.weights import ModelOutputError
from ..video.codec import VIDEO_EXTENSIONS, VideoError
from .problems import Problem, install_handlers, problem_response
from .settings import ServeSettings
from .videos import VideoJobs

VERSION = "1"
RAW_TYPES = ("image/", "application/octet-stream")


class _Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("fer_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("fer_request_seconds", "Request latency", ["route"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.faces = Counter("fer_faces_total", "Faces classified in images", registry=self.registry)
        self.images = Counter("fer_images_total", "Images classified", registry=self.registry)
        self.in_flight = Gauge("fer_image_requests_in_flight", "Image requests being classified",
                               registry=self.registry)
        self.jobs = Gauge("fer_video_jobs", "Video jobs by status", ["status"], registry=self.registry)


def create_app(settings: ServeSettings | None = None) -> FastAPIOffline:
    """The application; the model is loaded (and checked on a face) when it starts."""
    settings = settings or ServeSettings()
    state: dict = {}
    metrics = _Metrics()
    admission = {"waiting": 0}
    # Each worker thread runs the classifier with its share of the cores: two requests at once on two cores is
    # one core each, not four threads fighting over two.
    threads_each = max(1, (os.cpu_count() or 1) // settings.max_in_flight)
    pool = ThreadPoolExecutor(max_workers=settings.max_in_flight, thread_name_prefix="fer-image",
                              initializer=set_intra_op_threads, initargs=(threads_each,))
    local = threading.local()

    @asynccontextmanager
    async def lifespan(app):
        predictor = Predictor.from_checkpoint(settings.weights)
        predictor.classify_crops([np.zeros((48, 48), np.uint8)], tta=False)  # ready = it answers a face
        state["predictor"] = predictor
        state["jobs"] = VideoJobs(settings.jobs_dir, lambda: state["predictor"], settings.video_workers,
                                  settings.job_ttl_seconds, settings.max_queued_videos)
        yield
        state["jobs"].shutdown()
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPIOffline(title="Facial expression recognizer", version=VERSION, lifespan=lifespan,
                         description="Every face in an image or a video, with its expression and calibrated "
                                     "probabilities. The same results as `fer_core.predict --json` and the Video page.")
    install_handlers(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])

    def jobs() -> VideoJobs:
        return state["jobs"]

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """API keys, the body size of each route, and the request metrics."""
        started = time.perf_counter()
        path = request.url.path
        protected = path.startswith("/v1/") or path == "/metrics"
        if protected and settings.api_keys and not _key_ok(request, settings.api_keys):
            response = problem_response(401, "This server needs an API key: send it as `X-API-Key: <key>` or "
                                             "`Authorization: Bearer <key>`.", path,
                                        {"WWW-Authenticate": "Bearer"})
        else:
            limit = settings.max_video_bytes if path.startswith("/v1/videos") else settings.max_image_bytes
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                response = problem_response(413, f"The body is larger than this route takes ({limit // 2**20} MB).",
                                            path)
            else:
                request.state.body_limit = limit
                response = await call_next(request)
        route = request.scope.get("route")
        label = getattr(route, "path", "unmatched")
        metrics.requests.labels(label, request.method, str(response.status_code)).inc()
        metrics.latency.labels(label).observe(time.perf_counter() - started)
        return response

    # ---- images ---------------------------------------------------------------------------------------------
    def detector_for(name: str, min_face: int):
        """One detector per worker thread and setting (OpenCV and ONNX Runtime detector state is per thread)."""
        cache = getattr(local, "detectors", None)
        if cache is None:
            cache = local.detectors = {}
        if (name, min_face) not in cache:
            cache[(name, min_face)] = make_detector(name, min_face_size=min_face)
        return cache[(name, min_face)]

    def classify(files: list[tuple[str, bytes]], tta: bool, detector: str, min_face: int, whole_image: bool,
                 uncertain_below: float | None, explain: str | None) -> list[dict]:
        predictor = state["predictor"]
        entries = []
        for name, data in files:
            source = io.BytesIO(data)
            source.name = name
            try:
                _, gray, faces = classify_image(predictor, detector_for(detector, min_face), source, tta=tta,
                                                whole_image_if_no_face=whole_image)
            except ImageLoadError as e:
                entries.append({"path": name, "faces": [], "error": str(e)})
                continue
            entry = image_entry(name, faces, uncertain_below)
            if explain:
                for face, prediction in zip(entry["faces"], faces):
                    target = prediction.label if explain == "predicted" else explain
                    face["explanation"] = {"class": target, "png_base64": base64.b64encode(
                        heatmap_png(predictor, gray, prediction, target)).decode()}
            entries.append(entry)
            metrics.faces.inc(len(faces))
        metrics.images.inc(len(files))
        return entries

    async def read_files(request: Request) -> list[tuple[str, bytes]]:
        """The images of a request: the file parts of a multipart form, or the raw body (an image/* or
        octet-stream)."""
        kind = request.headers.get("content-type", "")
        limit = getattr(request.state, "body_limit", settings.max_image_bytes)
        if kind.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=settings.max_images + 1, max_fields=settings.max_images,
                                          max_part_size=limit)
            except Exception as e:  # noqa: BLE001 - Starlette's parser errors: the form is malformed or too large
                raise Problem(400, f"The multipart form cannot be read ({str(e)[:120] or type(e).__name__}).")
            parts = [(k, v) for k, v in form.multi_items() if hasattr(v, "read")]
            if len(parts) > settings.max_images:
                raise Problem(413, f"At most {settings.max_images} images per request.")
            files = [(v.filename or k, await v.read()) for k, v in parts]
            if not files:
                raise Problem(422, "The form holds no file: send the images as file parts (e.g. curl -F "
                                   "files=@photo.jpg).")
        elif kind.startswith(RAW_TYPES) or not kind:
            body = await _body(request, limit)
            if not body:
                raise Problem(422, "The body is empty: send an image (raw, Content-Type image/jpeg, ...) or a "
                                   "multipart form of images.")
            files = [(request.query_params.get("name") or "image", body)]
        else:
            raise Problem(415, f"Send images as multipart/form-data or as a raw image body, not {kind[:60]}.")
        if len(files) > settings.max_images:
            raise Problem(413, f"At most {settings.max_images} images per request.")
        return files

    @app.post("/v1/images", summary="Classify every face of one or more images")
    async def images(request: Request,
                     tta: bool = Query(True, description="average six views of each face (mirrored, zoomed)"),
                     detector: Literal[DETECTORS] = Query(DEFAULT_DETECTOR),  # type: ignore[valid-type]
                     min_face_size: int = Query(20, ge=10, le=4000, description="smallest face, in pixels"),
                     whole_image: bool = Query(False, description="no face found: classify the whole image"),
                     uncertain_below: float | None = Query(None, gt=0, lt=1, description="label faces under this "
                                                           "confidence 'uncertain'"),
                     explain: str | None = Query(None, description="'predicted' or a class: a heatmap PNG (base64) "
                                                 "of where the model looked, per face")):
        """Per image, every face (left to right) with its box, landmarks, label and calibrated probabilities:
        the JSON of `fer_core.predict --json`. An image that cannot be read has an `error` and no faces."""
        if explain is not None and explain != "predicted" and explain not in EMOTIONS:
            raise Problem(422, f"explain must be 'predicted' or one of {', '.join(EMOTIONS)}, not {explain[:40]!r}.")
        files = await read_files(request)
        if admission["waiting"] >= settings.max_waiting:
            raise Problem(503, f"{settings.max_waiting} requests are waiting already; try again in a second.",
                          {"Retry-After": "1"})
        started = time.monotonic()
        admission["waiting"] += 1
        try:  # the pool's queue is the line; a request that waited and ran too long is answered 503
            future = asyncio.get_running_loop().run_in_executor(
                pool, classify, files, tta, detector, min_face_size, whole_image, uncertain_below, explain)
            metrics.in_flight.inc()
            entries = await asyncio.wait_for(asyncio.shield(future), settings.request_seconds)
        except asyncio.TimeoutError:
            raise Problem(503, f"The images were not classified within {settings.request_seconds:.0f} s "
                               f"({time.monotonic() - started:.0f} s in line and at work); send fewer or smaller "
                               "ones, or try again.", {"Retry-After": "5"}) from None
        except ModelOutputError as e:
            raise Problem(422, str(e)) from None
        finally:
            admission["waiting"] -= 1
            metrics.in_flight.dec()
        if all(e.get("error") for e in entries):
            raise Problem(422, "; ".join(e["error"] for e in entries)[:500])
        return entries

    # ---- videos ---------------------------------------------------------------------------------------------
    @app.post("/v1/videos", status_code=202, summary="Analyse a video in the background")
    async def post_video(request: Request, annotated: bool = Query(False, description="also write an annotated mp4"),
                         fps: float | None = Query(None, gt=0, le=120, description="frames analysed per second "
                                                   "(default: the Video page's)")):
        """A job id at once (202); the analysis runs in the server's video pool. Poll `GET /v1/videos/{id}`."""
        try:
            job_id, folder = jobs().new_folder()
        except OverflowError as e:
            raise Problem(503, f"{e}; try again later.", {"Retry-After": "30"}) from None
        try:
            name = await _save_video(request, folder, settings.max_video_bytes)
            status = jobs().submit(job_id, folder / f"input{_suffix(name)}", name, annotated,
                                   "auto" if fps is None else fps)
        except VideoError as e:
            shutil.rmtree(folder, ignore_errors=True)
            raise Problem(422, f"Not a readable video: {e}") from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return JSONResponse(_links(status), status_code=202, headers={"Location": f"/v1/videos/{job_id}"})

    @app.get("/v1/videos/{job_id}", summary="Status, progress and ETA of a video job")
    async def video_status(job_id: str):
        return _links(_job(job_id))

    @app.get("/v1/videos/{job_id}/faces", summary="Every analysed frame and face of a finished job")
    async def video_faces(job_id: str, request: Request,
                          format: Literal["json", "csv", "parquet"] | None = Query(None)):
        """One row per analysed frame and face (the Video page's CSV columns), as JSON, CSV or Parquet (by `format`
        or the Accept header)."""
        status = _job(job_id)
        if status["status"] != "done":
            raise Problem(409, f"The job is {status['status']}: its faces are there once it is done.")
        wanted = format or _accepted(request.headers.get("accept", ""))
        table = jobs().faces(job_id)
        if wanted == "csv":
            return Response(table.to_csv(index=False), media_type="text/csv")
        if wanted == "parquet":
            return FileResponse(jobs().folder / job_id / "faces.parquet", media_type="application/vnd.apache.parquet",
                                filename=f"{job_id}.parquet")
        return Response(table.to_json(orient="records"), media_type="application/json")

    @app.get("/v1/videos/{job_id}/annotated", summary="The annotated mp4 of a finished job")
    async def video_annotated(job_id: str):
        status = _job(job_id)
        path = jobs().annotated(job_id)
        if status["status"] != "done" or not path.is_file():
            raise Problem(404 if status["status"] == "done" else 409,
                          "No annotated video: post the video with ?annotated=true." if status["status"] == "done"
                          else f"The job is {status['status']}.")
        return FileResponse(path, media_type="video/mp4", filename=f"{status['name']}_annotated.mp4")

    @app.delete("/v1/videos/{job_id}", status_code=204, summary="Stop a job and remove it and its files")
    async def delete_video(job_id: str):
        if not jobs().delete(job_id):
            raise Problem(404, "No such video job (it may have expired).")
        return Response(status_code=204)

    def _job(job_id: str) -> dict:
        jobs().expire()
        status = jobs().status(job_id)
        if status is None:
            raise Problem(404, "No such video job (it may have expired).")
        return status

    # ---- the model, health, metrics -----------------------------------------------------------------------------
    @app.get("/v1/model", summary="The model served: classes, calibration, versions and its measured results")
    async def model():
        predictor = state["predictor"]
        try:
            card = read_model_card(Path(settings.weights).with_name("model_card.json")) or {}
        except Exception:  # noqa: BLE001 - a damaged card leaves out the results, not the model
            card = {}
        return {"classes": list(predictor.class_names), "trained_on": card.get("data"),
                "temperature": {"tta": predictor.temperature, "no_tta": predictor.temperature_no_tta},
                "uncertain_below": {"tta": predictor.uncertain_below_for(True),
                                    "no_tta": predictor.uncertain_below_for(False)},
                "parameters": predictor.parameters, "preprocess": predictor.preprocess.to_dict(),
                "versions": _versions(), "results": card.get("results"),
                "transfer_protocol": card.get("transfer_protocol"), "trained_at": card.get("trained_at")}

    @app.get("/healthz", summary="The process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and answers")
    async def readyz():
        if "predictor" not in state:
            raise Problem(503, "The model is still loading.", {"Retry-After": "2"})
        return {"status": "ready"}

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        if "jobs" in state:
            for s in ("queued", "running", "done", "failed"):
                metrics.jobs.labels(s).set(jobs().count(s))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _key_ok(request: Request, keys: tuple[str, ...]) -> bool:
    given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
    ok = False
    for key in keys:  # every key compared, in constant time: the answer time says nothing about which matched
        ok |= hmac.compare_digest(given.encode(), key.encode())
    return ok


async def _limited(request: Request, limit: int):
    """The body's chunks, with a 413 problem as soon as they pass ``limit`` bytes."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"The body is larger than this route takes ({limit // 2**20} MB).")
        yield chunk


async def _body(request: Request, limit: int) -> bytes:
    return b"".join([chunk async for chunk in _limited(request, limit)])


def _suffix(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return f".{ext}" if ext in VIDEO_EXTENSIONS else ".mp4"


async def _save_video(request: Request, folder, limit: int) -> str:
    """Write the posted video (one file part, or the raw body) into ``folder`` as ``input.<ext>``; its name."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=4, max_part_size=limit)
        except Exception as e:  # noqa: BLE001
            raise Problem(400, f"The multipart form cannot be read ({str(e)[:120] or type(e).__name__}).")
        parts = [v for _, v in form.multi_items() if hasattr(v, "read")]
        if not parts:
            raise Problem(422, "The form holds no file: send the video as a file part (curl -F file=@clip.mp4).")
        name = parts[0].filename or "video.mp4"
        with open(folder / f"input{_suffix(name)}", "wb") as out:
            await parts[0].seek(0)
            shutil.copyfileobj(parts[0].file, out)
        return name
    name = request.query_params.get("name") or "video.mp4"
    with open(folder / f"input{_suffix(name)}", "wb") as out:
        async for chunk in _limited(request, limit):
            out.write(chunk)
        size = out.tell()
    if not size:
        raise Problem(422, "The body is empty: send a video.")
    return name


def _accepted(accept: str) -> str:
    if "text/csv" in accept:
        return "csv"
    if "parquet" in accept:
        return "parquet"
    return "json"


def _links(status: dict) -> dict:
    base = f"/v1/videos/{status['id']}"
    return {**{k: v for k, v in status.items() if k != "pid"},
            "links": {"self": base, "faces": f"{base}/faces", "annotated": f"{base}/annotated"}}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"api": VERSION}
    for name in ("onnxruntime", "numpy", "opencv-python-headless", "fastapi"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out

