"""Upload images: every face boxed, labelled and scored; all faces as a table, CSV and JSON.

Nothing is written to disk: uploads are read from memory. Faces are numbered left to right.
"""

import pandas as pd
import streamlit as st

from fer_core.analysis.photos import ImageResult, analyse_image, display_copy, face_rows, results_csv, results_json
from fer_core.model.explain import explain_crop, overlay
from fer_core.ui.navigation import PAGE_ICON, run_through_app
from fer_core.ui.plots import probability_bars
from fer_core.ui.widgets import (
    SAMPLE_CREDIT,
    SampleFile,
    detector_choice,
    plain,
    require_predictor,
    session_detector,
    uncertainty_choice,
)

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]
FACE_CELL_WIDTH = 280  # pixels: one face's thumbnail, label and bars; as many per row as the window holds
HEATMAP_SIDE = 144  # pixels: the 48x48 face crop with its heatmap, enlarged 3x
FACES_BESIDE = 3  # at most this many faces per row beside a photo (more wrap onto further rows)
MAX_IMAGE_WIDTH = 720  # pixels: a large photo is shown at most this wide (its faces beside or below it)
CARD_WIDTH = 320  # pixels: one file's card in the grid of several files (twice as wide with two faces or more)

run_through_app()
st.set_page_config(page_title="Upload images - expressions", page_icon=PAGE_ICON, layout="wide")
st.title("Expressions in your images")
st.caption("Upload one or more photos. Every face found is boxed, numbered from left to right and labelled with "
           "its most likely expression; the bars show the probability of all seven.")

predictor = require_predictor()

with st.sidebar:
    st.subheader("Options")
    tta = st.toggle("Test-time augmentation", value=True,
                    help="Average the predictions of six views of each face: as is and mirrored, each also zoomed in and out "
                         "by 10 % (about one point more accurate, six times the model time).")
    min_face = st.slider("Minimum face size (pixels)", min_value=20, max_value=300, value=20, step=10,
                         help="Faces narrower than this, in pixels of the uploaded image, are ignored. Raise it "
                              "to skip faces in the background.")
    detector_name = detector_choice()
    uncertain_below = uncertainty_choice("upload_uncertain", default=predictor.uncertain_below_for(tta))
    explain = st.toggle("Show where the model looked", value=False, key="explain",
                        help="A heatmap over the face as the model saw it (aligned, 48x48): red where hiding the "
                             "face lowers the expression's probability most. It shows the predicted expression; pick "
                             "another under each face.")

uploads = st.file_uploader("Images (JPEG, PNG, WebP, BMP, TIFF, GIF)", type=IMAGE_TYPES, accept_multiple_files=True,
                           key="uploads")
# Without uploads, the sample photo's switch comes right under the uploader and stays there while the sample is
# analysed. Then one slot: the hint without uploads, the progress while analysing. It replaces what the previous run
# showed there at once, so the hint does not stay up while new files are analysed.
# Both are slots that are always there, so that the progress takes the hint's place at once (with an element fewer
# above it, the hint would stay up, stale, until the analysis ends).
sample_slot = st.empty()
sample = not uploads and sample_slot.toggle(
    "No photo at hand? Try a sample photo", key="use_sample",
    help=f"{SAMPLE_CREDIT}: it shows what the page does before you upload your own.")
progress_slot = st.empty()
if not uploads:
    if not sample:
        progress_slot.info("Upload one or more images to see the expression of every face in them.")
        st.stop()
    uploads = [SampleFile()]
    st.caption(f"Sample photo: {SAMPLE_CREDIT}. Upload your own images above to replace it.")

detector = session_detector(min_face, detector_name)
# Results are kept for this session only, per file and options, so a rerun (any click) does not redo them.
done = st.session_state.setdefault("_upload_results", {})
current = {up.file_id for up in uploads}
for key in [k for k in done if k[0] not in current]:
    del done[key]
heatmap_store = st.session_state.setdefault("_upload_heatmaps", {})
for key in [k for k in heatmap_store if k[0] not in current]:  # heatmaps go with their file
    del heatmap_store[key]


