"""Crowd votes as labels: FER+ (Barsoum et al., ICMI 2016), ten people's reading of each FER2013 face.

A votes file is a CSV with a ``file`` column (the image's path under its split folder, ``<class>/<name>.jpg``) and
the ten FER+ vote counts ``neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF``
(``NF``: not a face; ``unknown``: no emotion could be told). Two readings of them:

* the **majority label** (:func:`majority_labels`): the class with the most votes; a face whose top count is shared
  (a tie), or whose majority is contempt, unknown or not-a-face, has none (-1) and is left out of a scoring;
* the **vote distribution** over the seven classes (:func:`vote_distributions`): the seven emotions' counts
  divided by their sum; contempt, unknown and not-a-face votes are dropped (contempt is no class of the model),
  and a face with no emotion vote at all has none (a row of NaN).

Faces are matched by class folder and file name (:func:`face_key`, ``angry/PublicTest_10116449.jpg``), so a votes
file fits a Kaggle folder wherever it lies. Pure functions over arrays; files are read with a size cap and as UTF-8 (with or without a BOM).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..files import read_text_file
from ..labels import EMOTIONS, label_index
from .datasets import LabelledFiles

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
EMOTION_COLUMNS = VOTE_COLUMNS[:7]  # the columns that are classes of the model (by name, through labels.ALIASES)
# column index (in VOTE_COLUMNS) of each class, in EMOTIONS order
CLASS_COLUMN = np.array([[label_index(c) for c in EMOTION_COLUMNS].index(i) for i in range(len(EMOTIONS))])
MAX_VOTES_BYTES = 64 * 1024 * 1024  # a votes file of FER2013's 35,887 faces is about 2 MB


def face_key(path: str | Path) -> str:
    """``<class folder>/<file name>``: how a face is looked up in a votes file."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


class VotesError(ValueError):
    """A votes file that cannot be used: unreadable, too large, or without the FER+ columns."""


@dataclass(frozen=True)
class Votes:
    """Vote counts per face: ``names`` (:func:`face_key` of each row) and ``counts`` (N, 10) in VOTE_COLUMNS order."""

    names: list[str]
    counts: np.ndarray
    source: str = ""

    def by_name(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


def read_votes(path: str | Path) -> Votes:
    """Read a FER+ votes CSV (VotesError with the reason when it cannot be used)."""
    path = Path(path)
    if not path.is_file():
        raise VotesError(f"{path} is not a file")
    try:
        text = read_text_file(path, MAX_VOTES_BYTES)
    except ValueError as e:  # too large, not UTF-8
        raise VotesError(str(e)) from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("file", *VOTE_COLUMNS) if c not in (reader.fieldnames or [])]
    if missing:
        raise VotesError(f"{path} has no column {', '.join(missing)}: a FER+ votes file has file and "
                         f"{', '.join(VOTE_COLUMNS)}")
    names, rows = [], []
    for line, row in enumerate(reader, start=2):
        try:
            counts = [int(float(row[c])) for c in VOTE_COLUMNS]
        except (TypeError, ValueError):
            raise VotesError(f"{path}, line {line}: the vote counts must be numbers") from None
        if min(counts) < 0:
            raise VotesError(f"{path}, line {line}: a negative vote count")
        names.append(face_key(row["file"].strip()))
        rows.append(counts)
    return Votes(names, np.asarray(rows, dtype=np.int64).reshape(-1, len(VOTE_COLUMNS)), str(path))


def majority_labels(counts: np.ndarray) -> np.ndarray:
    """(N,) class index (EMOTIONS order) of each face's majority vote; -1 for a tie or a majority of contempt,
    unknown or not-a-face."""
    counts = np.asarray(counts)
    top = counts.max(axis=1, keepdims=True)
    winner = counts.argmax(axis=1)
    unique = (counts == top).sum(axis=1) == 1
    column_to_class = np.full(len(VOTE_COLUMNS), -1)
    column_to_class[CLASS_COLUMN] = np.arange(len(EMOTIONS))
    labels = column_to_class[winner]
    labels[~unique | (top[:, 0] == 0)] = -1
    return labels


def vote_distributions(counts: np.ndarray) -> np.ndarray:
    """(N, 7) float32 share of each class (EMOTIONS order) among the face's emotion votes; NaN rows where a face has
    no emotion vote (only contempt, unknown or not-a-face)."""
    emotion = np.asarray(counts, dtype=np.float64)[:, CLASS_COLUMN]
    total = emotion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (emotion / np.where(total > 0, total, np.nan)).astype(np.float32)


def votes_for(names: list[str], votes: Votes) -> np.ndarray:
    """(len(names), 10) counts of the faces named (:func:`face_key`), zeros where the votes file has no row."""
    index = votes.by_name()
    out = np.zeros((len(names), len(VOTE_COLUMNS)), dtype=np.int64)
    for i, name in enumerate(names):
        j = index.get(name)
        if j is not None:
            out[i] = votes.counts[j]
    return out


def with_majority_labels(files: LabelledFiles, votes: Votes) -> tuple[LabelledFiles, dict]:
    """``files`` scored against the crowd: each relabelled with its majority vote, the faces without one (no row in
    the votes file, a tie, a contempt / unknown / not-a-face majority) left out. Returns the files and a count of
    what was kept, relabelled and left out."""
    counts = votes_for([face_key(p) for p in files.paths], votes)
    majority = majority_labels(counts)
    has_row = counts.sum(axis=1) > 0
    keep = majority >= 0
    report = {"images": len(files), "kept": int(keep.sum()), "no_votes": int((~has_row).sum()),
              "no_majority": int((has_row & ~keep).sum()),
              "relabelled": int((keep & (majority != files.labels)).sum()), "votes_file": votes.source}
    kept = replace(files, paths=[p for p, k in zip(files.paths, keep) if k], labels=majority[keep].astype(files.labels.dtype))
    return kept, report
