"""The work on one input of ``fer_core.jobs.batch``, the same in the calling process, a pool worker and a Ray task.

:func:`process_input` reads one photo or video, runs it through the pipeline the pages use (photos:
``fer_core.analysis.photos.classify_image``, detection + alignment + classification as on the upload page; videos:
``fer_core.video.analyse.analyse_video``, the frame pipeline of the video page), writes its rows into its part file, its
annotated copy with ``--annotated``, and last its manifest line (:mod:`fer_core.jobs.tables`). It never raises for
a bad input: the line says "failed" and why. The model and the detector are loaded once per process
(:func:`worker_state`) and run on one intra-op thread: the parallelism is one process per core.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2

from ..analysis.photos import classify_image, face_entries
from ..faces.detection import DEFAULT_DETECTOR, FaceDetector, make_detector
from ..faces.drawing import annotate
from ..faces.images import ImageLoadError
from ..files import atomic_path, fitting_name
from ..model.backends import set_intra_op_threads
from ..model.bounded import outside_predictor
from ..model.inference import Predictor
from ..model.onnx_file import file_sha256, onnx_path_for
from ..model.weights import CheckpointError
from ..processes import die_with_parent
from ..video.analyse import analyse_video, start_analysis, video_settings
from ..video.codec import VIDEO_EXTENSIONS, VideoError, probe
from .tables import (
    ANNOTATED,
    PHOTO,
    PHOTO_SCHEMA,
    ROWS_PER_GROUP,
    VIDEO,
    VIDEO_SCHEMA,
    PartWriter,
    part_path,
    photo_row,
    record_path,
    source_text,
    write_json,
)

LOGGER = logging.getLogger(__name__)
VIDEO_SUFFIXES = frozenset(f".{e}" for e in VIDEO_EXTENSIONS)


@dataclass(frozen=True)
class BatchOptions:
    """Everything a worker needs: where to write, the model, and the options of the pages (defaults: theirs)."""

    out: str  # absolute path of the output folder
    weights: str
    tta: bool = True  # photos (the upload page's default); the video page runs without
    photo_min_face_size: int = 20
    video_min_face_size: int = video_settings().min_face_size
    detector: str = DEFAULT_DETECTOR
    whole_image: bool = False  # photos: classify the whole image when no face is found
    uncertain_below: float | None = None
    fps: float | str | None = "auto"  # videos: frames analysed per second of video; None = every frame
    smoothing: float = video_settings().smoothing
    annotated: bool = False

    def for_kind(self, kind: str) -> dict:
        """The options that the rows of an input of ``kind`` depend on (kept in its manifest line; a rerun with
        other values analyses the input again)."""
        if kind == PHOTO:
            return {"tta": self.tta, "min_face_size": self.photo_min_face_size, "detector": self.detector,
                    "whole_image": self.whole_image, "uncertain_below": self.uncertain_below}
        return {"fps": self.fps, "smoothing": self.smoothing, "min_face_size": self.video_min_face_size,
                "detector": self.detector, "uncertain_below": self.uncertain_below}


@dataclass(frozen=True)
class Input:
    """One file to analyse. ``key`` names its part files; ``size`` and ``mtime_ns`` are None when it cannot be
    read (its analysis then fails with the loader's message)."""

    path: str  # absolute
    kind: str  # PHOTO or VIDEO
    key: str
    size: int | None
    mtime_ns: int | None

    @classmethod
    def of(cls, path: Path) -> "Input":
        path = path.absolute()
        kind = VIDEO if path.suffix.lower() in VIDEO_SUFFIXES else PHOTO
        try:
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime = None
        return cls(str(path), kind, hashlib.sha256(os.fsencode(path)).hexdigest()[:20], size, mtime)  # any bytes

    def record(self, options: BatchOptions) -> dict:
        """The manifest line before the work: what the input and its options are."""
        mtime = (datetime.fromtimestamp(self.mtime_ns / 1e9, timezone.utc).isoformat(timespec="seconds")
                 if self.mtime_ns is not None else None)
        return {"path": self.path, "kind": self.kind, "key": self.key, "status": None, "error": None,
                "size": self.size, "mtime": mtime, "mtime_ns": self.mtime_ns, "seconds": None,
                "model_sha256": None, "options": options.for_kind(self.kind)}


def model_sha256(weights: str | Path) -> str:
    """SHA-256 of the weights file (of the ``.onnx`` beside it when only that is there): the model's identity in
    the manifest."""
    weights = Path(weights)
    return file_sha256(weights if weights.is_file() else onnx_path_for(weights))


@dataclass
class WorkerState:
    predictor: Predictor
    detector: FaceDetector  # for photos; videos make their own through the frame pipeline
    model_sha256: str


_STATE: dict[tuple, WorkerState] = {}  # per process: the model is loaded once, then serves every input


def worker_state(options: BatchOptions) -> WorkerState:
    """This process's model and photo detector for ``options`` (loaded on first use, one intra-op thread)."""
    key = (options.weights, options.detector, options.photo_min_face_size)
    if key not in _STATE:
        set_intra_op_threads(1)
        cv2.setNumThreads(1)
        _STATE[key] = WorkerState(outside_predictor(options.weights, trial=False),
                                  make_detector(options.detector, min_face_size=options.photo_min_face_size),
                                  model_sha256(options.weights))
    return _STATE[key]


def init_worker(options: BatchOptions) -> None:
    """Pool initializer: tie the worker's life to the job's process, then load the model before the first input
    arrives."""
    die_with_parent()
    worker_state(options)


def annotated_path(options: BatchOptions, item: Input) -> Path:
    """``<out>/annotated/<name>_<key>_annotated.<jpg|mp4>`` (the key keeps files of the same name apart)."""
    suffix = ".mp4" if item.kind == VIDEO else ".jpg"
    return Path(options.out) / ANNOTATED / fitting_name(Path(item.path).stem, f"_{item.key[:8]}_annotated{suffix}")


def process_input(item: Input, options: BatchOptions) -> dict:
    """Analyse one input, commit its part file, and return its manifest line (also committed, last, as
    ``parts/<key>.json``): status "done" with the counts, or "failed" with the error. Never raises for a bad
    input; an unexpected exception is logged with its traceback and fails this input only."""
    t, cpu = time.perf_counter(), time.process_time()
    record = item.record(options)
    try:
        state = worker_state(options)
        record["model_sha256"] = state.model_sha256
        record.update(_analyse_photo(item, options, state) if item.kind == PHOTO
                      else _analyse_video(item, options, state))
        record["status"] = "done"
    except (ImageLoadError, VideoError, CheckpointError) as e:  # a model refused by its bounded child: said once
        record.update(status="failed", error=str(e))
    except Exception as e:  # noqa: BLE001 - one input's failure must not stop the job; said in its manifest line
        LOGGER.exception("%s could not be analysed", item.path)
        record.update(status="failed", error=f"{type(e).__name__}: {e}")
    record["seconds"] = round(time.perf_counter() - t, 3)
    record["cpu_seconds"] = round(time.process_time() - cpu, 3)  # of this process, all its threads
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    write_json(record_path(Path(options.out), item.key), record)
    return record


def _analyse_photo(item: Input, options: BatchOptions, state: WorkerState) -> dict:
    rgb, _, faces = classify_image(state.predictor, state.detector, item.path, tta=options.tta,
                                   whole_image_if_no_face=options.whole_image)
    entries = face_entries(faces, options.uncertain_below)
    annotated = None
    if options.annotated:  # the upload page's drawing: "#n label p%" boxes and the landmarks
        annotated = annotated_path(options, item)
        image = annotate(rgb, faces, labels=[e["label"] for e in entries])
        with atomic_path(annotated) as tmp:
            if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {annotated}")
    with PartWriter(part_path(Path(options.out), item.key), PHOTO_SCHEMA) as part:
        part.write([photo_row(source_text(item.path), i, e) for i, e in enumerate(entries, start=1)])
    return {"faces": part.rows, "annotated": str(annotated) if annotated else None}


def _analyse_video(item: Input, options: BatchOptions, state: WorkerState) -> dict:
    info = probe(item.path)
    settings = video_settings(smoothing=options.smoothing, min_face_size=options.video_min_face_size,
                              detector=options.detector, uncertain_below=options.uncertain_below)
    result = start_analysis(info, options.fps, settings)
    face_ids: set[int] = set()
    annotated = annotated_path(options, item) if options.annotated else None
    with PartWriter(part_path(Path(options.out), item.key), VIDEO_SCHEMA) as part:
        def flush(progress=None) -> None:
            """Move the rows analysed so far into the part file (called with the analysis' progress reports, and
            at the end): the rows of a long video are never all in memory."""
            if result.rows and (progress is None or len(result.rows) >= ROWS_PER_GROUP):
                face_ids.update(r[3] for r in result.rows)
                part.write([(source_text(item.path), *r) for r in result.rows])
                result.rows.clear()

        if annotated is None:
            analyse_video(item.path, state.predictor, options.fps, settings, progress=flush, result=result)
        else:
            with atomic_path(annotated) as tmp:
                analyse_video(item.path, state.predictor, options.fps, settings, tmp, progress=flush, result=result)
        flush()
    return {"rows": part.rows, "face_ids": len(face_ids), "video_seconds": round(result.video_seconds, 3),
            "frames_decoded": result.frames_decoded, "frames_analysed": len(result.analysed_frames),
            "analysis_fps": result.analysis_fps, "complete": result.complete, "warnings": result.warnings,
            "annotated": str(annotated) if annotated else None}


def failed_record(item: Input, options: BatchOptions, error: str) -> dict:
    """The manifest line of an input whose work never returned (its process died, its task was lost)."""
    return {**item.record(options), "status": "failed", "error": error,
            "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
