"""What a video analysis says per face: share of time per expression, dominant expression, largest changes.

Pure pandas over the rows of :class:`fer_core.video.analyse.VideoAnalysis` (``COLUMNS``); nothing here decodes video.
Analysed frames are spread evenly over the video's time, so a face's share of analysed frames with a label is
its share of (on-screen) time with that expression.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..labels import EMOTIONS

MIN_CHANGE = 0.1  # smallest change of a face's probabilities (total variation) worth pointing out


def _rows(analysis_or_rows) -> pd.DataFrame:
    return analysis_or_rows if isinstance(analysis_or_rows, pd.DataFrame) else analysis_or_rows.to_dataframe()


def change_moments(rows: pd.DataFrame, face_id: int, n: int = 3, min_change: float = 0.0,
                   new_label_only: bool = False) -> pd.DataFrame:
    """The ``n`` analysed frames of ``face_id`` whose probabilities moved most since the face's previous analysed
    frame, by at least ``min_change``: columns frame, time_s, timestamp, change (total variation distance in
    [0, 1]: half the L1 distance of the two probability vectors), before, after (the labels), largest first.
    With ``new_label_only``, only the frames where the label changed (no "surprise->surprise")."""
    face = rows[rows["face_id"] == face_id].sort_values("time_s")
    probs = face[list(EMOTIONS)].to_numpy(dtype=np.float64)
    if len(face) < 2:
        return pd.DataFrame(columns=["frame", "time_s", "timestamp", "change", "before", "after"])
    change = 0.5 * np.abs(np.diff(probs, axis=0)).sum(axis=1)
    labels = face["label"].to_numpy()
    if new_label_only:
        change = np.where(labels[:-1] != labels[1:], change, -1.0)  # -1: below any min_change
    order = np.argsort(-change, kind="stable")[:n]
    order = order[(change[order] >= min_change) & (change[order] >= 0)]
    later = face.iloc[1:]
    return pd.DataFrame({"frame": later["frame"].to_numpy()[order], "time_s": later["time_s"].to_numpy()[order],
                         "timestamp": later["timestamp"].to_numpy()[order], "change": np.round(change[order], 3),
                         "before": labels[:-1][order], "after": labels[1:][order]})


TIE = " / "  # joins the expressions of a face seen equally often with each of them ("happy / surprise")


def dominant_text(dominant: str) -> str:
    """A summary's ``dominant`` in words: "mostly happy", or "happy and surprise equally" on a tie."""
    names = dominant.split(TIE)
    return f"mostly {dominant}" if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]} equally"


def summarise(analysis_or_rows, moments: int = 3, min_change: float = MIN_CHANGE) -> pd.DataFrame:
    """One row per face ID: first and last time seen, analysed frames, the dominant expression (the most frequent
    label; on a tie every tied expression, in EMOTIONS order, joined by " / "), the share of its analysed frames
    with each expression (7 columns, and one per other label such as "uncertain"; they sum to 1) and its
    ``moments`` largest changes of expression, of at least ``min_change``, as text
    ("00:00:02.400 happy->surprise (0.71)"; "" when none)."""
    rows = _rows(analysis_or_rows)
    extra = sorted(set(rows["label"]) - set(EMOTIONS))  # e.g. "uncertain" (fer_core.model.calibration): its own share
    out = []
    for face_id, face in rows.groupby("face_id", sort=True):
        share = face["label"].value_counts(normalize=True)
        counts = face["label"].value_counts()
        most = max(counts.get(n, 0) for n in EMOTIONS)
        # (a face labelled only "uncertain" is "uncertain", not the first expression)
        dominant = TIE.join(n for n in EMOTIONS if counts.get(n, 0) == most) if most else str(counts.index[0])
        top = change_moments(rows, face_id, moments, min_change, new_label_only=True)
        out.append({"face_id": int(face_id), "first_seen": face["timestamp"].iloc[0],
                    "last_seen": face["timestamp"].iloc[-1], "frames": len(face), "dominant": dominant,
                    **{n: round(float(share.get(n, 0.0)), 3) for n in (*EMOTIONS, *extra)},
                    "largest_changes": "; ".join(f"{r.timestamp} {r.before}->{r.after} ({r.change:.2f})"
                                                 for r in top.itertuples(index=False))})
    return pd.DataFrame(out, columns=["face_id", "first_seen", "last_seen", "frames", "dominant", *EMOTIONS, *extra,
                                      "largest_changes"])