def whole_image_wanted(up) -> bool:
    """Whether the user asked to classify this file's whole image as one face (its checkbox below)."""
    return st.session_state.get(f"whole_{up.file_id}", False)


def result_key(up) -> tuple:
    """What a file's result depends on; id(predictor): a reloaded model invalidates old results."""
    return up.file_id, tta, min_face, detector_name, whole_image_wanted(up), uncertain_below, id(predictor)


keys = [result_key(up) for up in uploads]
pending = [(up, key) for up, key in zip(uploads, keys) if key not in done]


def analyse_pending() -> None:
    """Analyse the files not seen yet under a status box: a bar per file and per face, a line per finished file."""
    with progress_slot.container(), st.status(f"Analysing {len(pending)} image(s)...", expanded=True) as status:
        bar = st.progress(0.0)
        for n, (up, key) in enumerate(pending):
            prefix = f"Image {n + 1} of {len(pending)}, {up.name}:"
            bar.progress(n / len(pending), text=f"{prefix} reading and finding faces...")

            def progress(faces_done: int, faces_total: int, n=n, prefix=prefix) -> None:
                share = faces_done / faces_total if faces_total else 1.0
                bar.progress((n + share) / len(pending),
                             text=f"{prefix} face {min(faces_done + 1, faces_total)} of {faces_total}..."
                             if faces_done < faces_total else f"{prefix} {faces_total} face(s) done")

            r = done[key] = analyse_image(predictor, detector, up.getvalue(), up.name, tta=tta,
                                          whole_image_if_no_face=whole_image_wanted(up), progress=progress,
                                          uncertain_below=uncertain_below)
            st.write(f"{up.name}: " + ("could not be read" if r.error else f"{len(r.faces)} face(s)"))
        bar.progress(1.0, text="Done")
        status.update(label=f"Analysed {len(pending)} image(s)", state="complete", expanded=False)


if pending:
    analyse_pending()
results: list[ImageResult] = [done[key] for key in keys]



def show_summary() -> None:
    """What the results add up to, first: counts, the expressions found, the table of every face and the
    downloads; the cards of the single files follow."""
    n_faces = sum(len(r.faces) for r in results)
    n_bad = sum(r.error is not None for r in results)
    st.markdown(f"**{len(results)} file(s), {n_faces} face(s)**"
                + (f", {n_bad} file(s) could not be read" if n_bad else ""))
    rows = face_rows(results, predictor.class_names)
    if not rows:
        st.info("No faces in the uploaded images yet.")
    else:
        table = pd.DataFrame(rows)
        counts = table["label"].value_counts()
        st.markdown(" · ".join(f"{name} **{counts[name]}**" for name in (*predictor.class_names, "uncertain")
                               if name in counts))
        with st.expander(f"All {n_faces} face(s) as a table"):
            # Narrow enough for a small window: the boxes are in each file's card, all numbers in the downloads.
            st.dataframe(table[["file", "face", "label", "confidence"]], hide_index=True, column_config={
                "file": st.column_config.TextColumn(pinned=True),
                "confidence": st.column_config.ProgressColumn("confidence", format="percent", min_value=0.0,
                                                              max_value=1.0)})
            st.dataframe(table[["file", "face", *predictor.class_names]], hide_index=True, column_config={
                "file": st.column_config.TextColumn(pinned=True),
                **{n: st.column_config.NumberColumn(n, format="percent") for n in predictor.class_names}})
    with st.container(horizontal=True):
        st.download_button("Download results (CSV)", results_csv(results, predictor.class_names),
                           file_name="expressions.csv", mime="text/csv", icon=":material/download:",
                           help="One row per face, and one per file without a face or that could not be read.")
        st.download_button("Download results (JSON)", results_json(results), file_name="expressions.json",
                           mime="application/json", icon=":material/download:")


show_summary()


def heatmaps(up, r: ImageResult, i: int):
    """(C, S, S) occlusion maps of face ``i`` (1-based) of a file's result, one per class; computed once per session
    and result (like the results, they are dropped with their file)."""
    store = heatmap_store
    # What the crops depend on (not TTA or the confidence policy, which change only the probabilities and labels)
    key = (up.file_id, min_face, detector_name, whole_image_wanted(up), id(predictor), i)
    if key not in store:
        store[key] = explain_crop(predictor.backend, predictor.preprocess, r.crops[i - 1])
    return store[key]


