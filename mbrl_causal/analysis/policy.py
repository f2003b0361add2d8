"""A trained run's policy as the behaviour policy of ``mbrl-causal sparsity --policy RUN_DIR``.

Every agent of this project trains on Interventional Pong, so a run's policy acts on the
Pong envs (any of them whose observation matches the run's: the distractor envs have more
objects). What is loaded is the run's latest checkpoint, as ``mbrl-causal evaluate`` does:

- a Dreamer run (``train --agent dreamer``): :meth:`CausalDreamer.predict`, deterministic,
  with the regime token of the env's current regime (``info["regime"]``) when the run was
  trained with ``--regime-info oracle`` and has a token for that regime; otherwise (a
  regime the run never saw, or ``--regime-info none``) the token of its first slot. There
  is no adaptation while the Jacobians are taken;
- an SB3 run (``ppo``, ``ppo-imagination``, ``sac-imagination``): the SB3 model's
  ``predict``, deterministic.

The env is made with the run's action type: SAC runs act on continuous-action Pong, so
the action Jacobian J_a exists; the discrete-action agents (Dreamer, PPO) give J_s only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunPolicy", "load_run_policy"]


@dataclass
class RunPolicy:
    """A run's policy, ready to act on an Interventional Pong env.

    Attributes:
        run_dir: The run directory it was loaded from.
        run_env: The env id the run was trained on.
        algorithm: ``dreamer``, ``ppo``, ``ppo-imagination`` or ``sac-imagination``.
        action_type: ``discrete`` or ``continuous`` (the env must be made with it).
        obs_mode: ``objects`` or ``dict`` (pixels + masks: a Dreamer run on pixels).
        obs_shape: Shape of the ``objects`` observation the policy expects.
        act: ``act(obs, info) -> action`` for the env's last observation and info.
    """

    run_dir: Path
    run_env: str
    algorithm: str
    action_type: str
    obs_mode: str
    obs_shape: tuple[int, ...]
    act: Callable[[Any, dict[str, Any]], Any]

    def env_kwargs(self) -> dict[str, Any]:
        """What ``gym.make`` needs for the policy's observations and actions."""
        return {"action_type": self.action_type, "obs_mode": self.obs_mode}

    def check_env(self, env_id: str, observation_space: Any) -> None:
        """Raise ValueError when the env's objects observation differs from the run's."""
        space = observation_space["objects"] if self.obs_mode == "dict" else observation_space
        if tuple(space.shape) != self.obs_shape:
            raise ValueError(
                f"--policy {str(self.run_dir)!r} (trained on {self.run_env}) expects "
                f"observations of shape {self.obs_shape} (objects), but {env_id} gives "
                f"{tuple(space.shape)}; use an Interventional Pong env with the same objects "
                "(runs trained on the distractor env cannot act here)"
            )


def load_run_policy(run_dir: str | Path) -> RunPolicy:
    """The policy of the latest checkpoint in ``run_dir`` (ValueError if it has none)."""
    from mbrl_causal.agents import run as R

    rd = Path(run_dir)
    if not rd.is_dir():
        raise ValueError(f"--policy {str(rd)!r}: expected 'random' or a run directory")
    config = R.read_config(rd)
    algorithm = str(config.get("algorithm", "dreamer"))
    run_env = str(config["agent"].get("env", "?"))
    if algorithm == "dreamer":
        return _dreamer(rd, run_env)
    from mbrl_causal.agents.sb3_evaluate import _load

    _, algo, _ = _load(rd)
    discrete = not algorithm.startswith("sac")

    def act(obs: Any, info: dict[str, Any]) -> Any:
        action, _ = algo.predict(obs, deterministic=True)
        return int(action) if discrete else np.asarray(action, np.float64).reshape(1)

    return RunPolicy(rd, run_env, algorithm, "discrete" if discrete else "continuous",
                     "objects", tuple(algo.observation_space.shape), act)  # fmt: skip


def _dreamer(rd: Path, run_env: str) -> RunPolicy:
    from mbrl_causal.agents import run as R
    from mbrl_causal.agents.dreamer.agent import CausalDreamer

    body = R.read_checkpoint(R.latest_checkpoint(rd))
    agent = CausalDreamer._from_state(body, None, {"num_envs": 1})
    agent.learning = False
    agent.env_slot[:] = 0  # no regime token (or an unknown regime): the first slot
    agent.model.eval()
    oracle = agent.config.regime_info == "oracle"
    space = agent.env.single_observation_space
    dict_obs = agent.config.obs != "objects"
    objects: Any = space["objects"] if dict_obs else space  # type: ignore[index]
    shape = tuple(objects.shape)
    agent.env.close()

    discrete = agent.discrete

    def act(obs: Any, info: dict[str, Any]) -> Any:
        regime = int(info["regime"]) if oracle and "regime" in info else None
        action, _ = agent.predict(obs, deterministic=True, regime=regime)
        a = np.asarray(action)
        return int(a.reshape(-1)[0]) if discrete else a.astype(np.float64).reshape(1)

    return RunPolicy(rd, run_env, "dreamer", "discrete" if discrete else "continuous",
                     "dict" if dict_obs else "objects", shape, act)  # fmt: skip
