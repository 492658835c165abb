"""Load benchmark of the HTTP API (fer_core.serve), on this machine's loopback only, bounded in requests and time.

    python -m training.benchmarks.api                                  # CFEE photos (640x480, one face) if present
    python -m training.benchmarks.api --photos my_photos/ --clients 1 8 32 --requests 50

Starts the server on a free port, then for each N in --clients: N concurrent clients (threads with keep-alive
connections) each post --requests photos, one per request, TTA off; prints p50/p95/p99 latency, throughput, errors
and 5xx. Then one client with TTA on; then `fer_core.batch --workers 2` on the same photos (the throughput to
compare with); then every bad-input kind of docs/reliability.md posted repeatedly, with the server's resident
memory before and after. Needs httpx (tests/requirements.txt).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from fer_core.locations import PACKAGE_ROOT, SHARED_DATA

SAMPLE = PACKAGE_ROOT / "fer_core" / "ui" / "sample_photo.jpg"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default=str(SHARED_DATA / "cfee"),
                   help="a folder of photos posted in turn (default: %(default)s; the sample photo when missing)")
    p.add_argument("--count", type=int, default=200, help="photos taken from --photos (default: %(default)s)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients (default: 1 8 32)")
    p.add_argument("--requests", type=int, default=50, help="requests per client (default: %(default)s)")
    p.add_argument("--bad-rounds", type=int, default=20, help="times each bad input is posted (default: %(default)s)")
    p.add_argument("--json", dest="json_out", help="also write the results here")
    return p


def photo_files(folder: str, count: int) -> list[Path]:
    found = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return found[:count] or [SAMPLE]


def start_server(port: int, jobs: Path) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "fer_core.serve", "--port", str(port), "--jobs-dir", str(jobs)],
                            cwd=PACKAGE_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    sys.exit("error: the API server did not start within 120 s")


def load(url: str, photos: list[bytes], clients: int, requests: int, tta: bool) -> dict:
    """``clients`` threads each posting ``requests`` photos; latencies in ms, errors, 5xx, throughput."""
    import httpx

    latencies: list[float] = []
    errors, server_errors = [0], [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(timeout=120) as http:
            for i in range(requests):
                data = photos[(k * requests + i) % len(photos)]
                started = time.perf_counter()
                try:
                    r = http.post(f"{url}/v1/images", params={"tta": str(tta).lower()}, content=data,
                                  headers={"Content-Type": "image/jpeg"})
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    errors[0] += status != 200
                    server_errors[0] += status >= 500
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    q = np.percentile(latencies, [50, 95, 99])
    return {"clients": clients, "requests": len(latencies), "tta": tta, "p50_ms": round(float(q[0]), 1),
            "p95_ms": round(float(q[1]), 1), "p99_ms": round(float(q[2]), 1),
            "throughput_per_s": round(len(latencies) / wall, 1), "errors": errors[0], "5xx": server_errors[0]}


def batch_throughput(files: list[Path], workers: int = 2) -> float:
    """Photos per second of ``fer_core.batch --workers`` on ``files`` (wall time of the whole command)."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        for i, f in enumerate(files):
            shutil.copy(f, inputs / f"{i:05d}{f.suffix}")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fer_core.batch", str(inputs), "--out", str(Path(tmp) / "out"),
                        "--workers", str(workers)], cwd=PACKAGE_ROOT, check=True, capture_output=True)
        return len(files) / (time.perf_counter() - started)


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bad_inputs(url: str, rounds: int) -> dict:
    import httpx

    kinds = {"not an image": (b"hello", "image/jpeg"), "empty": (b"", "image/jpeg"), "text": (b"x", "text/plain"),
             "truncated jpeg": (SAMPLE.read_bytes()[:2000], "image/jpeg"),
             "pixel bomb": (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\x01\x86\xa0\0\x01\x86\xa0\x08\0\0\0\0" + b"\0" * 64,
                            "image/png")}
    statuses: dict[str, list[int]] = {k: [] for k in kinds}
    with httpx.Client(timeout=60) as http:
        for _ in range(rounds):
            for kind, (data, ctype) in kinds.items():
                statuses[kind].append(http.post(f"{url}/v1/images", content=data,
                                                headers={"Content-Type": ctype}).status_code)
            statuses.setdefault("bad query", []).append(http.post(f"{url}/v1/images?min_face_size=0",
                                                                  content=b"x").status_code)
            statuses.setdefault("not a video", []).append(http.post(f"{url}/v1/videos", content=b"x" * 1000,
                                                                    headers={"Content-Type": "video/mp4"}).status_code)
    return {k: sorted(set(v)) for k, v in statuses.items()}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(args: argparse.Namespace) -> dict:
    files = photo_files(args.photos, args.count)
    photos = [f.read_bytes() for f in files]
    print(f"{len(files)} photo(s) from {files[0].parent}; {args.requests} requests per client")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as jobs:
        server = start_server(port, Path(jobs))
        try:
            load(url, photos, 1, 5, False)  # warm-up: detectors made in the worker threads
            rows = [load(url, photos, n, args.requests, False) for n in args.clients]
            rows.append(load(url, photos, 1, args.requests, True))
            memory_before = resident_mb(server.pid)
            bad = bad_inputs(url, args.bad_rounds)
            memory_after = resident_mb(server.pid)
            alive = server.poll() is None
        finally:
            server.terminate()
            server.wait(timeout=30)
    batch = batch_throughput(files)
    print(f"{'clients':>7} {'TTA':>4} {'requests':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'per s':>6} "
          f"{'errors':>6} {'5xx':>4}")
    for r in rows:
        print(f"{r['clients']:>7} {'on' if r['tta'] else 'off':>4} {r['requests']:>8} {r['p50_ms']:>7} "
              f"{r['p95_ms']:>7} {r['p99_ms']:>7} {r['throughput_per_s']:>6} {r['errors']:>6} {r['5xx']:>4}")
    best = max(r["throughput_per_s"] for r in rows if not r["tta"])
    print(f"fer_core.batch --workers 2 on the same {len(files)} photos: {batch:.1f} photos/s; the API's best: "
          f"{best:.1f} requests/s ({best / batch:.2f}x)")
    print(f"bad inputs x {args.bad_rounds}: statuses {json.dumps(bad)}; server alive: {alive}; resident memory "
          f"{memory_before:.0f} MB before, {memory_after:.0f} MB after")
    result = {"photos": len(files), "rows": rows, "batch_photos_per_s": round(batch, 1), "bad_inputs": bad,
              "server_alive_after_bad_inputs": alive, "resident_mb_before": round(memory_before),
              "resident_mb_after": round(memory_after)}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
