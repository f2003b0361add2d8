"""Speed benchmarks (``mbrl-causal bench ...``); results are JSON-serialisable dicts.

``envs``: env steps per second of Interventional Pong in objects mode, pixels mode
(32 x 32), the native vector env (N = 64, objects mode; summed over its envs) and, as the
outside reference, ALE Pong (``ALE/Pong-v5`` with its defaults: frameskip 4, sticky
actions 0.25, RGB 210 x 160 observations) when ``ale-py`` is installed. Each figure is the
median of ``repeats`` timed runs after a warm-up; actions are drawn up front so only the
env is timed; episodes that end are reset inside the timed loop, as in training.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["bench_envs"]


def _time(run: Callable[[], int], repeats: int) -> tuple[float, list[float]]:
    run()  # warm-up (JIT-free Python, but caches, allocations and lazy imports)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        steps = run()
        rates.append(steps / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def _single(env: gym.Env, steps: int, seed: int) -> Callable[[], int]:
    """A timed loop of ``steps`` uniform random discrete actions, resetting ended episodes."""
    n_actions = int(env.action_space.n)  # type: ignore[attr-defined]
    actions = np.random.default_rng(seed).integers(0, n_actions, steps)
    env.reset(seed=seed)

    def run() -> int:
        for a in actions:
            _, _, terminated, truncated, _ = env.step(int(a))
            if terminated or truncated:
                env.reset()
        return steps

    return run


def _vector(env: Any, steps: int, seed: int) -> Callable[[], int]:
    actions = np.random.default_rng(seed).integers(0, 3, (steps, env.num_envs))
    env.reset(seed=seed)

    def run() -> int:
        for a in actions:
            env.step(a)
        return steps * env.num_envs

    return run


def bench_envs(
    steps: int = 50_000,
    vector_envs: int = 64,
    vector_steps: int = 2_000,
    ale_steps: int = 10_000,
    repeats: int = 3,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the env speed benchmark (spec section 8).

    Returns:
        ``{"objects", "pixels", "vector", "ale_pong"}``, each with ``steps_per_s`` (env steps
        per second; for the vector env summed over its envs), the individual ``runs`` and the
        settings used, plus ``"ratios"`` (each rate over ALE Pong's) and ``"machine"``.
        ``ale_pong`` is ``{"steps_per_s": None, "skipped": reason}`` without ``ale-py``.
    """
    import mbrl_causal.envs  # noqa: F401

    say = progress or (lambda _msg: None)
    out: dict[str, Any] = {}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("objects", "InterventionalPong-v0", {"obs_mode": "objects"}),
        ("pixels", "InterventionalPong-v0", {"obs_mode": "pixels", "render_size": 32}),
    ]
    for key, env_id, kwargs in cases:
        say(f"{key}: {steps} steps x {repeats}")
        env = gym.make(env_id, **kwargs)
        rate, runs = _time(_single(env, steps, seed), repeats)
        out[key] = {
            "steps_per_s": rate,
            "runs": runs,
            "settings": {"env": env_id, **kwargs, "steps": steps, "api": "gymnasium.make",
                         "actions": "uniform random, discrete"},
        }  # fmt: skip
        env.close()
    say(f"vector: {vector_envs} envs x {vector_steps} steps x {repeats}")
    venv = gym.make_vec(
        "InterventionalPong-v0", num_envs=vector_envs, vectorization_mode="vector_entry_point"
    )
    rate, runs = _time(_vector(venv, vector_steps, seed), repeats)
    out["vector"] = {
        "steps_per_s": rate,
        "runs": runs,
        "settings": {"env": "InterventionalPong-v0", "obs_mode": "objects",
                     "num_envs": vector_envs, "vector_steps": vector_steps,
                     "api": "gymnasium.make_vec(vectorization_mode='vector_entry_point')"},
    }  # fmt: skip
    venv.close()
    out["ale_pong"] = _bench_ale(ale_steps, repeats, seed, say)
    ale = out["ale_pong"]["steps_per_s"]
    out["ratios"] = {
        f"{k}_over_ale_pong": (out[k]["steps_per_s"] / ale if ale else None)
        for k in ("objects", "pixels", "vector")
    }
    out["machine"] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gymnasium": gym.__version__,
        "platform": platform.platform(),
    }
    return out


def _bench_ale(steps: int, repeats: int, seed: int, say: Callable[[str], None]) -> dict[str, Any]:
    try:
        import ale_py
    except ImportError:
        return {"steps_per_s": None, "skipped": "ale-py is not installed (pip install ale-py)"}
    gym.register_envs(ale_py)
    say(f"ale_pong: {steps} steps x {repeats}")
    env = gym.make("ALE/Pong-v5")
    rate, runs = _time(_single(env, steps, seed), repeats)
    env.close()
    return {
        "steps_per_s": rate,
        "runs": runs,
        "settings": {"env": "ALE/Pong-v5", "frameskip": 4, "repeat_action_probability": 0.25,
                     "obs_type": "rgb (210, 160, 3)", "steps": steps,
                     "ale_py": getattr(ale_py, "__version__", "unknown")},
    }  # fmt: skip
