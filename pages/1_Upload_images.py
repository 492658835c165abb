"""Upload images: every face boxed, labelled and scored; all faces as a table, CSV and JSON.

Nothing is written to disk: uploads are read from memory.
"""

import pandas as pd
import streamlit as st

from fer_core.plots import probability_bars
from fer_core.results import analyse_image, face_rows, results_csv, results_json
from fer_core.ui import detector_choice, require_predictor, session_detector

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]

st.set_page_config(page_title="Upload images - expressions", page_icon=":material/image:", layout="wide")
st.title("Expressions in your images")
st.caption("Upload one or more photos. Every face found is boxed, numbered and labelled with its most likely "
           "expression; the bars show the probability of all seven.")

predictor = require_predictor()

with st.sidebar:
    st.subheader("Options")
    tta = st.toggle("Test-time augmentation", value=True,
                    help="Average the predictions of six views of each face: as is and mirrored, each also zoomed in and out "
                         "by 10 % (about one point more accurate, six times the model time).")
    min_face = st.slider("Minimum face size (pixels)", min_value=20, max_value=300, value=20, step=10,
                         help="Smaller faces are ignored. Raise it to skip faces in the background.")
    detector_name = detector_choice()

uploads = st.file_uploader("Images (JPEG, PNG, WebP, BMP, TIFF)", type=IMAGE_TYPES, accept_multiple_files=True,
                           key="uploads")
if not uploads:
    st.info("Upload one or more images to see the expression of every face in them.")
    st.stop()

detector = session_detector(min_face, detector_name)
# Results are kept for this session only, per file and options, so a rerun (any click) does not redo them.
done = st.session_state.setdefault("_upload_results", {})
current = {up.file_id for up in uploads}
for key in [k for k in done if k[0] not in current]:
    del done[key]
results = []
for up in uploads:
    whole = st.session_state.get(f"whole_{up.file_id}", False)
    key = (up.file_id, tta, min_face, detector_name, whole, id(predictor))  # a reloaded model invalidates old results
    if key not in done:
        done[key] = analyse_image(predictor, detector, up.getvalue(), up.name, tta=tta,
                                  whole_image_if_no_face=whole)
    results.append(done[key])

n_faces = sum(len(r.faces) for r in results)
n_bad = sum(r.error is not None for r in results)
st.markdown(f"**{len(results)} file(s), {n_faces} face(s)**"
            + (f", {n_bad} file(s) could not be read" if n_bad else ""))

for up, r in zip(uploads, results):
    with st.container(border=True):
        st.subheader(r.name)
        if r.error:
            st.error(f"Could not read this file. {r.error}", icon=":material/broken_image:")
            continue
        whole_key = f"whole_{up.file_id}"
        if not r.faces or r.faces[0].whole_image:
            if not r.faces:
                st.warning(f"No face found in {r.name} (minimum face size {min_face} px). If the image is a "
                           "close-up of one face, classify the whole image as that face.")
            st.checkbox("Classify the whole image as one face", key=whole_key)
        left, right = st.columns([3, 2])
        left.image(r.annotated, caption=f"{r.size[0]}x{r.size[1]} px", width="content")
        with right:
            for i, face in enumerate(r.faces, start=1):
                x, y, w, h = face.box
                where = "whole image" if face.whole_image else f"box x={x} y={y} w={w} h={h}"
                st.markdown(f"**Face #{i}: {face.label}** ({face.confidence:.0%}) · {where}")
                st.plotly_chart(probability_bars(face.probabilities), key=f"bars_{up.file_id}_{i}",
                                config={"displayModeBar": False})

st.header("All faces")
rows = face_rows(results, predictor.class_names)
if rows:
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, column_config={
        n: st.column_config.ProgressColumn(n, format="percent", min_value=0.0, max_value=1.0)
        for n in ["confidence", *predictor.class_names]})
else:
    st.info("No faces in the uploaded images yet.")
c1, c2 = st.columns(2)
c1.download_button("Download results (CSV)", results_csv(results, predictor.class_names),
                   file_name="expressions.csv", mime="text/csv", icon=":material/download:")
c2.download_button("Download results (JSON)", results_json(results), file_name="expressions.json",
                   mime="application/json", icon=":material/download:")
