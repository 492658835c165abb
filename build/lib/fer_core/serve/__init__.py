"""The HTTP API: the recognizer for other programs, one more door onto the same fer_core (docs/api.md).

    python -m fer_core.serve                 # http://127.0.0.1:8000, OpenAPI docs at /docs (served locally)

``app`` builds the FastAPI application (images, video jobs, model, health, metrics), ``videos`` keeps the video
jobs on disk, ``problems`` answers every error as RFC 9457 problem details, ``settings`` holds the limits.
"""
