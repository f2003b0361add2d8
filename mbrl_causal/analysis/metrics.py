"""Sparsity metrics of Jacobian samples, as Pandaram et al. (AAAI-26) define them.

Input: Jacobians ``J`` of shape (S, rows, cols), one per sample (env step), with the
episode id of each sample (samples of an episode in time order). An entry counts as zero
when ``|J| < threshold`` (finite differences give round-off noise, never exact zeros).

- **global sparsity**: entries that are zero in *every* sample (count, fraction of
  rows x cols): a globally sparse causal graph;
- **local sparsity**: per sample, the fraction of its entries that are zero (its mean and
  histogram), and per entry the frequency of being zero over samples (a heatmap);
- **temporal sparsity**: run lengths of each entry staying zero / non-zero over
  consecutive steps of an episode (runs cut by the episode's end are counted with the
  length seen), and the per-sample sparsity along one episode.

>>> import numpy as np
>>> J = np.array([[[0.0, 1.0]], [[0.0, 0.0]], [[2.0, 0.0]]])  # 3 samples of a 1 x 2 Jacobian
>>> s = sparsity_metrics(J, np.zeros(3, int), threshold=1e-6)
>>> s.global_zero_count, round(s.mean_sparsity, 3), s.run_length_mean
(0, 0.667, {'zero': 2.0, 'nonzero': 1.0})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_SWEEP",
    "SparsityStats",
    "check_threshold",
    "run_lengths",
    "sparsity_metrics",
    "threshold_sweep",
]

DEFAULT_SWEEP: tuple[float, ...] = (1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2)
HIST_BINS = 20  # bins of the per-sample sparsity histogram over [0, 1]


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float, or raise ValueError if it is not finite and >= 0."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    return float(threshold)


def run_lengths(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths of the runs of True and of False along axis 0, for every other index.

    Args:
        mask: bool (T, ...): one episode, time first.

    Returns:
        ``(true_runs, false_runs)``: int arrays of the run lengths of all entries.

    >>> run_lengths(np.array([[1, 0], [1, 0], [0, 0]], bool))
    (array([2]), array([1, 3]))
    """
    m = np.asarray(mask, bool)
    if m.ndim == 0 or m.shape[0] == 0:
        return np.zeros(0, int), np.zeros(0, int)
    x = m.reshape(m.shape[0], -1).T  # (entries, T): each row is one entry's time series
    start = np.ones_like(x)
    start[:, 1:] = x[:, 1:] != x[:, :-1]  # a run starts at t = 0 of every row
    flat = x.ravel()
    idx = np.flatnonzero(start.ravel())
    lengths = np.diff(np.append(idx, flat.size))
    values = flat[idx]
    return lengths[values], lengths[~values]


