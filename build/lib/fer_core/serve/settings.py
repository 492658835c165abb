"""The service's settings and limits (command-line options and environment variables of ``fer_core.serve``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..model.weights import DEFAULT_WEIGHTS

API_KEYS_ENV = "FER_API_KEYS"  # comma-separated keys; set: every /v1 route and /metrics need one
CORS_ENV = "FER_CORS_ORIGINS"  # comma-separated origins allowed to call the API from a browser; unset: none
JOBS_DIR_ENV = "FER_API_JOBS_DIR"


def _listed(name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in os.environ.get(name, "").split(",") if v.strip())


def default_jobs_dir() -> Path:
    return Path(os.environ.get(JOBS_DIR_ENV) or Path.home() / ".cache" / "fer_core" / "api_jobs")


@dataclass(frozen=True)
class ServeSettings:
    weights: str = str(DEFAULT_WEIGHTS)
    max_image_bytes: int = 50 * 2**20  # body of POST /v1/images (all its files together)
    max_images: int = 32  # files in one POST /v1/images
    max_video_bytes: int = 200 * 2**20  # body of POST /v1/videos (the pages' upload limit)
    max_in_flight: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))  # image requests classified at once
    max_waiting: int = 256  # image requests in line or at work; more get 503 with Retry-After
    request_seconds: float = 60.0  # an image request not answered within this (line included) gets 503
    video_workers: int = 1  # video jobs analysed at once; the others wait in the queue
    max_queued_videos: int = 16  # video jobs waiting; more get 503
    job_ttl_seconds: float = 3600.0  # finished video jobs (and their files) are removed this long after they end
    jobs_dir: Path = field(default_factory=default_jobs_dir)
    api_keys: tuple[str, ...] = field(default_factory=lambda: _listed(API_KEYS_ENV))
    cors_origins: tuple[str, ...] = field(default_factory=lambda: _listed(CORS_ENV))
