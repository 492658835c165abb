"""Labelled zip archives (``<class>/<image>``, optionally inside one top folder) for evaluation.

Members are checked before anything is extracted: absolute paths, ``..`` components, drive letters,
links, the same path twice, unknown class folders, too many or too large files are refused with an
:class:`ArchiveError` (or :class:`fer_core.labels.UnknownClassError`) that names the member. One zip is
evaluated in one request, so it may hold at most :data:`MAX_EVAL_IMAGES` images (about 20 minutes of CPU with
test-time augmentation); larger sets are split into several zips or evaluated with ``python -m training.evaluate``.

Images are extracted into a ``fer_zip_*`` folder under ``tempfile.gettempdir()`` that exists only while the
evaluation runs. It is also removed when the process exits normally, as Streamlit does on SIGTERM or Ctrl+C;
folders that a killed process left behind are removed by the next extraction once they are a day old. The
per-image records of the result name the zip members, and :func:`read_member` reads one back from the zip in
memory.
"""

from __future__ import annotations

import atexit
import io
import shutil
import stat
import tempfile
import threading
import time
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from ..faces.alignment import face_crop
from ..faces.detection import Face
from ..faces.images import load_image
from ..faces.preprocessing import crop_face, to_gray
from ..files import remove_older_than
from ..labels import EMOTIONS, UnknownClassError, label_index
from .datasets import IMAGE_SUFFIXES, LabelledFiles
from .evaluation import evaluate_models

MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 50 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024  # uncompressed; guards against zip bombs
READ_CHUNK = 1024 * 1024  # members are decompressed this many bytes at a time (their headers may lie)
MAX_EVAL_IMAGES = 5_000  # images evaluated from one zip: about 220 ms each with TTA on a small CPU
EXTRACT_PREFIX = "fer_zip_"  # extraction folders under tempfile.gettempdir()
STALE_AFTER_S = 24 * 3600  # a leftover extraction folder older than this belongs to no running evaluation
_IGNORED_PARTS = {"__MACOSX"}


class ArchiveError(ValueError):
    """A zip that is not a readable, safe ``<class>/<image>`` archive."""


@dataclass
class ZipMember:
    """One image of the archive: its member name and integer label (FER2013 order)."""

    name: str
    label: int