@dataclass
class SparsityStats:
    """Sparsity figures of one Jacobian (J_s or J_a) over samples at one threshold.

    Attributes:
        threshold: |x| < threshold counts as zero.
        shape: (rows, cols) of the Jacobian.
        samples: Number of samples S.
        global_zero_count: Entries zero in every sample.
        global_zero_fraction: ``global_zero_count / (rows * cols)``.
        sparsity: Per-sample fraction of zero entries (S,).
        zero_frequency: Per-entry fraction of samples in which it is zero (rows, cols).
        zero_runs: Lengths (steps) of all zero runs of all entries.
        nonzero_runs: Lengths (steps) of all non-zero runs of all entries.
    """

    threshold: float
    shape: tuple[int, int]
    samples: int
    global_zero_count: int
    global_zero_fraction: float
    sparsity: np.ndarray
    zero_frequency: np.ndarray
    zero_runs: np.ndarray
    nonzero_runs: np.ndarray

    @property
    def mean_sparsity(self) -> float:
        """Mean over samples of the fraction of zero entries (local sparsity)."""
        return float(self.sparsity.mean()) if self.sparsity.size else 0.0

    @property
    def run_length_mean(self) -> dict[str, float]:
        """Mean run length in steps of zero and non-zero stretches (0 when there is none)."""
        return {
            "zero": float(self.zero_runs.mean()) if self.zero_runs.size else 0.0,
            "nonzero": float(self.nonzero_runs.mean()) if self.nonzero_runs.size else 0.0,
        }

    def summary(self) -> dict[str, Any]:
        """The scalar figures (what the threshold sweep records)."""
        return {
            "threshold": self.threshold,
            "global_zero_count": self.global_zero_count,
            "global_zero_fraction": self.global_zero_fraction,
            "mean_sparsity": self.mean_sparsity,
            "run_length_mean": self.run_length_mean,
        }

    def to_json(self, episode_sparsity: np.ndarray | None = None) -> dict[str, Any]:
        """Every figure as JSON-ready values (lists for arrays)."""
        counts, edges = np.histogram(self.sparsity, bins=HIST_BINS, range=(0.0, 1.0))
        out = self.summary()
        out.update(
            {
                "samples": self.samples,
                "sparsity_std": float(self.sparsity.std()) if self.sparsity.size else 0.0,
                "sparsity_histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
                "zero_frequency": self.zero_frequency.tolist(),
                "global_zero_entries": np.argwhere(self.zero_frequency == 1.0).tolist(),
                "run_length_histogram": {
                    "zero": np.bincount(self.zero_runs).tolist()[1:],
                    "nonzero": np.bincount(self.nonzero_runs).tolist()[1:],
                },
                "run_count": {
                    "zero": int(self.zero_runs.size),
                    "nonzero": int(self.nonzero_runs.size),
                },
            }
        )
        if episode_sparsity is not None:
            out["sparsity_over_time"] = np.asarray(episode_sparsity, float).tolist()
        return out


def _check(jacobians: np.ndarray, episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    j = np.asarray(jacobians, dtype=np.float64)
    if j.ndim != 3 or j.shape[0] == 0:
        raise ValueError(f"jacobians must have shape (samples >= 1, rows, cols), got {j.shape}")
    e = np.asarray(episodes).reshape(-1)
    if e.shape[0] != j.shape[0]:
        raise ValueError(f"episodes must have one id per sample ({j.shape[0]}), got {e.shape}")
    return j, e


def sparsity_metrics(
    jacobians: np.ndarray, episodes: np.ndarray, threshold: float = 1e-6
) -> SparsityStats:
    """Global, local and temporal sparsity of Jacobian samples.

    Args:
        jacobians: (S, rows, cols) samples; the samples of one episode consecutive and in
            time order.
        episodes: (S,) episode id of each sample (runs never cross a change of id).
        threshold: |x| < threshold counts as zero.
    """
    j, e = _check(jacobians, episodes)
    thr = check_threshold(threshold)
    zero = np.abs(j) < thr
    s, rows, cols = zero.shape
    always = zero.all(0)
    zero_runs, nonzero_runs = [], []
    cuts = np.flatnonzero(e[1:] != e[:-1]) + 1
    for seg in np.split(np.arange(s), cuts):
        z, nz = run_lengths(zero[seg])
        zero_runs.append(z)
        nonzero_runs.append(nz)
    return SparsityStats(
        threshold=thr,
        shape=(rows, cols),
        samples=s,
        global_zero_count=int(always.sum()),
        global_zero_fraction=float(always.mean()) if always.size else 0.0,
        sparsity=zero.reshape(s, -1).mean(1) if rows * cols else np.zeros(s),
        zero_frequency=zero.mean(0),
        zero_runs=np.concatenate(zero_runs),
        nonzero_runs=np.concatenate(nonzero_runs),
    )


def threshold_sweep(
    jacobians: np.ndarray, episodes: np.ndarray, thresholds: tuple[float, ...] = DEFAULT_SWEEP
) -> list[dict[str, Any]]:
    """:meth:`SparsityStats.summary` at each threshold (increasing thresholds)."""
    return [sparsity_metrics(jacobians, episodes, t).summary() for t in sorted(thresholds)]
