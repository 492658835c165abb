"""Entry point of the dashboard: the sidebar navigation and the home page (what the app does, which model is
loaded, links to the pages).

    streamlit run app.py
"""

import streamlit as st

from fer_core.analysis.report import measured_on
from fer_core.model.artifacts import (
    EVAL_COMMAND,
    ArtifactError,
    artifact_path,
    format_timestamp,
    model_overview,
    read_eval_summary,
    read_model_card,
)
from fer_core.model.inference import Predictor
from fer_core.model.weights import CheckpointError
from fer_core.ui.navigation import PAGE_ICON
from fer_core.ui.widgets import get_predictor, model_error_box, weights_path

st.set_page_config(page_title="Facial expression recognition", page_icon=PAGE_ICON, layout="wide")

# The sidebar navigation: a "Home" entry instead of the script's file name, then the pages in pages/.
UPLOAD = st.Page("pages/1_Upload_images.py", title="Upload images", icon=":material/image:")
LIVE = st.Page("pages/2_Live_webcam.py", title="Live webcam", icon=":material/videocam:")
VIDEO = st.Page("pages/3_Video_files.py", title="Video files", icon=":material/movie:")
EVALUATION = st.Page("pages/4_Evaluation.py", title="Evaluation", icon=":material/analytics:")
TRAINING_RUNS = st.Page("pages/5_Training_runs.py", title="Training runs", icon=":material/monitoring:")


def home() -> None:
    """What the app does, which model is loaded, and links to the pages."""
    st.title("Facial expression recognition")
    st.markdown("This app finds the faces in your photos, videos or webcam stream and tells which of seven "
                "expressions each one shows (angry, disgust, fear, happy, sad, surprise, neutral), with a probability "
                "for every one. It also shows how well the model does on held-out data, and can evaluate it on your own "
                "labelled images.")

    st.header("The loaded model")
    try:
        predictor = get_predictor()
    except CheckpointError as e:
        model_error_box(e, " The evaluation page still shows the shipped results.")
    else:
        show_loaded_model(predictor)

    st.header("Pages")
    st.page_link(UPLOAD, label="Upload images: every face boxed, labelled and scored, with what the model looked at", icon=":material/image:")
    st.page_link(LIVE, label="Live webcam: expressions in real time", icon=":material/videocam:")
    st.page_link(VIDEO, label="Video files: every face's expression over a recording", icon=":material/movie:")
    st.page_link(EVALUATION, label="Evaluation: accuracy, confusion matrix, calibration, your own data",
                 icon=":material/analytics:")
    st.page_link(TRAINING_RUNS, label="Training runs: compare your runs' curves, follow one that is training",
                 icon=":material/monitoring:")


WHOLE_PHOTO_EVAL = "eval_cfee_test.json"  # whole photos of people never trained on (docs/evaluation.md)


def whole_photo_summary() -> dict | None:
    """The shipped whole-photo evaluation, or None when absent or unreadable (the home page then omits it)."""
    try:
        return read_eval_summary(artifact_path(WHOLE_PHOTO_EVAL))
    except ArtifactError:
        return None


def show_loaded_model(predictor: Predictor) -> None:
    """Name, size, headline validation numbers and provenance of the model the app serves."""
    try:
        card = read_model_card()
    except ArtifactError as e:
        card = None
        st.warning(f"The model card could not be read: {e}")
    info = model_overview(predictor, card)
    # Headline numbers: the shipped evaluation (fp32, as the app runs) when present, else the card's
    # selection metric recorded during training.
    source = "model card (selection metric during training, no TTA)"
    try:
        summary = read_eval_summary()
    except ArtifactError:
        summary = None
    if summary is not None:
        info["val_acc"], info["val_macro_f1"] = summary["accuracy"], summary["macro_f1"]
        info["validation_split"] = measured_on(summary)
        source = "artifacts/eval_validation.json"

    st.subheader(info["name"])
    trained = format_timestamp(info["trained_at"])
    with st.container(horizontal=True, gap="large"):  # wraps onto a second row rather than cutting the labels
        st.metric("Parameters", f"{info['parameters'] / 1e6:.2f} M", width="content")
        st.metric("Validation accuracy", "n/a" if info["val_acc"] is None else f"{info['val_acc']:.1%}",
                  width="content", help=f"Measured on {measured_on(summary)}." if summary is not None else
                  "The model card's selection metric: FER2013 validation, FER2013's labels, no test-time "
                  "augmentation.")
        st.metric("Validation macro-F1", "n/a" if info["val_macro_f1"] is None else f"{info['val_macro_f1']:.3f}",
                  width="content")
        photos = whole_photo_summary()
        if photos is not None:
            st.metric("Whole photos accuracy", f"{photos['accuracy']:.1%}", width="content",
                      help=f"{photos.get('split') or 'whole photos'}: faces found by the detector, aligned and "
                           f"classified, as on the upload page ({photos['n_faces_found']}/{photos['n_images']} "
                           f"faces found; macro-F1 {photos['macro_f1']:.3f}; from artifacts/{WHOLE_PHOTO_EVAL})")
        st.metric("Trained", trained.split(" ")[0], help=f"Weights written {trained}", width="content")
    st.markdown("**Classes** (in the model's output order): " + ", ".join(f"`{c}`" for c in info["classes"]))
    details = [f"weights: `{weights_path()}`"]
    if info["selected_epoch"] is not None:
        details.append(f"weights of epoch {info['selected_epoch']} (the run's selected epoch: the best on "
                       "validation, or the last one for a fine-tune on whole photos)")
    if info["validation_split"]:
        details.append(f"validation numbers: {info['validation_split']} (from the {source})")
    if photos is not None:
        details.append(f"whole photos accuracy: {photos.get('split') or 'whole photos'}, "
                       f"{photos['n_faces_found']} of {photos['n_images']} faces found by "
                       f"{photos.get('detector') or 'the detector'} (from artifacts/{WHOLE_PHOTO_EVAL})")
    if info["macs_per_face"]:
        details.append(f"{info['macs_per_face'] / 1e6:.0f} M multiply-adds per face")
    details.append(f"runs on {'ONNX Runtime' if predictor.backend.name == 'onnxruntime' else 'PyTorch'} "
                   "(FER_BACKEND)")
    st.caption(" · ".join(details))
    if card is None:
        st.info("No model card yet: `artifacts/model_card.json` is written when `python -m training.train` "
                "finishes. Validation numbers come from the shipped evaluation when there is one "
                f"(`{EVAL_COMMAND}`).")
    elif not info["card_matches"]:
        st.warning("The model card lists different classes than the loaded weights: it describes another model. "
                   "Re-run training or restore the matching `model_card.json`.")


st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True), UPLOAD, LIVE, VIDEO, EVALUATION,
              TRAINING_RUNS]).run()
