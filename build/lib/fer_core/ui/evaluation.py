"""Streamlit views of the evaluation page for model choice, the comparison of two models and suspicious labels.

Only ``pages/4_Evaluation.py`` imports this module (it imports streamlit). The numbers come from
:mod:`fer_core.analysis.compare` and :mod:`fer_core.analysis.label_issues`, the model files from :mod:`fer_core.analysis.model_files`; these
functions only lay them out.

Other pages hand a checkpoint over through two ``st.session_state`` keys (a path to a ``.pt`` or ``.onnx``):

* :data:`EVALUATE_MODEL_KEY` (``"evaluate_model_path"``): preselected as the model that evaluates own data, and as
  model B of the comparison;
* :data:`COMPARE_MODEL_KEY` (``"compare_model_path"``): preselected as model B of the comparison, with the shipped
  model as A.

A hand-off is applied when its value is new and each time the visitor arrives from another page; in between, the
visitor's own choice stands. The keys are left in the session state. A model is chosen by an option string: a file path, or ``upload:<sha256>`` for a
model uploaded in this session (kept in its session state, never written to disk).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import streamlit as st

from ..analysis.archive import ArchiveError, record_face_crop, record_image
from ..analysis.compare import comparison_csv, comparison_rows
from ..analysis.label_issues import RELABEL_FIELDS, relabel_csv
from ..analysis.model_files import MAX_UPLOAD_BYTES, model_choices, uploaded_model
from ..analysis.photos import display_copy
from ..faces.images import ImageLoadError
from ..model.explain import explain_crop, overlay
from ..model.inference import Predictor
from ..model.weights import CheckpointError
from .plots import class_delta_figure, confusion_difference_figure
from .widgets import get_predictor, weights_path

EVALUATE_MODEL_KEY = "evaluate_model_path"
COMPARE_MODEL_KEY = "compare_model_path"
UPLOAD_PREFIX = "upload:"
GALLERY_SIZE = 24
IMAGE_WIDTH = 120  # pixels of each photo in the galleries
CAPTION_MIN_WIDTH = 120  # pixels: a gallery cell is at least this wide, so that its caption stays readable
EXPLAIN_SIDE = 96  # pixels of each heatmap picture (a 48x48 crop enlarged 2x)
GAP = 4  # white pixels between two heatmaps


@st.cache_resource(max_entries=4, show_spinner="Loading the model...")
def _model_file(path: str, mtime_ns: int) -> Predictor:
    return Predictor.from_checkpoint(path)


def _uploads() -> dict[str, tuple[str, Predictor]]:
    """This session's uploaded models: option -> (file name, predictor)."""
    return st.session_state.setdefault("_uploaded_models", {})


def load_model(option: str | None) -> Predictor:
    """The predictor of a model option (None or the shipped weights: the app's shared model). Raises CheckpointError
    with a message for the user when the file is missing, unusable, or a ``.pt`` that needs torch."""
    if option is None or option == str(weights_path()):
        return get_predictor()
    if option.startswith(UPLOAD_PREFIX):
        if option not in _uploads():
            raise CheckpointError("The uploaded model is no longer in this session; upload it again.")
        return _uploads()[option][1]
    try:
        mtime = Path(option).stat().st_mtime_ns
    except OSError:
        raise CheckpointError(f"Model weights not found at {option}.") from None
    return _model_file(option, mtime)


def model_label(option: str | None) -> str:
    """What the page calls a model option (its label in the last :func:`model_options`)."""
    if option is None:
        return "shipped model"
    labels = {o: label for label, o in st.session_state.get("_model_options", {}).items()}
    return labels.get(option, option)


def model_version(option: str | None):
    """What identifies a model option's weights for cached heatmaps: the path and modification time of a file (the
    shipped weights when None), the upload's hash."""
    path = weights_path() if option is None else Path(option)
    if option is not None and option.startswith(UPLOAD_PREFIX):
        return option
    try:
        return str(path), path.stat().st_mtime_ns
    except OSError:
        return str(path), None


def _handed_over() -> list[str]:
    return st.session_state.setdefault("_handed_over_models", [])


