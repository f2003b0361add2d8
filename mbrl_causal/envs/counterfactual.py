"""Counterfactual check of the local causal graph (spec section 5, definition (a)-(c)).

Given an env snapshot and an action, :func:`counterfactual_edges` replays the transition
with one parent changed at a time (same random numbers, through ``set_state``) and records
which objects at t+1 change:

- ``small``: (a) each state variable of each object by +-``eps`` (score points by +-1,
  the smallest change of a count), every other action, the neutral regime in place of
  the current one;
- ``large``: (b) a paddle moved by +-8 units; the ball moved to the field's centre, or
  2.5 units above or below each paddle (both sides, not only the other side: a paddle at
  its bound that moves away from the ball is revealed only by a ball farther away on the
  same side).

The env's ``info["local_graph"]`` must contain every ``small`` edge and nothing outside
``small | large`` (plus the object diagonal).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from mbrl_causal.envs import physics as P

__all__ = ["CounterfactualEdges", "counterfactual_edges"]


@dataclass(frozen=True)
class CounterfactualEdges:
    """Edges revealed by counterfactual replays, bool (n_nodes, n_objects) each."""

    small: np.ndarray
    large: np.ndarray


def _next_objects(env: gym.Env, state: dict[str, Any], action: Any) -> dict[str, Any]:
    env.get_wrapper_attr("set_state")(state)
    env.step(action)
    return env.get_wrapper_attr("get_state")()["objects"]


def _alternatives(action_space: gym.Space, action: Any) -> list[Any]:
    if isinstance(action_space, gym.spaces.Discrete):
        return [a for a in range(int(action_space.n)) if a != int(action)]
    a = float(np.asarray(action).reshape(-1)[0])
    return [np.array([v], np.float32) for v in (-1.0, 0.0, 1.0) if abs(v - a) > 1e-3]


def _moves(state: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Large moves of object ``name`` (definition (b))."""
    objs = state["objects"]
    out = []
    if name in ("opponent", "agent"):
        for dy in (8.0, -8.0):
            s = copy.deepcopy(state)
            s["objects"][name]["y"] += dy
            out.append(s)
    elif name == "ball":
        targets = [(P.FIELD / 2.0, P.FIELD / 2.0)]
        for paddle in ("opponent", "agent"):
            py = objs[paddle]["y"]
            for y in (py - 2.5, py + 2.5):
                targets.append((objs["ball"]["x"], min(max(y, P.BALL_Y_MIN), P.BALL_Y_MAX)))
        for x, y in targets:
            s = copy.deepcopy(state)
            s["objects"]["ball"]["x"], s["objects"]["ball"]["y"] = x, y
            out.append(s)
    return out


def counterfactual_edges(
    env: gym.Env, state: dict[str, Any], action: Any, eps: float = P.GRAPH_EPS
) -> CounterfactualEdges:
    """Edges of the transition from ``state`` under ``action`` revealed by replays.

    Args:
        env: Any Interventional Pong env or wrapper chain exposing ``get_state``,
            ``set_state`` and ``graph_nodes``. Its state is changed; restore it after.
        state: A snapshot from ``get_state()``.
        action: The action of the transition.
        eps: Size of the small changes (definition (a)).
    """
    nodes = list(env.get_wrapper_attr("graph_nodes"))
    objects = nodes[:-2]
    base = _next_objects(env, copy.deepcopy(state), action)
    small = np.zeros((len(nodes), len(objects)), bool)
    large = np.zeros_like(small)

    def changed(after: dict[str, Any]) -> np.ndarray:
        return np.array([after[o] != base[o] for o in objects])

    ptw = env.get_wrapper_attr("points_to_win")
    for i, name in enumerate(objects):
        for var, value in state["objects"][name].items():
            deltas = (1, -1) if name == "score" else (eps, -eps)
            for d in deltas:
                if name == "score" and not 0 <= value + d <= ptw:
                    continue
                s = copy.deepcopy(state)
                s["objects"][name][var] = value + d
                small[i] |= changed(_next_objects(env, s, action))
        for s in _moves(state, name):
            large[i] |= changed(_next_objects(env, s, action))
    for alt in _alternatives(env.action_space, action):
        small[len(objects)] |= changed(_next_objects(env, copy.deepcopy(state), alt))
    if state["regime"] != 0:
        s = copy.deepcopy(state)
        s["regime"] = 0
        small[len(objects) + 1] |= changed(_next_objects(env, s, action))
    return CounterfactualEdges(small=small, large=large)
