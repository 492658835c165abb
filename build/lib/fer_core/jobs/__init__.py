"""Photos and videos in bulk: the resumable batch job, its worker processes, its Parquet tables, and the Ray
cluster backend.

    python -m fer_core.batch inputs/ --out results/      # the command (fer_core/jobs/batch.py)

Uses video/, analysis/, model/, faces/ and the ground floor.
"""
