"""Labelled face data: the Kaggle folder layout and the original ``fer2013.csv``.

Folders are mapped to labels by name through :mod:`fer_core.labels`, never by listing order.
Decoded 48x48 arrays can be cached on disk so an epoch never re-decodes 28k JPEGs.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..faces.alignment import face_crop
from ..faces.detection import make_detector
from ..faces.images import ImageLoadError, load_image
from ..faces.preprocessing import resize_face, to_gray
from ..labels import EMOTIONS, UnknownClassError, label_index
from ..locations import FER_IMAGES, SHARED_DATA  # noqa: F401  (re-exported: training's defaults)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"}
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "validation": ("validation", "val", "valid", "publictest", "test"),
}
CSV_USAGE = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}
@dataclass
class LabelledFiles:
    """Image paths with integer labels (FER2013 order), and the files of the class folders that were left out."""

    paths: list[Path]
    labels: np.ndarray  # (N,) int64
    skipped: list[str] = field(default_factory=list)  # one "<path>: <reason>" per file left out

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class FaceArrays:
    """Decoded grayscale faces: images (N, S, S) uint8, labels (N,) int64; ``skipped`` names the files left out
    (unsupported format, unreadable), one "<path>: <reason>" each."""

    images: np.ndarray
    labels: np.ndarray
    skipped: list[str] = field(default_factory=list)
    people: np.ndarray | None = None  # (N,) str: the person of each face (whole photos), when known
    colour: np.ndarray | None = None  # (N, S, S, 3) uint8 RGB crops of the same faces (detect_face_arrays(colour=True))
    names: np.ndarray | None = None  # (N,) str: "<class folder>/<file name>" of each face read from a folder
    targets: np.ndarray | None = None  # (N, 7) float32 soft labels, when the labels are distributions (votes)

    def __len__(self) -> int:
        return len(self.labels)


def list_labelled_folder(root: str | Path) -> LabelledFiles:
    """Images of ``<root>/<class>/*`` (any common format). Any subset of the 7 classes is fine.

    Raises FileNotFoundError for a missing folder and UnknownClassError for a class folder
    that is not an expression (the error names the folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Not a folder: {root}")
    paths: list[Path] = []
    labels: list[int] = []
    skipped: list[str] = []
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{root} has no class folders; expected <folder>/<class>/<image> with classes {EMOTIONS}.")
    for d in class_dirs:
        try:
            label = label_index(d.name)
        except UnknownClassError as e:
            raise UnknownClassError(f"Folder {d} is not an expression class: {e}") from None
        files, left_out = scan_images(d)
        paths += files
        labels += [label] * len(files)
        skipped += left_out
    if not paths:
        raise ValueError(f"No images found under {root} (supported: {', '.join(sorted(IMAGE_SUFFIXES))})"
                         + (f"; left out: {'; '.join(skipped[:5])}." if skipped else "."))
    return LabelledFiles(paths, np.asarray(labels, dtype=np.int64), skipped)


def scan_images(folder: Path) -> tuple[list[Path], list[str]]:
    """The image files under ``folder`` (recursively, sorted) and one "<path>: <reason>" for every other entry
    that is left out: unsupported formats and non-files (pipes, devices, broken links). Hidden files and
    folders (``.DS_Store``, ``.git``) are ignored without a note."""
    files, skipped = [], []
    for p in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(folder).parts) or p.is_dir():
            continue
        if not p.is_file():
            skipped.append(f"{p}: not a regular file")
        elif p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(f"{p}: unsupported format ({p.suffix or 'no extension'})")
        else:
            files.append(p)
    return files, skipped


def describe_skipped(skipped: list[str], what: str, limit: int = 20) -> str:
    """A warning that names the files of ``what`` that were left out (at most ``limit``, then a count); '' if none."""
    if not skipped:
        return ""
    lines = [f"warning: {len(skipped)} file(s) of {what} left out:", *(f"  {s}" for s in skipped[:limit])]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return "\n".join(lines)


def resolve_split_dir(root: str | Path, split: str) -> Path:
    """``<root>/<split>`` accepting the usual names (validation: validation/val/test)."""
    root = Path(root)
    for name in SPLIT_ALIASES.get(split, (split,)):
        for candidate in (root / name, root / name.capitalize()):
            if candidate.is_dir():
                return candidate
    raise FileNotFoundError(f"No {split!r} folder under {root} (tried {', '.join(SPLIT_ALIASES.get(split, (split,)))}).")


def decode_gray(path: str | Path, size: int | None = None) -> np.ndarray:
    """Read an image file as (H, W) uint8 gray, optionally resized to size x size.

    Uses exactly the decoding of the app and the CLI (fer_core.faces.images.load_image -> to_gray ->
    resize_face), so training data and user images go through one preprocessing path.
    Raises fer_core.faces.images.ImageLoadError if unreadable.
    """
    gray = to_gray(load_image(path))
    return resize_face(gray, size) if size is not None else gray


def _cache_key(files: LabelledFiles, size: int) -> str:
    h = hashlib.sha1(str(size).encode())
    for p, y in zip(files.paths, files.labels):
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{int(st.st_mtime)}|{y}\n".encode())
    return h.hexdigest()[:16]


def load_face_arrays(files: LabelledFiles, size: int = 48, cache_dir: str | Path | None = None) -> FaceArrays:
    """Decode every file once to (N, size, size) uint8; with cache_dir, reuse an .npz keyed on the file list.

    Unreadable files are left out and named in ``skipped`` (after the scan's own ``files.skipped``).
    """
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"faces_{_cache_key(files, size)}.npz"
        if cache_path.exists():
            with np.load(cache_path) as z:
                unreadable = [str(m) for m in z["skipped"]] if "skipped" in z else []
                return FaceArrays(z["images"], z["labels"], files.skipped + unreadable,
                                  names=_readable_names(files, unreadable))
    images, keep, unreadable = [], [], []
    for i, p in enumerate(files.paths):
        try:
            images.append(decode_gray(p, size))
            keep.append(i)
        except ImageLoadError as e:  # one bad file must not abort a 28k-image run; it is reported instead
            unreadable.append(f"{p}: unreadable ({e})")
    if not images:
        raise ValueError(f"None of the {len(files)} images could be read; the first: {unreadable[0]}")
    arrays = FaceArrays(np.stack(images), files.labels[keep].copy(), files.skipped + unreadable,
                        names=_readable_names(files, unreadable))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".{os.getpid()}.tmp.npz")  # per process: several ranks may write at once
        np.savez(tmp, images=arrays.images, labels=arrays.labels, skipped=np.asarray(unreadable, dtype=str))
        os.replace(tmp, cache_path)
    return arrays


def memmap_face_arrays(files: LabelledFiles, size: int, cache_dir: str | Path) -> FaceArrays:
    """Like :func:`load_face_arrays`, for sets too large to hold in memory: the faces are decoded once, one file at
    a time, into ``<cache_dir>/faces_<key>_images.npy`` ((N, size, size) uint8, keyed on the file list like the
    .npz cache) and returned memory-mapped read-only, so memory stays bounded by what is read, and the processes
    of one machine share the file's pages. Labels and the names of unreadable files (small) are in memory.
    """
    cache_dir = Path(cache_dir)
    base = f"faces_{_cache_key(files, size)}"
    images_path, index_path = cache_dir / f"{base}_images.npy", cache_dir / f"{base}_index.npz"
    if not (images_path.exists() and index_path.exists()):  # the index is written last: it marks a complete file
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp_images = cache_dir / f"{base}_images.{os.getpid()}.tmp.npy"
        out = np.lib.format.open_memmap(tmp_images, mode="w+", dtype=np.uint8, shape=(len(files), size, size))
        keep, unreadable = [], []
        for i, p in enumerate(files.paths):
            try:
                out[len(keep)] = decode_gray(p, size)
                keep.append(i)
            except ImageLoadError as e:  # left out and named, as in load_face_arrays
                unreadable.append(f"{p}: unreadable ({e})")
        out.flush()
        del out
        if not keep:
            tmp_images.unlink()
            raise ValueError(f"None of the {len(files)} images could be read; the first: {unreadable[0]}")
        tmp_index = cache_dir / f"{base}_index.{os.getpid()}.tmp.npz"
        np.savez(tmp_index, labels=files.labels[keep], skipped=np.asarray(unreadable, dtype=str))
        os.replace(tmp_images, images_path)
        os.replace(tmp_index, index_path)
    with np.load(index_path) as z:
        labels, unreadable = z["labels"], [str(m) for m in z["skipped"]]
    images = np.load(images_path, mmap_mode="r")[: len(labels)]  # rows past the readable images stay unused
    return FaceArrays(images, labels, files.skipped + unreadable, names=_readable_names(files, unreadable))


def _readable_names(files: LabelledFiles, unreadable: list[str]) -> np.ndarray:
    """(N,) str "<class folder>/<file name>" of the files that were decoded (``unreadable``: "<path>: unreadable
    (...)" lines): the key of a votes file (fer_core.analysis.votes.face_key)."""
    left_out = {line.rsplit(": unreadable (", 1)[0] for line in unreadable}
    return np.array([f"{p.parent.name}/{p.name}" for p in files.paths if str(p) not in left_out], dtype=str)


def read_fer2013_csv(path: str | Path, split: str) -> FaceArrays:
    """Rows of the original ``fer2013.csv`` (emotion,pixels,Usage) for split train/validation/test."""
    import pandas as pd

    usage = CSV_USAGE.get(split, split)
    df = pd.read_csv(path)
    missing = {"emotion", "pixels", "Usage"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} lacks column(s) {sorted(missing)}; expected emotion,pixels,Usage.")
    df = df[df["Usage"] == usage]
    if df.empty:
        raise ValueError(f"{path} has no rows with Usage == {usage!r}.")
    images = np.stack([np.asarray(s.split(), dtype=np.uint8).reshape(48, 48) for s in df["pixels"]])
    labels = df["emotion"].to_numpy(dtype=np.int64)
    if labels.min() < 0 or labels.max() >= len(EMOTIONS):
        raise ValueError(f"{path}: emotion labels must be 0..{len(EMOTIONS) - 1}.")
    return FaceArrays(images, labels)


def load_split(data: str | Path, split: str, size: int = 48, cache_dir: str | Path | None = None,
               memmap: bool = False) -> FaceArrays:
    """A split from either a Kaggle-layout root folder or a fer2013.csv file. With ``memmap`` (folders only, needs
    ``cache_dir``) the images are a read-only memory map (:func:`memmap_face_arrays`) instead of an array in memory."""
    data = Path(data)
    if data.suffix.lower() == ".csv":
        if memmap:
            raise ValueError(f"{data} is a CSV file, read whole into memory; memory-mapped faces need a folder layout.")
        return read_fer2013_csv(data, split)
    files = list_labelled_folder(resolve_split_dir(data, split))
    if memmap:
        if cache_dir is None:
            raise ValueError("memory-mapped faces need a cache folder to write them to.")
        return memmap_face_arrays(files, size, cache_dir)
    return load_face_arrays(files, size, cache_dir)


# A person's photos share the file-name stem up to its last "_<digits>" (CFEE: cfee_id<subject>_<index>.jpg).
_PERSON_SUFFIX = re.compile(r"_\d+$")
PERSON_SPLITS = ("all", "train", "test", "calibration")


def person_of(path: str | Path) -> str:
    """The person a photo shows, from its file name: ``cfee_id113_0113.jpg`` -> ``cfee_id113``."""
    return _PERSON_SUFFIX.sub("", Path(path).stem)


def split_by_person(files: LabelledFiles, part: str, test_fraction: float = 0.3, seed: int = 0,
                    calibration_fraction: float = 0.0) -> LabelledFiles:
    """The ``train``, ``test`` or ``calibration`` people of a labelled set (``all``: every file), never one person
    in two parts.

    People are shuffled with ``seed``; the first ``test_fraction`` of them are the test people, the next
    ``calibration_fraction`` (of all people) the calibration people (fitted on, never trained on), the rest the
    training people. The test people do not depend on ``calibration_fraction``, and the same arguments always give
    the same split, in training, calibration and evaluation.
    """
    if part == "all":
        return files
    if part not in PERSON_SPLITS:
        raise ValueError(f"person split must be one of {PERSON_SPLITS}, got {part!r}")
    people = sorted({person_of(p) for p in files.paths})
    order = [people[i] for i in np.random.default_rng(seed).permutation(len(people))]
    n_test = int(round(test_fraction * len(people)))
    n_calibration = int(round(calibration_fraction * len(people)))
    parts = {"test": set(order[:n_test]), "calibration": set(order[n_test:n_test + n_calibration]),
             "train": set(order[n_test + n_calibration:])}
    keep = [i for i, p in enumerate(files.paths) if person_of(p) in parts[part]]
    return LabelledFiles([files.paths[i] for i in keep], files.labels[keep], files.skipped)


def detect_face_arrays(files: LabelledFiles, size: int = 48, detector: str = "retinaface",
                       cache_dir: str | Path | None = None, colour: bool = False) -> FaceArrays:
    """Whole labelled photos -> the largest face of each, cropped exactly as the app crops it
    (:func:`fer_core.faces.alignment.face_crop`), as (N, size, size) uint8, with the person of each face
    (:func:`person_of`) in ``people``. Photos without a face are left out; unreadable photos too, named in
    ``skipped``. ``colour``: also the same crops in RGB, (N, size, size, 3) uint8 in ``colour`` (for training's
    colour-to-grey variations). With ``cache_dir``, the crops are cached in an .npz keyed on the file list, size
    and detector."""
    cache_path = None
    if cache_dir is not None:
        kind = f"{detector}_rgb" if colour else detector
        cache_path = Path(cache_dir) / f"photo_faces_{kind}_{_cache_key(files, size)}.npz"
        if cache_path.exists():
            with np.load(cache_path) as z:
                return FaceArrays(z["images"], z["labels"], files.skipped + [str(m) for m in z["skipped"]],
                                  z["people"], z["colour"] if colour else None)
    finder = make_detector(detector)
    images, colours, labels, people, unreadable = [], [], [], [], []
    for path, label in zip(files.paths, files.labels):
        try:
            rgb = load_image(path)
        except ImageLoadError as e:
            unreadable.append(f"{path}: unreadable ({e})")
            continue
        gray = to_gray(rgb)  # decode_gray's conversion: the app's
        faces = finder.detect(gray)
        if faces:
            images.append(face_crop(gray, faces[0], size))
            if colour:
                colours.append(face_crop(rgb, faces[0], size))
            labels.append(label)
            people.append(person_of(path))
    if not images:
        raise ValueError("No face was found in any of the photos.")
    arrays = FaceArrays(np.stack(images), np.asarray(labels, dtype=np.int64), files.skipped + unreadable,
                        np.asarray(people, dtype=str), np.stack(colours) if colour else None)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".{os.getpid()}.tmp.npz")
        extra = {"colour": arrays.colour} if colour else {}
        np.savez(tmp, images=arrays.images, labels=arrays.labels, people=arrays.people,
                 skipped=np.asarray(unreadable, dtype=str), **extra)
        os.replace(tmp, cache_path)
    return arrays