def _safe_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name; raises ArchiveError for absolute paths and ``..`` tricks."""
    if "\\" in name:
        raise ArchiveError(f"Zip member {name!r} uses backslashes; zip paths must use '/'.")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"Zip member {name!r} has an absolute path; the zip must hold <class>/<image> paths.")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise ArchiveError(f"Zip member {name!r} points outside the archive ('..'); refusing it.")
    return tuple(p for p in parts if p not in ("", "."))


def list_labelled_zip(zf: zipfile.ZipFile) -> list[ZipMember]:
    """Check every member and return the images with their labels, in a stable (name) order.

    Accepts ``<class>/<image>`` and ``<top>/<class>/<image>`` (a zipped folder); hidden files and
    macOS resource forks are ignored, other non-image files are ignored too.
    """
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(f"The zip has {len(infos)} members; at most {MAX_MEMBERS} are accepted.")
    total = 0
    entries: list[tuple[tuple[str, ...], zipfile.ZipInfo]] = []
    seen: set[tuple[str, ...]] = set()
    for info in infos:
        parts = _safe_parts(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArchiveError(f"Zip member {info.filename!r} is a symbolic link; refusing it.")
        if not info.filename or info.is_dir() or not parts:  # a nameless member (a damaged zip) holds no image
            continue
        if parts in seen:  # zf.read would silently pick one of them
            raise ArchiveError(f"Zip member {info.filename!r} appears more than once in the zip; every path must "
                               "be unique. Re-create the zip from the folder.")
        seen.add(parts)
        if any(p.startswith(".") or p in _IGNORED_PARTS for p in parts):
            continue
        if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if info.file_size > MAX_MEMBER_BYTES:
            raise ArchiveError(f"Zip member {info.filename!r} is larger than {MAX_MEMBER_BYTES // 2**20} MB.")
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise ArchiveError(f"The zip unpacks to more than {MAX_TOTAL_BYTES // 2**30} GB; refusing it.")
        entries.append((parts, info))
    if not entries:
        raise ArchiveError(f"The zip holds no images. Expected <class>/<image> with classes {', '.join(EMOTIONS)}.")
    if len(entries) > MAX_EVAL_IMAGES:
        raise ArchiveError(f"The zip holds {len(entries):,} images; at most {MAX_EVAL_IMAGES:,} are evaluated from "
                           "one zip. Split it into smaller zips, or run `python -m training.evaluate <folder>` on "
                           "the server.")
    depths = {len(parts) for parts, _ in entries}
    tops = {parts[0] for parts, _ in entries}
    if depths == {3} and len(tops) == 1:
        strip = 1  # one wrapping folder, as when a whole folder is zipped
    elif depths == {2}:
        strip = 0
    else:
        example = "/".join(min(entries, key=lambda e: (len(e[0]) == 2, e[1].filename))[0])
        raise ArchiveError(f"Unexpected zip layout (e.g. {example!r}): every image must be at <class>/<image> "
                           f"(optionally inside one top folder), with classes {', '.join(EMOTIONS)}.")
    members = []
    for parts, info in sorted(entries, key=lambda e: e[1].filename):
        folder = parts[strip]
        try:
            label = label_index(folder)
        except UnknownClassError as e:
            raise UnknownClassError(f"Folder {folder!r} in the zip is not an expression class: {e}") from None
        members.append(ZipMember(info.filename, label))
    return members


def _open(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise ArchiveError(f"Not a readable zip file ({e}).") from None
    except UnicodeDecodeError:  # a member name flagged UTF-8 that is not
        raise ArchiveError("The zip names a member in bytes that are not valid UTF-8 although the zip says they are; "
                           "re-create the zip with your system's zip tool.") from None


def _read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    """One member's bytes, decompressed in bounded chunks: never more than its declared size (checked against
    MAX_MEMBER_BYTES when listed) nor MAX_MEMBER_BYTES, whatever the compressed stream holds. A damaged member
    (bad CRC, corrupt deflate data, encrypted, truncated) is an ArchiveError that names it."""
    chunks, total = [], 0
    try:
        with zf.open(name) as member:
            while chunk := member.read(READ_CHUNK):
                total += len(chunk)
                if total > MAX_MEMBER_BYTES:
                    raise ArchiveError(f"Zip member {name!r} is larger than {MAX_MEMBER_BYTES // 2**20} MB.")
                chunks.append(chunk)
    except KeyError:
        raise ArchiveError(f"{name!r} is not in the zip.") from None
    except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, EOFError, NotImplementedError) as e:
        raise ArchiveError(f"Cannot read zip member {name!r} ({e}).") from None  # RuntimeError: encrypted
    return b"".join(chunks)


# Extraction folders in use, removed at interpreter exit too: Streamlit turns SIGTERM and Ctrl+C into a normal
# exit while script threads (daemons) may still be extracting or evaluating.
_live_folders: set[Path] = set()
_live_lock = threading.Lock()
_exiting = threading.Event()
_exit_hook_registered = False


def _remove_live_folders() -> None:
    _exiting.set()  # an extraction in progress stops before its next write
    with _live_lock:
        folders = list(_live_folders)
    for folder in folders:
        for _ in range(20):  # retried: a write that was already under way may land after a first pass
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                break
            time.sleep(0.05)


def _register_folder(folder: Path) -> None:
    global _exit_hook_registered
    with _live_lock:
        if not _exit_hook_registered:  # registered on first use: importing this module has no side effects
            atexit.register(_remove_live_folders)
            _exit_hook_registered = True
        _live_folders.add(folder)


def remove_stale_extractions(max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete ``fer_zip_*`` folders under ``tempfile.gettempdir()`` last modified over ``max_age_s`` ago (left by
    a process that was killed mid-evaluation); returns the ones removed. Folders of running evaluations are far
    younger: one zip takes well under an hour."""
    folders = [f for f in Path(tempfile.gettempdir()).glob(EXTRACT_PREFIX + "*") if f.is_dir() and not f.is_symlink()]
    return remove_older_than(folders, max_age_s)


