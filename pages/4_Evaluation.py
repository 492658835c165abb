"""Evaluation: the shipped validation results, training curves, evaluation on your own labelled data (with its
suspicious labels), and the comparison of two models on the same data.

Other pages can hand a checkpoint over (a path to a ``.pt`` or ``.onnx``) through ``st.session_state``:

* ``st.session_state["evaluate_model_path"]``: preselected as the model that evaluates own data, and as model B of
  the comparison;
* ``st.session_state["compare_model_path"]``: preselected as model B of the comparison, with the shipped model as A.

A hand-off is applied when its value is new and each time the visitor arrives from another page
(fer_core.ui.evaluation.apply_handoffs); in between, the visitor's own choice stands. The first view (the headline numbers of the shipped evaluation JSON) is drawn before the charts' libraries are
imported and before anything is computed; the charts and tables follow.
"""

import os
from pathlib import Path

import streamlit as st

from fer_core.analysis.report import measured_on, whole_photo_warning
from fer_core.model.artifacts import (
    CALIBRATE_COMMAND,
    EVAL_COMMAND,
    LOCAL_VALIDATION_DIR,
    TRAIN_COMMAND,
    ArtifactError,
    calibration_rows,
    read_calibration_report,
    read_eval_summary,
    read_history,
)
from fer_core.ui.navigation import PAGE_ICON, run_through_app

SERVER_FOLDERS_ENV = "FER_ALLOW_SERVER_FOLDERS"  # "1": visitors may evaluate folders on the server (docs/pages.md)
FOLDER_PLACEHOLDER = "e.g. /data/my_faces"

run_through_app()
st.set_page_config(page_title="Evaluation - expressions", page_icon=PAGE_ICON, layout="wide")


def load_artifact(reader, missing: str):
    """reader()'s artifact; an error box when the file is unusable, an info box saying ``missing`` when absent."""
    try:
        value = reader()
    except ArtifactError as e:
        st.error(str(e))
        return None
    if value is None:
        st.info(missing)
    return value


def show_headline(summary: dict) -> None:
    """Accuracy, macro-F1, image and face counts, and how they were measured (needs only the summary dict)."""
    with st.container(horizontal=True, gap="large"):  # wraps onto a second row rather than cutting the labels
        st.metric("Accuracy", f"{summary['accuracy']:.1%}", width="content")
        st.metric("Macro-F1", f"{summary['macro_f1']:.3f}", width="content")
        st.metric("Images", f"{summary.get('n_images', sum(map(sum, summary['confusion_matrix']))):,}",
                  width="content")
        if summary.get("detect_faces"):
            st.metric("Faces found", f"{summary.get('n_faces_found', 0):,}", width="content")
    st.caption(f"Measured on **{measured_on(summary)}** · "
               + ("whole photos, largest detected face classified (no face counts as wrong)"
                  if summary.get("detect_faces") else "images are pre-cropped faces"))
    if summary.get("n_unreadable"):
        st.warning(f"{summary['n_unreadable']} image(s) could not be read; they count as wrong.")
    if whole_photo_warning(summary):
        st.warning(whole_photo_warning(summary), icon=":material/photo_size_select_large:")


st.title("Evaluation")
st.header("The shipped model on the validation split")
shipped = load_artifact(read_eval_summary, "No shipped evaluation yet (`artifacts/eval_validation.json`). "
                        f"Create it with:\n\n`{EVAL_COMMAND}`")
if shipped is not None:
    show_headline(shipped)

