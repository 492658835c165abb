"""Labelled zip archives (``<class>/<image>``, optionally inside one top folder) for evaluation.

Members are checked before anything is extracted: absolute paths, ``..`` components, drive letters,
links, unknown class folders, too many or too large files are refused with an :class:`ArchiveError`
(or :class:`fer_core.labels.UnknownClassError`) that names the member. Images are extracted into a
``tempfile.TemporaryDirectory`` that exists only while the evaluation runs; the per-image records
of the result name the zip members, and :func:`read_member` reads one back from the zip in memory.
"""

from __future__ import annotations

import io
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from .datasets import IMAGE_SUFFIXES, LabelledFiles
from .evaluation import evaluate_files
from .images import load_image
from .labels import EMOTIONS, UnknownClassError, label_index
from .preprocessing import crop_face

MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 50 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024  # uncompressed; guards against zip bombs
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
    for info in infos:
        parts = _safe_parts(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArchiveError(f"Zip member {info.filename!r} is a symbolic link; refusing it.")
        if info.is_dir() or not parts or any(p.startswith(".") or p in _IGNORED_PARTS for p in parts):
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


@contextmanager
def extracted_labelled_zip(data: bytes) -> Iterator[tuple[LabelledFiles, list[str]]]:
    """Check the zip, extract its images to a temporary folder, yield (files, member names) and delete the folder.

    ``files.paths[i]`` is the extracted copy of ``members[i]``; the paths are only valid inside the ``with``.
    """
    with _open(data) as zf:
        members = list_labelled_zip(zf)
        with tempfile.TemporaryDirectory(prefix="fer_zip_") as tmp:
            root = Path(tmp)
            paths = []
            for i, m in enumerate(members):
                # Our own file names: the member name is never used as a path on disk.
                target = root / f"{i:06d}{PurePosixPath(m.name).suffix.lower()}"
                try:
                    target.write_bytes(zf.read(m.name))
                except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as e:  # RuntimeError: encrypted
                    raise ArchiveError(f"Cannot read zip member {m.name!r} ({e}).") from None
                paths.append(target)
            labels = np.asarray([m.label for m in members], dtype=np.int64)
            yield LabelledFiles(paths, labels), [m.name for m in members]


def evaluate_zip(predictor, data: bytes, **kwargs):
    """:func:`fer_core.evaluation.evaluate_files` on a labelled zip; records' ``path`` is the zip member name."""
    with extracted_labelled_zip(data) as (files, members):
        result = evaluate_files(predictor, files, **kwargs)
    for rec, name in zip(result.records, members):
        rec["path"] = name
        rec["source"] = "zip"
        if rec.get("error"):  # the message names the temporary file; name the member instead
            rec["error"] = f"{name}: {rec['error'].split(': ', 1)[-1]}"
    return result


def read_member(data: bytes, name: str) -> bytes:
    """The bytes of one member of a zip held in memory."""
    with _open(data) as zf:
        try:
            return zf.read(name)
        except KeyError:
            raise ArchiveError(f"{name!r} is not in the zip.") from None


def record_image(record: dict, zip_data: bytes | None = None, margin: float = 0.15) -> np.ndarray:
    """The (H, W, 3) uint8 RGB image behind an evaluation record (from the zip when ``record['source']`` is
    "zip", else from its path), cropped to the detected face box (grown by ``margin``) when there is one.

    Raises fer_core.images.ImageLoadError (or ArchiveError) when it cannot be read.
    """
    if record.get("source") == "zip":
        if zip_data is None:
            raise ArchiveError("The zip of this evaluation is no longer available; upload it again.")
        rgb = load_image(read_member(zip_data, record["path"]))
    else:
        rgb = load_image(record["path"])
    box = record.get("box")
    return crop_face(rgb, box, margin) if box else rgb
