"""Why a model misses edges: event edges, and what the regime token is worth per object.

Two figures that the graph metrics (:mod:`.metrics`) cannot give, both on held-out data
with teacher forcing (one step from real states, deterministic gates), written by
``mbrl-causal fit`` under ``diagnostics`` in its JSON:

- ``event_edges["parent->child"]``, for every off-diagonal entry that is true on at most
  ``event_max`` of the transitions but not never (in Interventional Pong: paddle hits,
  points, the regime edges of a rare regime): ``true`` (fraction of transitions with the
  edge), ``child_mse_when_true`` / ``child_mse_when_false`` (the child object's next-step
  MSE per feature on the transitions with / without the edge) and ``open_when_true`` /
  ``open_when_false`` (fraction of those transitions in which the model's graph has the
  edge). A model that has learned an event edge opens it when true and not otherwise;
  ``child_mse_when_true`` far above ``child_mse_when_false`` says the model has not
  learned the event's mechanism at all, so the edge is worth nothing to it yet.
- ``regime_token_value[regime][object]``: ``mse`` (the object's next-step MSE in that
  regime's transitions with the true regime token), ``mse_reference_token`` (the same
  transitions with the reference regime's token: ``reference``, the env's neutral regime
  when the model knows it) and ``edge_true`` (fraction of those transitions in which the
  env's graph has ``regime -> object``). The ratio says what reading the regime is worth
  to that object. A sparse model that does not read the regime shows no difference; a
  dense model's figure is the reference for what the edge could be worth.

Units: MSE per latent feature (objects mode: object features, scaled to about [-1, 1]);
the rest are fractions of transitions. A figure over no transition (``*_when_false`` of an
entry that is always true, possible only with ``event_max=1``) is None (JSON null).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mbrl_causal.envs.regimes import REGIMES
from mbrl_causal.world_models.data import TransitionData
from mbrl_causal.world_models.metrics import off_diagonal
from mbrl_causal.world_models.model import WorldModel
from mbrl_causal.world_models.training import eval_starts

__all__ = ["EVENT_MAX", "edge_diagnostics"]

EVENT_MAX = 0.1  # an entry true on at most this fraction of transitions is an "event edge"


def _regime_name(rid: int) -> str:
    return REGIMES[rid].name if 0 <= rid < len(REGIMES) else str(rid)


@torch.no_grad()
def _pass(
    model: WorldModel,
    data: TransitionData,
    starts: np.ndarray,
    obs: str,
    length: int,
    regime: int | None,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per transition: object MSE (K, N), predicted and true graphs (K, N + 2, N), regime."""
    err, pred, true, reg = [], [], [], []
    for i in range(0, len(starts), batch_size):
        b = data.batch(starts[i : i + batch_size], length, obs)
        z = model.encode(b.obs)
        tokens = b.regimes if regime is None else torch.full_like(b.regimes, regime)
        out = model(z[:, :-1], b.actions, tokens)
        err.append(((out.next_latent - z[:, 1:]) ** 2).mean(-1).flatten(0, 1).numpy())
        pred.append(out.graph.flatten(0, 1).numpy().astype(bool))
        true.append(np.asarray(b.graphs.flatten(0, 1), bool))
        reg.append(np.repeat(b.regimes.numpy(), z.shape[1] - 1))
    return tuple(np.concatenate(x) for x in (err, pred, true, reg))  # type: ignore[return-value]


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if x.size else None


def edge_diagnostics(
    model: WorldModel,
    data: TransitionData,
    obs: str,
    length: int,
    node_names: Sequence[str],
    event_max: float = EVENT_MAX,
    batch_size: int = 64,
) -> dict[str, Any]:
    """The ``diagnostics`` record of ``fit`` (see the module doc for every key).

    Args:
        model: A trained world model (put in eval mode here).
        data: Held-out transitions.
        obs: ``objects`` or ``pixels``.
        length: Window length (transitions) of the teacher-forced passes.
        node_names: The env's ``graph_nodes`` (objects, then action and regime).
        event_max: Largest true-edge frequency of an entry reported as an event edge.
        batch_size: Windows per forward pass.
    """
    if not 0.0 < event_max <= 1.0:
        raise ValueError(f"event_max must be in (0, 1], got {event_max}")
    n_obj = data.n_objects
    if len(node_names) != n_obj + 2:
        raise ValueError(f"{len(node_names)} node names for {n_obj} objects (need N + 2)")
    model.eval()
    starts = eval_starts(data, length)
    if len(starts) == 0:
        raise ValueError(f"no held-out window of {length} steps; collect more eval data")
    err, pred, true, reg = _pass(model, data, starts, obs, length, None, batch_size)
    events: dict[str, dict[str, float | None]] = {}
    mask = off_diagonal(n_obj + 2, n_obj)
    for j in range(n_obj + 2):
        for i in range(n_obj):
            t = true[:, j, i]
            if not mask[j, i] or not 0.0 < t.mean() <= event_max:
                continue
            events[f"{node_names[j]}->{node_names[i]}"] = {
                "true": float(t.mean()),
                "child_mse_when_true": _mean(err[t, i]),
                "child_mse_when_false": _mean(err[~t, i]),
                "open_when_true": _mean(pred[t, j, i]),
                "open_when_false": _mean(pred[~t, j, i]),
            }
    known = [int(r) for r in model.regime_ids]
    reference = 0 if 0 in known else known[0]
    err_ref, _, _, _ = _pass(model, data, starts, obs, length, reference, batch_size)
    value: dict[str, dict[str, dict[str, float]]] = {}
    for rid in sorted(set(reg.tolist()) - {reference}):
        rows = reg == rid
        value[_regime_name(rid)] = {
            node_names[i]: {
                "mse": float(err[rows, i].mean()),
                "mse_reference_token": float(err_ref[rows, i].mean()),
                "edge_true": float(true[rows, n_obj + 1, i].mean()),
            }
            for i in range(n_obj)
        }
    return {
        "event_max": event_max,
        "event_edges": events,
        "regime_token_value": {"reference": _regime_name(reference), "per_regime": value},
    }
