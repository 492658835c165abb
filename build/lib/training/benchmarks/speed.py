"""Measured speed of the shipped model: prints numbers, asserts nothing.

    python -m training.benchmark                 # all measurements
    python -m training.benchmark --skip-training

Reports: classifier ms per face with each inference backend side by side (batch 1 on one thread, and batched
on all threads); the upload page's work on six whole photos with TTA; each face detector
(RetinaFace, Haar; on full 640x480 frames and on 320 px copies): ms per frame and faces found in the whole
photos of ../shared/data/cfee, upright and rolled by +-20 and +-40 degrees; end-to-end ms per 640x480 frame
with one face (detection + alignment + classification, with and without TTA, and through the live webcam
page's processor); the processing rate of video files (seconds of 720p video per second, at the default
analysis rate and at every frame, training.benchmarks.video); and training seconds per FER2013 epoch with the default recipe (extrapolated from timed
steps of the real training loop on random data).

    python -m training.benchmark --batch [--batch-ray]   # only fer_core.jobs.batch: throughput at 1 and 2 workers

``--batch`` measures the batch command instead (docs/batch.md): photo faces per second on the photos of
../shared/data/photos and seconds of video per second on generated 720p videos, each with 1 and 2 worker
processes (and with ``--batch-ray``, Ray tasks on a local Ray runtime of all CPUs), each a run of the command
timed from its start to its end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from fer_core.analysis.datasets import SHARED_DATA, decode_gray, list_labelled_folder
from fer_core.analysis.photos import analyse_image
from fer_core.faces.detection import DEFAULT_DETECTOR, make_detector
from fer_core.faces.images import rotate_image
from fer_core.faces.preprocessing import PreprocessConfig, to_gray
from fer_core.model.backends import BACKENDS, make_backend, set_intra_op_threads
from fer_core.model.inference import BATCH_IMAGES, Predictor, predict_probabilities
from fer_core.model.weights import DEFAULT_WEIGHTS
from fer_core.video.live import LiveSettings, measure_frame_latency

from ..recipe.outputs import require_torch
from ..train import get_args_parser as train_args
from .inputs import DETECTOR_SETTINGS, PHOTOS, find_face_frame
from .video import bench_video, write_face_video

FER_TRAIN_IMAGES = 28_709
CFEE = SHARED_DATA / "cfee"
# (backend, detect on frames downscaled to <= this side) compared by bench_detectors
DETECTOR_BACKENDS = (("retinaface", 640), ("retinaface", 320), ("haar", 640), ("haar", 320))
ROLLS = (0, -20, 20, -40, 40)  # degrees


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint to time (default: %(default)s)")
    p.add_argument("--compare", nargs="*", default=[], metavar="CKPT",
                   help="other checkpoints timed side by side with --weights in the classifier benchmark, e.g. a "
                        "candidate to replace the shipped model (default: none)")
    p.add_argument("--repeats", type=int, default=50, help="timed repetitions per measurement (default: %(default)s)")
    p.add_argument("--photo", default="", help="a photo with one face for the frame benchmark (default: first detectable photo in ../shared/data/photos)")
    p.add_argument("--skip-training", action="store_true", help="skip the training-speed measurement")
    p.add_argument("--detection-set", default=str(CFEE),
                   help="labelled folder of whole photos for the detectors' detection rates (default: %(default)s)")
    p.add_argument("--detection-every", type=int, default=1,
                   help="use every k-th photo of --detection-set, for a quicker run (default: %(default)s)")
    p.add_argument("--train-steps", type=int, default=15, help="timed training steps (default: %(default)s)")
    p.add_argument("--video-seconds", type=float, default=20.0,
                   help="length of the generated 720p video for the video-file rate, 0 to skip (default: %(default)s)")
    p.add_argument("--batch", action="store_true",
                   help="measure only fer_core.jobs.batch's throughput (photos, videos) at --batch-workers (default: off)")
    p.add_argument("--batch-workers", type=int, nargs="+", default=[1, 2],
                   help="worker processes to time the batch command with (default: %(default)s)")
    p.add_argument("--batch-photos", default=str(PHOTOS),
                   help="folder of photos for the batch command's faces per second (default: %(default)s)")
    p.add_argument("--batch-copies", type=int, default=1,
                   help="use each photo this many times (symbolic links in a temporary folder: more work per job, "
                        "nothing copied; default: %(default)s)")
    p.add_argument("--batch-videos", type=int, default=4,
                   help="generated 720p videos for its seconds of video per second (default: %(default)s)")
    p.add_argument("--batch-video-seconds", type=float, default=15.0,
                   help="length of each generated video (default: %(default)s)")
    p.add_argument("--batch-ray", action="store_true",
                   help="also time the batch command's Ray path on a local runtime of all CPUs (needs "
                        "requirements-cluster.txt; default: off)")
    return p


def timed(fn, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """(median, p90) milliseconds of fn()."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), float(np.percentile(samples, 90))


