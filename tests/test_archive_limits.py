"""Limits of the zip evaluation: how many images one zip may hold, duplicate paths, and the temporary extraction
folder (removed after use, at a Streamlit-style shutdown on SIGTERM, and when a killed process left it behind)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
import zipfile
from pathlib import Path

import pytest
from helpers import make_zip

from fer_core.analysis.archive import (
    EXTRACT_PREFIX,
    MAX_EVAL_IMAGES,
    STALE_AFTER_S,
    ArchiveError,
    extracted_labelled_zip,
    list_labelled_zip,
)

ROOT = Path(__file__).resolve().parent.parent


def zip_with_repeats(names: list[str]) -> bytes:
    """A zip holding these member names in order, repeats included (zipfile warns but writes them)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        with zipfile.ZipFile(buf, "w") as zf:
            for i, name in enumerate(names):
                zf.writestr(name, f"image {i}".encode())
    return buf.getvalue()


def listed(data: bytes) -> list:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return list_labelled_zip(zf)


@pytest.fixture
def temp_root(tmp_path, monkeypatch) -> Path:
    """tempfile.gettempdir() for this test: a folder of its own, so other processes' folders are never touched."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_zip_with_more_images_than_the_limit_is_refused_before_extracting(temp_root):
    at_limit = {f"happy/{i}.png": b"x" for i in range(MAX_EVAL_IMAGES)}
    assert len(listed(make_zip(at_limit))) == MAX_EVAL_IMAGES
    over = make_zip({**at_limit, "sad/one_more.png": b"x"})
    with pytest.raises(ArchiveError, match=f"{MAX_EVAL_IMAGES + 1:,} images; at most {MAX_EVAL_IMAGES:,}") as e:
        with extracted_labelled_zip(over):
            pass
    assert "Split it into smaller zips" in str(e.value)
    assert list(temp_root.iterdir()) == []  # refused before anything was written


@pytest.mark.parametrize("names", [["happy/a.png", "sad/b.png", "happy/a.png"],
                                   ["set/happy/a.png", "set/happy/./a.png"],
                                   ["happy/a.png", "happy/notes.txt", "happy/notes.txt"]])
def test_zip_with_the_same_path_twice_is_refused_naming_it(names, temp_root):
    with pytest.raises(ArchiveError, match="appears more than once") as e:
        with extracted_labelled_zip(zip_with_repeats(names)):
            pass
    assert repr(names[-1]) in str(e.value)
    assert list(temp_root.iterdir()) == []


def test_extraction_folder_has_a_recognisable_name_and_is_removed(temp_root):
    with extracted_labelled_zip(make_zip({"happy/a.png": b"x", "sad/b.png": b"y"})) as (files, _):
        folder = files.paths[0].parent
        assert folder.parent == temp_root and folder.name.startswith(EXTRACT_PREFIX)
    assert not folder.exists()
    with pytest.raises(RuntimeError):  # an error inside the with removes it too
        with extracted_labelled_zip(make_zip({"happy/a.png": b"x"})) as (files, _):
            folder = files.paths[0].parent
            raise RuntimeError("evaluation failed")
    assert not folder.exists()


def test_stale_extraction_folders_are_removed_by_the_next_extraction(temp_root):
    day_old = time.time() - STALE_AFTER_S - 60

    def leftover(name: str, mtime: float) -> Path:
        folder = temp_root / name
        folder.mkdir()
        (folder / "000000.png").write_bytes(b"x" * 1000)
        os.utime(folder, (mtime, mtime))
        return folder

    stale = leftover(EXTRACT_PREFIX + "killed", day_old)
    recent = leftover(EXTRACT_PREFIX + "running", time.time() - 600)  # another evaluation, still under way
    other = leftover("someone_else", day_old)
    with extracted_labelled_zip(make_zip({"happy/a.png": b"x"})):
        assert not stale.exists()
    assert recent.exists() and other.exists()


def test_extraction_folder_is_removed_when_the_process_is_stopped_with_sigterm(tmp_path):
    """A process shaped like `streamlit run`: SIGTERM makes the main thread return, while the evaluation runs in
    a daemon thread that is still inside the extraction's ``with``."""
    zip_path = tmp_path / "set.zip"
    zip_path.write_bytes(make_zip({f"happy/{i}.png": b"x" * 10_000 for i in range(50)}))
    script = textwrap.dedent(f"""
        import signal, sys, threading
        from pathlib import Path
        from fer_core.analysis.archive import extracted_labelled_zip

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())

        def evaluate():
            with extracted_labelled_zip(Path({str(zip_path)!r}).read_bytes()) as (files, _):
                print(files.paths[0].parent, flush=True)
                threading.Event().wait()  # a long evaluation

        threading.Thread(target=evaluate, daemon=True).start()
        stop.wait()
    """)
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_dir), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        folder = Path(proc.stdout.readline().strip())
        assert folder.name.startswith(EXTRACT_PREFIX) and len(list(folder.iterdir())) == 50
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not folder.exists()
    assert list(tmp_dir.iterdir()) == []
