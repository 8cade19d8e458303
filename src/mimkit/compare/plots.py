"""The thesis-style figures of a comparison (matplotlib's Agg canvas, no display, no global
backend switch): accuracy vs epoch with a 95% confidence band over seeds, sorted final bars
with 95% confidence intervals, and each strategy's paired difference from the baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from mimkit.compare import stats
from mimkit.compare.aggregate import Comparison, Group
from mimkit.compare.stats import Estimate

_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
BARS_PER_ROW = 3


def _figure(width: float, height: float, count: int = 1, ncols: int | None = None):
    """``count`` axes, ``ncols`` to a row (default: all in one row)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    ncols = ncols or count
    nrows = math.ceil(count / ncols)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(count)]
    return fig, axes


def _row_panels(count: int, rows: int):
    """``count`` panels of ``rows`` horizontal rows each (one per strategy), wrapped
    :data:`BARS_PER_ROW` to a line so that many evaluations stay legible."""
    ncols = min(count, BARS_PER_ROW)
    nrows = math.ceil(count / ncols)
    return _figure(5.2 * ncols + 2.2, (0.34 * rows + 1.6) * nrows, count, ncols)


def _range(values: Sequence[float], intervals: Sequence[tuple[float, float]]):
    """``(lo, hi)`` covering ``values`` and ``intervals``: a panel's extent, set by the
    intervals of the strategies with enough seeds to test, so that the much wider ones of two
    or three seeds do not squash them (those are clipped at the edge, with an arrow)."""
    ends = [v for v in values if math.isfinite(v)]
    ends += [x for iv in intervals for x in iv if math.isfinite(x)]
    return min(ends), max(ends)


def _clipped_errorbar(ax, x: float, y: float, low: float, high: float, xlim, color, **kw):
    """An interval ``[low, high]`` around ``x`` at row ``y``, cut at ``xlim`` with an arrow
    head where it runs past the axis."""
    lo, hi = max(low, xlim[0]), min(high, xlim[1])
    ax.errorbar([x], [y], xerr=[[x - lo], [hi - x]], color=color, ecolor=color, **kw)
    for end, cut, marker in ((lo, low < xlim[0], "<"), (hi, high > xlim[1], ">")):
        if cut:
            ax.plot([end], [y], marker=marker, color=color, markersize=5)


def _finish(fig, path: Path, title: str, note: str) -> None:
    """Title on top, the figure's key (``note``) along the bottom, both outside the panels."""
    height = fig.get_figheight()
    if title:
        fig.suptitle(title, fontsize=11)
    if note:
        fig.text(0.5, 0.08 / height, note, ha="center", va="bottom", fontsize=9)
    fig.tight_layout(rect=(0.0, 0.3 / height, 1.0, 1.0 - 0.35 / height))
    fig.savefig(path)