def bench_classifier(predictor: Predictor, repeats: int, rounds: int = 5,
                     others: dict[str, Predictor] | None = None) -> None:
    """Every backend (fer_core.model.backends) on the same weights, side by side, and the same for each checkpoint
    in ``others`` (e.g. a candidate to replace it): ms per face at batch 1 on one thread (TTA off and
    on) and faces per second at BATCH_IMAGES per forward pass on all threads. All (checkpoint, backend) pairs
    take turns in ``rounds`` interleaved rounds, so a machine that gets busier mid-run slows them alike."""
    torch = require_torch("time the classifier on PyTorch and the training loop")
    from fer_core.model.network import count_macs, count_parameters

    predictors = {"shipped" if others else "": predictor, **(others or {})}  # tags: "" when alone
    backends = {}
    for tag, pred in predictors.items():
        model = pred.model
        print(f"classifier{' ' + tag if tag else ''}: {count_parameters(model) / 1e6:.2f} M parameters, "
              f"{count_macs(model) / 1e6:.1f} M multiply-adds per face (one view)")
        # The predictor's own backend, and the others exported from the same weights
        for name in BACKENDS:
            backends[tag, name] = pred.backend if pred.backend.name == name else make_backend(model, name)
    threads = torch.get_num_threads()
    x1 = torch.randn(1, 1, 48, 48)
    xb = torch.randn(BATCH_IMAGES, 1, 48, 48)
    cases = [(f"batch 1, 1 thread, TTA {'on ' if tta else 'off'}", 1, x1, tta, max(1, repeats // rounds))
             for tta in (False, True)]
    cases.append((f"batch {BATCH_IMAGES}, {threads} threads, TTA off", threads, xb, False, max(2, repeats // 25)))
    samples = {(case[0], key): [] for case in cases for key in backends}
    for _ in range(rounds):
        for label, n_threads, x, tta, n in cases:
            set_intra_op_threads(n_threads)  # both backends' (and torch's) threads
            for key, backend in backends.items():
                samples[label, key].append(timed(lambda: predict_probabilities(backend, x, tta=tta), n, warmup=1)[0])
    set_intra_op_threads(threads)
    first = next(iter(predictors))
    names = {key: f"{key[0]} {key[1]}".strip() for key in backends}
    width = max(map(len, names.values()))
    for label, _, x, _, _ in cases:
        base = statistics.median(samples[label, (first, "torch")])
        for key in sorted(backends, key=lambda key: (key[0] != first, key[0], key[1] != "torch")):
            med = statistics.median(samples[label, key]) / len(x)
            print(f"classifier, {label}, {names[key]:>{width}}: {med:6.3f} ms/face ({1000 / med:5.0f} faces/s; "
                  f"{base / len(x) / med:.1f}x {names[first, 'torch']})")


def bench_frame(predictor: Predictor, frame: np.ndarray | None, repeats: int) -> None:
    """Single image path (Predictor.predict: detection every frame) and the live page's processor."""
    if frame is None:
        print("frame benchmark skipped: no photo with exactly one detectable face (pass --photo)")
        return
    for min_face, max_side in DETECTOR_SETTINGS:
        detector = make_detector(DEFAULT_DETECTOR, min_face_size=min_face, max_side=max_side)
        det, _ = timed(lambda: detector.detect(to_gray(frame)), repeats)
        for tta in (False, True):
            med, p90 = timed(lambda: predictor.predict(frame, detector, tta=tta), repeats)
            print(f"640x480 frame, 1 face, predict(): {DEFAULT_DETECTOR} min {min_face}px on <= {max_side}px, TTA "
                  f"{'on ' if tta else 'off'}: {med:6.1f} ms end-to-end (detection {det:.1f} ms; p90 {p90:.1f}) "
                  f"-> {1000 / med:.1f} FPS")
    bgr = np.ascontiguousarray(frame[:, :, ::-1])
    for settings in (LiveSettings(), LiveSettings(detect_every=1), LiveSettings(tta=True)):
        r = measure_frame_latency(predictor, bgr, n=repeats, settings=settings)
        print(f"live page processor (detect every {settings.detect_every} frame(s) on <= {settings.detect_max_side}px, "
              f"min face {settings.min_face_size}px, TTA {'on' if settings.tta else 'off'}, {r['torch_threads']} thread): "
              f"{r['ms_per_frame_mean']:.1f} ms/frame mean, p90 {r['ms_per_frame_p90']:.1f} -> {r['fps']:.0f} FPS "
              f"(detection {r['detect_ms_mean']} ms, model {r['classify_ms_mean']} ms, {r['faces']} face)")


def bench_upload(predictor: Predictor, folder: str, n_photos: int = 6, repeats: int = 3) -> None:
    """Seconds for the upload page's work on ``n_photos`` whole photos with TTA: each read, searched for faces
    with the default detector, every face classified and the annotated copy drawn (fer_core.analysis.photos.analyse_image,
    what the page runs per file); the median of ``repeats`` runs."""
    torch = require_torch("time the classifier on PyTorch and the training loop")
    try:
        files = list_labelled_folder(folder)
    except (FileNotFoundError, ValueError) as e:
        print(f"upload benchmark skipped: {e}")
        return
    paths = files.paths[:: max(1, len(files) // n_photos)][:n_photos]  # spread over the classes
    payloads = [(Path(p).name, Path(p).read_bytes()) for p in paths]
    detector = make_detector(DEFAULT_DETECTOR)

    def run() -> int:
        return sum(len(analyse_image(predictor, detector, data, name, tta=True).faces) for name, data in payloads)

    faces = run()
    med, _ = timed(run, repeats, warmup=0)
    print(f"upload page work, {len(payloads)} photos from {Path(folder).name} ({faces} faces), TTA on, backend "
          f"{predictor.backend.name}, {torch.get_num_threads()} threads: {med / 1000:.2f} s")


def bench_detectors(folder: str, every: int, frame: np.ndarray | None, repeats: int) -> None:
    """Each backend side by side: ms per 640x480 frame (one thread) and faces found per photo, upright and rolled."""
    try:
        files = list_labelled_folder(folder)
    except (FileNotFoundError, ValueError) as e:
        print(f"detector benchmark skipped: {e}")
        return
    grays = [decode_gray(p) for p in files.paths[::every]]
    for name, max_side in DETECTOR_BACKENDS:
        detector = make_detector(name, min_face_size=20, max_side=max_side)
        speed = ""
        if frame is not None:
            gray = to_gray(frame)
            med, p90 = timed(lambda: detector.detect(gray), repeats)
            speed = f"{med:5.1f} ms/frame (p90 {p90:.1f}); "
        found = []
        for roll in ROLLS:
            hits = sum(bool(detector.detect(rotate_image(g, roll))) for g in grays)
            found.append(f"{roll:+d} deg {hits}/{len(grays)}")
        print(f"detector {name} on <= {max_side}px: {speed}faces found in {Path(folder).name}: {', '.join(found)}")


def bench_training(steps: int) -> None:
    torch = require_torch("time the classifier on PyTorch and the training loop")
    from ..recipe.assembly import initial_model
    from ..recipe.augment import AugmentConfig
    from ..recipe.loop import class_weights, make_optimizer, train_one_epoch

    defaults = train_args().parse_args([])
    torch.manual_seed(0)
    n = defaults.batch_size * steps
    images = torch.randn(n, 1, 48, 48)
    labels = torch.randint(0, 7, (n,))
    model = initial_model(defaults).to(memory_format=torch.channels_last)  # the default recipe's network
    opt = make_optimizer(model, defaults)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=defaults.lr, total_steps=2 * steps)
    args = SimpleNamespace(**{**vars(defaults), "epochs": 1})
    weights = class_weights(labels.numpy(), defaults.class_weight_power)
    run = lambda: train_one_epoch(model, None, opt, sched, images, labels, args, weights, PreprocessConfig(),
                                  AugmentConfig(), torch.Generator().manual_seed(0), torch.device("cpu"), 1)
    run()  # warm-up epoch
    t = time.perf_counter()
    run()
    per_image = (time.perf_counter() - t) / n
    print(f"training ({defaults.variant}, batch {defaults.batch_size}, bf16 {'off' if defaults.no_bf16 else 'on'}, "
          f"{torch.get_num_threads()} threads): {per_image * FER_TRAIN_IMAGES:.0f} s per FER2013 epoch "
          f"({per_image * 1000:.2f} ms/image, from {steps} timed steps)")


def time_batch(inputs: list[Path], weights: str, workers: int, ray: bool = False) -> dict:
    """One ``python -m fer_core.batch`` job on ``inputs`` into a new folder, with the command's defaults: wall seconds
    from the command's start to its end (tables written), the start (until the first input began: the interpreter,
    the model, the worker processes or the Ray runtime), faces, seconds of video, and the wall and CPU seconds the
    inputs took in their workers."""
    import json
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="fer_batch_bench_") as out:
        command = [sys.executable, "-m", "fer_core.batch", *map(str, inputs), "--out", out, "--weights", weights,
                   "--workers", str(workers), *(["--ray"] if ray else [])]
        start = time.time()
        subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.time() - start
        lines = [json.loads(line) for line in (Path(out) / "manifest.jsonl").read_text().splitlines()]
    failed = [r["path"] for r in lines if r["status"] != "done"]
    if failed:
        print(f"  not done: {failed}")
    first = min(datetime.fromisoformat(r["finished"]).timestamp() - r["seconds"] for r in lines)
    return {"wall_s": wall, "inputs": len(lines), "faces": sum(r.get("faces") or 0 for r in lines),
            "video_s": sum(r.get("video_seconds") or 0.0 for r in lines),
            "busy_s": sum(r.get("seconds") or 0.0 for r in lines), "startup_s": max(0.0, first - start),
            "cpu_s": sum(r.get("cpu_seconds") or 0.0 for r in lines)}


def _after_startup(r: dict, amount: float, unit: str) -> str:
    """The rate once the workers have started, and what the start and the work in the workers took."""
    rate = amount / max(r["wall_s"] - r["startup_s"], 1e-9)
    return (f"{rate:.2f} {unit} after a start of {r['startup_s']:.1f} s; {r['busy_s']:.1f} s of work in the workers, "
            f"{r['cpu_s']:.1f} CPU s ({amount / max(r['cpu_s'], 1e-9):.2f} {unit.split('/')[0].split(' per')[0]} per "
            "CPU second)")


def bench_batch(args: argparse.Namespace) -> None:
    """fer_core.jobs.batch's throughput: photo faces per second and seconds of video per second, per number of workers
    (and on a local Ray runtime with --batch-ray); each job timed from its start to its tables."""
    print(f"fer_core.jobs.batch on {len(os.sched_getaffinity(0))} CPUs, load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} at the start")
    photo_dir = Path(args.batch_photos)
    frame = find_face_frame(args.photo)
    runs = [(f"{n} worker{'s' if n > 1 else ''}", n, False) for n in args.batch_workers]
    if args.batch_ray:  # Ray's default local runtime: all CPUs here
        runs.append((f"Ray, {len(os.sched_getaffinity(0))} CPUs", 1, True))
    with tempfile.TemporaryDirectory(prefix="fer_batch_videos_") as tmp:
        videos = []
        if frame is not None:
            t = time.perf_counter()
            videos = [write_face_video(Path(tmp) / f"faces_{i}.mp4", frame, args.batch_video_seconds)
                      for i in range(args.batch_videos)]
            print(f"{len(videos)} videos of {args.batch_video_seconds:g} s, 1280x720 at 25 fps, 2 faces (generated in "
                  f"{time.perf_counter() - t:.0f} s); default analysis (5 frames per second of video)")
        photos = [photo_dir] if photo_dir.is_dir() else []
        if photos and args.batch_copies > 1:
            photos = [Path(tmp) / f"photos_{k}" for k in range(args.batch_copies)]
            for folder in photos:
                folder.mkdir()
                for i, f in enumerate(sorted(p for p in photo_dir.rglob("*") if p.is_file())):
                    (folder / f"{i:05d}_{f.name}").symlink_to(f.absolute())
        for name, n, ray_path in runs:
            if photos:
                r = time_batch(photos, args.weights, n, ray_path)
                print(f"batch photos, {name}: {r['inputs']} photos, {r['faces']} faces in {r['wall_s']:.1f} s -> "
                      f"{r['faces'] / r['wall_s']:.2f} faces/s; {_after_startup(r, r['faces'], 'faces/s')}")
            if videos:
                r = time_batch(videos, args.weights, n, ray_path)
                print(f"batch videos, {name}: {r['video_s']:.0f} s of video in {r['wall_s']:.1f} s -> "
                      f"{r['video_s'] / r['wall_s']:.2f} s of video per second; "
                      f"{_after_startup(r, r['video_s'], 's of video per second')}")


def main(args: argparse.Namespace) -> None:
    torch = require_torch("time the classifier on PyTorch and the training loop")
    if args.batch:
        bench_batch(args)
        return
    predictor = Predictor.from_checkpoint(args.weights)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; weights {args.weights}")
    others = {path: Predictor.from_checkpoint(path) for path in args.compare}
    bench_classifier(predictor, args.repeats, others=others)
    frame = find_face_frame(args.photo)
    bench_detectors(args.detection_set, args.detection_every, frame, max(10, args.repeats // 2))
    bench_frame(predictor, frame, max(10, args.repeats // 2))
    bench_upload(predictor, args.detection_set)
    if args.video_seconds > 0:
        bench_video(predictor, frame, args.video_seconds)
    if not args.skip_training:
        bench_training(args.train_steps)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