# Everything below needs plotly, pandas and scikit-learn (through the evaluation code), whose first import takes
# seconds on a small CPU: imported only now, once the headline numbers are on screen.
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fer_core.analysis.archive import (  # noqa: E402
    MAX_EVAL_IMAGES,
    ArchiveError,
    evaluate_zip,
    evaluate_zip_models,
)
from fer_core.analysis.compare import compare_results, disagreements  # noqa: E402
from fer_core.analysis.evaluation import evaluate_folder  # noqa: E402
from fer_core.analysis.label_issues import suspicious_labels  # noqa: E402
from fer_core.analysis.report import (  # noqa: E402
    NO_FACE,
    cell_records,
    classification_table,
    most_confused,
)
from fer_core.faces.detection import DEFAULT_DETECTOR  # noqa: E402
from fer_core.faces.images import ImageLoadError  # noqa: E402
from fer_core.labels import EMOTIONS, UnknownClassError  # noqa: E402
from fer_core.model.weights import CheckpointError  # noqa: E402
from fer_core.ui.evaluation import (  # noqa: E402
    EXPLAIN_SIDE,
    GALLERY_SIZE,
    IMAGE_WIDTH,
    apply_handoffs,
    gallery_cell,
    gallery_grid,
    gallery_image,
    load_model,
    model_label,
    model_options,
    model_select,
    model_upload,
    model_version,
    record_overlays,
    show_comparison,
    show_label_issues,
)
from fer_core.ui.plots import (  # noqa: E402
    confidence_histogram_figure,
    confusion_matrix_figure,
    per_class_f1_figure,
    reliability_figure,
    training_curves_figure,
)
from fer_core.ui.widgets import (  # noqa: E402
    detector_choice,
    get_predictor,
    shared_results,
    weights_version,
)


def run_with_progress(evaluate, label: str):
    """Call evaluate(progress=...) under a progress bar: (result, None), or (None, the exception) when the data or
    model is unusable."""
    bar = st.progress(0.0, text=label)

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{label} {done}/{total} images")

    try:
        return evaluate(progress=progress), None
    except (CheckpointError, OSError, UnknownClassError, ArchiveError, ValueError) as e:
        return None, e
    finally:
        bar.empty()


def server_folders_allowed() -> bool:
    """Whether the operator lets visitors evaluate folders on the server ($FER_ALLOW_SERVER_FOLDERS=1). Off by
    default: any visitor could otherwise probe the server's files and see its images in the gallery."""
    return os.environ.get(SERVER_FOLDERS_ENV, "").strip().lower() in ("1", "true", "yes")


def folder_error(e: Exception) -> str:
    """What went wrong with a folder typed by a visitor, without revealing the server's files: one text for a
    missing path, a file, an unreadable folder, a folder of other things and an empty one (a visitor cannot tell
    which paths exist), and no names of what the folder holds."""
    if isinstance(e, CheckpointError):
        return str(e)
    return ("Not a readable folder of labelled images on the server: it must exist and hold `<class>/<image>`, with "
            "every sub-folder named after an expression (" + ", ".join(EMOTIONS) + "; aliases such as `happiness` "
            "work too).")


def explanation_pair(rec: dict, summary: dict, zip_data: bytes | None, model: str | None = None) -> np.ndarray:
    """The face as the model (``model``, an option of fer_core.ui.evaluation; None: the shipped one) saw it with the
    occlusion map of its true class (left) and of its predicted class (right); kept for the session."""
    return record_overlays(load_model(model), model_version(model), rec, zip_data, [rec["true"], rec["predicted"]],
                           aligned=summary.get("aligned") is not False)