def apply_handoffs(evaluate_key: str, compare_a_key: str, compare_b_key: str) -> None:
    """Preselect the checkpoints other pages handed over (:data:`EVALUATE_MODEL_KEY`, :data:`COMPARE_MODEL_KEY`) in
    the select boxes of these keys, before the widgets are drawn: when the value is new, or when the visitor arrives
    from another page (Streamlit has then dropped this page's widget values). Between, the visitor's own choice
    stands. The keys are left in place. A path that is not a file gets a warning."""
    applied = st.session_state.setdefault("_applied_handoffs", {})
    for handoff, widgets in ((EVALUATE_MODEL_KEY, (evaluate_key, compare_b_key)), (COMPARE_MODEL_KEY, (compare_b_key,))):
        value = st.session_state.get(handoff)
        arrived = any(w not in st.session_state for w in widgets)
        if not value or (applied.get(handoff) == str(value) and not arrived):
            continue
        applied[handoff] = str(value)
        if not Path(value).is_file():
            st.warning(f"The checkpoint `{value}` does not exist (any more); choose a model below.")
            continue
        if str(value) not in _handed_over():
            _handed_over().append(str(value))
        labels = {os.path.realpath(o): label for label, o in model_options().items() if not o.startswith(UPLOAD_PREFIX)}
        for widget in widgets:
            st.session_state[widget] = labels[os.path.realpath(value)]
        if handoff == COMPARE_MODEL_KEY:
            st.session_state[compare_a_key] = labels[os.path.realpath(weights_path())]


def model_options() -> dict[str, str]:
    """Every model, label -> option: the files of :func:`fer_core.analysis.model_files.model_choices` (the handed-over ones
    included), then this session's uploads."""
    options = {c.label: str(c.path) for c in model_choices(tuple(_handed_over()))}
    options.update({f"uploaded {name} ({option[len(UPLOAD_PREFIX):][:8]})": option
                    for option, (name, _) in _uploads().items()})
    st.session_state["_model_options"] = options
    return options


def model_select(label: str, key: str, options: dict[str, str], default: int = 0, container=st) -> str:
    """A select box of the models of ``options`` (:func:`model_options`), ``default`` the index of the first choice;
    returns the chosen option."""
    labels = list(options)
    if st.session_state.get(key) not in labels:
        st.session_state[key] = labels[min(default, len(labels) - 1)]
    return options[container.selectbox(label, labels, key=key)]


def model_upload(key: str) -> None:
    """An uploader of a ``.pt`` or ``.onnx`` model: checked like the app's own weights and kept in this session's
    memory; a bad file gets an error box. A good one becomes an option of every :func:`model_select`."""
    file = st.file_uploader(f"Or upload a model (.pt or .onnx, at most {MAX_UPLOAD_BYTES // 2**20} MB)",
                            type=["pt", "onnx"], key=key,
                            help="A checkpoint written by `python -m training.train`, or the .onnx exported beside "
                                 "it. Without PyTorch on the server only the .onnx can be read. Nothing is saved.")
    if file is None:
        return
    if file.size > MAX_UPLOAD_BYTES:
        st.error(f"{file.name} is {file.size / 2**20:.0f} MB; uploaded models may be at most "
                 f"{MAX_UPLOAD_BYTES // 2**20} MB.")
        return
    data = file.getvalue()
    option = UPLOAD_PREFIX + hashlib.sha256(data).hexdigest()
    if option in _uploads():
        return
    try:
        _uploads()[option] = (file.name, uploaded_model(file.name, data))
    except CheckpointError as e:
        st.error(f"**{file.name} cannot be used.** {e}", icon=":material/error:")
        return
    st.success(f"{file.name} is a usable expression model; it is now in the model lists.")


def record_overlays(predictor: Predictor, model_key, rec: dict, zip_data: bytes | None, classes: Sequence[str],
                    aligned: bool = True) -> np.ndarray:
    """(EXPLAIN_SIDE, k * EXPLAIN_SIDE + gaps, 3) uint8: the face of an evaluation record as ``predictor`` saw it, with
    the occlusion heatmap (:mod:`fer_core.model.explain`) of each class of ``classes`` side by side; kept for the session
    under ``model_key`` (what identifies the model)."""
    store = st.session_state.setdefault("_explanations", {})
    key = (model_key, rec["path"], tuple(classes))
    if key not in store:
        names = list(predictor.class_names)
        crop = record_face_crop(rec, zip_data, predictor.preprocess.image_size, predictor.preprocess.face_margin,
                                align=aligned)
        maps = explain_crop(predictor.backend, predictor.preprocess, crop, classes=[names.index(c) for c in classes])
        gap = np.full((EXPLAIN_SIDE, GAP, 3), 255, np.uint8)
        pictures = [overlay(crop, m, EXPLAIN_SIDE) for m in maps]
        store[key] = np.hstack([p for pic in pictures for p in (pic, gap)][:-1])
    return store[key]


def gallery_grid():
    """The container of a gallery: cells side by side that wrap onto the next row when the window is full, at any
    width (fixed-width columns would squeeze their pictures onto each other in a narrow window)."""
    return st.container(horizontal=True, gap="small")


