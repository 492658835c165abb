"""fer_core.jobs.batch: the same rows as fer_core.predict --json and fer_core.video --csv, the tables' columns, bad files
among good ones, a job killed with SIGKILL and run again, and the Ray path on a local runtime. Inputs are the
public-domain test photos and videos of helpers.py / video_helpers.py (nothing from ../shared)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pandas as pd
import pyarrow as pa
import pyarrow.ipc  # noqa: F401 - pa.ipc
import pyarrow.parquet as pq
import pytest
from helpers import group_photo, jpeg_bytes, write_face_photos
from video_helpers import switching_video

from fer_core.faces.detection import LANDMARK_COLUMNS
from fer_core.jobs.batch import find_inputs, run_batch
from fer_core.jobs.ray_cluster import RayUnavailable, import_ray
from fer_core.jobs.tables import PHOTO_SCHEMA, VIDEO_SCHEMA
from fer_core.jobs.worker import BatchOptions, Input
from fer_core.labels import EMOTIONS

ROOT = Path(__file__).resolve().parent.parent
PHOTO_COLUMNS = ["source", "face", "x", "y", "w", "h", "label", "top_label", "confidence", "whole_image",
                 "detector_score", "eye_left_x", "eye_left_y", "eye_right_x", "eye_right_y", "nose_x", "nose_y",
                 "mouth_left_x", "mouth_left_y", "mouth_right_x", "mouth_right_y", *EMOTIONS]
VIDEO_COLUMNS = ["source", "frame", "time_s", "timestamp", "face_id", "x", "y", "w", "h", "label", "confidence",
                 *EMOTIONS, *LANDMARK_COLUMNS]
BAD = {"photos/notes.jpg": "not an image file", "photos/empty.png": "the file is empty",
       "clips/broken.mp4": "not a video that can be read"}


def batch(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fer_core.batch", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, **kwargs)


def manifest(out: Path) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


def table(out: Path, name: str) -> pd.DataFrame:
    return pq.read_table(out / f"{name}.parquet").to_pandas()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """7 photos (8 faces... one group photo of three), a 4 s clip with two faces, and three bad files."""
    root = tmp_path_factory.mktemp("batch_media")
    (root / "photos").mkdir()
    (root / "clips").mkdir()
    write_face_photos(root / "photos")
    (root / "photos" / "group.jpg").write_bytes(jpeg_bytes(group_photo()))
    (root / "photos" / "notes.jpg").write_text("a text file with the suffix of a photo")
    (root / "photos" / "empty.png").write_bytes(b"")
    switching_video(root / "clips" / "clip.mp4")
    (root / "clips" / "broken.mp4").write_bytes(b"\x00" * 4096)
    return root


@pytest.fixture(scope="module")
def pool_run(media, tmp_path_factory):
    """The whole folder through the command on a pool of 2 workers, with CSV copies."""
    out = tmp_path_factory.mktemp("batch_out")
    run = batch(media, "--out", out, "--workers", 2, "--csv")
    return out, run


def test_tables_have_the_documented_columns(pool_run):
    out, run = pool_run
    assert pq.read_schema(out / "photos.parquet").equals(PHOTO_SCHEMA)
    assert pq.read_schema(out / "videos.parquet").equals(VIDEO_SCHEMA)
    assert PHOTO_SCHEMA.names == PHOTO_COLUMNS and VIDEO_SCHEMA.names == VIDEO_COLUMNS
    assert list(pd.read_csv(out / "photos.csv").columns) == PHOTO_COLUMNS
    assert list(pd.read_csv(out / "videos.csv").columns) == VIDEO_COLUMNS
    assert len(pd.read_csv(out / "photos.csv")) == len(table(out, "photos")) == 9
    lines = manifest(out)
    for r in lines.values():
        assert {"path", "kind", "status", "error", "size", "mtime", "seconds", "model_sha256", "options"} <= set(r)
        assert len(r["model_sha256"]) == 64 and r["size"] is not None


def test_photo_rows_are_those_of_predict_json(media, pool_run):
    out, _ = pool_run
    run = subprocess.run([sys.executable, "-m", "fer_core.predict", str(media / "photos"), "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    expected = {str(Path(e["path"]).absolute()): e["faces"] for e in json.loads(run.stdout)}
    rows = table(out, "photos")
    assert set(rows.source) == {p for p, faces in expected.items() if faces}
    for source, faces in expected.items():
        mine = rows[rows.source == source].sort_values("face")
        assert list(mine.face) == list(range(1, len(faces) + 1))
        for (_, row), face in zip(mine.iterrows(), faces):
            assert [row.x, row.y, row.w, row.h] == face["box"]
            assert [row.label, row.top_label, row.whole_image] == [face[k] for k in ("label", "top_label", "whole_image")]
            assert row.confidence == face["confidence"] and row.detector_score == face["detector_score"]
            assert [row[n] for n in EMOTIONS] == [face["probabilities"][n] for n in EMOTIONS]
            points = [row[c] for c in PHOTO_COLUMNS[11:21]]
            assert points == [v for p in face["landmarks"] for v in p]
    assert rows[rows.source.str.endswith("group.jpg")].x.is_monotonic_increasing  # left to right, as the page


def test_video_rows_are_those_of_video_csv(media, pool_run, tmp_path):
    out, _ = pool_run
    csv = tmp_path / "clip.csv"
    subprocess.run([sys.executable, "-m", "fer_core.video", str(media / "clips" / "clip.mp4"), "--csv", str(csv)],
                   cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    expected = pd.read_csv(csv)
    rows = table(out, "videos")
    assert set(rows.source) == {str(media / "clips" / "clip.mp4")}
    assert len(expected) == 80 and set(expected.face_id) == {1, 2}
    pd.testing.assert_frame_equal(rows.drop(columns="source"), expected, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_csv(out / "videos.csv").drop(columns="source"), expected, check_dtype=False)


def test_bad_files_are_failed_lines_and_the_others_done(pool_run):
    out, run = pool_run
    assert run.returncode == 1, run.stderr  # some inputs failed; the tables hold the others
    lines = manifest(out)
    assert len(lines) == 11
    for name, message in BAD.items():
        line = lines[Path(name).name]
        assert line["status"] == "failed" and message in line["error"], line
        assert f"failed: {line['path']}" in run.stderr
    assert all(r["status"] == "done" for n, r in lines.items() if n not in {Path(b).name for b in BAD})
    assert lines["clip.mp4"]["rows"] == 80 and lines["clip.mp4"]["video_seconds"] == pytest.approx(4.0)
    assert "8 done, 0 skipped (done before), 3 failed" in run.stdout


def _committed(parts: Path) -> list[Path]:
    """The manifest lines written in full: not the hidden ``.<name>.<id>.tmp.json`` of a line being written
    (pathlib's ``*`` matches names that start with a dot)."""
    return [p for p in parts.glob("*.json") if not p.name.startswith(".")]


def _killed(media: Path, out: Path, when) -> list[str]:
    """Start the command on one process, SIGKILL it (and anything it started) once ``when(parts folder)`` holds;
    the statuses of the manifest lines committed by then."""
    proc = subprocess.Popen([sys.executable, "-m", "fer_core.batch", str(media), "--out", str(out), "--workers", "1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = out / "parts"
    deadline = time.monotonic() + 240
    while not when(parts) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return [json.loads(p.read_text())["status"] for p in _committed(parts)]


def test_a_job_killed_midway_and_run_again_gives_the_whole_result_once(media, pool_run, tmp_path):
    """Killed in the middle of the video (its rows half written), then after some photos; the third run analyses
    only what was left and gives exactly the tables of an uninterrupted run."""
    reference, _ = pool_run
    out = tmp_path / "out"
    committed = _killed(media, out, lambda parts: any(parts.glob(".*.tmp.arrow")))  # videos are scheduled first
    assert committed == [] and any((out / "parts").glob(".*.tmp.arrow"))  # a part being written, never renamed
    committed = _killed(media, out, lambda parts: len(_committed(parts)) >= 4)
    assert 4 <= len(committed) < 11, "the job ended before it could be interrupted"
    run = batch(media, "--out", out, "--workers", 1)
    statuses = [r["status"] for r in manifest(out).values()]
    assert statuses.count("skipped") == committed.count("done")  # what was done is reused, the rest analysed
    assert statuses.count("failed") == len(BAD) and statuses.count("skipped") + statuses.count("done") == 8
    assert not any((out / "parts").glob(".*.tmp*")), "the leftovers of the killed runs are removed"
    for name in ("photos", "videos"):
        pd.testing.assert_frame_equal(table(out, name), table(reference, name))
    assert not table(out, "photos").duplicated(["source", "face"]).any()
    assert not table(out, "videos").duplicated(["source", "frame", "face_id"]).any()
    assert run.returncode == 1

    other = batch(media, "--out", out, "--workers", 1, "--no-tta")  # photos' options changed: only they run again
    lines = manifest(out)
    assert {r["status"] for r in lines.values() if r["kind"] == "video" and r["error"] is None} == {"skipped"}
    assert {r["status"] for r in lines.values() if r["kind"] == "photo" and r["error"] is None} == {"done"}
    assert all(r["options"]["tta"] is False for r in lines.values() if r["kind"] == "photo"), other.stderr


def test_video_rows_are_written_as_they_come(tmp_path, monkeypatch):
    """The rows of a video go to its part file in row groups during the analysis (memory stays flat on long
    videos), and the part is only renamed into place at the end."""
    import fer_core.jobs.worker as worker

    clip = switching_video(tmp_path / "long.mp4", seconds=10.0, switch_s=5.0)
    monkeypatch.setattr(worker, "ROWS_PER_GROUP", 8)
    options = BatchOptions(out=str(tmp_path / "out"), weights=str(ROOT / "artifacts" / "model.pt"))
    item = Input.of(clip)
    threads = cv2.getNumThreads()
    try:
        line = worker.process_input(item, options)  # in this process, as --workers 1 runs it
    finally:
        cv2.setNumThreads(threads)  # a worker keeps OpenCV on one thread; the other tests' processes do not
    with pa.OSFile(str(tmp_path / "out" / "parts" / f"{item.key}.arrow")) as f:
        part = pa.ipc.open_file(f)
        assert line["status"] == "done" and line["rows"] == part.read_all().num_rows == 200
        assert part.num_record_batches >= 3
    assert json.loads((tmp_path / "out" / "parts" / f"{item.key}.json").read_text()) == line


def _writer_of(path: Path) -> int | None:
    """The process that has ``path`` open, from /proc."""
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == str(path):
                return int(fd.parent.parent.name)
        except OSError:
            continue
    return None


def _kill_the_video_twice(media: Path, *options: str) -> tuple[Path, subprocess.CompletedProcess]:
    """Run the command on ``media``; each of two times the video's part is being written, SIGKILL the process
    writing it (a worker, not the command). Returns the output folder and the finished command."""
    out = Path(media.parent / f"killed_{'_'.join(o.strip('-') for o in options)}")
    clip = Input.of(media / "clips" / "clip.mp4").key
    proc = subprocess.Popen([sys.executable, "-m", "fer_core.batch", str(media), "--out", str(out), *options],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        killed: set[Path] = set()
        deadline = time.monotonic() + 240
        while len(killed) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the job ended before the video was killed"
            for tmp in set((out / "parts").glob(f".{clip}.*.tmp.arrow")) - killed:
                writer = _writer_of(tmp)
                if writer is not None and writer != proc.pid:
                    os.kill(writer, signal.SIGKILL)
                    killed.add(tmp)
            time.sleep(0.01)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        proc.kill()
    return out, subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _only_the_video_failed(out: Path, reference: Path, run: subprocess.CompletedProcess, error: str) -> None:
    lines = manifest(out)
    assert lines["clip.mp4"]["status"] == "failed" and error in lines["clip.mp4"]["error"], run.stderr
    assert {n: r["status"] for n, r in lines.items() if n != "clip.mp4"} == \
        {n: r["status"] for n, r in manifest(reference).items() if n != "clip.mp4"}
    pd.testing.assert_frame_equal(table(out, "photos"), table(reference, "photos"))
    assert table(out, "videos").empty and run.returncode == 1
    assert not any((out / "parts").glob(".*.tmp*")), "what the killed workers were writing is removed"


def test_a_worker_that_dies_loses_nothing_and_the_file_that_kills_it_alone_fails(media, pool_run):
    """The worker analysing the video is killed (the pool breaks; its inputs are analysed again, one at a time),
    then killed again while it analyses the video alone: the video is a failed line, the rest done."""
    out, run = _kill_the_video_twice(media, "--workers", "2")
    _only_the_video_failed(out, pool_run[0], run, "died again when the file was analysed alone")


def test_a_lost_ray_task_is_retried_once_then_failed(media, pool_run):
    """The Ray worker running the video's task is killed: Ray runs it again (without the retry there would be no
    second run to kill); killed again, it is a failed line."""
    pytest.importorskip("ray")
    out, run = _kill_the_video_twice(media, "--ray")
    _only_the_video_failed(out, pool_run[0], run, "the Ray task failed twice (WorkerCrashedError")


def test_ray_on_a_local_runtime_gives_the_rows_of_two_workers(media, pool_run, tmp_path):
    ray = pytest.importorskip("ray")
    reference, _ = pool_run
    out = tmp_path / "ray_out"
    options = BatchOptions(out=str(out), weights=str(ROOT / "artifacts" / "model.pt"))
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        lines = run_batch(find_inputs([media], out), options, ray_address="", progress=False)
    finally:
        ray.shutdown()
    assert [r["status"] for r in lines] == [r["status"] for r in manifest(reference).values()]
    for name in ("photos", "videos"):
        pd.testing.assert_frame_equal(table(out, name), table(reference, name))


def test_ray_is_optional(monkeypatch):
    """The base install has no Ray: fer_core.jobs.batch imports it only for --ray, and says what to install."""
    check = "import sys, fer_core.jobs.batch; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True, timeout=120)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(RayUnavailable, match="requirements-cluster.txt"):
        import_ray()
