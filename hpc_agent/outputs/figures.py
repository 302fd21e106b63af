"""Figures for papers: one style, readable when printed in grey, PNG or PDF.

Each kind (:data:`KINDS`) is a pure data step (a frame in, the points to draw out) and a
drawing step on matplotlib's file-only backend (Agg: no display needed). matplotlib is an
optional dependency (``pip install 'hpc-agent[plots]'``): without it :func:`make_figure`
raises a UserError saying so, and the report is written without figures.

The style: series are told apart by marker and line style as well as by colour (a grey
print keeps them apart), the colours come from a colour-blind-safe palette, and the same
sizes and fonts are used everywhere (:data:`STYLE`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from hpc_agent.config.spec import CampaignSpec
from hpc_agent.errors import UserError
from hpc_agent.store.metrics import scan
from hpc_agent.store.paths import ResultsPaths

KINDS = {
    "progress": "every completed trial's objective in trial order, and the best so far",
    "curves": "learning curves (the metric over steps) of the best trials",
    "generations": "the distribution of each generation's results",
    "params": "the metric against the most influential parameters",
}
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
TOP_CURVES = 5
TOP_PARAMS = 4
# Okabe & Ito's colour-blind-safe palette, each colour with its own marker and line style
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 1)), (0, (3, 1, 1, 1, 1, 1)))
STYLE = {
    "figure.dpi": 150,
    "figure.constrained_layout.use": True,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.color": "#bbbbbb",
    "grid.linestyle": ":",
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "image.cmap": "cividis",
    "pdf.fonttype": 42,  # TrueType in PDFs: journals ask for embedded, editable fonts
}


def series_style(i: int) -> dict[str, Any]:
    """The i-th series' colour, marker and line style (cycled)."""
    return {
        "color": COLORS[i % len(COLORS)],
        "marker": MARKERS[i % len(MARKERS)],
        "linestyle": LINESTYLES[i % len(LINESTYLES)],
    }


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


@contextmanager
def _figure(plt: Any, out: Path, size: tuple[float, float]) -> Iterator[Any]:
    """A figure in the house style, saved to ``out`` (its suffix picks the format) and closed."""
    with plt.style.context(STYLE):
        fig = plt.figure(figsize=size)
        try:
            yield fig
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out, metadata={"Creator": "hpc-agent"} if out.suffix != ".png" else None)
        finally:
            plt.close(fig)


# ------------------------------------------------------------------------------- the data


def completed(df: pl.DataFrame) -> pl.DataFrame:
    """Completed trials with an objective, in trial order."""
    return df.filter((pl.col("state") == "completed") & pl.col("objective").is_not_null()).sort("trial_id")


def best_so_far(values: Sequence[float], mode: str) -> list[float]:
    """The running best of ``values`` (min or max)."""
    out: list[float] = []
    for v in values:
        out.append(v if not out else (min(out[-1], v) if mode == "min" else max(out[-1], v)))
    return out


def top_trials(df: pl.DataFrame, mode: str, n: int) -> list[str]:
    """The ids of the ``n`` best completed trials, best first."""
    done = completed(df).sort(["objective", "trial_id"], descending=[mode == "max", False])
    return done.get_column("trial_id").head(n).to_list()


def curves(paths: ResultsPaths, trial_ids: Sequence[str], metric: str) -> dict[str, pl.DataFrame]:
    """Each trial's ``metric`` over its steps (``step``, value; the line number when no step
    was logged), read from its metrics.jsonl."""
    frame, _ = scan(
        {t: paths.trial(t).metrics for t in trial_ids}, {"step": pl.Float64(), metric: pl.Float64()}
    )
    out = {}
    for tid in trial_ids:
        rows = frame.filter(pl.col("trial_id") == tid).with_row_index("line")
        rows = rows.with_columns(pl.col("step").fill_null(pl.col("line").cast(pl.Float64)))
        rows = rows.filter(pl.col(metric).is_not_null() & pl.col(metric).is_finite())
        if rows.height:
            out[tid] = rows.select("step", metric)
    return out


