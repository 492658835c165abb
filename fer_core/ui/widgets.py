"""Streamlit glue shared by the app's pages: the one cached model and per-session face detectors.

Only the Streamlit pages import this module (it imports streamlit); the rest of fer_core never does.

* The :class:`~fer_core.model.inference.Predictor` is read-only, so one instance per process is shared by all
  sessions through ``st.cache_resource``; its inference runs ``artifacts/model.onnx`` in a thread-safe ONNX
  Runtime session and mutates nothing, so concurrent sessions can call it safely. It is keyed on the weights
  file's path and modification time, so replacing ``artifacts/model.pt`` (and its .onnx) loads the new model.
* Face detectors may hold state (Haar wraps an OpenCV cascade): each session gets its own, kept in
  ``st.session_state`` (RetinaFace's ONNX Runtime session inside it is shared and thread-safe).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ..faces.detection import DEFAULT_DETECTOR, DETECTORS, FaceDetector, make_detector
from ..model.artifacts import ARTIFACTS_ENV, WEIGHTS_NAME, artifact_path
from ..model.calibration import THRESHOLD_RANGE
from ..model.inference import Predictor
from ..model.weights import CheckpointError


def weights_path() -> Path:
    """The weights the app serves: model.pt in $FER_ARTIFACTS if set, else artifacts/model.pt."""
    return artifact_path(WEIGHTS_NAME)


@st.cache_resource(max_entries=2, show_spinner="Loading the expression model...")
def _cached_predictor(path: str, mtime_ns: int) -> Predictor:
    return Predictor.from_checkpoint(path)


def get_predictor() -> Predictor:
    """The process-wide Predictor; raises CheckpointError when the weights are missing or unreadable."""
    path = weights_path()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise CheckpointError(f"Model weights not found at {path}. Train one with `python -m training.train` "
                              f"or restore artifacts/model.pt from the repository.") from None
    return _cached_predictor(str(path), mtime)


def model_error_box(error: CheckpointError, what_still_works: str = "") -> None:
    """The box of a model that cannot be loaded: what went wrong (files named without the server's folders) and
    how to fix it."""
    message = str(error).replace(f"{weights_path().parent}{os.sep}", "")  # the folder is the server's business
    st.error(f"**The expression model could not be loaded.** {plain_with_code(message)}", icon=":material/error:")
    st.markdown("To fix it: put a trained checkpoint at `artifacts/model.pt` (train one with "
                "`python -m training.train`), or point the app at another artifacts folder with the "
                f"`{ARTIFACTS_ENV}` environment variable, then reload this page." + what_still_works)


def require_predictor() -> Predictor:
    """get_predictor(), or a clear error box and the end of this page run when the model cannot be loaded."""
    try:
        return get_predictor()
    except CheckpointError as e:
        model_error_box(e)
        st.stop()


# Short enough for the sidebar and a narrow column at 800 px; the details are in the help.
DETECTOR_LABELS = {"retinaface": "RetinaFace (aligned)", "haar": "Haar cascade (older)"}
DETECTOR_CHOICE_HELP = ("RetinaFace (a CNN) finds tilted, small and dark faces, gives five landmarks and lets each "
                        "face be rotated upright and framed like the training faces. Haar is the older OpenCV "
                        "cascade: no landmarks, no alignment.")


def detector_choice(key: str = "detector", container=st) -> str:
    """A select box of the face detectors (RetinaFace first, the default); returns the backend name."""
    return container.selectbox("Face detector", DETECTORS, index=DETECTORS.index(DEFAULT_DETECTOR),
                               format_func=DETECTOR_LABELS.get, key=key, help=DETECTOR_CHOICE_HELP)


UNCERTAIN_HELP = ("Off by default: every face gets its most likely expression. On: a face whose top probability is "
                  "below the threshold is labelled \"uncertain\" instead (on the picture, in the table and in the "
                  "downloads). The probabilities are calibrated on validation data, so 60 % means about 60 % right.")


def uncertainty_choice(key: str = "uncertain", container=st, default: float | None = None) -> float | None:
    """A toggle (off by default) and a threshold slider: the confidence below which a face is labelled
    "uncertain" (:func:`fer_core.model.calibration.uncertain_label`), or None when the policy is off. The slider starts
    at ``default`` (the model's calibrated threshold, :meth:`fer_core.model.inference.Predictor.uncertain_below_for`)
    rounded to its step, or at 0.50 when the model carries none."""
    on = container.toggle('Label unsure faces "uncertain"', value=False, key=f"{key}_on", help=UNCERTAIN_HELP)
    if not on:
        return None
    low, high = THRESHOLD_RANGE
    start = 0.50 if default is None else min(max(round(default / 0.05) * 0.05, low), high)
    source = ("the model's calibrated default: below it, faces of people it never saw were more often wrong than "
              "right" if default is not None else "0.50, the model carries no calibrated default")
    return container.slider("Uncertain below (top probability)", min_value=low, max_value=high, value=round(start, 2),
                            step=0.05, format="%.2f", key=f"{key}_threshold",
                            help="A face whose most likely expression has a lower probability than this is labelled "
                                 f"\"uncertain\". Starts at {start:.2f}: {source}.")


def session_detector(min_face_size: int, name: str = DEFAULT_DETECTOR) -> FaceDetector:
    """This session's face detector of backend ``name`` for ``min_face_size`` pixels (created once per session)."""
    detectors = st.session_state.setdefault("_fer_detectors", {})
    if (name, min_face_size) not in detectors:
        detectors[(name, min_face_size)] = make_detector(name, min_face_size=min_face_size)
    return detectors[(name, min_face_size)]


def weights_version() -> tuple[str, int] | None:
    """(path, modification time) of the served weights, or None when missing: a cache key for model outputs."""
    path = weights_path()
    try:
        return str(path), path.stat().st_mtime_ns
    except OSError:
        return None


@st.cache_resource
def shared_results() -> dict:
    """A dict shared by every session of this process, for expensive results that are not user data
    (e.g. the re-evaluation of the shipped validation folder), so a page reload does not redo them."""
    return {}


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$&=\"'])")


def plain(text) -> str:
    """``text`` from a file (a run's name, phase, host, an error) made safe inside Streamlit Markdown: every ASCII
    punctuation mark backslash-escaped and line breaks made spaces, so a Markdown image or link in a run file is
    shown as the characters it is, never fetched or followed, and ``:red[...]`` or ``$...$`` stay text."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def plain_with_code(text) -> str:
    """:func:`plain`, except that each pair of backticks stays a code span (the project's own messages quote files
    and commands that way): a code span's content is shown as the characters it is, so nothing in it is fetched,
    followed or styled either. An odd number of backticks: all :func:`plain`."""
    parts = " ".join(str(text).split()).split("`")
    if len(parts) % 2 == 0:
        return plain(text)
    return "".join(_MARKDOWN_SPECIAL.sub(r"\\\1", part) if i % 2 == 0 else f"`{part}`" if part.strip() else ""
                   for i, part in enumerate(parts))


# A photo anyone may use, for a first try without one at hand: NASA's portrait of the astronaut Eileen Collins
# (public domain; the copy scikit-image ships as skimage.data.astronaut), 512x512, saved as JPEG.
SAMPLE_PHOTO = Path(__file__).resolve().with_name("sample_photo.jpg")
SAMPLE_CREDIT = "NASA's portrait of the astronaut Eileen Collins (public domain)"


@dataclass(frozen=True)
class SampleFile:
    """The sample photo in the shape of an uploaded file (name, file_id, getvalue()), for the upload page."""

    name: str = SAMPLE_PHOTO.name
    file_id: str = "sample-photo"

    def getvalue(self) -> bytes:
        return SAMPLE_PHOTO.read_bytes()