def show_explanation(up, r: ImageResult, i: int) -> None:
    """The face crop the model saw with the occlusion map of a chosen class (the predicted one first)."""
    face = r.faces[i - 1]
    names = list(predictor.class_names)
    target = st.selectbox("Explain", names, index=names.index(face.label), key=f"explain_{up.file_id}_{i}",
                          help="Which expression's score to explain: the predicted one, or any other.")
    st.image(overlay(r.crops[i - 1], heatmaps(up, r, i)[names.index(target)], HEATMAP_SIDE),
             caption=f"Where the model saw {target} ({face.probabilities[target]:.0%})", width=HEATMAP_SIDE)


def show_faces(up, r: ImageResult) -> None:
    """The faces of one image, left to right, in a grid that wraps to the window's width: per face a thumbnail,
    its label (or "uncertain") and its probability bars, and with ``explain`` its occlusion heatmap."""
    with st.container(horizontal=True):
        for i, (face, thumb, label) in enumerate(zip(r.faces, r.thumbnails, r.labels()), start=1):
            x, y, w, h = face.box
            where = "whole image" if face.whole_image else f"{w}x{h} px at x={x}, y={y}"
            shown = label if label == face.label else f"{label} (most likely {face.label})"
            with st.container(border=True, width=FACE_CELL_WIDTH):
                left, right = st.columns([1, 3], vertical_alignment="center")
                left.image(thumb, width=64)
                right.markdown(f"**Face #{i}: {shown}** ({face.confidence:.0%})  \n{where}")
                st.plotly_chart(probability_bars(face.probabilities, height=180), key=f"bars_{up.file_id}_{i}",
                                config={"displayModeBar": False})
                if explain:
                    show_explanation(up, r, i)


def show_file(up, r: ImageResult) -> None:
    """One file's card: its name, notes, the annotated image and the grid of its faces."""
    st.markdown(f"##### {plain(r.name)}")  # a small heading: a long file name fits a narrow card better
    if r.error:
        st.error(f"Could not read this file. {r.error}", icon=":material/broken_image:")
        return
    if r.frames > 1:
        st.info(f"{r.name} has {r.frames} frames (an animated or multi-page image): only the first frame was "
                "analysed.", icon=":material/animation:")
    whole_key = f"whole_{up.file_id}"
    if not r.faces or r.faces[0].whole_image:
        if not r.faces:
            st.warning(f"No face found in {r.name} (minimum face size {min_face} px). If the image is a "
                       "close-up of one face, classify the whole image as that face.")
        st.checkbox("Classify the whole image as one face", key=whole_key)
    factor = r.annotated.shape[1] / r.size[0]
    caption = f"{r.size[0]}x{r.size[1]} px" + (f", shown {factor:.0f}x enlarged" if factor > 1 else "")
    # The faces beside the photo where the card has room (a single file in a wide window), else under it.
    with st.container(horizontal=True, gap="medium"):
        # Shrunk to the displayed width here (2x, for sharp high-density screens): Streamlit's own scaling would
        # give a very wide, thin image a height of 0 px.
        shown = display_copy(r.annotated, max_width=2 * MAX_IMAGE_WIDTH)
        with st.container(width=min(MAX_IMAGE_WIDTH, shown.shape[1])):  # never wider than its card either
            st.image(shown, caption=caption, width="content")
        if r.faces:
            beside = min(len(r.faces), FACES_BESIDE)
            with st.container(width=beside * FACE_CELL_WIDTH + (beside - 1) * 16):  # 16 px: the grid's gap
                show_faces(up, r)


# The cards: one per file, as wide as the page for a single file; several side by side in a grid that wraps to
# the window's width (one per row in a narrow window).
with st.container(horizontal=True, gap="medium"):
    for up, r in zip(uploads, results):
        width = "stretch" if len(results) == 1 else CARD_WIDTH * min(max(len(r.faces), 1), 2)
        with st.container(border=True, width=width):
            show_file(up, r)
