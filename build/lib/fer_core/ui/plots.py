"""Plotly figures of the app: per-face probabilities, confusion matrix, per-class F1, training curves,
the live timeline.

Every builder takes plain data (dicts, lists, a DataFrame) and returns a ``plotly.graph_objects.Figure``;
nothing here talks to Streamlit. Expression colours come from :data:`fer_core.faces.drawing.EMOTION_COLORS`
so charts and annotated images agree.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis.report import normalize_rows
from ..faces.drawing import color_hex
from ..labels import EMOTIONS

_MARGIN = dict(l=10, r=10, t=40, b=10)
MAX_TICKS = 6  # ticks on a value axis at most (Plotly's nticks)


def tick_format(values: Iterable[float], percent: bool = False) -> str:
    """The d3 format of a value axis over ``values`` with as many decimals as its ticks need, and no more.

    Plotly puts at most :data:`MAX_TICKS` ticks at steps of 1, 2 or 5 x 10^k; a fixed ``.0%`` on an axis from 67.2 to
    68.5 % prints "68% 68% 68%", so the decimals follow the step: about (max - min) / MAX_TICKS, rounded down to
    its power of ten. Non-finite values are ignored."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)] * (100 if percent else 1)
    span = float(v.max() - v.min()) if v.size else 0.0
    if span <= 0:
        span = abs(float(v.max())) / 10 if v.size and v.max() else 1.0
    decimals = min(6, max(0, -math.floor(math.log10(span / MAX_TICKS))))
    return f".{decimals}{'%' if percent else 'f'}"


def _ordered(names) -> list[str]:
    """EMOTIONS order for the 7 expressions, the given order otherwise."""
    return [n for n in EMOTIONS if n in names] + [n for n in names if n not in EMOTIONS]


def probability_bars(probabilities: dict[str, float], title: str | None = None, height: int = 230) -> go.Figure:
    """Horizontal bars, one per expression (probabilities in [0, 1]), the top one first-read at the top."""
    names = _ordered(list(probabilities))
    values = [float(probabilities[n]) for n in names]
    fig = go.Figure(go.Bar(
        x=values, y=names, orientation="h", marker_color=[color_hex(n) for n in names],
        text=[f"{v:.0%}" for v in values], textposition="outside", cliponaxis=False,
        hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    fig.update_layout(title=title, height=height, margin={**_MARGIN, "t": _MARGIN["t"] if title else 10},
                      showlegend=False, xaxis=dict(range=[0, 1.15], tickformat=".0%", showgrid=False),
                      yaxis=dict(autorange="reversed"))
    return fig


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], labels: Sequence[str], normalize: bool = False,
                            title: str | None = None) -> go.Figure:
    """Heatmap of a confusion matrix (rows = true class, columns = predicted class).

    With ``normalize`` each row is divided by its sum, so the diagonal reads as per-class recall; the
    counts stay visible in the hover text either way. Each cell also holds an invisible marker (the second trace,
    x = predicted, y = true), which is what a click selects: Plotly selects points, not heatmap cells.
    """
    labels = list(labels)
    counts = [[int(v) for v in row] for row in matrix]
    z = normalize_rows(counts) if normalize else counts
    text = [[f"{v:.0%}" if normalize else f"{v:d}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, text=text, texttemplate="%{text}", hoverinfo="skip",
        colorscale="Blues", zmin=0, zmax=1 if normalize else None,
        colorbar=dict(title="share of row" if normalize else "images", tickformat=".0%" if normalize else None)))
    cells = [(t, p, counts[i][j], z[i][j]) for i, t in enumerate(labels) for j, p in enumerate(labels)]
    fig.add_trace(go.Scatter(
        x=[c[1] for c in cells], y=[c[0] for c in cells], customdata=[[c[2], c[3]] for c in cells],
        mode="markers", marker=dict(symbol="square", size=36, opacity=0), showlegend=False,
        hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata[0]} images" +
                      ("<br>%{customdata[1]:.1%} of the true class" if normalize else "") + "<extra></extra>"))
    fig.update_layout(title=title, height=480, margin=_MARGIN, hoverdistance=-1, clickmode="event+select",
                      xaxis=dict(title="predicted", side="bottom", type="category"),
                      yaxis=dict(title="true", autorange="reversed", type="category"))
    return fig


