"""The files of ``fer_core.jobs.batch``: the columns of its two tables, the per-input parts written atomically, and the
final tables (written from the parts while the job runs) and manifest.

Layout of the output folder::

    photos.parquet   one row per face of every photo (PHOTO_SCHEMA); photos.csv too with --csv
    videos.parquet   one row per analysed frame and face of every video (VIDEO_SCHEMA); videos.csv too with --csv
    manifest.jsonl   one JSON object per input, in input order (status done / failed / skipped, see fer_core.jobs.batch)
    annotated/       with --annotated: <name>_<key>_annotated.jpg per photo, .mp4 per video
    parts/           <key>.arrow (the input's rows) and <key>.json (its manifest line) per input

Every file is written under a temporary name in its folder and renamed into place (:func:`atomic_path`), so a
process killed at any moment leaves either the whole file or none of it. An input's ``<key>.json`` is written
last: it is what says the input is done, and a rerun reuses the input only when it is there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc  # noqa: F401 - pa.ipc
import pyarrow.parquet as pq

from ..faces.detection import (  # a Face's five landmarks ("left"/"right" as seen in the image)
    LANDMARK_COLUMNS,
    landmark_values,
)
from ..files import TMP_MARK, atomic_path, temporary_beside
from ..labels import EMOTIONS

PHOTO, VIDEO = "photo", "video"
PARTS = "parts"
ANNOTATED = "annotated"
MANIFEST = "manifest.jsonl"
TABLES = {PHOTO: "photos", VIDEO: "videos"}  # kind -> file name of its table, without the suffix
ROWS_PER_GROUP = 4096  # rows of a video written to its part at a time: memory stays flat on long videos
TABLE_ROW_GROUP = 65_536  # rows per row group of the final tables (at least: a part is never cut)

_BOX = [("x", pa.int32()), ("y", pa.int32()), ("w", pa.int32()), ("h", pa.int32())]
_PROBABILITIES = [(name, pa.float64()) for name in EMOTIONS]
PHOTO_SCHEMA = pa.schema([
    ("source", pa.string()),  # absolute path of the photo
    ("face", pa.int32()),  # 1, 2, ... left to right, as the upload page and fer_core.predict number them
    *_BOX,  # pixels of the photo after its EXIF orientation
    ("label", pa.string()),  # the expression, or "uncertain" under --uncertain-below
    ("top_label", pa.string()),  # the most probable expression
    ("confidence", pa.float64()),
    ("whole_image", pa.bool_()),  # no face found: the whole image was classified (--whole-image)
    ("detector_score", pa.float64()),
    *[(name, pa.float64()) for name in LANDMARK_COLUMNS],  # null without landmarks (Haar, whole image)
    *_PROBABILITIES,
])
VIDEO_SCHEMA = pa.schema([
    ("source", pa.string()),  # absolute path of the video
    ("frame", pa.int64()),  # index of the frame in the file, from 0
    ("time_s", pa.float64()),  # the frame's presentation time
    ("timestamp", pa.string()),  # the same as hh:mm:ss.mmm
    ("face_id", pa.int32()),  # the tracker's ID: the same face keeps it from frame to frame
    *_BOX,
    ("label", pa.string()),
    ("confidence", pa.float64()),  # of the smoothed probabilities
    *_PROBABILITIES,
    *[(name, pa.float64()) for name in LANDMARK_COLUMNS],  # of the detection the box comes from; null with Haar
])
SCHEMAS = {PHOTO: PHOTO_SCHEMA, VIDEO: VIDEO_SCHEMA}


def source_text(path: str) -> str:
    """A path as the tables' UTF-8 ``source`` text. A file name whose bytes are not UTF-8 (Python reads it with
    surrogate escapes, which Arrow cannot store) shows those bytes as ``\\xNN``; every other path is unchanged."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def photo_row(source: str, face: int, entry: dict) -> tuple:
    """One PHOTO_SCHEMA row from the ``fer_core.predict --json`` object of a face (fer_core.analysis.photos.face_entries)."""
    return (source, face, *entry["box"], entry["label"], entry["top_label"], entry["confidence"],
            entry["whole_image"], entry["detector_score"], *landmark_values(entry["landmarks"]),
            *(entry["probabilities"][name] for name in EMOTIONS))


def to_table(rows: Sequence[tuple], schema: pa.Schema) -> pa.Table:
    """Rows (tuples in ``schema``'s column order) -> a table of that schema."""
    columns = list(zip(*rows)) if rows else [()] * len(schema)
    return pa.Table.from_arrays([pa.array(col, type=f.type) for col, f in zip(columns, schema)], schema=schema)


def remove_leftovers(folder: Path) -> int:
    """Delete the temporary files that killed runs left in ``folder`` (not those of files now being written: call
    it before any worker starts). Returns how many."""
    leftovers = [p for p in folder.glob(f".*{TMP_MARK}*") if p.is_file()] if folder.is_dir() else []
    for p in leftovers:
        p.unlink(missing_ok=True)
    return len(leftovers)


