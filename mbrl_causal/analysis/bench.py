"""Speed of the env-step Jacobian against chaining MuJoCo's ``mjd_transitionFD``.

``python -m mbrl_causal.analysis.bench --json FILE`` (or ``bash benchmarks/sparsity.sh``)
measures, in one process and interleaved (so machine load hits both alike):

- ``ours``: :class:`~mbrl_causal.analysis.jacobian.StepJacobian` on HalfCheetah-v5 (one
  ``mujoco.rollout`` call of 2 (nx + nu) + 1 replays of ``frame_skip`` steps), with 1
  thread and with ``--threads`` threads;
- ``mjd_chain``: ``frame_skip`` calls of ``mjd_transitionFD`` (centred, same eps) with
  ``mj_step`` between them and the products A_k ... A_1, sum A.. B_k: the same Jacobian
  by MuJoCo's own C routine (Euler envs only);
- ``hopper``: ours on Hopper-v5 (RK4, where ``mjd_transitionFD`` refuses).

Rates are Jacobians per second (median of ``repeats`` timed runs over the same states).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from mbrl_causal.analysis.jacobian import JacobianConfig, StepJacobian, env_parts

__all__ = ["bench_jacobians", "main"]

_INTEGRATION = int(mujoco.mjtState.mjSTATE_INTEGRATION)


def _states(env_id: str, n: int, seed: int) -> tuple[Any, list[np.ndarray], list[np.ndarray]]:
    """``n`` (state, action) pairs along a random trajectory (full integration state)."""
    env = gym.make(env_id)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    m, d, _ = env_parts(env)
    states, actions = [], []
    for _ in range(n):
        a = np.asarray(env.action_space.sample(), np.float64)
        s = np.empty(mujoco.mj_stateSize(m, _INTEGRATION))
        mujoco.mj_getState(m, d, s, _INTEGRATION)
        states.append(s)
        actions.append(a)
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    return env, states, actions


def _ours(env: Any, threads: int) -> Callable[[mujoco.MjData, np.ndarray], None]:
    m, _, skip = env_parts(env)
    jac = StepJacobian(m, skip, JacobianConfig(threads=threads))

    def run(d: mujoco.MjData, u: np.ndarray) -> None:
        jac(d, u)

    return run


def _chain(env: Any) -> Callable[[mujoco.MjData, np.ndarray], None]:
    m, _, skip = env_parts(env)
    nx = 2 * m.nv + m.na
    a, b = np.zeros((nx, nx)), np.zeros((nx, m.nu))
    work = mujoco.MjData(m)
    state = np.empty(mujoco.mj_stateSize(m, _INTEGRATION))

    def run(d: mujoco.MjData, u: np.ndarray) -> None:
        mujoco.mj_getState(m, d, state, _INTEGRATION)
        mujoco.mj_setState(m, work, state, _INTEGRATION)
        work.ctrl[:] = u
        j_s, j_a = np.eye(nx), np.zeros((nx, m.nu))
        for _ in range(skip):
            mujoco.mjd_transitionFD(m, work, 1e-6, True, a, b, None, None)
            j_s, j_a = a @ j_s, a @ j_a + b
            mujoco.mj_step(m, work)

    return run


def _rate(
    fn: Callable[[mujoco.MjData, np.ndarray], None],
    env: Any,
    states: list[np.ndarray],
    actions: list[np.ndarray],
) -> float:
    m, _, _ = env_parts(env)
    d = mujoco.MjData(m)
    start = time.perf_counter()
    for s, u in zip(states, actions, strict=True):
        mujoco.mj_setState(m, d, s, _INTEGRATION)
        fn(d, u)
    return len(states) / (time.perf_counter() - start)


def bench_jacobians(
    states: int = 200, repeats: int = 5, threads: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Jacobians/s of ours (1 and ``threads`` threads) and of the mjd_transitionFD chain."""
    threads = threads or os.cpu_count() or 1
    env, xs, us = _states("HalfCheetah-v5", states, seed)
    cases = {"ours_1_thread": _ours(env, 1), "mjd_chain": _chain(env)}
    if threads > 1:
        cases[f"ours_{threads}_threads"] = _ours(env, threads)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):  # interleaved: load changes affect every case alike
        for key, fn in cases.items():
            times[key].append(_rate(fn, env, xs, us))
    hop, hxs, hus = _states("Hopper-v5", states, seed)
    hopper = statistics.median(_rate(_ours(hop, 1), hop, hxs, hus) for _ in range(repeats))
    rates = {k: statistics.median(v) for k, v in times.items()}
    chain = rates["mjd_chain"]
    return {
        "env": "HalfCheetah-v5",
        "states": states,
        "repeats": repeats,
        "cpu_count": os.cpu_count(),
        "jacobians_per_s": rates,
        "ratio_over_mjd_chain": {k: v / chain for k, v in rates.items() if k != "mjd_chain"},
        "hopper_rk4_ours_1_thread": hopper,
        "mujoco": mujoco.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: print the JSON and optionally write it."""
    p = argparse.ArgumentParser(prog="python -m mbrl_causal.analysis.bench")
    p.add_argument("--states", type=int, default=200, help="states per timed run (200)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--json", metavar="FILE", help="also write the JSON to FILE")
    args = p.parse_args(argv)
    if args.states < 1 or args.repeats < 1:
        p.error("--states and --repeats must be >= 1")
    result = bench_jacobians(args.states, args.repeats, args.threads)
    print(json.dumps(result, indent=2))
    if args.json:
        from mbrl_causal.io import write_json

        write_json(Path(args.json), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
