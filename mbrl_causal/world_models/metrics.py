"""Graph metrics against the env's ground-truth local graphs, in one place for every caller.

A local graph is a bool array (..., N + 2, N): parents (objects, action, regime) x
children (objects), the layout of ``info["local_graph"]``. Self edges of objects (the
diagonal of the first N rows) are always true and are left out of every figure (the
env spec's SHD definition). Figures, all means over transitions:

- ``shd``: entries that differ (structural Hamming distance) per transition;
- ``precision``: true predicted edges / predicted edges (0 when nothing is predicted);
- ``recall``: true predicted edges / true edges (1 when there are none);
- ``edges``: predicted edges per transition; ``true_edges``: true edges per transition.
"""

from __future__ import annotations

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
        ps, ts = p.reshape(-1, *p.shape[-2:]).sum(0), t.reshape(-1, *t.shape[-2:]).sum(0)
        self.pred_sum = ps if self.pred_sum is None else self.pred_sum + ps
        self.true_sum = ts if self.true_sum is None else self.true_sum + ts

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
