"""Does a run's world model see what the policy changes? (issue 5 diagnostics)

    .venv/bin/python benchmarks/policy_contrast.py RUN_DIR STEP [STEP ...] [--json FILE]

For each kept checkpoint STEP of an objects-mode Dreamer run or an SB3 imagination run
(trained on InterventionalPong-Neutral-v0, or any run whose neutral regime is the one to
probe; discrete or continuous actions), the world model's imagined return of the
scripted policies ``tracking``, ``random`` and ``stay`` and of the run's own
deterministic policy (``own``), from the same 2,000 real start states (uniform random
play on InterventionalPong-Neutral-v0, seed 0; 2 rounds of 256 episodes, horizon 32),
next to the real env's figure for the scripted policies
(``mbrl_causal.sb3.real_returns``: 512 windows of up to 32 steps, with the run's action
type). Figures: mean return per episode in reward units (points won minus lost). Writes
``{"env", "run_dir", "real": {policy: {...}}, "checkpoints": {STEP: {"imagined": {policy:
{...}}}}}`` (the keys of ``imagined_returns``) to FILE (default
``RUN_DIR/eval/policy_contrast.json``) after each checkpoint, and prints one line per
checkpoint.
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


def _starts(action_type: str, n: int = 2000) -> np.ndarray:
    env = gym.make(ENV, action_type=action_type)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    out = [obs]
    for _ in range(n - 1):
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        out.append(obs)
        if term or trunc:
            obs, _ = env.reset()
    return np.stack(out)


def _load(run: Path, step: int) -> tuple[Any, Any, Any, Any]:
    """(world model, regime for ImaginationVecEnv, own policy, closer) of a checkpoint."""
    kind = R.read_config(run).get("algorithm", "dreamer")
    if kind in ("ppo-imagination", "sac-imagination"):
        from mbrl_causal.agents.sb3_evaluate import _load as load_sb3_run

        _, algo, model = load_sb3_run(run, step)
        return model, NEUTRAL, lambda o: algo.predict(o, deterministic=True)[0], lambda: None
    if kind != "dreamer":
        raise SystemExit(f"{run} is a {kind!r} run: it has no world model")
    from mbrl_causal.agents.dreamer.agent import CausalDreamer

    agent = CausalDreamer.load(R.find_checkpoint(run, step), None)
    if agent.model.config.obs != "objects":
        raise SystemExit(f"{run} is a {agent.model.config.obs!r}-mode run: objects mode only")
    slot = agent.slot_of.get(NEUTRAL, 0)

    def own(obs: np.ndarray) -> np.ndarray:
        z = torch.as_tensor(obs, dtype=torch.float32)
        return agent._policy(z, np.full(len(obs), slot), True)

    return agent.model, agent.tokens(np.array([slot]))[0], own, agent.close


def _action_space(model: Any) -> gym.Space[Any]:
    if model.discrete_actions:
        return gym.spaces.Discrete(model.action_dim)
    return gym.spaces.Box(-1.0, 1.0, (model.action_dim,), np.float32)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("steps", type=int, nargs="+", help="checkpoint env steps")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:  # the run and every step first: a typo fails before any figure is computed
        R.read_config(args.run_dir)
        for step in args.steps:
            R.find_checkpoint(args.run_dir, step)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    out = args.json or args.run_dir / "eval" / "policy_contrast.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"env": ENV, "run_dir": str(args.run_dir), "real": None,
                              "checkpoints": {}}  # fmt: skip
    starts: dict[str, np.ndarray] = {}
    for step in args.steps:
        try:
            model, regime, own, close = _load(args.run_dir, step)
        except ValueError as e:  # e.g. an unreadable checkpoint
            raise SystemExit(f"{args.run_dir} at {step}: {e}") from None
        action_type = "discrete" if model.discrete_actions else "continuous"
        if result["real"] is None:
            real = real_returns(gym.make(ENV, action_type=action_type))
            result["real"], result["action_type"] = real, action_type
            print("real env:", " ".join(f"{k}={v['return_mean']:+.3f}" for k, v in real.items()))
        if action_type not in starts:
            starts[action_type] = _starts(action_type)
        pols = {**scripted_policies(_action_space(model)), "own": own}
        try:
            res = imagined_returns(model, starts[action_type], pols, num_envs=256, horizon=32,
                                   rounds=2, regime=regime)  # fmt: skip
        except ValueError as e:
            raise SystemExit(f"{args.run_dir} at {step}: {e}") from None
        finally:
            close()
        result["checkpoints"][str(step)] = {"imagined": res}
        text = json.dumps(result, indent=2) + "\n"
        write_atomic(out, lambda t, text=text: t.write_text(text), ".json")
        print(step, " ".join(f"{k}={v['return_mean']:+.3f}" for k, v in res.items()), flush=True)
    return result


if __name__ == "__main__":
    main()