def show_gallery(summary: dict, records: list[dict], key: str, zip_data: bytes | None = None,
                 model: str | None = None) -> None:
    """Pick a confusion-matrix cell (true, predicted) and see its images with their probabilities, and with the
    explanation toggle where the model saw the true and the predicted class."""
    labels = list(summary["labels"])
    default_true, default_pred = most_confused(summary["confusion_matrix"], labels)
    options = labels + ([NO_FACE] if any(r.get("predicted") is None for r in records) else [])
    # Defaults through the session state, which a click on a confusion-matrix cell sets too (open_cell).
    if st.session_state.get(f"{key}_true") not in labels:
        st.session_state[f"{key}_true"] = default_true
    if st.session_state.get(f"{key}_pred") not in options:
        st.session_state[f"{key}_pred"] = default_pred
    c1, c2 = st.columns(2)
    true = c1.selectbox("True class", labels, key=f"{key}_true")
    pred = c2.selectbox("Predicted class", options, key=f"{key}_pred")
    chosen = cell_records(records, true, pred)
    explain = pred != NO_FACE and st.toggle(
        "Show where the model looked: true class | predicted class", value=False, key=f"{key}_explain",
        help="Heatmaps over each face as the model saw it (aligned, 48x48): red where hiding the face lowers the "
             "probability most, of the true class on the left, of the predicted class on the right.")
    st.caption(f"{len(chosen)} image(s) of true class **{true}** predicted as **{pred}**"
               + (f"; showing the {GALLERY_SIZE} most confident" if len(chosen) > GALLERY_SIZE else ""))
    with gallery_grid():
        for rec in chosen[:GALLERY_SIZE]:
            probs = rec.get("probabilities") or {}
            caption = (f"{rec['predicted']} {probs[rec['predicted']]:.0%} · {true} {probs.get(true, 0):.0%}"
                       if probs else (rec.get("error") or "no face found"))
            try:
                if explain and probs:
                    gallery_cell([gallery_image(rec, zip_data, EXPLAIN_SIDE),
                                  explanation_pair(rec, summary, zip_data, model)],
                                 f"{true} {probs.get(true, 0):.0%} | {rec['predicted']} {probs[rec['predicted']]:.0%}")
                else:
                    gallery_cell([gallery_image(rec, zip_data, IMAGE_WIDTH)], caption)
            except (ImageLoadError, ArchiveError, CheckpointError) as e:
                st.warning(str(e), width=2 * IMAGE_WIDTH)
    if chosen:
        with st.expander("Probabilities of these images"):
            st.dataframe(pd.DataFrame([{"image": r["path"], **(r.get("probabilities") or {})}
                                       for r in chosen[:GALLERY_SIZE]]), hide_index=True)


def open_cell(chart_key: str, gallery_key: str) -> None:
    """on_select of a confusion matrix: the clicked cell (x = predicted, y = true) becomes the drill-down's."""
    points = st.session_state[chart_key]["selection"]["points"]
    if points:
        st.session_state[f"{gallery_key}_true"] = points[0]["y"]
        st.session_state[f"{gallery_key}_pred"] = points[0]["x"]


def show_results(summary: dict, key: str, records: list[dict] | None = None, zip_data: bytes | None = None,
                 headline: bool = True, gallery_key: str | None = None, model: str | None = None) -> None:
    """Headline numbers (unless already shown), confusion matrix, classification report, per-class F1 and (with
    records) the drill-down. A click on a cell of the matrix opens that cell in the drill-down of ``gallery_key``
    (``key`` when there are records)."""
    labels = list(summary["labels"])
    if headline:
        show_headline(summary)
    mode = st.radio("Confusion matrix", ["Counts", "Row-normalised"], horizontal=True, key=f"{key}_cm_mode",
                    help="Row-normalised: each row (true class) sums to 100%, so the diagonal is the recall.")
    figure = confusion_matrix_figure(summary["confusion_matrix"], labels, normalize=mode == "Row-normalised",
                                     title="Confusion matrix (rows: true class, columns: predicted)")
    gallery_key = gallery_key or (key if records else None)
    if gallery_key is None:
        st.plotly_chart(figure, key=f"{key}_cm")
    else:
        st.plotly_chart(figure, key=f"{key}_cm", on_select=lambda: open_cell(f"{key}_cm", gallery_key),
                        selection_mode="points")
        st.caption("Click a cell to see its images under **Browse the mistakes**.")
    # Side by side when there is room; the chart wraps below the table on a narrow window, so that the table keeps
    # all its columns (support included).
    with st.container(horizontal=True, gap="large"):
        with st.container(width="content"):
            st.markdown("**Classification report**")
            table = pd.DataFrame(classification_table(summary["per_class"], labels))
            st.dataframe(table, hide_index=True, width="content", column_config={
                c: st.column_config.NumberColumn(c, format="%.3f") for c in ("precision", "recall", "f1")})
        st.plotly_chart(per_class_f1_figure(summary["per_class"]), key=f"{key}_f1", width=420,
                        config={"displayModeBar": False})
    show_calibration(summary, key)

    if records:
        st.subheader("Browse the mistakes")
        show_gallery(summary, records, key, zip_data, model)


