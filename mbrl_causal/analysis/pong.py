"""Finite-difference Jacobians of Interventional Pong, aggregated to object blocks.

The same central differences as :mod:`.jacobian`, through the env's ``get_state`` /
``set_state`` (the snapshot holds the random stream, so every replay sees the same noise).
The differentiable state is the 8 continuous object variables (field units)::

    opponent: y, vy    agent: y, vy    ball: x, y, vx, vy

The score (integer points), the discrete action and the regime are not differentiable:
their rows/columns of the object-block matrix are NaN and :attr:`PongJacobians.comparable`
says which entries of ``info["local_graph"]`` a Jacobian can be compared with. With a
continuous action (``action_type="continuous"``) the action row is differentiable too
(perturbed inside [-1, 1], one-sided at the bounds).

A non-zero block implies an edge of the env's graph, but not conversely: the graph's
definition (spec 5) also counts effects that a derivative cannot see (a saturated
opponent speed, a clipped hit angle, a paddle at its bound, a near miss within the graph's
margin), so the comparison is "Jacobian pattern within the graph" plus recall figures.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from mbrl_causal.analysis.jacobian import JacobianSamples, check_counts
from mbrl_causal.analysis.policy import RunPolicy
from mbrl_causal.envs.pong import GRAPH_NODES, OBJECT_NAMES

__all__ = [
    "CONTINUOUS_VARIABLES",
    "PongJacobians",
    "block_agreement",
    "collect_pong",
    "pong_step_jacobian",
]

CONTINUOUS_VARIABLES: tuple[tuple[str, str], ...] = (
    ("opponent", "y"), ("opponent", "vy"), ("agent", "y"), ("agent", "vy"),
    ("ball", "x"), ("ball", "y"), ("ball", "vx"), ("ball", "vy"),
)  # fmt: skip
_OBJECT_OF = np.array([OBJECT_NAMES.index(o) for o, _ in CONTINUOUS_VARIABLES])


class PongJacobians(NamedTuple):
    """Jacobians of one Interventional Pong step.

    Attributes:
        J_s: d(next continuous variables) / d(continuous variables), (8, 8).
        J_a: d(next continuous variables) / d(action), (8, 1); None for discrete actions.
        blocks: Max |entry| per (parent node, child object), (N + 2, N) like
            ``info["local_graph"]``; NaN where not differentiable.
        comparable: bool (N + 2, N): entries with a differentiable parent and child.
    """

    J_s: np.ndarray
    J_a: np.ndarray | None
    blocks: np.ndarray
    comparable: np.ndarray


def _variables(state: dict[str, Any]) -> np.ndarray:
    return np.array([state["objects"][o][v] for o, v in CONTINUOUS_VARIABLES], float)


def _next(env: Any, state: dict[str, Any], action: Any) -> np.ndarray:
    env.set_state(state)
    env.step(action)
    return _variables(env.get_state())


def _blocks(j_s: np.ndarray, j_a: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    n = len(OBJECT_NAMES)
    blocks = np.full((n + 2, n), np.nan)
    for child in range(n - 1):  # the score (last object) is not differentiable
        rows = _OBJECT_OF == child
        for parent in range(n - 1):
            blocks[parent, child] = np.abs(j_s[np.ix_(rows, _OBJECT_OF == parent)]).max()
        if j_a is not None:
            blocks[n, child] = np.abs(j_a[rows]).max()
    return blocks, ~np.isnan(blocks)


def pong_step_jacobian(env: gym.Env, action: Any, eps: float = 1e-6) -> PongJacobians:
    """Central-difference Jacobians of the step from the env's current state.

    The env (its ``unwrapped`` core: wrappers' counters are not advanced) is restored to
    its current state afterwards, so ``env.step(action)`` then gives the usual transition.

    Args:
        env: An Interventional Pong env (or a wrapper of one).
        action: The action of the step.
        eps: Perturbation in field units (and action units).
    """
    core: Any = env.unwrapped
    if not hasattr(core, "get_state") or tuple(getattr(core, "graph_nodes", ())) != GRAPH_NODES:
        raise ValueError(f"{core!r} is not an Interventional Pong env")
    state = core.get_state()
    j_s = np.empty((len(CONTINUOUS_VARIABLES), len(CONTINUOUS_VARIABLES)))
    try:
        for i, (obj, var) in enumerate(CONTINUOUS_VARIABLES):
            outs = []
            for sign in (1.0, -1.0):
                s = copy.deepcopy(state)
                s["objects"][obj][var] += sign * eps
                outs.append(_next(core, s, action))
            j_s[:, i] = (outs[0] - outs[1]) / (2.0 * eps)
        j_a = None
        if isinstance(core.action_space, gym.spaces.Box):
            a = float(np.asarray(action, float).reshape(-1)[0])
            up, down = min(a + eps, 1.0), max(a - eps, -1.0)
            plus = _next(core, copy.deepcopy(state), np.array([up]))
            minus = _next(core, copy.deepcopy(state), np.array([down]))
            j_a = ((plus - minus) / (up - down))[:, None]
    finally:
        core.set_state(state)
    blocks, comparable = _blocks(j_s, j_a)
    return PongJacobians(j_s, j_a, blocks, comparable)


def collect_pong(
    env_id: str,
    steps: int,
    episodes: int = 1,
    seed: int = 0,
    eps: float = 1e-6,
    progress: Callable[[int], None] | None = None,
    policy: RunPolicy | None = None,
) -> JacobianSamples:
    """Jacobians along trajectories of an Interventional Pong env.

    Without ``policy`` the actions are uniform random and the env is made with
    ``action_type="continuous"`` (so the action is differentiable). With a run's
    ``policy`` (:func:`~mbrl_causal.analysis.policy.load_run_policy`) the env is made with
    the run's action type and observation mode and the policy acts; with discrete actions
    ``J_a`` is None. The env keeps its usual regime schedule. Episodes are split as in
    :func:`~mbrl_causal.analysis.jacobian.collect_mujoco`. ``extra`` holds ``blocks``
    (S, N + 2, N), ``comparable`` (N + 2, N) and the env's ``graphs`` (S, N + 2, N).
    """
    check_counts(steps, episodes)
    kwargs = policy.env_kwargs() if policy is not None else {"action_type": "continuous"}
    env = gym.make(env_id, **kwargs)
    per_episode = math.ceil(steps / episodes)
    rows: dict[str, list[Any]] = {k: [] for k in ("J_s", "J_a", "ep", "s", "a", "s2", "b", "g")}
    episode, t = 0, 0
    comparable = np.zeros(0, bool)
    try:
        if policy is not None:
            policy.check_env(env_id, env.observation_space)
        env.action_space.seed(int(np.random.default_rng(seed).integers(2**31)))
        obs, info = env.reset(seed=seed)
        for _ in range(steps):
            if policy is None:
                a: Any = np.asarray(env.action_space.sample(), np.float64)
            else:
                a = policy.act(obs, info)
            j = pong_step_jacobian(env, a, eps)
            comparable = j.comparable
            before = _variables(env.unwrapped.get_state())  # type: ignore[attr-defined]
            obs, _, terminated, truncated, info = env.step(a)
            after = _variables(env.unwrapped.get_state())  # type: ignore[attr-defined]
            row = (j.J_s, j.J_a, episode, before, a, after, j.blocks, info["local_graph"])
            for key, value in zip(rows, row, strict=True):
                rows[key].append(value)
            t += 1
            if terminated or truncated or t >= per_episode:
                episode, t = episode + 1, 0
                obs, info = env.reset()
            if progress is not None:
                progress(1)
    finally:
        env.close()
    labels = [f"{o}.{v}" for o, v in CONTINUOUS_VARIABLES]
    continuous = rows["J_a"][0] is not None
    return JacobianSamples(
        np.array(rows["J_s"]), np.array(rows["J_a"]) if continuous else None,
        np.array(rows["ep"]), np.array(rows["s"]), np.array(rows["a"]), np.array(rows["s2"]),
        labels, ["paddle"] if continuous else [],
        {"blocks": np.array(rows["b"]), "graphs": np.array(rows["g"]),
         "comparable": comparable},
    )  # fmt: skip


def block_agreement(samples: JacobianSamples, threshold: float) -> dict[str, Any]:
    """Object-block pattern (|block| >= threshold) against ``info["local_graph"]``.

    Only comparable entries count. ``outside_graph`` (non-zero blocks the graph does not
    have) must be 0; ``recall`` is the fraction of graph edges the derivative sees.
    """
    blocks, graphs = samples.extra["blocks"], samples.extra["graphs"].astype(bool)
    comparable = samples.extra["comparable"].astype(bool)
    nonzero = (np.nan_to_num(blocks) >= threshold) & comparable
    edges = graphs & comparable
    names = list(GRAPH_NODES)
    per_edge = {
        f"{names[p]}->{names[c]}": {
            "graph": int(edges[:, p, c].sum()),
            "jacobian": int((nonzero & edges)[:, p, c].sum()),
        }
        for p, c in zip(*np.nonzero(edges.any(0)), strict=True)
    }
    return {
        "outside_graph": int((nonzero & ~graphs).sum()),
        "graph_edges": int(edges.sum()),
        "recall": float((nonzero & edges).sum() / max(1, edges.sum())),
        "per_edge": per_edge,
    }