def influence(done: pl.DataFrame, names: Sequence[str]) -> list[tuple[str, float]]:
    """Each parameter's share of the objective's variance it explains, largest first: Spearman's
    ρ² for a number, η² (between-value over total sum of squares) for a choice. Parameters
    that never varied are left out."""
    out = []
    y = done.get_column("objective").cast(pl.Float64)
    total = float(((y - y.mean()) ** 2).sum()) if done.height else 0.0
    for name in names:
        if name not in done.columns or done.get_column(name).n_unique() < 2 or total == 0:
            continue
        col = done.get_column(name)
        if col.dtype.is_numeric():
            rho = done.select(pl.corr(pl.col(name).cast(pl.Float64), "objective", method="spearman")).item()
            score = float(rho) ** 2 if rho is not None and math.isfinite(rho) else 0.0
        else:
            means = done.group_by(pl.col(name).cast(pl.String)).agg(
                pl.col("objective").mean().alias("m"), pl.len().alias("n")
            )
            mean = float(y.mean())  # type: ignore[arg-type]
            between = sum(r["n"] * (r["m"] - mean) ** 2 for r in means.iter_rows(named=True))
            score = between / total
        out.append((name, score))
    return sorted(out, key=lambda p: (-p[1], p[0]))


# ------------------------------------------------------------------------------- the figures


@dataclass(frozen=True)
class FigureInput:
    """What every kind draws from: the trials table, the spec, and the results folder."""

    df: pl.DataFrame
    spec: CampaignSpec
    paths: ResultsPaths

    @property
    def ylabel(self) -> str:
        """The objective's axis label: the metric, which value, which way is better."""
        camp = self.spec.campaign
        better = "lower" if camp.mode == "min" else "higher"
        return f"{camp.metric} ({camp.objective}; {better} is better)"


def plot_progress(fi: FigureInput, out: Path, plt: Any) -> bool:
    """Every completed trial's objective in trial order (marker by generation), and the best
    so far as a step line; False when no trial completed."""
    done = completed(fi.df)
    if done.height == 0:
        return False
    y = done.get_column("objective").to_list()
    gens = done.get_column("generation").to_list()
    with _figure(plt, out, (6.0, 3.4)) as fig:
        ax = fig.add_subplot()
        for i, g in enumerate(sorted(set(gens))):
            xs = [k for k, gg in enumerate(gens) if gg == g]
            st = series_style(i)
            ax.plot(
                xs,
                [y[k] for k in xs],
                linestyle="none",
                marker=st["marker"],
                color=st["color"],
                markerfacecolor="none",
                label=f"generation {g}",
            )
        ax.step(
            range(len(y)),
            best_so_far(y, fi.spec.campaign.mode),
            where="post",
            color="black",
            linestyle="-",
            linewidth=1.6,
            label="best so far",
        )
        ax.set_xlabel("completed trial (in trial order)")
        ax.set_ylabel(fi.ylabel)
        ax.set_title(f"{fi.spec.campaign.name}: progress")
        ax.legend(loc="best", ncols=2 if len(set(gens)) > 4 else 1)
    return True


