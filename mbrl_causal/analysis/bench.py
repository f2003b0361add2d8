"""Speed of the env-step Jacobian against chaining MuJoCo's ``mjd_transitionFD``.

``python -m mbrl_causal.analysis.bench --json FILE`` (or ``bash benchmarks/sparsity.sh``)
measures, in one process and interleaved (so machine load hits both alike):

- ``ours_per_state``: :class:`~mbrl_causal.analysis.jacobian.StepJacobian` called on one
  state at a time (one C call of 2 (nx + nu) + 1 replays of ``frame_skip`` steps per
  state), 1 thread;
- ``ours_batch_1_thread`` / ``ours_batch_N_threads``: the same Jacobians through
  :meth:`~mbrl_causal.analysis.jacobian.StepJacobian.batch`, ``--batch`` states per
  C call (what ``mbrl-causal sparsity`` does), with 1 and with ``--threads``
  threads (timed from setting each state to the last Jacobian, snapshots included),
  on the default backend (``mujoco.batch`` on MuJoCo >= 4.0, named in ``"backend"``);
- ``ours_rollout_N_threads``: the same on the ``mujoco.rollout`` backend with its
  default threads, one per CPU (what older MuJoCo gets; only where the default backend
  is ``mujoco.batch``, whose default is 4 threads per CPU: :func:`default_threads`);
- ``mjd_chain``: ``frame_skip`` calls of ``mjd_transitionFD`` (centred, same eps) with
  ``mj_step`` between them and the products A_k ... A_1, sum A.. B_k: the same Jacobian
  by MuJoCo's own C routine (Euler envs only);
- ``hopper``: ours batched on Hopper-v5 (RK4, where ``mjd_transitionFD`` refuses), 1
  thread and ``--threads`` threads.

The reference is single-threaded; compare it with ``ours_batch_1_thread`` for the same
work per core, and with ``ours_batch_N_threads`` for what the command gets from a machine.

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

from mbrl_causal.analysis.jacobian import (
    JacobianConfig,
    StepJacobian,
    default_threads,
    env_parts,
)

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


Case = Callable[[Any, list[np.ndarray], list[np.ndarray]], float]


def _ours(env: Any) -> Callable[[mujoco.MjData, np.ndarray], None]:
    m, _, skip = env_parts(env)
    jac = StepJacobian(m, skip)

    def run(d: mujoco.MjData, u: np.ndarray) -> None:
        jac(d, u)

    return run


def _batched(env: Any, threads: int, batch: int, backend: str = "auto") -> Case:
    """Rate of ``StepJacobian.batch`` over the states, ``batch`` at a time."""
    m, _, skip = env_parts(env)
    jac = StepJacobian(m, skip, JacobianConfig(threads=threads, batch=batch, backend=backend))
    d = mujoco.MjData(m)

    def rate(_: Any, states: list[np.ndarray], actions: list[np.ndarray]) -> float:
        start = time.perf_counter()
        for i in range(0, len(states), batch):
            snaps = []
            for s, u in zip(states[i : i + batch], actions[i : i + batch], strict=True):
                mujoco.mj_setState(m, d, s, _INTEGRATION)
                snaps.append(jac.snapshot(d, u))
            jac.batch(np.array(snaps))
        return len(states) / (time.perf_counter() - start)

    return rate


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


def _per_call(fn: Callable[[mujoco.MjData, np.ndarray], None]) -> Case:
    def rate(env: Any, states: list[np.ndarray], actions: list[np.ndarray]) -> float:
        return _rate(fn, env, states, actions)

    return rate


def _cases(env: Any, threads: int, batch: int, chain: bool) -> dict[str, Case]:
    cases = {"ours_per_state": _per_call(_ours(env))} if chain else {}
    cases["ours_batch_1_thread"] = _batched(env, 1, batch)
    if threads > 1:
        cases[f"ours_batch_{threads}_threads"] = _batched(env, threads, batch)
    if chain and JacobianConfig().resolved_backend != "rollout":
        n = default_threads("rollout")
        cases[f"ours_rollout_{n}_threads"] = _batched(env, n, batch, "rollout")
    if chain:
        cases["mjd_chain"] = _per_call(_chain(env))
    return cases


def _median_rates(env_id: str, cases: dict[str, Case], states: int, repeats: int,
                  seed: int) -> dict[str, float]:  # fmt: skip
    env, xs, us = _states(env_id, states, seed)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):  # interleaved: load changes affect every case alike
        for key, rate in cases.items():
            times[key].append(rate(env, xs, us))
    return {k: statistics.median(v) for k, v in times.items()}


def bench_jacobians(
    states: int = 200,
    repeats: int = 5,
    threads: int | None = None,
    seed: int = 0,
    batch: int = 64,
) -> dict[str, Any]:
    """Jacobians/s of ours (per state; batched with 1 and ``threads`` threads) and of the
    mjd_transitionFD chain on HalfCheetah-v5, and ours batched on Hopper-v5 (RK4)."""
    threads = threads or default_threads()
    cheetah = gym.make("HalfCheetah-v5")
    rates = _median_rates("HalfCheetah-v5", _cases(cheetah, threads, batch, True), states,
                          repeats, seed)  # fmt: skip
    hop = gym.make("Hopper-v5")
    hopper = _median_rates("Hopper-v5", _cases(hop, threads, batch, False), states, repeats,
                           seed)  # fmt: skip
    chain = rates["mjd_chain"]
    return {
        "env": "HalfCheetah-v5",
        "unit": "env-step Jacobians (J_s and J_a) per second, median of the timed runs",
        "states": states,
        "repeats": repeats,
        "batch": batch,
        "threads": threads,
        "backend": JacobianConfig().resolved_backend,
        "cpu_count": os.cpu_count(),
        "jacobians_per_s": rates,
        "ratio_over_mjd_chain": {k: v / chain for k, v in rates.items() if k != "mjd_chain"},
        "hopper_rk4_jacobians_per_s": hopper,
        "mujoco": mujoco.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: print the JSON and optionally write it."""
    p = argparse.ArgumentParser(prog="python -m mbrl_causal.analysis.bench")
    p.add_argument("--states", type=int, default=200, help="states per timed run (200)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads (default: the CPUs, x4 on mujoco.batch)")  # fmt: skip
    p.add_argument("--batch", type=int, default=64, help="states per C call (64)")
    p.add_argument("--json", metavar="FILE", help="also write the JSON to FILE")
    args = p.parse_args(argv)
    if args.states < 1 or args.repeats < 1 or args.batch < 1:
        p.error("--states, --repeats and --batch must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    result = bench_jacobians(args.states, args.repeats, args.threads, batch=args.batch)
    print(json.dumps(result, indent=2))
    if args.json:
        from mbrl_causal.io import write_json

        write_json(Path(args.json), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