def gallery_cell(pictures: Sequence[np.ndarray], caption: str) -> None:
    """One cell of a :func:`gallery_grid`: ``pictures`` side by side, each shown at its own width, with ``caption``
    under them; the cell is exactly as wide as its pictures, so its caption wraps inside it."""
    widths = [p.shape[1] for p in pictures]
    with st.container(width=max(sum(widths) + 8 * (len(pictures) - 1), CAPTION_MIN_WIDTH), gap="small"):
        if len(pictures) == 1:
            st.image(pictures[0], caption=caption, width=widths[0])
            return
        with st.container(horizontal=True, gap="small"):
            for i, (picture, width) in enumerate(zip(pictures, widths)):
                st.image(picture, width=width, caption=caption if i == len(pictures) - 1 else None)


def gallery_image(rec: dict, zip_data: bytes | None, width: int = IMAGE_WIDTH) -> np.ndarray:
    """The image behind a record, at most ``width`` px wide (each side at least 1 px): st.image can neither encode
    an image over 65,535 px nor scale a very wide, thin one down without reaching 0 px."""
    return display_copy(record_image(rec, zip_data), max_width=width)


# ---- the comparison ---------------------------------------------------------------------------------------

def _interval(v: dict, percent: bool, signed: bool = False) -> str:
    fmt = (lambda x: f"{100 * x:{'+' if signed else ''}.1f}") if percent else (lambda x: f"{x:{'+' if signed else ''}.3f}")
    return f"{fmt(v['low'])} to {fmt(v['high'])}{' points' if percent and signed else ' %' if percent else ''}"


def show_comparison(run: dict) -> None:
    """The comparison stored by the page: headline with intervals, McNemar's test, the table, per-class deltas,
    the confusion difference, the disagreement gallery and the downloads. ``run``: comparison, disagreements,
    records_a, records_b, zip, options (the two model options) and aligned."""
    c = run["comparison"]
    a, b = c["models"]
    st.caption(f"**A** = {a} · **B** = {b} · {c['n_images']:,} images, each through both models on the same face; "
               f"{c['confidence']:.0%} intervals from {c['n_resamples']:,} paired bootstrap resamples of the images.")
    m = c["mcnemar"]
    with st.container(horizontal=True, gap="large"):
        for name, k in (("A", "a"), ("B", "b")):
            st.metric(f"Accuracy {name}", f"{c['accuracy'][k]['value']:.1%}", width="content",
                      help=f"{c['confidence']:.0%} interval: {_interval(c['accuracy'][k], True)}")
        diff = c["accuracy"]["difference"]
        st.metric("Accuracy B - A", f"{100 * diff['value']:+.1f} points", width="content",
                  help=f"{c['confidence']:.0%} interval: {_interval(diff, True, True)}")
        st.metric("McNemar p", f"{m['p_value']:.3g}", width="content",
                  help="Exact two-sided test on the images only one model gets right: how surprising such a split "
                       "would be if both models were equally accurate.")
    inside = diff["low"] <= 0 <= diff["high"]
    st.markdown(f"Accuracy difference {_interval(diff, True, True)} ({c['confidence']:.0%} interval, "
                f"{'includes' if inside else 'excludes'} 0). {m['b']} image(s) only A gets right, {m['c']} only B; "
                f"McNemar's exact p = {m['p_value']:.3g}"
                + (" — the data do not show a difference beyond noise." if m["p_value"] >= 0.05 else "."))
    # The models by letter (their names are in the caption above): with full names the table lost its numbers.
    letters = {a: "A", b: "B", f"{b} - {a}": "B - A"}
    table = pd.DataFrame([{**row, "model": letters[row["model"]]} for row in comparison_rows(c)])
    st.dataframe(table, hide_index=True, key="compare_table", width="content", column_config={
        k: st.column_config.NumberColumn(k, format="%.4f") for k in ("value", "low", "high")})
    with st.container(horizontal=True, gap="large"):
        st.plotly_chart(class_delta_figure(c["per_class"]), key="compare_deltas", width=560)
        st.plotly_chart(confusion_difference_figure(c["confusion_difference"], c["labels"]), key="compare_cm",
                        width=560)
    show_disagreements(run)
    with st.container(horizontal=True):
        st.download_button("Download the disagreements (CSV)", comparison_csv(c, run["disagreements"]),
                           file_name="comparison_disagreements.csv", mime="text/csv", key="compare_csv")
        st.download_button("Download the comparison (JSON)",
                           json.dumps({**c, "disagreements": run["disagreements"]}, indent=2),
                           file_name="comparison.json", mime="application/json", key="compare_json")


