"""Training runs: every run folder with its numbers, the curves of several runs overlaid, the progress of a run that
is training (refreshed by itself), and from a finished run one click to the Evaluation page.

The runs are read by fer_core.analysis.runs; this page only draws them.
"""

import streamlit as st

from fer_core.ui.navigation import PAGE_ICON, run_through_app

LIVE_REFRESH_S = 5  # seconds between two reads of the runs while one is training (its progress file: every ~5 s)
IDLE_REFRESH_S = 30  # ... and while none is: a run started meanwhile appears within this time
MAX_DEFAULT_RUNS = 3  # runs drawn at first: those training, then the newest
EVALUATION_PAGE = "pages/4_Evaluation.py"

run_through_app()
st.set_page_config(page_title="Training runs - expressions", page_icon=PAGE_ICON, layout="wide")

import pandas as pd  # noqa: E402

from fer_core.analysis.runs import (  # noqa: E402
    BEST_HELP,
    RUNS_ENV,
    SELECTED_HELP,
    STATUSES,
    TRAIN_RUN_COMMAND,
    Run,
    discover_runs,
    format_duration,
    read_run_history,
    runs_dir,
    runs_table,
)
from fer_core.model.artifacts import (  # noqa: E402
    WEIGHTS_NAME,
    ArtifactError,
    artifact_path,
    format_timestamp,
)
from fer_core.ui.evaluation import COMPARE_MODEL_KEY, EVALUATE_MODEL_KEY  # noqa: E402
from fer_core.ui.plots import runs_curves_figure  # noqa: E402
from fer_core.ui.widgets import plain  # noqa: E402


def default_selection(runs: list[Run]) -> list[str]:
    """The runs drawn when the page opens: the ones training, then the newest others, else the shipped model."""
    own = [r.name for r in runs if not r.shipped]
    return own[:MAX_DEFAULT_RUNS] or [r.name for r in runs if r.shipped][:1]


SUMMARY_COLUMNS = ["run", "status", "epochs", "best val accuracy", "best val macro-F1", "best val NLL",
                   "selected epoch", "wall time", "notes"]
DETAIL_COLUMNS = ["run", "last update (UTC)", "command", "hardware", "data", "folder"]


def show_table(runs: list[Run]) -> None:
    """Every run: status, epochs, best validation numbers and wall time; its command, hardware, data and notes in a
    second table under it. The run's name stays at the left while a narrow window scrolls the rest."""
    table = pd.DataFrame(runs_table(runs), columns=list(dict.fromkeys(SUMMARY_COLUMNS + DETAIL_COLUMNS)))
    st.dataframe(table[SUMMARY_COLUMNS], hide_index=True, column_config={
        "run": st.column_config.TextColumn(pinned=True, width="medium"),
        "best val accuracy": st.column_config.NumberColumn(format="percent", help=BEST_HELP),
        "best val macro-F1": st.column_config.NumberColumn(format="%.3f", help=BEST_HELP),
        "best val NLL": st.column_config.NumberColumn(format="%.3f", help="validation negative log-likelihood "
                                                                          "(lower is better); " + BEST_HELP),
        "selected epoch": st.column_config.NumberColumn(help=SELECTED_HELP),
        "status": st.column_config.TextColumn(help="; ".join(f"{k}: {v}" for k, v in STATUSES.items())),
    })
    with st.expander("Commands, hardware and data of every run"):
        st.dataframe(table[DETAIL_COLUMNS], hide_index=True, column_config={
            "run": st.column_config.TextColumn(pinned=True), "command": st.column_config.TextColumn(width="large")})


def show_progress(run: Run) -> None:
    """Epoch, a bar of the steps of the current epoch, speed and ETA of a run that is training."""
    p = run.progress or {}
    epoch, epochs = p.get("epoch"), p.get("epochs") or run.epochs_planned
    step, steps = p.get("step") or 0, p.get("steps_per_epoch") or 0
    with st.container(border=True):
        st.markdown(f"**{plain(run.name)}**: {plain(p.get('phase') or 'training')}")
        with st.container(horizontal=True, gap="large"):
            st.metric("Epoch", f"{epoch or '-'} / {epochs or '?'}", width="content")
            st.metric("Step", f"{step} / {steps or '?'}", width="content")
            speed = p.get("images_per_second")
            st.metric("Images/s", "-" if speed is None else f"{speed:,.0f}", width="content")
            st.metric("ETA", format_duration(run.eta_seconds) or "estimating", width="content",
                      help="until the last epoch of this invocation ends, at the pace so far")
            st.metric("Elapsed", format_duration(p.get("elapsed_seconds")) or "-", width="content")
        st.progress(min(step / steps, 1.0) if 0 < steps and step >= 0 else 0.0,
                    text=f"epoch {epoch or '-'}: step {step} of {steps or '?'}")
        st.caption(plain(f"updated {format_timestamp(p.get('updated_at'))} · process {p.get('pid')} on "
                         f"{p.get('host')} · started {format_timestamp(p.get('started_at'))}"))


