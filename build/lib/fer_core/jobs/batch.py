"""Batch jobs: every photo and video under the inputs, on all cores of this machine or on a Ray cluster.

    python -m fer_core.batch photos/ videos/ --out results/               # photos.parquet, videos.parquet, manifest
    python -m fer_core.batch archive/ --out results/ --csv --annotated    # + CSV copies, annotated copies
    python -m fer_core.batch archive/ --out results/ --workers 1          # one process
    python -m fer_core.batch /shared/archive --out /shared/results --ray auto   # on a Ray cluster (docs/batch.md)

Folders are searched recursively for the photos (jpg, jpeg, png, bmp, webp, tif, tiff, gif, pgm, ppm) and the
videos (mp4, mov, webm, avi, mkv) that the pages and command lines read; a file given by name is analysed whatever
its suffix (a video when it has a video suffix). Photos are analysed as on the upload page and by fer_core.predict,
videos as on the video page and by fer_core.video.analyse, with the same options and defaults.

A rerun with the same output folder skips the inputs already done with the same model, options and file (size and
modification time), so an interrupted job (even by kill -9) continues where it stopped; only the inputs in progress
are analysed again. A file that cannot be analysed is a "failed" line in the manifest; the others go on. Exit
status: 0 when no input failed, 1 when some did (the tables hold the others), 2 when nothing could start.
"""

from __future__ import annotations

import argparse
import errno
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterator, Sequence

from ..analysis.datasets import IMAGE_SUFFIXES
from ..faces.detection import DEFAULT_DETECTOR, DETECTOR_HELP, DETECTORS
from ..files import unusable_folder
from ..model.calibration import UNCERTAIN_BELOW_HELP, threshold_arg
from ..model.inference import NO_TTA_HELP
from ..model.trial import trial_file
from ..model.weights import DEFAULT_WEIGHTS, CheckpointError
from ..video.analyse import DEFAULT_ANALYSIS_FPS, SHORT_CLIP_S, video_settings
from .ray_cluster import RayUnavailable, import_ray, run_ray
from .tables import (
    ANNOTATED,
    MANIFEST,
    PARTS,
    PHOTO,
    SCHEMAS,
    TABLES,
    VIDEO,
    TableAssembler,
    part_path,
    part_readable,
    read_record,
    remove_leftovers,
)
from .worker import (
    VIDEO_SUFFIXES,
    BatchOptions,
    Input,
    failed_record,
    init_worker,
    model_sha256,
    process_input,
    worker_state,
)

IN_FLIGHT_PER_WORKER = 2  # inputs handed out per worker at a time: one running, one waiting, none piling up
WORKER_DIED = ("the process analysing this file died (a crash in a decoder, or killed, e.g. for lack of memory); it "
               "died again when the file was analysed alone")


def default_workers() -> int:
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fer_core.batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="photo and video files, or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder: tables, manifest, parts (created if needed)")
    p.add_argument("--csv", action="store_true", help="also write photos.csv and videos.csv (default: Parquet only)")
    p.add_argument("--annotated", action="store_true",
                   help="also write each input annotated as the pages draw it, into <out>/annotated (default: off)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="processes on this machine, each with one model and one thread (default: the %(default)s "
                        "CPUs here; not with --ray)")
    p.add_argument("--force", action="store_true",
                   help="write into an --out that holds another job's results (inputs this job does not name), "
                        "replacing its tables; without it such a folder is refused")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the inputs as Ray tasks instead (needs requirements-cluster.txt): without ADDRESS a Ray "
                        "runtime on this machine (or the cluster of $RAY_ADDRESS), 'auto' the cluster this machine "
                        "joined with `ray start`, or host:port of its head")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint (default: %(default)s)")
    p.add_argument("--no-tta", action="store_true", help=NO_TTA_HELP + "; photos only (videos run without)")
    p.add_argument("--min-face-size", type=int, default=None,
                   help=f"smallest face, pixels (default: {BatchOptions.photo_min_face_size} in photos, "
                        f"{BatchOptions.video_min_face_size} in videos, as the pages)")
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR, help=DETECTOR_HELP)
    p.add_argument("--whole-image", action="store_true",
                   help="photos: when no face is detected, classify the whole image as one face (pre-cropped faces)")
    p.add_argument("--uncertain-below", type=threshold_arg, default=None, metavar="P", help=UNCERTAIN_BELOW_HELP)
    p.add_argument("--fps", type=float, default=None,
                   help=f"videos: frames to analyse per second of video (default: every frame for clips up to "
                        f"{SHORT_CLIP_S:.0f} s, else {DEFAULT_ANALYSIS_FPS:g}); 0 = every frame")
    p.add_argument("--smoothing", type=float, default=BatchOptions.smoothing,
                   help="videos: EMA strength per analysed frame in [0, 1), 0 = off (default: %(default)s)")
    return p


