"""``mbrl-causal bench sb3``: imagined steps/s vs real steps/s, both through SB3's VecEnv API.

- ``imagination``: :class:`~mbrl_causal.sb3.ImaginationVecEnv` with ``envs`` envs (one
  batched world-model step each; SPARTAN at the ``quick`` preset's sizes, untrained, eval
  mode, random actions; truncation at 32 steps with auto-reset included);
- ``real``: SB3's ``DummyVecEnv`` of ``envs`` ``InterventionalPong-v0`` envs (objects
  mode, with SB3's Monitor wrapper as ``make_vec_env`` builds it).

Figures are env steps per second (vector steps x envs / wall seconds), the median of
``repeats`` timed runs, all in one process; ``ratio`` = imagination / real.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
import torch

from mbrl_causal.io import output_file, write_json

__all__ = ["bench_sb3", "cmd_bench_sb3"]


def _rate(venv: Any, steps: int, actions: np.ndarray) -> float:
    venv.reset()
    venv.step(actions)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        venv.step(actions)
    return steps * venv.num_envs / (time.perf_counter() - t0)


def bench_sb3(envs: int = 256, steps: int = 200, repeats: int = 3,
              world_model: str = "spartan") -> dict[str, Any]:  # fmt: skip
    """Time both vector envs (see the module doc); returns a JSON-ready dict."""
    from stable_baselines3.common.env_util import make_vec_env

    import mbrl_causal.envs  # noqa: F401
    from mbrl_causal.agents.config import load_preset
    from mbrl_causal.sb3 import ImaginationVecEnv
    from mbrl_causal.world_models.config import WorldModelConfig
    from mbrl_causal.world_models.model import WorldModel

    real = make_vec_env("InterventionalPong-v0", n_envs=envs, seed=0,
                        env_kwargs={"obs_mode": "objects"})  # fmt: skip
    starts = np.asarray(real.reset())
    _, model_over = load_preset("quick")
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(**{**model_over, "name": world_model}), tuple(range(11)))
    model.eval()
    imag = ImaginationVecEnv(model, starts, envs, horizon=32, seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 3, envs)
    imag_rates, real_rates = [], []
    for _ in range(repeats):
        imag_rates.append(_rate(imag, steps, actions))
        real_rates.append(_rate(real, steps, actions))
    real.close()
    i, r = statistics.median(imag_rates), statistics.median(real_rates)
    return {
        "envs": envs, "vector_steps_per_run": steps, "repeats": repeats,
        "world_model": world_model, "world_model_sizes": "quick preset",
        "torch_threads": torch.get_num_threads(),
        "imagination_steps_per_s": i, "real_dummyvecenv_steps_per_s": r,
        "ratio_imagination_over_real": i / r,
        "runs": {"imagination": imag_rates, "real": real_rates},
    }  # fmt: skip


def cmd_bench_sb3(args: argparse.Namespace) -> None:
    """The command (``mbrl-causal bench sb3 [--json FILE]``)."""
    from rich.console import Console

    path = output_file(args.json) if args.json else None
    with Console(stderr=True).status("benchmarking imagination vs DummyVecEnv"):
        result = bench_sb3(args.envs, args.steps, args.repeats)
    print(json.dumps(result, indent=2))
    if path is not None:
        write_json(path, result)
        print(f"wrote {path}")
