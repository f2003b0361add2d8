"""Graph metrics against the env's ground-truth local graphs, in one place for every caller.

A local graph is a bool array (..., N + 2, N): parents (objects, action, regime) x
children (objects), the layout of ``info["local_graph"]``. Self edges of objects (the
diagonal of the first N rows) are always true and are left out of every figure (the
env spec's SHD definition). Figures, all means over transitions:

- ``shd``: entries that differ (structural Hamming distance) per transition;
- ``precision``: true predicted edges / predicted edges (0 when nothing is predicted);
- ``recall``: true predicted edges / true edges (1 when there are none);
- ``edges``: predicted edges per transition; ``true_edges``: true edges per transition.

:meth:`GraphStats.per_edge` breaks the SHD down by entry (``"ball->score"``): the fraction
of transitions in which the edge is true, predicted, a false positive and a false
negative (``fp + fn`` summed over the entries is the SHD).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["GraphStats", "graph_metrics", "off_diagonal"]


def off_diagonal(n_parents: int, n_objects: int) -> np.ndarray:
    """Bool mask (n_parents, n_objects) of the entries that count (not object self edges)."""
    mask = np.ones((n_parents, n_objects), bool)
    mask[np.arange(n_objects), np.arange(n_objects)] = False
    return mask


@dataclass
class GraphStats:
    """Streaming sums of graph-metric counts; add batches, read :meth:`result`."""

    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0
    transitions: int = 0
    pred_sum: np.ndarray | None = None  # per entry: steps with the edge predicted
    true_sum: np.ndarray | None = None  # per entry: steps with the edge true
    fp_sum: np.ndarray | None = None  # per entry: steps with a false positive
    fn_sum: np.ndarray | None = None  # per entry: steps with a false negative

    def add(self, pred: np.ndarray | torch.Tensor, true: np.ndarray | torch.Tensor) -> None:
        """Add predicted and true graphs of the same shape (..., N + 2, N)."""
        p = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        t = true.detach().cpu().numpy() if isinstance(true, torch.Tensor) else np.asarray(true)
        if p.shape != t.shape:
            raise ValueError(f"predicted graph shape {p.shape} != true graph shape {t.shape}")
        mask = off_diagonal(*p.shape[-2:])
        p, t = p.astype(bool) & mask, t.astype(bool) & mask
        self.tp += float((p & t).sum())
        self.fp += float((p & ~t).sum())
        self.fn += float((~p & t).sum())
        self.transitions += int(np.prod(p.shape[:-2]))
        flat_p, flat_t = p.reshape(-1, *p.shape[-2:]), t.reshape(-1, *t.shape[-2:])
        sums = {
            "pred_sum": flat_p.sum(0),
            "true_sum": flat_t.sum(0),
            "fp_sum": (flat_p & ~flat_t).sum(0),
            "fn_sum": (~flat_p & flat_t).sum(0),
        }
        for key, value in sums.items():
            old = getattr(self, key)
            setattr(self, key, value if old is None else old + value)

    @property
    def count(self) -> int:
        """Transitions added."""
        return self.transitions

    def frequencies(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-entry edge frequency (N + 2, N) over the added steps: predicted, true."""
        if self.pred_sum is None or self.true_sum is None:
            raise ValueError("no graph added yet")
        n = max(self.transitions, 1)
        return self.pred_sum / n, self.true_sum / n

    def per_edge(
        self, parents: Sequence[str], children: Sequence[str]
    ) -> dict[str, dict[str, float]]:
        """Per entry ``"parent->child"`` (object self edges left out): fractions of the
        added transitions with the edge ``true``, ``predicted``, ``fp`` and ``fn``."""
        if self.pred_sum is None or self.true_sum is None:
            raise ValueError("no graph added yet")
        if (len(parents), len(children)) != self.pred_sum.shape:
            raise ValueError(
                f"{len(parents)} parent and {len(children)} child names for graphs of shape "
                f"{self.pred_sum.shape}"
            )
        assert self.fp_sum is not None and self.fn_sum is not None
        n = max(self.transitions, 1)
        mask = off_diagonal(len(parents), len(children))
        return {
            f"{parents[j]}->{children[i]}": {
                "true": float(self.true_sum[j, i]) / n,
                "predicted": float(self.pred_sum[j, i]) / n,
                "fp": float(self.fp_sum[j, i]) / n,
                "fn": float(self.fn_sum[j, i]) / n,
            }
            for j in range(len(parents))
            for i in range(len(children))
            if mask[j, i]
        }

    def result(self) -> dict[str, float]:
        n = max(self.transitions, 1)
        predicted, true = self.tp + self.fp, self.tp + self.fn
        return {
            "shd": (self.fp + self.fn) / n,
            "precision": self.tp / predicted if predicted else 0.0,
            "recall": self.tp / true if true else 1.0,
            "edges": predicted / n,
            "true_edges": true / n,
        }


def graph_metrics(
    pred: np.ndarray | torch.Tensor, true: np.ndarray | torch.Tensor
) -> dict[str, float]:
    """SHD, precision, recall and edge counts of predicted vs true graphs (see module doc).

    >>> t = np.zeros((6, 4), bool); t[4, 1] = True          # action -> agent
    >>> p = t.copy(); p[5, 2] = True                         # a spurious regime -> ball
    >>> graph_metrics(p[None], t[None])["shd"]
    1.0
    """
    stats = GraphStats()
    stats.add(pred, true)
    return stats.result()