@contextmanager
def extracted_labelled_zip(data: bytes) -> Iterator[tuple[LabelledFiles, list[str]]]:
    """Check the zip, extract its images to a temporary folder, yield (files, member names) and delete the folder.

    ``files.paths[i]`` is the extracted copy of ``members[i]``; the paths are only valid inside the ``with``. The
    folder is ``fer_zip_*`` under ``tempfile.gettempdir()``; it is removed on leaving the ``with`` and at
    interpreter exit, and stale ones left by killed processes are removed first.
    """
    with _open(data) as zf:
        members = list_labelled_zip(zf)
        remove_stale_extractions()
        root = Path(tempfile.mkdtemp(prefix=EXTRACT_PREFIX))
        _register_folder(root)
        try:
            paths = []
            for i, m in enumerate(members):
                if _exiting.is_set():
                    raise ArchiveError("The server is shutting down; the zip was not evaluated.")
                # Our own file names: the member name is never used as a path on disk.
                target = root / f"{i:06d}{PurePosixPath(m.name).suffix.lower()}"
                data = _read_member(zf, m.name)
                try:
                    target.write_bytes(data)
                except OSError as e:
                    raise ArchiveError(f"Cannot extract zip member {m.name!r} ({e.strerror or e}).") from None
                paths.append(target)
            labels = np.asarray([m.label for m in members], dtype=np.int64)
            yield LabelledFiles(paths, labels), [m.name for m in members]
        finally:
            shutil.rmtree(root, ignore_errors=True)
            with _live_lock:
                _live_folders.discard(root)


def evaluate_zip(predictor, data: bytes, **kwargs):
    """:func:`fer_core.analysis.evaluation.evaluate_files` on a labelled zip; records' ``path`` is the zip member name."""
    return evaluate_zip_models([predictor], data, **kwargs)[0]


def evaluate_zip_models(predictors, data: bytes, **kwargs) -> list:
    """:func:`fer_core.analysis.evaluation.evaluate_models` on a labelled zip (every model on the same faces); records'
    ``path`` is the zip member name."""
    with extracted_labelled_zip(data) as (files, members):
        results = evaluate_models(predictors, files, **kwargs)
    for result in results:
        for rec, name in zip(result.records, members):
            rec["path"] = name
            rec["source"] = "zip"
            if rec.get("error"):  # the message names the temporary file; name the member instead
                rec["error"] = f"{name}: {rec['error'].split(': ', 1)[-1]}"
    return results


def read_member(data: bytes, name: str) -> bytes:
    """The bytes of one member of a zip held in memory."""
    with _open(data) as zf:
        return _read_member(zf, name)


def record_image(record: dict, zip_data: bytes | None = None, margin: float = 0.15) -> np.ndarray:
    """The (H, W, 3) uint8 RGB image behind an evaluation record (from the zip when ``record['source']`` is
    "zip", else from its path), cropped to the detected face box (grown by ``margin``) when there is one.

    Raises fer_core.faces.images.ImageLoadError (or ArchiveError) when it cannot be read.
    """
    rgb = _record_rgb(record, zip_data)
    box = record.get("box")
    return crop_face(rgb, box, margin) if box else rgb


def _record_rgb(record: dict, zip_data: bytes | None) -> np.ndarray:
    if record.get("source") == "zip":
        if zip_data is None:
            raise ArchiveError("The zip of this evaluation is no longer available; upload it again.")
        return load_image(read_member(zip_data, record["path"]))
    return load_image(record["path"])


def record_face_crop(record: dict, zip_data: bytes | None = None, size: int = 48, margin: float = 0.0,
                     align: bool = True) -> np.ndarray:
    """The (H, W) uint8 gray face the evaluation classified for ``record``: the whole image for pre-cropped faces,
    else the detected face cropped by :func:`fer_core.faces.alignment.face_crop` (on its landmarks when ``align``), as
    (size, size). Raises like :func:`record_image`."""
    gray = to_gray(_record_rgb(record, zip_data))
    box = record.get("box")
    if not box:
        return gray
    landmarks = tuple(tuple(p) for p in record.get("landmarks") or ()) if align else ()
    return face_crop(gray, Face(tuple(box), float(record.get("score", 1.0)), landmarks), size, margin)
