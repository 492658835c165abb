"""Small file-system helpers shared by the command lines and the pages: a folder proven writable before any work,
file names that fit the file system, the removal of leftovers older than an age, and a text file replaced in one
step (readers never see it half-written)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

NAME_MAX = 255  # bytes of one file name on Linux, macOS and Windows file systems


def writable_folder(path: str | Path) -> Path:
    """Create folder ``path`` if needed and prove a file can be written in it (the file is removed again).
    Raises OSError (FileExistsError, NotADirectoryError, PermissionError, ...) when it cannot be used."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass
    return path



def unusable_folder(option: str, folder: Path) -> str | None:
    """None when ``folder`` is a writable folder (created if needed); else the error line for the command-line
    ``option`` that named it."""
    try:
        writable_folder(folder)
    except OSError as e:
        return (f"error: {option} {folder} is not a writable folder ({e.strerror or e}); choose another folder or fix "
                "its permissions.")
    return None


def fitting_name(stem: str, suffix: str, prefix: str = "") -> str:
    """``prefix + stem + suffix`` with ``stem`` cut (at a character boundary) so that the name fits NAME_MAX
    bytes in UTF-8."""
    budget = NAME_MAX - len((prefix + suffix).encode())
    return prefix + stem.encode()[:max(budget, 0)].decode(errors="ignore") + suffix


def remove_older_than(paths: Iterable[Path], max_age_s: float) -> list[Path]:
    """Delete each of ``paths`` (a file, or a folder with what it holds; never what a symbolic link points to)
    last modified more than ``max_age_s`` seconds ago; returns the ones removed. Paths that vanish meanwhile (another
    process removed them) are skipped."""
    now = time.time()
    removed = []
    for path in paths:
        try:
            if now - path.lstat().st_mtime <= max_age_s:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


TMP_MARK = ".tmp"  # in the names of files being written (a killed writer's leftovers can be found by it)


def temporary_beside(path: Path) -> Path:
    """A new temporary name in ``path``'s folder (created if needed) with ``path``'s suffix, so that writers that
    go by the suffix pick the right format; its name holds :data:`TMP_MARK`."""
    path.parent.mkdir(parents=True, exist_ok=True)  # the stem is cut so that the longer name still fits NAME_MAX
    return path.with_name(fitting_name(path.stem, f".{uuid.uuid4().hex[:12]}{TMP_MARK}{path.suffix}", prefix="."))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path (:func:`temporary_beside`) to write ``path`` to; renamed to ``path`` when the block ends
    without an exception, removed when it raises: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_text_file(path: str | Path, max_bytes: int) -> str:
    """The text of a file a user names: a regular file (a device, fifo or folder is refused before it is opened, so
    ``/dev/zero`` cannot be read forever) of at most ``max_bytes``, UTF-8 with or without the BOM a spreadsheet
    writes. ValueError with the reason otherwise."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror or e}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file")
    if info.st_size > max_bytes:
        raise ValueError(f"{path} is {info.st_size / 2**20:.0f} MB; at most {max_bytes // 2**20} MB is read")
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)  # the size may have changed since stat
    if len(data) > max_bytes:
        raise ValueError(f"{path} grew past {max_bytes // 2**20} MB while it was read")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