def show_curves(runs: list[Run]) -> None:
    """The histories of ``runs`` overlaid, one colour per run; a run whose history cannot be read is named."""
    histories = {}
    for run in runs:
        try:
            history = read_run_history(run.history_path)
        except ArtifactError as e:
            st.warning(plain(f"{run.name}: {e}"))
            continue
        if history is not None and len(history):
            histories[run.name] = history
    if not histories:
        st.info("No epoch finished yet in the chosen runs: the curves appear with the first row of history.csv.")
        return
    st.plotly_chart(runs_curves_figure(histories), key="run_curves")


def run_states(runs: list[Run]) -> set[tuple[str, str]]:
    return {(r.name, r.status) for r in runs}


def show_status(states: set[tuple[str, str]]) -> None:
    """The progress of the runs training and the table of every run, read afresh at each refresh. When a run has
    appeared, vanished or changed its status since the page was drawn, the whole page is drawn again: the runs to
    compare, the refresh interval and the finished runs to evaluate change with them."""
    runs = discover_runs()
    if run_states(runs) != states:
        st.rerun(scope="app")
    for run in runs:
        if run.status == "running":
            show_progress(run)
    show_table(runs)


def show_chosen_curves(chosen: list[str]) -> None:
    """The curves of the chosen runs, read afresh at each refresh."""
    show_curves([r for r in discover_runs() if r.name in chosen])


def offer_evaluation(runs: list[Run]) -> None:
    """A finished run's model, opened on the Evaluation page: evaluated alone, or compared with the shipped model."""
    finished = {r.name: r.model_path for r in runs if r.status == "finished" and r.model_path is not None}
    st.subheader("Evaluate a finished run")
    if not finished:
        st.caption("No finished run with a model yet: a run writes model.pt when its last epoch ends.")
        return
    name = st.selectbox("Finished run", list(finished), key="evaluate_run")
    model = finished[name]
    st.caption(f"model: {plain(model)}")
    shipped = artifact_path(WEIGHTS_NAME)
    same_as_shipped = shipped.is_file() and model.resolve() == shipped.resolve()
    with st.container(horizontal=True):
        if st.button("Evaluate it", icon=":material/analytics:", key="evaluate_run_button",
                     help="Open the Evaluation page with this run's model chosen"):
            st.session_state[EVALUATE_MODEL_KEY] = str(model)
            st.switch_page(EVALUATION_PAGE)
        if st.button("Compare it with the shipped model", icon=":material/compare_arrows:", key="compare_run_button",
                     disabled=same_as_shipped, help="Open the Evaluation page's comparison of two models with this "
                                                    "run's model and the shipped one"):
            st.session_state[COMPARE_MODEL_KEY] = str(model)
            st.switch_page(EVALUATION_PAGE)


st.title("Training runs")
root = runs_dir()
st.caption(f"Every `--out` folder of `python -m training.train` below `{root}` (the `{RUNS_ENV}` setting), and the "
           "shipped model. A run training now refreshes by itself.")
all_runs = discover_runs()
if not any(not r.shipped for r in all_runs):
    st.info(f"No training runs in `{root}` yet. Start one with\n\n```bash\n{TRAIN_RUN_COMMAND}\n```\n\nIt appears "
            "here within half a minute, and this page follows its epochs, steps and ETA as it trains. "
            f"`{RUNS_ENV}=/other/folder streamlit run app.py` looks for runs elsewhere.")

run_names = [r.name for r in all_runs]
refresh_s = LIVE_REFRESH_S if any(r.status == "running" for r in all_runs) else IDLE_REFRESH_S
st.fragment(show_status, run_every=refresh_s)(run_states(all_runs))

st.subheader("Curves")
if "runs_chosen" in st.session_state:  # keep the choice, less runs that have vanished
    st.session_state["runs_chosen"] = [n for n in st.session_state["runs_chosen"] if n in run_names]
else:
    st.session_state["runs_chosen"] = default_selection(all_runs)
chosen = st.multiselect("Runs to compare", run_names, key="runs_chosen",
                        help="Their curves are drawn over each other, one colour per run; a click on a run in the "
                             "legend hides or shows it.")
st.fragment(show_chosen_curves, run_every=refresh_s)(chosen)
offer_evaluation(all_runs)
