"""Processing rate and memory of video files (fer_core.video.analyse), on a video generated from a real face photo.

    python -m training.video_benchmark                       # 20 s of 720p: rate at the default and every frame
    python -m training.video_benchmark --seconds 600 --fps-settings default --annotated   # memory on 10 minutes

Prints, per setting, seconds of video analysed per wall-clock second and the resident memory (RSS) of this
process while it ran: at the start, its peak, and at 10 / 50 / 90 % of the video (flat = streaming works).
``training.benchmarks.speed`` calls :func:`bench_video` for the rate. The generated video has two faces (the photo
and its mirror image) drifting slowly on a 1280x720 canvas, 25 frames per second, H.264.
"""

from __future__ import annotations

import argparse
import fractions
import resource
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from fer_core.model.inference import Predictor
from fer_core.model.weights import DEFAULT_WEIGHTS
from fer_core.video.analyse import Progress, analyse_video
from fer_core.video.live import canvas_from_photos

from .inputs import find_face_frame

SIZE = (1280, 720)
FPS = 25


def rss_mb() -> float:
    """Resident memory of this process now, MB (Linux /proc; the peak so far elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_face_video(path: Path, photo_rgb: np.ndarray, seconds: float, fps: int = FPS, size=SIZE) -> Path:
    """A ``seconds`` long H.264 video of ``photo_rgb`` and its mirror image side by side, drifting a few pixels
    per second (so the encoder and the tracker have something to do), written one frame at a time."""
    width, height = size
    base = canvas_from_photos([photo_rgb, np.ascontiguousarray(photo_rgb[:, ::-1])], width, height, upscale=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(int(seconds * fps)):
            shift = int(20 * np.sin(2 * np.pi * i / (fps * 8)))  # +-20 px over 8 s
            frame = av.VideoFrame.from_ndarray(np.roll(base, shift, axis=1), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def measure_video(predictor: Predictor, path: Path, analysis_fps, annotated: Path | None = None) -> dict:
    """Analyse ``path`` once; its rate (video s per wall s), frames, faces and RSS samples (MB)."""
    samples: list[tuple[float, float]] = []  # (fraction of the video, RSS MB)
    start_rss = rss_mb()

    def progress(p: Progress) -> None:
        samples.append((p.fraction or 0.0, rss_mb()))

    t = time.perf_counter()
    result = analyse_video(path, predictor, analysis_fps, annotated=annotated, progress=progress)
    wall = time.perf_counter() - t
    at = {f"rss_at_{int(q * 100)}pct_mb": round(min(samples, key=lambda s: abs(s[0] - q))[1], 1)
          for q in (0.1, 0.5, 0.9)} if samples else {}
    return {"video_s": round(result.video_seconds, 2), "wall_s": round(wall, 2),
            "rate": round(result.video_seconds / wall, 3), "frames": result.frames_decoded,
            "analysed": len(result.analysed_frames), "faces": len(result.face_ids),
            "analysis_fps": result.analysis_fps, "rss_start_mb": round(start_rss, 1),
            "rss_peak_mb": round(max([s[1] for s in samples] + [start_rss]), 1), **at}


def bench_video(predictor: Predictor, photo_rgb: np.ndarray | None, seconds: float = 20.0,
                settings=("default", "every frame"), annotated: bool = False) -> None:
    """Print the processing rate of fer_core.video.analyse on ``seconds`` of generated 720p video, per setting."""
    if photo_rgb is None:
        print("video benchmark skipped: no photo with a detectable face (pass --photo)")
        return
    with tempfile.TemporaryDirectory(prefix="fer_video_bench_") as tmp:
        t = time.perf_counter()
        video = write_face_video(Path(tmp) / "faces.mp4", photo_rgb, seconds)
        print(f"video benchmark: {seconds:.0f} s of {SIZE[0]}x{SIZE[1]} at {FPS} fps, 2 faces, H.264 "
              f"(generated in {time.perf_counter() - t:.0f} s)")
        for name in settings:
            fps = "auto" if name == "default" else None
            r = measure_video(predictor, video, fps, Path(tmp) / "annotated.mp4" if annotated else None)
            every = "every frame" if r["analysis_fps"] is None else f"{r['analysis_fps']:g} frames/s"
            memory = ", ".join(f"{k[7:-3].replace('pct', '%')} {v:.0f}" for k, v in r.items() if k.startswith("rss_at"))
            print(f"video files, {name} ({every}{', with the annotated mp4' if annotated else ''}): {r['rate']:.2f} s "
                  f"of video per second ({r['video_s']:.0f} s in {r['wall_s']:.0f} s; {r['analysed']}/{r['frames']} "
                  f"frames analysed, {r['faces']} face IDs); RSS start {r['rss_start_mb']:.0f} MB, peak "
                  f"{r['rss_peak_mb']:.0f} MB (at {memory} MB)")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint (default: %(default)s)")
    p.add_argument("--photo", default="", help="photo with one face (default: the first detectable photo in "
                                               "../shared/data/photos, as training.benchmarks.speed)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the generated video (default: %(default)s)")
    p.add_argument("--fps-settings", nargs="+", default=["default", "every frame"], choices=["default", "every frame"],
                   help="analysis settings to time (default: both)")
    p.add_argument("--annotated", action="store_true", help="also write the annotated mp4 (default: off)")
    return p


def main(args: argparse.Namespace) -> None:

    frame = find_face_frame(args.photo)
    predictor = Predictor.from_checkpoint(args.weights)
    bench_video(predictor, frame, args.seconds, tuple(args.fps_settings), args.annotated)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