def options_from_args(args: argparse.Namespace) -> BatchOptions:
    size = args.min_face_size
    return BatchOptions(out=str(Path(args.out).absolute()), weights=str(Path(args.weights).absolute()),
                        tta=not args.no_tta,
                        photo_min_face_size=size if size is not None else BatchOptions.photo_min_face_size,
                        video_min_face_size=size if size is not None else BatchOptions.video_min_face_size,
                        detector=args.detector, whole_image=args.whole_image, uncertain_below=args.uncertain_below,
                        fps="auto" if args.fps is None else (None if args.fps == 0 else args.fps),
                        smoothing=args.smoothing, annotated=args.annotated)


def find_inputs(paths: Sequence[str | Path], out: Path) -> list[Input]:
    """Every input, once, in the order given (the files of a folder sorted by path); the output folder is never
    searched. Paths are compared resolved (``..``, symlinks): one file reached by two paths is one input, and a file
    inside the output folder, however it is reached, is none. A folder without photos or videos is noted on stderr."""
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    out_real = _resolved(out)
    found: dict[Path, None] = {}
    seen: set[Path] = set()

    def add(path: Path) -> None:
        real = _resolved(path)
        if real in seen or real == out_real or out_real in real.parents:
            return
        seen.add(real)
        found[path] = None

    for path in map(Path, paths):
        path = path.absolute()
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            if not files:
                print(f"note: no photo or video files in folder {path}", file=sys.stderr)
            for f in files:
                add(f)
        else:
            add(path)
    return [Input.of(p) for p in found]


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compared as it is
        return path.absolute()


def other_jobs_inputs(out: Path, items: Sequence[Input]) -> list[str]:
    """The inputs of the job whose manifest ``out`` holds that are not among ``items`` (by key): results this job
    would drop from the tables. Empty for a new folder, the same job run again, or a job that adds inputs."""
    keys = {item.key for item in items}
    try:
        lines = (out / MANIFEST).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    others = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("key") not in keys:
            others.append(str(record.get("path")))
    return others


def reusable(record: dict | None, item: Input, options: BatchOptions, model: str) -> bool:
    """Whether an earlier run's manifest line shows ``item`` done with this model, these options and this file."""
    return (record is not None and record.get("status") == "done" and record.get("model_sha256") == model
            and (record.get("size"), record.get("mtime_ns")) == (item.size, item.mtime_ns)
            and record.get("options") == options.for_kind(item.kind)
            and part_readable(part_path(Path(options.out), item.key), SCHEMAS[item.kind])
            and (not options.annotated or bool(record.get("annotated")) and Path(record["annotated"]).is_file()))


def schedule(items: Sequence[Input]) -> list[Input]:
    """The order to hand inputs out in: videos first, the largest first (a long video started last would keep one
    worker busy long after the others are idle), then the photos in their order."""
    videos = sorted((i for i in items if i.kind == VIDEO), key=lambda i: -(i.size or 0))
    return videos + [i for i in items if i.kind == PHOTO]


def run_here(todo: Sequence[Input], options: BatchOptions) -> Iterator[tuple[Input, dict]]:
    """Each input in this process, one after another."""
    for item in todo:
        yield item, process_input(item, options)