def per_class_f1_figure(per_class: dict[str, dict], title: str | None = "F1 per class") -> go.Figure:
    """Bar per class of its F1 score, coloured by expression, with the support in the hover text."""
    names = _ordered(list(per_class))
    f1 = [float(per_class[n]["f1"]) for n in names]
    support = [int(per_class[n]["support"]) for n in names]
    fig = go.Figure(go.Bar(
        x=names, y=f1, marker_color=[color_hex(n) for n in names], customdata=support,
        text=[f"{v:.2f}" for v in f1], textposition="outside", cliponaxis=False,
        hovertemplate="%{x}: F1 %{y:.3f}<br>%{customdata} images<extra></extra>"))
    fig.update_layout(title=title, height=340, margin=_MARGIN, showlegend=False,
                      yaxis=dict(range=[0, 1.08], title="F1"))
    return fig


def training_curves_figure(history: pd.DataFrame) -> go.Figure:
    """Two panels over epochs: train/validation loss, and train/validation accuracy with validation macro-F1."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy and macro-F1"))
    e = history["epoch"]
    traces = [
        (1, "train loss", "train_loss", "#1f77b4", "dash"),
        (1, "validation loss", "val_loss", "#1f77b4", "solid"),
        (2, "train accuracy", "train_acc", "#2ca02c", "dash"),
        (2, "validation accuracy", "val_acc", "#2ca02c", "solid"),
        (2, "validation macro-F1", "val_macro_f1", "#d62728", "solid"),
    ]
    for col, name, column, color, dash in traces:
        if column in history:
            fig.add_trace(go.Scatter(x=e, y=history[column], name=name, mode="lines+markers",
                                     line=dict(color=color, dash=dash), marker=dict(size=4)), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(nticks=MAX_TICKS)
    accuracies = [v for c in ("train_acc", "val_acc", "val_macro_f1") if c in history for v in history[c]]
    fig.update_yaxes(tickformat=tick_format(accuracies, percent=True), row=1, col=2)
    fig.update_yaxes(tickformat=tick_format([v for c in ("train_loss", "val_loss") if c in history
                                             for v in history[c]]), row=1, col=1)
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.2))
    return fig


def timeline_figure(rows, class_names: Sequence[str] = EMOTIONS, seconds: float = 30.0, title: str | None = None):
    """Plotly line chart of the probabilities in ``rows`` (a :meth:`SessionLog.recent` frame) over time.

    One line per expression in its app colour; the x axis covers the last ``seconds`` up to the newest row.
    """
    fig = go.Figure()
    for name in class_names:
        fig.add_trace(go.Scatter(x=rows["time_s"], y=rows[name] if name in rows else [], name=name, mode="lines",
                                 line=dict(color=color_hex(name), width=2),
                                 hovertemplate=f"{name} %{{y:.0%}} at %{{x:.1f}} s<extra></extra>"))
    end = float(rows["time_s"].iloc[-1]) if len(rows) else seconds
    fig.update_layout(title=title, height=280, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      xaxis=dict(title="seconds since start", range=[max(0.0, end - seconds), max(end, seconds)]),
                      yaxis=dict(range=[0, 1], tickformat=".0%"),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0), uirevision="timeline")
    return fig


def reliability_figure(curves: dict[str, Sequence[dict]], title: str | None = "Reliability diagram") -> go.Figure:
    """Confidence bins against accuracy, one line per curve (e.g. {"before calibration": bins, "after": bins}, bins
    from :func:`fer_core.model.calibration.reliability_bins`), the diagonal of perfect calibration, and the faces per bin
    of the last curve as bars below (its own axis): a point under the diagonal is over-confident."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.06)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line=dict(color="#999999", dash="dot"), hoverinfo="skip"), row=1, col=1)
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    for (name, bins), colour in zip(curves.items(), colours):
        full = [b for b in bins if b["count"]]
        fig.add_trace(go.Scatter(
            x=[b["confidence"] for b in full], y=[b["accuracy"] for b in full], mode="lines+markers", name=name,
            line=dict(color=colour), marker=dict(size=7),
            customdata=[[b["count"], b["lower"], b["upper"]] for b in full],
            hovertemplate=(f"{name}<br>confidence %{{customdata[1]:.0%}}-%{{customdata[2]:.0%}}: mean %{{x:.1%}}"
                           "<br>accuracy %{y:.1%}<br>%{customdata[0]} faces<extra></extra>")), row=1, col=1)
    if curves:
        name, bins = list(curves.items())[-1]
        fig.add_trace(go.Bar(x=[(b["lower"] + b["upper"]) / 2 for b in bins], y=[b["count"] for b in bins],
                             width=[b["upper"] - b["lower"] for b in bins], name=f"faces per bin ({name})",
                             marker_color="#7f7f7f", hovertemplate="%{y} faces<extra></extra>"), row=2, col=1)
    fig.update_xaxes(range=[0, 1], tickformat=".0%", row=1, col=1)
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title_text="confidence (top probability)", row=2, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title_text="accuracy", row=1, col=1)
    fig.update_yaxes(title_text="faces", row=2, col=1)
    fig.update_layout(title=title, height=460, margin=_MARGIN, legend=dict(orientation="h", yanchor="top", y=-0.18))
    return fig