def plot_curves(fi: FigureInput, out: Path, plt: Any) -> bool:
    """The metric over steps for the best trials (at most :data:`TOP_CURVES`); False when
    none logged a curve."""
    metric = fi.spec.campaign.metric
    data = curves(fi.paths, top_trials(fi.df, fi.spec.campaign.mode, TOP_CURVES), metric)
    if not data:
        return False
    with _figure(plt, out, (6.0, 3.6)) as fig:
        ax = fig.add_subplot()
        for i, (tid, frame) in enumerate(data.items()):
            st = series_style(i)
            x, y = frame.get_column("step").to_list(), frame.get_column(metric).to_list()
            ax.plot(x, y, label=f"{tid}", markevery=max(1, len(x) // 8), **st)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(f"{fi.spec.campaign.name}: learning curves of the {len(data)} best trials")
        ax.legend(loc="best")
    return True


def plot_generations(fi: FigureInput, out: Path, plt: Any) -> bool:
    """Each generation's completed results as a box plot with every trial shown as a point;
    False when no trial completed."""
    done = completed(fi.df)
    if done.height == 0:
        return False
    gens = sorted(set(done.get_column("generation").to_list()))
    values = [done.filter(pl.col("generation") == g).get_column("objective").to_list() for g in gens]
    with _figure(plt, out, (max(3.5, 0.6 * len(gens) + 2.5), 3.4)) as fig:
        ax = fig.add_subplot()
        ax.boxplot(
            values,
            positions=list(range(len(gens))),
            widths=0.5,
            showfliers=False,
            medianprops={"color": "black", "linewidth": 1.6},
            boxprops={"color": "#555555"},
        )
        for i, vs in enumerate(values):
            jitter = [i + 0.18 * ((k % 5) - 2) / 2 for k in range(len(vs))]
            ax.plot(
                jitter, vs, linestyle="none", marker="o", markerfacecolor="none", color=COLORS[0], alpha=0.8
            )
        ax.set_xticks(range(len(gens)), [str(g) for g in gens])
        ax.set_xlabel("generation")
        ax.set_ylabel(fi.ylabel)
        ax.set_title(f"{fi.spec.campaign.name}: results by generation")
    return True


def plot_params(fi: FigureInput, out: Path, plt: Any) -> bool:
    """The objective against the most influential parameters (:func:`influence`, at most
    :data:`TOP_PARAMS` panels, each titled with its share of the variance); False when fewer
    than three trials completed or no parameter varied."""
    done = completed(fi.df)
    ranked = influence(done, fi.spec.space.names)[:TOP_PARAMS] if done.height >= 3 else []
    if not ranked:
        return False
    cols = min(2, len(ranked))
    rows = -(-len(ranked) // cols)
    y = done.get_column("objective").to_list()
    with _figure(plt, out, (3.2 * cols, 2.7 * rows)) as fig:
        axes = fig.subplots(rows, cols, squeeze=False)
        for i, (ax, (name, score)) in enumerate(zip(axes.flat, ranked)):
            _param_panel(ax, fi.spec, done, name, y, series_style(i))
            ax.set_title(f"{name} (explains {score:.0%})")
            ax.set_ylabel(fi.spec.campaign.metric if i % cols == 0 else "")
        for ax in list(axes.flat)[len(ranked) :]:
            ax.set_visible(False)
        fig.suptitle(
            f"{fi.spec.campaign.name}: {fi.spec.campaign.metric} against its most influential parameters"
        )
    return True


def _param_panel(
    ax: Any, spec: CampaignSpec, done: pl.DataFrame, name: str, y: list[Any], st: dict[str, Any]
) -> None:
    param = spec.space[name]
    x = done.get_column(name).to_list()
    if param.kind == "choice":
        labels = [str(v) for v in param.values]  # type: ignore[union-attr]
        pos = [labels.index(str(v)) if str(v) in labels else -1 for v in x]
        ax.plot(pos, y, linestyle="none", marker=st["marker"], color=st["color"], markerfacecolor="none")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    else:
        ax.plot(x, y, linestyle="none", marker=st["marker"], color=st["color"], markerfacecolor="none")
        if getattr(param, "log", False):
            ax.set_xscale("log")
    ax.set_xlabel(name)


_DRAW = {
    "progress": plot_progress,
    "curves": plot_curves,
    "generations": plot_generations,
    "params": plot_params,
}


def make_figure(kind: str, fi: FigureInput, out: Path) -> Path | None:
    """Draw figure ``kind`` into ``out`` (PNG, PDF or SVG by its suffix); None when there is
    nothing to draw yet. UserError for an unknown kind or suffix, or without matplotlib."""
    if kind not in _DRAW:
        raise UserError(f"figure {kind!r}: expected one of {', '.join(KINDS)}")
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(
            f"{out}: a figure is written as {', '.join(FIGURE_SUFFIXES)}",
            fix=f"e.g. -o {out.with_suffix('.pdf')}",
        )
    plt = pyplot()
    if plt is None:
        raise UserError("figures need matplotlib", fix="pip install 'hpc-agent[plots]'")
    return out if _DRAW[kind](fi, out, plt) else None