def show_disagreements(run: dict) -> None:
    """The images the two models label differently: the photo, the true label, each model's prediction with its
    probability and, with the toggle, where each model looked for its prediction."""
    rows = run["disagreements"]
    st.subheader("Where the models disagree")
    if not rows:
        st.info("The two models give every image the same label.")
        return
    explain = st.toggle("Show where each model looked (its predicted class)", value=False, key="compare_explain",
                        help="Occlusion heatmaps over the face as each model saw it: red where hiding the face lowers "
                             "the probability of the model's prediction most. A on the left, B on the right.")
    st.caption(f"{len(rows)} image(s) labelled differently; B right and A wrong first, then A right and B wrong, "
               f"then both wrong" + (f"; showing the first {GALLERY_SIZE}" if len(rows) > GALLERY_SIZE else "") + ".")
    with gallery_grid():
        for row in rows[:GALLERY_SIZE]:
            rec_a, rec_b = run["records_a"][row["index"]], run["records_b"][row["index"]]
            caption = (f"true {row['true']} · A {row['a_predicted']} {row['a_probability']:.0%}"
                       f"{' ✓' if row['a_correct'] else ''} · B {row['b_predicted']} {row['b_probability']:.0%}"
                       f"{' ✓' if row['b_correct'] else ''}")
            try:
                if explain:
                    heatmaps = [record_overlays(load_model(o), model_version(o), r, run["zip"], [r["predicted"]],
                                                run["aligned"]) for o, r in zip(run["options"], (rec_a, rec_b))]
                    gap = np.full((EXPLAIN_SIDE, GAP, 3), 255, np.uint8)
                    gallery_cell([gallery_image(rec_a, run["zip"], EXPLAIN_SIDE),
                                  np.hstack([heatmaps[0], gap, heatmaps[1]])], caption)
                else:
                    gallery_cell([gallery_image(rec_a, run["zip"])], caption)
            except (ImageLoadError, ArchiveError, CheckpointError) as e:
                st.warning(str(e), width=2 * IMAGE_WIDTH)
    with st.expander("Probabilities of these images"):
        st.dataframe(pd.DataFrame([{k: r[k] for k in ("path", "true", "a_predicted", "a_probability", "b_predicted",
                                                      "b_probability")} for r in rows]), hide_index=True)


# ---- suspicious labels ------------------------------------------------------------------------------------

def show_label_issues(rows: list[dict], records: list[dict], predictor: Predictor, model_key, zip_data: bytes | None,
                      aligned: bool, key: str) -> None:
    """The suspicious labels of an own-data evaluation (:func:`fer_core.analysis.label_issues.suspicious_labels`): a gallery
    (given vs suggested label, confidence, heatmaps of both on toggle), an editable table with a ``keep`` column and
    the download of the edited relabel CSV."""
    if not rows:
        st.info("cleanlab flags no image of this set: the model does not confidently disagree with any label (on a "
                "small set, with few images per class, it flags little or nothing).")
        return
    st.caption(f"{len(rows)} image(s) whose label the model most confidently disagrees with, most suspicious "
               f"first (cleanlab, ranked by the probability of the given label)"
               + (f"; the first {GALLERY_SIZE} below" if len(rows) > GALLERY_SIZE else "") + ". The model can be "
               "the one that is wrong: look before you relabel.")
    explain = st.toggle("Show where the model looked: given label | suggested label", value=False,
                        key=f"{key}_explain")
    with gallery_grid():
        for row in rows[:GALLERY_SIZE]:
            rec = records[row["record"]]
            caption = (f"#{row['rank']} given {row['given']} {row['given_probability']:.0%} → "
                       f"{row['suggested']} {row['confidence']:.0%}")
            try:
                if explain:
                    gallery_cell([gallery_image(rec, zip_data, EXPLAIN_SIDE),
                                  record_overlays(predictor, model_key, rec, zip_data, [row["given"], row["suggested"]],
                                                  aligned)], caption)
                else:
                    gallery_cell([gallery_image(rec, zip_data)], caption)
            except (ImageLoadError, ArchiveError) as e:
                st.warning(str(e), width=2 * IMAGE_WIDTH)
    st.markdown("**Suggested relabels**: fill the *keep* column (yes: the given label stands; no: take the "
                "suggested one), then download the CSV.")
    table = pd.DataFrame(rows, columns=list(RELABEL_FIELDS))
    edited = st.data_editor(table, hide_index=True, key=f"{key}_editor", disabled=list(RELABEL_FIELDS[:-1]),
                            column_config={"keep": st.column_config.TextColumn(
                                "keep", validate="^(yes|no)?$", help="yes: the given label stands; no: take the "
                                                                     "suggested one; empty: undecided"),
                                           "confidence": st.column_config.NumberColumn(format="%.3f"),
                                           "given_probability": st.column_config.NumberColumn(format="%.3f")})
    st.download_button("Download the relabel CSV", relabel_csv(edited.fillna("").to_dict("records")),
                       file_name="suggested_relabels.csv", mime="text/csv", key=f"{key}_csv")