def confidence_histogram_figure(histograms: dict[str, dict], title: str | None = "Confidence per predicted class",
                                columns: int = 4) -> go.Figure:
    """One small histogram per predicted class of the top probability, right and wrong predictions stacked
    (``histograms`` from :func:`fer_core.model.calibration.confidence_histograms`)."""
    names = _ordered([n for n in histograms if sum(histograms[n]["correct"]) + sum(histograms[n]["wrong"])])
    rows = max(1, -(-len(names) // columns))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=names, shared_yaxes=False,
                        horizontal_spacing=0.05, vertical_spacing=0.18)
    for i, name in enumerate(names):
        h = histograms[name]
        n_bins = len(h["correct"])
        centres = [(b + 0.5) / n_bins for b in range(n_bins)]
        for kind, colour in (("correct", color_hex(name)), ("wrong", "#7f7f7f")):
            fig.add_trace(go.Bar(x=centres, y=h[kind], width=1 / n_bins, name=kind, marker_color=colour,
                                 legendgroup=kind, showlegend=i == 0 and kind == "wrong",
                                 hovertemplate=f"predicted {name}, {kind}<br>confidence %{{x:.0%}}: %{{y}} faces"
                                               "<extra></extra>"), row=i // columns + 1, col=i % columns + 1)
    # Short labels ("100" of one panel beside "0" of the next would read "1000"): the unit is in the axis title.
    fig.update_xaxes(range=[0, 1], tickvals=[0, 0.5, 1], ticktext=["0", "50", "100"])
    fig.update_xaxes(title_text="confidence, %", row=rows)
    fig.update_layout(title=title, barmode="stack", height=230 * rows + 60, margin=_MARGIN,
                      legend=dict(orientation="h", yanchor="bottom", y=1.04, xanchor="right", x=1))
    return fig


def video_timeline_figure(rows: pd.DataFrame, face_id: int, class_names: Sequence[str] = EMOTIONS,
                          title: str | None = None, moment_s: float | None = None) -> go.Figure:
    """One face's probabilities over video time (``rows``: the rows of fer_core.video.analyse's analysis, COLUMNS).

    One line per expression in its app colour; the hover names the frame, its video time (hh:mm:ss.mmm) and
    the face's label there; ``moment_s`` draws a vertical line at the moment shown beside the chart. Points
    can be clicked (Streamlit's ``on_select``): each carries its time in seconds as x.
    """
    face = rows[rows["face_id"] == face_id].sort_values("time_s")
    custom = face[["frame", "timestamp", "label"]].to_numpy()
    fig = go.Figure()
    for name in class_names:
        fig.add_trace(go.Scatter(
            x=face["time_s"], y=face[name], name=name, mode="lines+markers", customdata=custom,
            line=dict(color=color_hex(name), width=2), marker=dict(size=4),
            hovertemplate=f"{name} %{{y:.0%}}<br>%{{customdata[1]}} (frame %{{customdata[0]}})"
                          f"<br>label: %{{customdata[2]}}<extra></extra>"))
    if moment_s is not None:
        fig.add_vline(x=moment_s, line=dict(color="#444", dash="dot", width=1))
    fig.update_layout(title=title, height=300, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      xaxis=dict(title="video time (s)"), yaxis=dict(range=[0, 1], tickformat=".0%"),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0), hovermode="closest",
                      clickmode="event+select")
    return fig


# history.csv columns drawn by runs_curves_figure, one panel each: (title, axis format, log axis)
RUN_CURVES = {"train_loss": ("training loss", None, False), "train_acc": ("training accuracy", ".0%", False),
              "val_acc": ("validation accuracy", ".0%", False), "val_macro_f1": ("validation macro-F1", ".2f", False),
              "val_loss": ("validation NLL", None, False), "lr": ("learning rate", None, True)}
RUN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf")


def runs_curves_figure(histories: dict[str, pd.DataFrame], columns: int = 3) -> go.Figure:
    """Several training runs overlaid: one panel per :data:`RUN_CURVES` column that any history has (training loss
    and accuracy, validation accuracy, macro-F1 and NLL, learning rate), against the epoch; one colour per run
    (``histories``: run name -> its history.csv), its legend entry toggling the run in every panel. Zoom and legend
    choices survive a redraw with new rows (``uirevision``)."""
    panels = [c for c in RUN_CURVES if any(c in h.columns for h in histories.values())]
    rows = max(1, -(-len(panels) // columns))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[RUN_CURVES[c][0] for c in panels],
                        horizontal_spacing=0.07, vertical_spacing=0.16)
    for i, (name, history) in enumerate(histories.items()):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        for j, column in enumerate(panels):
            if column not in history.columns:
                continue
            title, fmt, _ = RUN_CURVES[column]
            value = f"%{{y:{fmt}}}" if fmt else "%{y:.4f}"
            fig.add_trace(go.Scatter(
                x=history["epoch"], y=history[column], name=name, legendgroup=name, showlegend=j == 0,
                mode="lines+markers", line={"color": colour, "width": 2}, marker={"size": 5},
                hovertemplate=f"{name}<br>epoch %{{x}}: {title} {value}<extra></extra>"),
                row=j // columns + 1, col=j % columns + 1)
    for j, column in enumerate(panels):
        _, fmt, log = RUN_CURVES[column]
        where = dict(row=j // columns + 1, col=j % columns + 1)
        if log:  # one labelled tick per power of ten: "1e-4", not "5 2 100µ 5 2"
            fig.update_yaxes(type="log", dtick=1, tickformat=".0e", **where)
        else:
            values = [v for h in histories.values() if column in h.columns for v in h[column]]
            fig.update_yaxes(tickformat=tick_format(values, percent=fmt == ".0%"), nticks=MAX_TICKS, **where)
    fig.update_xaxes(title_text="epoch", rangemode="tozero")
    fig.update_layout(height=300 * rows + 80, margin=_MARGIN, uirevision="runs",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.08, "xanchor": "left", "x": 0})
    return fig


def class_delta_figure(per_class: dict[str, dict], title: str | None = "Per-class change, B - A") -> go.Figure:
    """Grouped bars per class of the recall and F1 differences B - A (``per_class`` of
    :func:`fer_core.analysis.compare.compare_results`), classes absent from the data left out; the hover gives both values."""
    names = [n for n in _ordered(list(per_class)) if per_class[n]["support"]]
    fig = go.Figure()
    for metric, colour in (("recall", "#1f77b4"), ("f1", "#ff7f0e")):
        deltas = [per_class[n][f"{metric}_difference"] for n in names]
        fig.add_trace(go.Bar(
            x=names, y=deltas, name=f"{'F1' if metric == 'f1' else metric} B - A", marker_color=colour,
            customdata=[[per_class[n][f"a_{metric}"], per_class[n][f"b_{metric}"], per_class[n]["support"]]
                        for n in names],
            # a label on a bar that is there: two "+0.00" side by side print over each other
            text=[f"{d:+.2f}" if abs(d) >= 0.005 else "" for d in deltas], textposition="outside", cliponaxis=False,
            hovertemplate=f"%{{x}} {metric}: A %{{customdata[0]:.3f}}, B %{{customdata[1]:.3f}} "
                          "(%{customdata[2]} images)<extra></extra>"))
    fig.update_layout(title=title, barmode="group", height=360, margin=_MARGIN,
                      yaxis=dict(title="B - A", zeroline=True, zerolinecolor="#444"),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1))
    return fig


def confusion_difference_figure(difference: Sequence[Sequence[int]], labels: Sequence[str],
                                title: str | None = "Confusion matrix B - A (rows: true class, columns: predicted)"
                                ) -> go.Figure:
    """Diverging heatmap of the difference of two confusion matrices (B - A, counts): on the diagonal, blue = B
    right more often; off it, red = B makes that mistake more often."""
    labels = list(labels)
    z = [[int(v) for v in row] for row in difference]
    # On the diagonal more is better, off it more is worse: colour by that, label with the signed count.
    goodness = [[v if i == j else -v for j, v in enumerate(row)] for i, row in enumerate(z)]
    peak = max([abs(v) for row in z for v in row] + [1])
    fig = go.Figure(go.Heatmap(
        z=goodness, x=labels, y=labels, text=[[f"{v:+d}" if v else "0" for v in row] for row in z],
        texttemplate="%{text}", customdata=z, colorscale="RdBu", zmin=-peak, zmax=peak, zmid=0,
        colorbar=dict(title=dict(text="B better", side="right")), hovertemplate="true %{y}<br>predicted %{x}<br>B - A: %{customdata:+d} "
                                                      "images<extra></extra>"))
    fig.update_layout(title=title, height=480, margin=_MARGIN,
                      xaxis=dict(title="predicted", type="category"),
                      yaxis=dict(title="true", autorange="reversed", type="category"))
    return fig
