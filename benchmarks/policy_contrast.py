"""Does a run's world model see what the policy changes? (issue 5 diagnostics)

    .venv/bin/python benchmarks/policy_contrast.py RUN_DIR STEP [STEP ...] [--json FILE]

For each kept checkpoint STEP of a Dreamer run or an SB3 imagination run (trained on
InterventionalPong-Neutral-v0, or any run whose neutral regime is the one to probe), the
world model's imagined return of the scripted policies ``tracking``, ``random`` and
``stay`` and of the run's own deterministic policy (``own``), from the same 2,000 real
start states (uniform random play on InterventionalPong-Neutral-v0, seed 0; 2 rounds of
256 episodes, horizon 32), next to the real env's figure for the scripted policies
(``mbrl_causal.sb3.real_returns``: 512 windows of 32 steps). Figures: mean return per
episode in reward units (points won minus lost). Writes
``{"real": {...}, "checkpoints": {STEP: {"imagined": {...}, "edges"...}}}`` to FILE
(default ``RUN_DIR/eval/policy_contrast.json``) and prints one line per checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import mbrl_causal.envs  # noqa: F401
from mbrl_causal.agents import run as R
from mbrl_causal.io import write_atomic
from mbrl_causal.sb3 import imagined_returns, real_returns, scripted_policies

ENV = "InterventionalPong-Neutral-v0"
NEUTRAL = 0  # env regime id of neutral


def _starts(n: int = 2000) -> np.ndarray:
    env = gym.make(ENV)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    out = [obs]
    for _ in range(n - 1):
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        out.append(obs)
        if term or trunc:
            obs, _ = env.reset()
    return np.stack(out)


def _load(run: Path, step: int) -> tuple[Any, Any, Any]:
    """(world model, regime for ImaginationVecEnv, own policy) of a checkpoint."""
    kind = R.read_config(run).get("algorithm", "dreamer")
    if kind in ("ppo-imagination", "sac-imagination"):
        from mbrl_causal.agents.sb3_evaluate import _load as load_sb3_run

        _, algo, model = load_sb3_run(run, step)
        return model, NEUTRAL, lambda o: algo.predict(o, deterministic=True)[0]
    if kind != "dreamer":
        raise SystemExit(f"{run} is a {kind!r} run: it has no world model")
    from mbrl_causal.agents.dreamer.agent import CausalDreamer

    agent = CausalDreamer.load(R.find_checkpoint(run, step), run)
    slot = agent.slot_of.get(NEUTRAL, 0)

    def own(obs: np.ndarray) -> np.ndarray:
        z = torch.as_tensor(obs, dtype=torch.float32)
        return agent._policy(z, np.full(len(obs), slot), True)

    return agent.model, agent.tokens(np.array([slot]))[0], own


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("steps", type=int, nargs="+", help="checkpoint env steps")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    real = real_returns(gym.make(ENV))
    starts = _starts()
    result: dict[str, Any] = {"env": ENV, "run_dir": str(args.run_dir), "real": real,
                              "checkpoints": {}}  # fmt: skip
    print("real env:", " ".join(f"{k}={v['return_mean']:+.3f}" for k, v in real.items()))
    for step in args.steps:
        model, regime, own = _load(args.run_dir, step)
        pols = {**scripted_policies(gym.spaces.Discrete(3)), "own": own}
        res = imagined_returns(model, starts, pols, num_envs=256, horizon=32, rounds=2,
                               regime=regime)  # fmt: skip
        result["checkpoints"][str(step)] = {"imagined": res}
        print(step, " ".join(f"{k}={v['return_mean']:+.3f}" for k, v in res.items()), flush=True)
    out = args.json or args.run_dir / "eval" / "policy_contrast.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda t: t.write_text(json.dumps(result, indent=2) + "\n"), ".json")
    return result


if __name__ == "__main__":
    main()