def _color(i: int, n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return cmap(i % cmap.N)


def plot_curves(
    panels: Sequence[tuple[str, dict[str, list[tuple[int, Estimate]]]]],
    path: Path,
    title: str = "",
) -> None:
    """One panel per ``(y label, {line label: [(epoch, estimate)]})``; a shaded band of the
    95% confidence interval of the mean where a point has two or more seeds."""
    legend_w = 3.4
    fig, axes = _figure(7.0 * len(panels) + legend_w, 5.0, len(panels))
    handles = labels = None
    for ax, (ylabel, lines) in zip(axes, panels, strict=True):
        n = len(lines)
        for i, (label, pts) in enumerate(lines.items()):
            if not pts:
                continue
            xs = [e for e, _ in pts]
            ms = [est.mean for _, est in pts]
            color = _color(i, n)
            ax.plot(
                xs,
                ms,
                linestyle=_STYLES[(i // 10) % len(_STYLES)] if n > 10 else "-",
                marker=_MARKERS[i % len(_MARKERS)],
                markersize=4,
                color=color,
                linewidth=1.6,
                label=f"{label} (n={max(est.n for _, est in pts)})",
            )
            if any(est.n >= 2 for _, est in pts):
                lo = [est.low if est.n >= 2 else est.mean for _, est in pts]
                hi = [est.high if est.n >= 2 else est.mean for _, est in pts]
                ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        epochs = sorted({p[0] for pts in lines.values() for p in pts})
        if epochs and len(epochs) <= 12:
            ax.set_xticks(epochs)
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    width = fig.get_figwidth()
    fig.subplots_adjust(
        left=0.7 / width, right=1.0 - legend_w / width, bottom=0.11, top=0.9, wspace=0.22
    )
    fig.savefig(path)


def plot_final_bars(
    panels: Sequence[tuple[str, list[tuple[str, Estimate]]]],
    path: Path,
    title: str = "",
) -> None:
    """Horizontal bars sorted by mean (best on top), 95% confidence intervals where n >= 2.
    An evaluation no run has yet (fine-tuning before it ran) gets no panel."""
    panels = [(x, b) for x, b in panels if any(not math.isnan(e.mean) for _, e in b)] or [
        ("no results yet", [])
    ]
    rows = max((len(b) for _, b in panels), default=1)
    fig, axes = _row_panels(len(panels), rows)
    pale = arrows = False
    for ax, (xlabel, bars) in zip(axes, panels, strict=True):
        bars = sorted((b for b in bars if not math.isnan(b[1].mean)), key=lambda b: b[1].mean)
        if not bars:
            continue
        ys = range(len(bars))
        means = [est.mean for _, est in bars]
        lows = [est.mean - est.low if est.n >= 2 else 0.0 for _, est in bars]
        highs = [est.high - est.mean if est.n >= 2 else 0.0 for _, est in bars]
        colors = ["#4c72b0" if est.n >= 2 else "#9db4d6" for _, est in bars]
        ax.barh(list(ys), means, color=colors, height=0.7)
        multi = [i for i, (_, est) in enumerate(bars) if est.n >= 2]
        counted = [i for i in multi if stats.reachable(bars[i][1].n)] or multi
        lo, hi = _range(means, [(means[i] - lows[i], means[i] + highs[i]) for i in counted])
        span = max(hi - lo, 1.0)
        xlim = (max(0.0, lo - 0.6 * span), hi + 0.35 * span)
        cut = (xlim[0], hi + 0.02 * span)
        for i in multi:
            _clipped_errorbar(
                ax, means[i], i, means[i] - lows[i], means[i] + highs[i], cut, "black",
                fmt="none", capsize=3, linewidth=1.2,
            )  # fmt: skip
        ax.set_xlim(*xlim)
        ax.set_yticks(list(ys))
        ax.set_yticklabels([f"{label} (n={est.n})" for label, est in bars], fontsize=8)
        for y, m, e in zip(ys, means, highs, strict=True):
            ax.text(min(m + e, cut[1]) + 0.03 * span, y, f"{m:.1f}", va="center", fontsize=7)
        ax.set_xlabel(xlabel)
        ax.grid(True, axis="x", alpha=0.3)
        pale |= len(multi) < len(bars)
        arrows |= len(counted) < len(multi)
    note = (
        "error bars: 95% CI over seeds"
        + ("; pale bars: one seed, no interval" if pale else "")
        + ("; arrows: an interval of too few seeds to test, cut at the axis" if arrows else "")
    )
    _finish(fig, path, title, note)


class DeltaRow(NamedTuple):
    label: str
    n: int  # pairs
    mean: float
    low: float
    high: float
    significant: bool
    reachable: bool = True  # its seeds can give p < 0.05 (it counts in Holm's correction)


def delta_rows(comparisons: Sequence[tuple[str, Comparison]]) -> list[DeltaRow]:
    """The tested comparisons (two or more pairs) as rows, by mean difference from the
    smallest (drawn at the bottom of a panel) up."""
    rows = [
        DeltaRow(label, c.test.n, c.test.diff.mean, c.test.diff.low, c.test.diff.high,
                 bool(c.significant), c.reachable)
        for label, c in comparisons
        if c.significant is not None
    ]  # fmt: skip
    return sorted(rows, key=lambda r: r.mean)


def delta_extent(rows: Sequence[DeltaRow]) -> tuple[float, float]:
    """The span a panel of ``rows`` shows: zero, every mean, and the intervals of the rows
    that count in Holm's correction (all of them where none does)."""
    counted = [r for r in rows if r.reachable] or rows
    return _range([0.0, *(r.mean for r in rows)], [(r.low, r.high) for r in counted])


def plot_paired_differences(
    panels: Sequence[tuple[str, list[tuple[str, Comparison]]]],
    path: Path,
    baseline: str,
    title: str = "",
) -> bool:
    """One panel per evaluation: each strategy's paired difference from ``baseline`` (mean
    over the seeds both ran, 95% CI), a line at zero, filled red where the difference is
    significant after Holm's correction. The per-strategy intervals of the bar chart overlap
    where seed-to-seed noise is shared; the paired ones show what the tests see. Returns
    False (and writes nothing) when no comparison has two or more pairs."""
    tables = [(xlabel, delta_rows(c)) for xlabel, c in panels]
    tables = [(xlabel, rows) for xlabel, rows in tables if rows]
    if not tables:
        return False
    fig, axes = _row_panels(len(tables), max(len(rows) for _, rows in tables))
    short = False
    for ax, (xlabel, rows) in zip(axes, tables, strict=True):
        ys = list(range(len(rows)))
        ax.axvline(0.0, color="grey", linewidth=1.0)
        # Where none can reach 5%, Holm counts them all: none is drawn apart.
        counted = [r for r in rows if r.reachable] or rows
        short |= len(counted) < len(rows)
        lo, hi = delta_extent(rows)
        span = max(hi - lo, 1.0)
        xlim = (lo - 0.1 * span, hi + 0.45 * span)
        for y, r in zip(ys, rows, strict=True):
            left_out = not r.reachable and len(counted) < len(rows)
            color = "#c44e52" if r.significant else ("#8c8c8c" if left_out else "black")
            _clipped_errorbar(
                ax, r.mean, y, r.low, r.high, (xlim[0], hi + 0.02 * span), color, fmt="o",
                capsize=3, linewidth=1.2, markersize=5,
                markerfacecolor=color if r.significant else "white",
            )  # fmt: skip
        ax.set_yticks(ys)
        ax.set_yticklabels([f"{r.label} (n={r.n})" for r in rows], fontsize=8)
        ax.set_xlim(*xlim)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        for y, r in zip(ys, rows, strict=True):
            ax.text(
                hi + 0.05 * span, y, f"{r.mean:+.1f} [{r.low:+.1f}, {r.high:+.1f}]",
                va="center", fontsize=7,
            )  # fmt: skip
        ax.set_xlabel(f"{xlabel}: difference from {baseline} (points)")
        ax.grid(True, axis="x", alpha=0.3)
    note = "paired differences, 95% CI; red, filled: significant after Holm" + (
        "; grey: too few seeds to test (left out of Holm), intervals cut at the axis"
        if short
        else ""
    )
    _finish(fig, path, title, note)
    return True


def write_plots(
    out: Path,
    groups: Sequence[Group],
    curve_panels: Sequence[tuple[str, dict[str, list[tuple[int, Estimate]]]]],
    bar_metrics: Sequence[tuple[str, str]],
    multi_budget: bool,
    title: str = "",
    baseline: str = "",
) -> list[Path]:
    """``knn_vs_epoch.png``, ``final_bar.png`` and, once a strategy has two or more seeds in
    common with ``baseline``, ``final_delta.png`` in ``out``; ``groups`` at the final epoch,
    ``bar_metrics`` is ``[(stat key, metric label)]``."""
    curves_path, bars_path = out / "knn_vs_epoch.png", out / "final_bar.png"
    plot_curves(curve_panels, curves_path, title)
    bar_panels = [
        (
            f"{label} (%), final epoch",
            [(g.label(multi_budget), g.stats[key]) for g in groups if g.stats[key].n > 0],
        )
        for key, label in bar_metrics
    ]
    plot_final_bars(bar_panels, bars_path, title)
    written = [curves_path, bars_path]
    delta_path = out / "final_delta.png"
    delta_panels = [
        (label, [(g.label(multi_budget), g.versus[key]) for g in groups if key in g.versus])
        for key, label in bar_metrics
    ]
    if baseline and plot_paired_differences(delta_panels, delta_path, baseline, title):
        written.append(delta_path)
    else:
        delta_path.unlink(missing_ok=True)  # no stale figure from an earlier report
    return written
