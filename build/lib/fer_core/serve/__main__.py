"""Serve the recognizer over HTTP (docs/api.md).

    python -m fer_core.serve                          # http://127.0.0.1:8000; OpenAPI docs at /docs
    python -m fer_core.serve --host 0.0.0.0 --port 9000
    FER_API_KEYS=key1,key2 python -m fer_core.serve   # every /v1 route and /metrics need one of the keys

Bound to this machine (127.0.0.1) unless told otherwise. Images: POST /v1/images; videos: POST /v1/videos, then
GET /v1/videos/{id}; the model: GET /v1/model; health: /healthz, /readyz; Prometheus: /metrics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..model.weights import DEFAULT_WEIGHTS
from .settings import API_KEYS_ENV, CORS_ENV, ServeSettings, default_jobs_dir


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = ServeSettings()
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine "
                                                      "only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="model served (default: %(default)s)")
    p.add_argument("--max-in-flight", type=int, default=defaults.max_in_flight,
                   help="image requests classified at once (default: the CPUs, %(default)s)")
    p.add_argument("--request-seconds", type=float, default=defaults.request_seconds,
                   help="an image request not answered within this gets 503 (default: %(default)s)")
    p.add_argument("--video-workers", type=int, default=defaults.video_workers,
                   help="video jobs analysed at once (default: %(default)s)")
    p.add_argument("--job-ttl", type=float, default=defaults.job_ttl_seconds,
                   help="seconds a finished video job is kept (default: %(default)s)")
    p.add_argument("--jobs-dir", default=str(default_jobs_dir()), help="where video jobs live (default: %(default)s)")
    p.add_argument("--max-image-mb", type=int, default=defaults.max_image_bytes // 2**20,
                   help="largest body of POST /v1/images in MB (default: %(default)s)")
    p.add_argument("--max-video-mb", type=int, default=defaults.max_video_bytes // 2**20,
                   help="largest body of POST /v1/videos in MB (default: %(default)s)")
    p.epilog = (f"{API_KEYS_ENV}: comma-separated API keys (unset: no key needed). {CORS_ENV}: origins a browser page "
                "may call the API from (unset: none).")
    return p


def main(args: argparse.Namespace) -> int:
    for name in ("max_in_flight", "video_workers", "port", "max_image_mb", "max_video_mb"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        import uvicorn

        from ..model.weights import CheckpointError
        from .app import create_app
    except ImportError as e:
        print(f"error: the service needs {e.name} (pip install -r requirements.txt)", file=sys.stderr)
        return 2
    settings = ServeSettings(weights=args.weights, max_in_flight=args.max_in_flight,
                             request_seconds=args.request_seconds, video_workers=args.video_workers,
                             job_ttl_seconds=args.job_ttl, jobs_dir=Path(args.jobs_dir),
                             max_image_bytes=args.max_image_mb * 2**20, max_video_bytes=args.max_video_mb * 2**20)
    try:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info", access_log=False)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