class PartWriter:
    """The rows of one input, written a batch at a time into ``parts/<key>.arrow`` (Arrow's IPC file format: it
    opens ten times faster than a small Parquet file when the tables are assembled) under a temporary name, which
    :meth:`commit` renames into place (an empty table when no row came)."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema, self.rows = path, schema, 0
        self._tmp = temporary_beside(path)
        self._sink = pa.OSFile(str(self._tmp), "wb")
        self._writer = pa.ipc.new_file(self._sink, schema)

    def write(self, rows: Sequence[tuple]) -> None:
        if rows:
            self._writer.write_table(to_table(rows, self.schema))
            self.rows += len(rows)

    def _close(self) -> None:
        self._writer.close()
        self._sink.close()

    def commit(self) -> None:
        self._close()
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        self._close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.commit() if kind is None else self.discard()


def read_part(path: Path) -> pa.Table:
    """The rows a :class:`PartWriter` committed to ``path``."""
    with pa.OSFile(str(path)) as f:
        return pa.ipc.open_file(f).read_all()


def part_readable(path: Path, schema: pa.Schema) -> bool:
    """Whether ``path`` is a complete part file of ``schema`` (its footer and schema read, not its rows): a truncated
    or foreign file is not, and its input is analysed again instead of failing every later run."""
    try:
        with pa.OSFile(str(path)) as f:
            return pa.ipc.open_file(f).schema.equals(schema)
    except (OSError, pa.ArrowException, ValueError):
        return False


def part_path(out: Path, key: str) -> Path:
    return out / PARTS / f"{key}.arrow"


def record_path(out: Path, key: str) -> Path:
    return out / PARTS / f"{key}.json"


def write_json(path: Path, doc: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))


def read_record(out: Path, key: str) -> dict | None:
    """The manifest line an earlier run committed for input ``key``, or None (none, unreadable, or not a JSON
    object: its input is analysed again)."""
    try:
        record = json.loads(record_path(out, key).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class TableWriter:
    """One table (Parquet, and CSV with ``csv``) written under temporary names, in row groups of at least
    TABLE_ROW_GROUP rows (a part is never cut), renamed into place by :meth:`commit`."""

    def __init__(self, parquet: Path, schema: pa.Schema, csv: Path | None):
        self.rows = 0
        self._targets = [parquet] + ([csv] if csv is not None else [])
        self._tmps = [temporary_beside(path) for path in self._targets]
        self._writers = [pq.ParquetWriter(self._tmps[0], schema)]
        if csv is not None:
            self._writers.append(pa_csv.CSVWriter(str(self._tmps[1]), schema))
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= TABLE_ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.concat_tables(self._pending).combine_chunks()  # one chunk: thousands of tiny ones write slowly
            self._writers[0].write_table(table, row_group_size=max(1, len(table)))
            for w in self._writers[1:]:
                w.write_table(table)
            self.rows += len(table)
            self._pending, self._pending_rows = [], 0

    def commit(self) -> None:
        self._flush()
        for w in self._writers:
            w.close()
        for tmp, path in zip(self._tmps, self._targets):
            os.replace(tmp, path)

    def discard(self) -> None:
        for w in self._writers:
            w.close()
        for tmp in self._tmps:
            tmp.unlink(missing_ok=True)


class TableAssembler:
    """The two tables, written while the job runs: an input's part is appended as soon as it and every input of its
    kind before it have finished (inputs that failed have none), so the tables are in input order and the end of the
    job has little left to write. :meth:`commit` writes what is left, renames the tables into place and writes the
    manifest; :meth:`discard` leaves the earlier tables as they were."""

    def __init__(self, out: Path, inputs: Sequence[tuple[str, str]], csv: bool = False):
        """``inputs``: (key, kind) of every input, in input order."""
        self.out, self.csv = out, csv
        self._order = {kind: [key for key, k in inputs if k == kind] for kind in SCHEMAS}
        self._next = dict.fromkeys(SCHEMAS, 0)
        self._status: dict[str, str] = {}
        self._tables = {kind: TableWriter(out / f"{TABLES[kind]}.parquet", schema,
                                          out / f"{TABLES[kind]}.csv" if csv else None)
                        for kind, schema in SCHEMAS.items()}

    def finished(self, record: dict) -> None:
        """Input ``record["key"]`` has its final status; append every part now in order."""
        self._status[record["key"]] = record["status"]
        kind, order = record["kind"], self._order[record["kind"]]
        while self._next[kind] < len(order) and order[self._next[kind]] in self._status:
            key = order[self._next[kind]]
            if self._status[key] in ("done", "skipped"):
                self._tables[kind].add(read_part(part_path(self.out, key)))
            self._next[kind] += 1

    def commit(self, records: Sequence[dict]) -> dict[str, int]:
        """Finish the tables and write the manifest (``records``: the lines in input order); rows per kind."""
        missing = [k for kind, order in self._order.items() for k in order[self._next[kind]:]]
        if missing:
            raise RuntimeError(f"{len(missing)} inputs have no final status; the tables are incomplete")
        for kind, table in self._tables.items():
            table.commit()
            if not self.csv:  # an earlier run's copy would no longer match the table
                (self.out / f"{TABLES[kind]}.csv").unlink(missing_ok=True)
        with atomic_path(self.out / MANIFEST) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        return {kind: table.rows for kind, table in self._tables.items()}

    def discard(self) -> None:
        for table in self._tables.values():
            table.discard()
