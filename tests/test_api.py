"""The HTTP API (fer_core.serve): in-process through FastAPI's TestClient, and as a real uvicorn process on a free
loopback port with a real HTTP client. Its JSON equals `fer_core.predict --json`; every bad input is a 4xx problem
document; a video job runs to completion, and one whose server is killed is reported failed after the restart;
`pip install .` gives a working `fer` command. Needs nothing from ../shared."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers import free_port, jpeg_bytes, public_domain_faces
from test_label_issues import ROOT
from video_helpers import switching_video

from fer_core.serve.app import create_app
from fer_core.serve.settings import ServeSettings

pytestmark = pytest.mark.timeout(600)
SAMPLE = ROOT / "fer_core" / "ui" / "sample_photo.jpg"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name, rgb in list(public_domain_faces().items())[:4]:
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(rgb))
    return folder


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = ServeSettings(jobs_dir=tmp_path_factory.mktemp("jobs"), max_image_bytes=8 * 2**20, max_images=5,
                             max_video_bytes=8 * 2**20)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def same_faces(api: list[dict], cli: list[dict]) -> None:
    """The same images, faces, boxes, landmarks and labels; probabilities equal to 1e-5 (the API's worker threads
    run the classifier with their share of the cores, which may change the last float bits)."""
    assert [e["path"] for e in api] == [e["path"] for e in cli]
    for a, c in zip(api, cli):
        assert len(a["faces"]) == len(c["faces"])
        for fa, fc in zip(a["faces"], c["faces"]):
            assert set(fa) == set(fc)
            assert (fa["box"], fa["label"], fa["top_label"], fa["landmarks"]) == (fc["box"], fc["label"],
                                                                                  fc["top_label"], fc["landmarks"])
            assert all(abs(fa["probabilities"][k] - fc["probabilities"][k]) < 1e-5 for k in fc["probabilities"])


def predict_json(folder, names, *options) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "fer_core.predict", *names, "--json", *options], cwd=folder,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_images_answer_what_predict_prints(client, photos):
    names = sorted(p.name for p in photos.glob("*.jpg"))
    files = [("files", (n, (photos / n).read_bytes(), "image/jpeg")) for n in names]
    response = client.post("/v1/images", files=files, params={"uncertain_below": 0.6})
    assert response.status_code == 200, response.text
    same_faces(response.json(), predict_json(photos, names, "--uncertain-below", "0.6"))
    raw = client.post("/v1/images?tta=false&name=astronaut.jpg", content=(photos / names[0]).read_bytes(),
                      headers={"Content-Type": "image/jpeg"})
    same_faces([{**raw.json()[0], "path": names[0]}], predict_json(photos, names[:1], "--no-tta"))


def test_explanations_are_pngs_per_face(client):
    import base64

    response = client.post("/v1/images?explain=predicted", content=SAMPLE.read_bytes(),
                           headers={"Content-Type": "image/jpeg"})
    face = response.json()[0]["faces"][0]
    assert face["explanation"]["class"] == face["top_label"]
    assert base64.b64decode(face["explanation"]["png_base64"])[:8] == b"\x89PNG\r\n\x1a\n"


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's first bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + b"\0" * 64


BAD_REQUESTS = {
    "not an image": (dict(content=b"hello", headers={"Content-Type": "image/jpeg"}), {}, 422),
    "empty body": (dict(content=b"", headers={"Content-Type": "image/jpeg"}), {}, 422),
    "text body": (dict(content=b"hello", headers={"Content-Type": "text/plain"}), {}, 415),
    "pixel bomb": (dict(content=_png_header(100_000, 100_000), headers={"Content-Type": "image/png"}), {}, 422),
    "too large": (dict(content=b"\0" * (8 * 2**20 + 1), headers={"Content-Type": "image/jpeg"}), {}, 413),
    "too many files": (dict(files=[("files", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(6)]), {}, 413),
    "form without a file": (dict(files={"a": (None, "b")}), {}, 422),
    "urlencoded form": (dict(data={"a": "b"}), {}, 415),
    "broken multipart": (dict(content=b"--xx\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=xx"}),
                         {}, 422),  # read as a form without files
    "face size below range": (dict(content=b"x", headers={"Content-Type": "image/jpeg"}), {"min_face_size": 1}, 422),
    "threshold out of range": (dict(content=b"x", headers={"Content-Type": "image/jpeg"}), {"uncertain_below": 2},
                               422),
    "unknown detector": (dict(content=b"x", headers={"Content-Type": "image/jpeg"}), {"detector": "dlib"}, 422),
    "unknown class to explain": (dict(content=b"x", headers={"Content-Type": "image/jpeg"}), {"explain": "joy"}, 422),
}


@pytest.mark.parametrize("kind", list(BAD_REQUESTS))
def test_every_bad_image_request_is_a_4xx_problem(client, kind):
    request, params, status = BAD_REQUESTS[kind]
    response = client.post("/v1/images", params=params, **request)
    assert response.status_code == status, (kind, response.text)
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["status"] == status and problem["detail"] and "Traceback" not in response.text
    assert str(ROOT) not in response.text


def test_bad_video_requests_and_unknown_jobs_are_4xx(client):
    assert client.post("/v1/videos", content=b"not a video", headers={"Content-Type": "video/mp4"}).status_code == 422
    assert client.post("/v1/videos", content=b"", headers={"Content-Type": "video/mp4"}).status_code == 422
    assert client.get("/v1/videos/" + "0" * 32).status_code == 404
    assert client.get("/v1/videos/../../etc/passwd").status_code == 404
    assert client.delete("/v1/videos/" + "f" * 32).status_code == 404
    assert client.post("/v1/videos?fps=0", content=b"x").status_code == 422


def test_a_video_job_runs_to_completion(client, tmp_path):
    import io

    import pandas as pd

    video = switching_video(tmp_path / "clip.mp4", seconds=2.0, switch_s=1.0)
    posted = client.post("/v1/videos?annotated=true", files={"file": ("clip.mp4", video.read_bytes(), "video/mp4")})
    assert posted.status_code == 202 and posted.headers["location"] == f"/v1/videos/{posted.json()['id']}"
    job = posted.json()["links"]["self"]
    assert client.get(f"{job}/faces").status_code in (409, 200)
    deadline = time.time() + 120
    while (status := client.get(job).json())["status"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.5)
    assert status["status"] == "done" and status["progress"] == 1.0 and status["faces_seen"] == 2
    rows = client.get(f"{job}/faces").json()
    assert {r["face_id"] for r in rows} == {1, 2} and len(rows) == 2 * 20
    csv = client.get(f"{job}/faces", headers={"Accept": "text/csv"})
    assert csv.headers["content-type"].startswith("text/csv") and len(pd.read_csv(io.StringIO(csv.text))) == 40
    parquet = client.get(f"{job}/faces?format=parquet")
    assert len(pd.read_parquet(io.BytesIO(parquet.content))) == 40
    mp4 = client.get(f"{job}/annotated")
    assert mp4.status_code == 200 and mp4.content[4:8] == b"ftyp"
    assert client.delete(job).status_code == 204 and client.get(job).status_code == 404


def test_model_health_metrics_and_offline_docs(client):
    model = client.get("/v1/model").json()
    assert model["classes"][:2] == ["angry", "disgust"] and model["temperature"]["tta"] > 0
    assert model["results"] and model["versions"]["api"] == "1"
    assert client.get("/healthz").json() == {"status": "ok"} and client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").text
    assert "fer_requests_total" in metrics and "fer_request_seconds_bucket" in metrics and "fer_faces_total" in metrics
    docs = client.get("/docs").text
    assert "swagger-ui" in docs and "cdn" not in docs.lower() and "http" not in docs.split("<body>")[0].lower()
    assert client.get("/openapi.json").json()["paths"]["/v1/images"]


def test_a_full_line_answers_503_with_retry_after(tmp_path):
    with TestClient(create_app(ServeSettings(jobs_dir=tmp_path, max_waiting=0))) as c:
        response = c.post("/v1/images", content=SAMPLE.read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"


def test_api_keys_are_required_when_set(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_API_KEYS", "k1, k2")
    with TestClient(create_app(ServeSettings(jobs_dir=tmp_path))) as c:
        image = dict(content=SAMPLE.read_bytes(), headers={"Content-Type": "image/jpeg"})
        assert c.post("/v1/images", **image).status_code == 401
        assert c.post("/v1/images", content=image["content"], headers={**image["headers"], "X-API-Key": "no"}
                      ).status_code == 401
        assert c.post("/v1/images", content=image["content"], headers={**image["headers"], "X-API-Key": "k2"}
                      ).status_code == 200
        assert c.get("/metrics").status_code == 401 and c.get("/healthz").status_code == 200


# ---- a real server --------------------------------------------------------------------------------------------

def start_server(port: int, jobs_dir) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "fer_core.serve", "--port", str(port), "--jobs-dir", str(jobs_dir)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail("the API server did not become ready within 90 s")


def test_a_real_server_answers_and_a_killed_servers_job_is_reported_failed(photos, tmp_path):
    port, jobs_dir = free_port(), tmp_path / "jobs"
    base = f"http://127.0.0.1:{port}"
    server = start_server(port, jobs_dir)
    try:
        name = sorted(p.name for p in photos.glob("*.jpg"))[0]
        response = httpx.post(f"{base}/v1/images", files={"files": (name, (photos / name).read_bytes())}, timeout=60)
        same_faces(response.json(), predict_json(photos, [name]))
        video = switching_video(tmp_path / "long.mp4", seconds=30.0, switch_s=15.0)
        job = httpx.post(f"{base}/v1/videos?fps=10", content=video.read_bytes(), timeout=60,
                         headers={"Content-Type": "video/mp4"}).json()["links"]["self"]
        deadline = time.time() + 60
        while httpx.get(base + job).json()["status"] != "running" and time.time() < deadline:
            time.sleep(0.2)
        assert httpx.get(base + job).json()["status"] == "running"
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        server = start_server(port, jobs_dir)
        status = httpx.get(base + job).json()
        assert status["status"] == "failed" and "post the video again" in status["error"]
    finally:
        server.kill()
        server.wait(timeout=30)


def test_pip_install_gives_a_working_fer_command(tmp_path):
    """A fresh venv that sees this environment's packages (so nothing is downloaded): `pip install .` of the
    checkout, then `fer --help` and `fer predict` from another folder."""
    import shutil

    # built from a copy: setuptools writes build/ and *.egg-info/ beside the sources it builds
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "runs", "build", "*.egg-info", "__pycache__",
                                                                ".venv*", ".pytest_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-build-isolation", str(source)], check=True, cwd=tmp_path, timeout=300)
    fer = venv / "bin" / "fer"
    assert "predict" in subprocess.run([fer, "--help"], capture_output=True, text=True, check=True).stdout
    out = subprocess.run([fer, "predict", str(SAMPLE), "--json"], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout
    assert json.loads(out)[0]["faces"][0]["label"] in ("happy", "neutral")
    artifacts = subprocess.run([venv / "bin" / "python", "-c", "import fer_core.locations as l; print(l.ARTIFACTS)"],
                               capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    assert artifacts.startswith(str(venv))  # the installed copy of the shipped model, not the checkout's


def test_the_package_lists_the_requirements_files_pins():
    """pyproject.toml repeats the requirements files' pins (they are the source of truth): the same, in each
    profile."""
    import tomllib

    def pins(path):
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return [line for line in lines if line and not line.startswith("-r")]

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    app, train, cluster = (pins(ROOT / f) for f in ("requirements.txt", "requirements-train.txt",
                                                    "requirements-cluster.txt"))
    assert project["dependencies"] == app
    extras = project["optional-dependencies"]
    assert extras["train"] == train and extras["cluster"] == cluster
    assert extras["test"] == train + cluster + pins(ROOT / "tests" / "requirements.txt")
    assert project["scripts"]["fer"] == "fer_core.cli:main"