def show_calibration(summary: dict, key: str) -> None:
    """How far the probabilities can be trusted on this data: ECE and NLL before and after the temperature, the
    reliability diagram (before and after) and the confidence histogram of each predicted class."""
    st.subheader("Calibration: can the probabilities be trusted?")
    if "reliability" not in summary:
        st.caption("No calibration numbers: no face was classified, or the evaluation was written before they "
                   f"existed (re-create the shipped one with `{EVAL_COMMAND}`).")
        return
    before, t = summary.get("uncalibrated") or {}, summary.get("temperature", 1.0)
    with st.container(horizontal=True, gap="large"):
        for name, field, fmt in (("ECE", "ece", "{:.3f}"), ("NLL", "nll", "{:.3f}")):
            delta = summary[field] - before[field] if field in before else None
            st.metric(f"{name} calibrated (T = {t:.2f})", fmt.format(summary[field]), width="content",
                      delta=None if delta is None else f"{delta:+.3f} vs. uncalibrated", delta_color="inverse")
            if field in before:
                st.metric(f"{name} uncalibrated (T = 1)", fmt.format(before[field]), width="content")
    st.caption("ECE: expected calibration error, the mean gap between confidence and accuracy over 15 equal-width "
               "confidence bins, weighted by the faces in each (0 = a face shown at 70 % is right 70 % of the time). "
               "NLL: mean negative log-likelihood of the true class. Lower is better for both. Faces with no "
               "detected face are left out.")
    curves = ({"uncalibrated (T = 1)": before["reliability"]} if "reliability" in before else {})
    curves[f"calibrated (T = {t:.2f})"] = summary["reliability"]
    with st.container(horizontal=True, gap="large"):
        st.plotly_chart(reliability_figure(curves), key=f"{key}_reliability", width=520)
        if summary.get("confidence_histograms"):
            st.plotly_chart(confidence_histogram_figure(summary["confidence_histograms"]), key=f"{key}_confidence",
                            width=620, config={"displayModeBar": False})


# ---- shipped results (the headline is on screen already) -----------------------------------------
if shipped is not None:
    # Re-evaluating the validation folder takes a while: its result is shared by all sessions of this process
    # and kept while the same weights are served.
    store = shared_results()
    rerun_key = (str(LOCAL_VALIDATION_DIR), bool(shipped.get("tta", True)), bool(shipped.get("detect_faces", False)),
                 weights_version())
    rerun = store["shipped_rerun"][1] if store.get("shipped_rerun", (None,))[0] == rerun_key else None
    show_results(shipped, "shipped", headline=False, gallery_key="shipped_rerun" if rerun is not None else None)
    report = load_artifact(read_calibration_report, "No calibration report yet (`artifacts/calibration.json`). "
                           f"Create it with:\n\n`{CALIBRATE_COMMAND}`")
    if report is not None:
        st.markdown("**Calibration on each split** (the temperature was fitted on `validation-fit` only)")
        st.dataframe(pd.DataFrame(calibration_rows(report)), hide_index=True, column_config={
            c: st.column_config.NumberColumn(c, format="%.4f") for c in
            ("temperature", "ECE before", "ECE after", "NLL before", "NLL after")})
        st.caption(f"`{report.get('command', CALIBRATE_COMMAND)}`; " + "; ".join(
            f"`{name}`: {split['description']}" for name, split in report["splits"].items()))
    st.subheader("Browse the mistakes")
    if rerun is not None:
        st.caption(f"Images below come from a fresh evaluation of the loaded model on `{LOCAL_VALIDATION_DIR}` "
                   f"({rerun.summary['n_images']:,} images, accuracy {rerun.summary['accuracy']:.1%}); the numbers can "
                   "differ from the shipped ones if the model changed since.")
        show_gallery(rerun.summary, rerun.records, "shipped_rerun")
    elif LOCAL_VALIDATION_DIR.is_dir():
        if st.button(f"Evaluate the validation images again to browse them ({LOCAL_VALIDATION_DIR})",
                     icon=":material/photo_library:"):
            result, error = run_with_progress(
                lambda progress: evaluate_folder(get_predictor(), LOCAL_VALIDATION_DIR, progress=progress,
                                                 tta=rerun_key[1], detect_faces=rerun_key[2],
                                                 split=shipped.get("split", "")), "Evaluating")
            if error:
                st.error(str(error))
            else:
                store["shipped_rerun"] = (rerun_key, result)
                st.rerun()
    else:
        st.caption(f"To browse the validation images, put the FER2013 images at `{LOCAL_VALIDATION_DIR}`.")

