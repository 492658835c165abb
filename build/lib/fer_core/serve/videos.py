"""Video jobs of the API: each posted video is a folder on disk, analysed in a bounded pool by the same pipeline the
Video page and ``fer_core.batch`` use (:func:`fer_core.video.analyse.analyse_video`).

``<jobs_dir>/<id>/`` holds ``input.<ext>``, ``status.json`` (written atomically at every change: queued, running with
progress and ETA, done, failed), ``faces.parquet`` when done and ``annotated.mp4`` when asked for. A server that is
stopped or killed while jobs run finds them on its next start and marks them failed ("post the video again"), so a
job is never silently lost; finished jobs are removed ``job_ttl_seconds`` after they end.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from ..files import write_text_atomically
from ..video.analyse import Progress, analyse_video, start_analysis, video_settings
from ..video.codec import VideoError, probe

ACTIVE = ("queued", "running")


class VideoJobs:
    """The jobs of one server: ``submit`` a saved video, read ``status`` and ``faces``, ``delete``; ``predictor`` is
    called in the worker thread to get the shared classifier."""

    def __init__(self, folder: Path, predictor, workers: int = 1, ttl_seconds: float = 3600.0,
                 max_queued: int = 16):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._predictor, self._ttl, self._max_queued = predictor, ttl_seconds, max_queued
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fer-video")
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self.recover()

    # ---- lifecycle --------------------------------------------------------------------------------------------
    def recover(self) -> int:
        """Mark the jobs an earlier server left queued or running as failed; returns how many."""
        n = 0
        for job in self.folder.iterdir():
            status = self._read(job.name)
            if status is not None and status.get("status") in ACTIVE:
                self._write(job.name, {**status, "status": "failed", "finished_unix": time.time(),
                                       "error": "The server stopped before this job finished; post the video again."})
                n += 1
        return n

    def expire(self, now: float | None = None) -> list[str]:
        """Remove finished jobs older than the time to live; returns their ids."""
        now = time.time() if now is None else now
        gone = []
        for job in list(self.folder.iterdir()):
            status = self._read(job.name)
            ended = (status or {}).get("finished_unix")
            if status is not None and status.get("status") not in ACTIVE and ended and now - ended > self._ttl:
                shutil.rmtree(job, ignore_errors=True)
                gone.append(job.name)
        return gone

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- jobs -------------------------------------------------------------------------------------------------
    def new_folder(self) -> tuple[str, Path]:
        if self.count("queued") >= self._max_queued:
            raise OverflowError(f"{self._max_queued} videos are waiting already")
        job_id = uuid.uuid4().hex
        folder = self.folder / job_id
        folder.mkdir()
        return job_id, folder

    def submit(self, job_id: str, video: Path, name: str, annotated: bool = False,
               analysis_fps: float | None | str = "auto") -> dict:
        """Check that ``video`` (already in the job's folder) is a video and queue it; VideoError when it is not
        (the job's folder is removed then)."""
        try:
            info = probe(video)
        except VideoError:
            shutil.rmtree(video.parent, ignore_errors=True)
            raise
        status = {"id": job_id, "name": name, "status": "queued", "created_unix": time.time(), "progress": 0.0,
                  "eta_seconds": None, "frames_analysed": 0, "faces_seen": 0, "duration_seconds": info.duration_s,
                  "width": info.width, "height": info.height, "annotated": annotated, "error": None}
        self._write(job_id, status)
        self._pool.submit(self._run, job_id, video, annotated, analysis_fps)
        return status

    def status(self, job_id: str) -> dict | None:
        return self._read(job_id) if _is_id(job_id) else None

    def faces(self, job_id: str) -> pd.DataFrame:
        return pd.read_parquet(self.folder / job_id / "faces.parquet")

    def annotated(self, job_id: str) -> Path:
        return self.folder / job_id / "annotated.mp4"

    def delete(self, job_id: str) -> bool:
        if not _is_id(job_id) or not (self.folder / job_id).is_dir():
            return False
        with self._lock:
            self._cancelled.add(job_id)
        shutil.rmtree(self.folder / job_id, ignore_errors=True)
        return True

    def count(self, state: str) -> int:
        return sum((self._read(j.name) or {}).get("status") == state for j in self.folder.iterdir())

    # ---- the worker ---------------------------------------------------------------------------------------------
    def _run(self, job_id: str, video: Path, annotated: bool, analysis_fps) -> None:
        status = self._read(job_id)
        if status is None or job_id in self._cancelled:
            return
        status.update(status="running", started_unix=time.time(), pid=os.getpid())
        self._write(job_id, status)

        def progress(p: Progress) -> None:
            status.update(progress=p.fraction, eta_seconds=p.eta_s, frames_analysed=p.frames_analysed,
                          faces_seen=p.faces_seen)
            if job_id not in self._cancelled:
                self._write(job_id, status)

        try:
            settings = video_settings()
            result = start_analysis(probe(video), analysis_fps, settings)
            out = video.parent / "annotated.mp4" if annotated else None
            analyse_video(video, self._predictor(), analysis_fps, settings, out, progress=progress,
                          should_stop=lambda: job_id in self._cancelled, result=result)
            if job_id in self._cancelled:
                return
            result.to_dataframe().to_parquet(video.parent / "faces.parquet", index=False)
            status.update(status="done", progress=1.0, eta_seconds=0.0, warnings=list(result.warnings))
        except Exception as e:  # noqa: BLE001 - a job's failure is its status, never the server's
            status.update(status="failed", error=str(e) if isinstance(e, VideoError) else
                          f"The analysis failed ({type(e).__name__}).")
        finally:
            video.unlink(missing_ok=True)  # the upload is not kept once analysed
        status["finished_unix"] = time.time()
        if job_id not in self._cancelled:
            self._write(job_id, status)

    # ---- files --------------------------------------------------------------------------------------------------
    def _read(self, job_id: str) -> dict | None:
        try:
            data = json.loads((self.folder / job_id / "status.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write(self, job_id: str, status: dict) -> None:
        if (self.folder / job_id).is_dir():
            try:
                write_text_atomically(self.folder / job_id / "status.json", json.dumps(status))
            except OSError:
                pass  # deleted meanwhile


def _is_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)
