"""PNG figures of the sparsity analysis (matplotlib, Agg backend, written atomically).

One file per figure of the paper's analysis, each with J_s and J_a side by side:

- ``zero_frequency.png``: per-entry frequency of |J| < T over all samples (heatmap;
  1 = zero in every sample, i.e. globally sparse);
- ``sparsity_histogram.png``: distribution over samples of the fraction of zero entries;
- ``sparsity_over_time.png``: that fraction along the first episode;
- ``run_lengths.png``: histograms of the lengths of zero and non-zero runs;
- ``threshold_sweep.png`` (with a sweep): global and mean local sparsity vs threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mbrl_causal.analysis.metrics import SparsityStats
from mbrl_causal.io import write_atomic

__all__ = ["write_plots"]


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    write_atomic(path, lambda t: fig.savefig(t, format="png", dpi=110), ".png")
    plt.close(fig)
    return path


def _label_ticks(ax: Any, rows: list[str], cols: list[str]) -> None:
    small = 7 if max(len(rows), len(cols)) <= 30 else 5
    ax.set_yticks(range(len(rows)), rows, fontsize=small)
    ax.set_xticks(range(len(cols)), cols, fontsize=small, rotation=90)


def _heatmaps(stats: dict[str, SparsityStats], labels: dict[str, list[str]], title: str) -> Any:
    import matplotlib.pyplot as plt

    widths = [max(1, stats[k].shape[1]) for k in stats]
    fig, axes = plt.subplots(1, len(stats), figsize=(4 + 0.3 * sum(widths), 7),
                             gridspec_kw={"width_ratios": widths}, squeeze=False,
                             layout="constrained")  # fmt: skip
    image = None
    for i, (ax, (name, s)) in enumerate(zip(axes[0], stats.items(), strict=True)):
        image = ax.imshow(s.zero_frequency, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        _label_ticks(ax, labels["state"], labels["state" if name == "J_s" else "action"])
        ax.set_title(f"{name}: {s.global_zero_count} entries always zero")
        ax.set_xlabel("input: state coordinate" if name == "J_s" else "input: action")
        if i == 0:
            ax.set_ylabel("output: next-state coordinate")
        else:
            ax.tick_params(labelleft=False)
    assert image is not None  # stats is never empty
    fig.colorbar(image, ax=list(axes[0]), label="fraction of steps with |J| < T")
    fig.suptitle(title)
    return fig


def _histograms(stats: dict[str, SparsityStats], title: str) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(stats), figsize=(5 * len(stats), 4), squeeze=False)
    for ax, (name, s) in zip(axes[0], stats.items(), strict=True):
        ax.hist(s.sparsity, bins=20, range=(0.0, 1.0), color="tab:blue", edgecolor="white")
        ax.axvline(s.mean_sparsity, color="tab:red", ls="--", label=f"mean {s.mean_sparsity:.3f}")
        ax.set_xlabel("fraction of entries with |J| < T in a step")
        ax.set_ylabel("number of steps")
        ax.set_title(f"{name} local sparsity")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _over_time(stats: dict[str, SparsityStats], episodes: np.ndarray, title: str) -> Any:
    import matplotlib.pyplot as plt

    first = episodes == episodes[0]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for name, s in stats.items():
        ax.plot(np.arange(int(first.sum())), s.sparsity[first], label=name, lw=1.2)
    ax.set_xlabel("env step of the first episode")
    ax.set_ylabel("fraction of entries with |J| < T")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def _run_lengths(stats: dict[str, SparsityStats], title: str) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind in zip(axes, ("zero", "nonzero"), strict=True):
        for name, s in stats.items():
            runs = s.zero_runs if kind == "zero" else s.nonzero_runs
            if runs.size:
                top = int(runs.max())
                bins = np.unique(np.geomspace(1, top + 1, num=min(40, top + 1)).astype(int))
                ax.hist(runs, bins=bins, histtype="step", lw=1.5,
                        label=f"{name} (mean {runs.mean():.1f})")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"length of a {'zero' if kind == 'zero' else 'non-zero'} run (env steps)")
        ax.set_ylabel("number of runs")
        ax.set_title(f"{'zero' if kind == 'zero' else 'non-zero'} runs of single entries")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _sweep(sweep: dict[str, Any], title: str) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    t = sweep["thresholds"]
    for name in ("J_s", "J_a"):
        rows = sweep.get(name)
        if rows:
            ax.plot(t, [r["global_zero_fraction"] for r in rows], "o-", label=f"{name} global")
            ax.plot(t, [r["mean_sparsity"] for r in rows], "s--", label=f"{name} mean local")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("threshold T (|J| < T counts as zero)")
    ax.set_ylabel("fraction of entries zero")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def write_plots(
    folder: str | Path,
    env: str,
    stats: dict[str, SparsityStats],
    episodes: np.ndarray,
    labels: dict[str, list[str]],
    sweep: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the figures into ``folder`` (created); return the paths written.

    Args:
        folder: Output folder.
        env: Env id (in the titles).
        stats: ``{"J_s": ..., "J_a": ...}`` at one threshold (J_a may be absent).
        episodes: Episode id per sample (the first episode is plotted over time).
        labels: ``{"state": [...], "action": [...]}`` coordinate names.
        sweep: ``{"thresholds": [...], "J_s": [summary...], "J_a": [...]}`` or None.
    """
    import matplotlib

    matplotlib.use("Agg")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    thr = next(iter(stats.values())).threshold
    n = next(iter(stats.values())).samples
    tag = f"{env}, {n} steps, T = {thr:g}"
    paths = [
        _save(_heatmaps(stats, labels, f"Zero frequency per entry ({tag})"),
              out / "zero_frequency.png"),
        _save(_histograms(stats, f"Per-step sparsity ({tag})"), out / "sparsity_histogram.png"),
        _save(_over_time(stats, episodes, f"Sparsity over time ({tag})"),
              out / "sparsity_over_time.png"),
        _save(_run_lengths(stats, f"Temporal sparsity: run lengths ({tag})"),
              out / "run_lengths.png"),
    ]  # fmt: skip
    if sweep is not None:
        paths.append(_save(_sweep(sweep, f"Threshold sweep ({env}, {n} steps)"),
                           out / "threshold_sweep.png"))  # fmt: skip
    return paths