st.header("Training curves")
history = load_artifact(read_history, f"No training history yet (`artifacts/history.csv`); `{TRAIN_COMMAND}` "
                                      "writes it every epoch.")
if history is not None and len(history):
    best = history.loc[history["val_acc"].idxmax()]
    st.caption(f"{len(history)} epoch(s); best validation accuracy {best['val_acc']:.1%} at epoch {int(best['epoch'])} "
               "(validation numbers without test-time augmentation).")
    st.plotly_chart(training_curves_figure(history), key="curves")

# ---- own data -------------------------------------------------------------------------------------
apply_handoffs("own_model", "compare_a", "compare_b")  # checkpoints handed over by another page (module docstring)
models = model_options()
st.header("Evaluate on your own data")
st.markdown("A labelled set is a folder (or a zip of one) with one sub-folder per expression, named after it "
            "(`angry`, `disgust`, `fear`, `happy`, `sad`, `surprise`, `neutral`; `anger`, `happiness`, ... work too), "
            "holding the images: `<class>/<image>`.")
own_model = model_select("Model", "own_model", models)
with st.container(horizontal=True, gap="large"):  # wraps onto a second row on a narrow window, never cuts a label
    detect = st.checkbox("Images are whole photos: detect faces", value=False, key="own_detect", width="content",
                         help="Off: every image is already a face crop (as in FER2013).")
    own_tta = st.toggle("Test-time augmentation", value=True, key="own_tta", width="content",
                        help="Average six views of each face (mirrored, zoomed in and out).")
c1, c2 = st.columns(2)
own_detector = detector_choice("own_detector", c1) if detect else DEFAULT_DETECTOR
own_min_face = c2.slider("Minimum face size (pixels)", 20, 300, 20, step=10, key="own_min_face", disabled=not detect)
options = dict(detect_faces=detect, tta=own_tta, min_face_size=own_min_face, detector=own_detector)


def keep_own_result(result, data: bytes | None) -> None:
    st.session_state["own_eval"] = {"summary": result.summary, "records": result.records, "zip": data,
                                    "model": own_model}
    st.session_state.pop("_explanations", None)  # heatmaps of the previous run's images


zip_tab, folder_tab = st.tabs(["Upload a zip", "Folder on the server"])
with zip_tab:
    archive = st.file_uploader("Zip of <class>/<image> folders", type=["zip"], key="own_zip",
                               help=f"At most {MAX_EVAL_IMAGES:,} images per zip: evaluating them takes minutes of "
                                    "server time. Split a larger set into several zips.")
    if st.button("Evaluate zip", key="own_zip_go", disabled=archive is None):
        data = archive.getvalue()
        result, error = run_with_progress(
            lambda progress: evaluate_zip(load_model(own_model), data, progress=progress, split=archive.name,
                                          **options), "Evaluating")
        if error:
            st.error(str(error))
        else:
            keep_own_result(result, data)
