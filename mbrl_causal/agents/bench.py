"""``mbrl-causal bench agent``: updates/s and env steps/s of the Dreamer-style loop.

- ``updates_per_s``: full updates (one world-model step + one actor-critic step on
  ``imag_starts`` imagined rollouts of ``horizon`` steps) per second at the issue's batch
  of 16 sequences x 64 steps, after ``warmup`` untimed updates;
- ``loop_env_steps_per_s``: env steps per second of the whole loop (acting, replay,
  surprise detection and the updates at the configured train ratio);
- ``acting_env_steps_per_s``: env steps per second of acting alone (prefill: no update).

Each figure is the median of ``repeats`` timed runs, all in one process and one session.
The reference to compare with (SheepRL's DreamerV3-XS, run separately) is described in
``benchmarks/README.md``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from mbrl_causal.agents.config import AgentConfig, load_preset
from mbrl_causal.agents.dreamer.agent import CausalDreamer
from mbrl_causal.world_models.config import WorldModelConfig

__all__ = ["bench_agent"]


def bench_agent(
    world_model: str = "spartan",
    preset: str = "quick",
    updates: int = 10,
    loop_steps: int = 4_000,
    repeats: int = 3,
    warmup: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time the agent (see the module doc); returns a JSON-ready dict."""
    agent_over, model_over = load_preset(preset)
    fixed = {"batch_size": 16, "seq_len": 64, "chunk_len": 256, "prefill": 2_000,
             "log_every": 10**9, "checkpoint_every": 10**9}  # fmt: skip
    cfg = AgentConfig(**{**agent_over, **fixed})
    wm = WorldModelConfig(**{**model_over, "name": world_model})
    with tempfile.TemporaryDirectory() as tmp:
        agent = CausalDreamer("InterventionalPong-v0", wm, cfg, tmp, seed=0)
        if progress:
            progress("prefill")
        t0 = time.perf_counter()
        agent.learn(cfg.prefill)  # random acting only
        acting = cfg.prefill / (time.perf_counter() - t0)
        agent.replay.flush()
        for _ in range(warmup):
            agent._update()
        rates = []
        for r in range(repeats):
            if progress:
                progress(f"updates {r + 1}/{repeats}")
            t0 = time.perf_counter()
            for _ in range(updates):
                agent._update()
            rates.append(updates / (time.perf_counter() - t0))
        loops = []
        for r in range(repeats):
            if progress:
                progress(f"loop {r + 1}/{repeats}")
            start = agent.steps
            t0 = time.perf_counter()
            agent.learn(start + loop_steps)
            loops.append((agent.steps - start) / (time.perf_counter() - t0))
        agent.close()
    return {
        "world_model": world_model,
        "preset": preset,
        "batch": [16, 64],
        "horizon": cfg.horizon,
        "imag_starts": cfg.imag_starts,
        "train_ratio": cfg.train_ratio,
        "steps_per_update": cfg.steps_per_update,
        "torch_threads": torch.get_num_threads(),
        "updates_per_s": statistics.median(rates),
        "loop_env_steps_per_s": statistics.median(loops),
        "acting_env_steps_per_s": acting,
        "runs": {"updates_per_s": rates, "loop_env_steps_per_s": loops},
    }