def run_pool(todo: Sequence[Input], options: BatchOptions, workers: int) -> Iterator[tuple[Input, dict]]:
    """The inputs on ``workers`` processes (spawned: no state inherited), at most IN_FLIGHT_PER_WORKER per worker
    handed out at a time; (input, manifest line) as each finishes.

    A worker that dies (a crash in native code, the out-of-memory killer) breaks the pool: the inputs it held are
    then analysed again one at a time in a new pool, so that the file that kills a worker is found and reported
    failed while the others are kept."""
    context = multiprocessing.get_context("spawn")

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker, initargs=(options,))

    queue, suspects = deque(todo), deque()
    in_flight: dict = {}  # future -> (input, analysed alone)
    pool = new_pool()
    try:
        while queue or suspects or in_flight:
            if suspects and not in_flight:
                item = suspects.popleft()
                in_flight[pool.submit(process_input, item, options)] = (item, True)
            while not suspects and queue and len(in_flight) < IN_FLIGHT_PER_WORKER * workers:
                item = queue.popleft()
                in_flight[pool.submit(process_input, item, options)] = (item, False)
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                item, alone = in_flight.pop(future)
                try:
                    yield item, future.result()
                except BrokenProcessPool:
                    broken = True
                    if alone:
                        yield item, failed_record(item, options, WORKER_DIED)
                    else:
                        suspects.append(item)
                except Exception as e:  # noqa: BLE001 - e.g. the manifest line could not be written
                    yield item, failed_record(item, options, f"{type(e).__name__}: {e}")
            if broken:  # every input the dead pool still held is suspect
                suspects.extend(item for item, _ in in_flight.values())
                in_flight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class ProgressBar:
    """tqdm on stderr: inputs done of all, faces per second, seconds of video per second, failures, and the ETA."""

    def __init__(self, total: int, already: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=already, unit="input", desc="batch", file=sys.stderr,
                        mininterval=0.5, smoothing=0.1)
        self.start = time.perf_counter()
        self.faces = self.video_s = self.failed = 0

    def update(self, record: dict) -> None:
        self.faces += record.get("faces") or 0  # photo faces; a video's rate is its seconds
        self.video_s += record.get("video_seconds") or 0.0
        self.failed += record["status"] == "failed"
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.faces / elapsed:.1f} faces/s, {self.video_s / elapsed:.2f} s video/s, "
                                 f"{self.failed} failed", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_batch(items: Sequence[Input], options: BatchOptions, workers: int = 1, ray_address: str | None = None,
              csv: bool = False, progress: bool = True) -> list[dict]:
    """Analyse every input not already done (see :func:`reusable`), write the tables (as the inputs finish, in
    input order) and the manifest, and return the manifest lines in input order. ``ray_address`` None: ``workers``
    processes here (1: this process); otherwise Ray tasks (``""``: Ray's default runtime)."""
    out = Path(options.out)
    model = model_sha256(options.weights)
    for folder in (out, out / PARTS, out / ANNOTATED):  # what killed runs left
        remove_leftovers(folder)
    tables = TableAssembler(out, [(item.key, item.kind) for item in items], csv=csv)
    records: dict[str, dict] = {}
    todo = []
    for item in items:
        earlier = read_record(out, item.key)
        if reusable(earlier, item, options, model):
            records[item.key] = {**earlier, "status": "skipped"}
            tables.finished(records[item.key])
        else:
            todo.append(item)
    todo = schedule(todo)
    if ray_address is not None:
        results = run_ray(todo, options, ray_address)
    elif workers <= 1 or len(todo) <= 1:
        results = run_here(todo, options)
    else:
        results = run_pool(todo, options, min(workers, len(todo)))
    bar = ProgressBar(len(items), len(records)) if progress else None
    try:
        for item, record in results:
            records[item.key] = record
            tables.finished(record)
            if record["status"] == "failed":
                print(f"failed: {item.path}: {record['error']}", file=sys.stderr)
            if bar is not None:
                bar.update(record)
        for folder in (out / PARTS, out / ANNOTATED):  # what workers that died in this run left
            remove_leftovers(folder)
        manifest = [records[item.key] for item in items]
        tables.commit(manifest)
    except BaseException:
        tables.discard()
        raise
    finally:
        if bar is not None:
            bar.close()
    return manifest


def main(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    try:  # the options' own checks, before any work
        video_settings(smoothing=options.smoothing, min_face_size=options.video_min_face_size)
        if args.fps is not None and args.fps < 0:
            raise ValueError(f"--fps must be positive, or 0 for every frame; got {args.fps:g}")
        if args.workers < 1:
            raise ValueError(f"--workers must be 1 or more, got {args.workers}")
        if args.ray is not None:
            import_ray()
    except (ValueError, RayUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(options.out)
    problem = unusable_folder("--out", out)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    cpus = default_workers()
    if args.workers > cpus and args.ray is None:  # each worker holds a model (~250 MB) and one thread
        print(f"note: --workers {args.workers} is more than the {cpus} CPUs here; running {cpus}", file=sys.stderr)
        args.workers = cpus
    items = find_inputs(args.inputs, out)
    if not items:
        print(f"error: no photo or video files in {', '.join(args.inputs)} (looked for "
              f"{', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))}).", file=sys.stderr)
        return 2
    others = other_jobs_inputs(out, items)
    if others and not args.force:
        print(f"error: --out {out} holds the results of another job: {len(others)} of its inputs are not among "
              f"these (e.g. {others[0]}), and its tables would be replaced without them. Choose a new folder, or add "
              "--force.", file=sys.stderr)
        return 2
    try:
        trial_file(options.weights)  # a model from outside runs once in a bounded child process first
        worker_state(options)  # a model that cannot be used is one clear error, not a failure per input
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        manifest = run_batch(items, options, args.workers, args.ray, csv=args.csv)
    except RayUnavailable as e:  # installed, but could not start or connect
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: no space left in --out {out} ({e.strerror}). The tables of the last complete run are kept; "
              f"free some space and run the same command again: the inputs finished so far are not analysed again.",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl+C: the workers ignore it and end with this process
        print(f"\ninterrupted: the inputs finished so far are kept in {out / PARTS}; the same command continues the "
              "job", file=sys.stderr)
        return 130
    counts = {s: sum(r["status"] == s for r in manifest) for s in ("done", "skipped", "failed")}
    faces = sum(r.get("faces") or 0 for r in manifest if r["kind"] == PHOTO)
    rows = sum(r.get("rows") or 0 for r in manifest if r["kind"] == VIDEO)
    print(f"{len(manifest)} inputs: {counts['done']} done, {counts['skipped']} skipped (done before), "
          f"{counts['failed']} failed; {faces} photo faces in {out / TABLES[PHOTO]}.parquet, {rows} video rows in "
          f"{out / TABLES[VIDEO]}.parquet; manifest {out / MANIFEST}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