with folder_tab:
    if not server_folders_allowed():
        st.info("Evaluating a folder on the server is turned off: any visitor could read the server's images "
                f"with it. The person running the app can turn it on with `{SERVER_FOLDERS_ENV}=1` (see "
                "docs/pages.md); until then, upload a zip.", icon=":material/lock:")
    else:
        folder = st.text_input("Folder path", placeholder=FOLDER_PLACEHOLDER, key="own_folder",
                               help="A folder on the machine that runs this app, holding `<class>/<image>`.")
        if st.button("Evaluate folder", key="own_folder_go", disabled=not folder.strip()):
            result, error = run_with_progress(
                lambda progress: evaluate_folder(load_model(own_model), Path(folder.strip()).expanduser(),
                                                 progress=progress, split=folder.strip(), **options), "Evaluating")
            if error:
                st.error(f"Cannot evaluate `{folder.strip()}`. {folder_error(error)}")
            else:
                keep_own_result(result, None)

own = st.session_state.get("own_eval")
if own is not None:
    st.subheader(f"Results: {own['summary'].get('split') or 'your data'}")
    st.caption(f"Model: {model_label(own.get('model'))}")
    show_results(own["summary"], "own", own["records"], own["zip"], model=own.get("model"))
    st.subheader("Suspicious labels")
    if own.get("issues") is None and st.button(
            "Find suspicious labels", key="own_issues_go", icon=":material/flag:",
            help="cleanlab ranks the images whose given label the model most confidently disagrees with (on the "
                 "calibrated probabilities of this evaluation)."):
        own["issues"] = suspicious_labels(own["records"], EMOTIONS)
    if own.get("issues") is not None:
        try:
            show_label_issues(own["issues"], own["records"], load_model(own.get("model")),
                              model_version(own.get("model")), own["zip"], own["summary"].get("aligned") is not False,
                              "own_issues")
        except CheckpointError as e:
            st.error(str(e))

# ---- two models -----------------------------------------------------------------------------------
st.header("Compare two models")
st.markdown("Is one model really better than another on your data, beyond noise? Every image goes through both "
            "models on the same face; you get the accuracy and macro-F1 of each with 95 % intervals, the difference, "
            "McNemar's exact test, the per-class changes and the images they disagree on. The settings of *Evaluate "
            "on your own data* above apply (whole photos, test-time augmentation, detector).")
model_upload("compare_upload")
models = model_options()  # with a model uploaded just now
c1, c2 = st.columns(2)
model_a = model_select("Model A", "compare_a", models, 0, c1)
model_b = model_select("Model B (differences are B - A)", "compare_b", models, 1, c2)
compare_zip = st.file_uploader("Zip of <class>/<image> folders to compare on", type=["zip"], key="compare_zip",
                               help=f"At most {MAX_EVAL_IMAGES:,} images; each goes through both models.")
if model_a == model_b:
    st.caption("Choose two different models.")
if st.button("Compare", key="compare_go", disabled=compare_zip is None or model_a == model_b,
             icon=":material/compare_arrows:"):
    data = compare_zip.getvalue()
    results, error = run_with_progress(
        lambda progress: evaluate_zip_models([load_model(model_a), load_model(model_b)], data, progress=progress,
                                             split=compare_zip.name, **options), "Comparing")
    if error:
        st.error(str(error))
    else:
        a, b = results
        st.session_state["comparison"] = {
            "comparison": compare_results(a.summary, a.records, b.summary, b.records,
                                          names=(model_label(model_a), model_label(model_b))),
            "disagreements": disagreements(a.records, b.records), "records_a": a.records, "records_b": b.records,
            "zip": data, "options": (model_a, model_b), "aligned": a.summary.get("aligned") is not False}
if st.session_state.get("comparison") is not None:
    show_comparison(st.session_state["comparison"])
