"""``WorldModelCallback``: the world model learns from the real steps of any SB3 algorithm.

Public through :mod:`mbrl_causal.sb3`. Storage is the project's on-disk
:class:`~mbrl_causal.agents.replay.Replay`; a gradient step is :meth:`WorldModel.loss`
with the sparsity Lagrangian (:func:`~mbrl_causal.world_models.training.make_lagrangian`),
as in ``fit`` and the Dreamer agent.

SB3's vector envs reset a finished env inside the step that ended it: the observation
returned is the next episode's first one and the last one of the episode is
``info["terminal_observation"]``. The replay's layout needs ``obs[k + 1]`` to be the
observation after step k, so a finished episode is stored as::

    step k      obs o_k, action a_k, reward r_{k+1}, next obs = terminal_observation,
                terminated = done and not info["TimeLimit.truncated"], truncated = the rest
    step k + 1  a bridge: obs = terminal_observation, valid = False (not a transition),
                and the next real step starts from the reset observation

so no training window crosses an episode end and truncation is never termination.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from mbrl_causal.agents.replay import Replay
from mbrl_causal.world_models.model import WorldModel
from mbrl_causal.world_models.training import (
    _figures,
    check_finite,
    clip_gradients,
    feed_lagrangian,
    make_lagrangian,
)

__all__ = ["TransitionReplay", "WorldModelCallback"]


class TransitionReplay(Replay):
    """:class:`Replay` plus the bridge step of one sub-env (see the module doc)."""

    def add_bridge(self, i: int, terminal: dict[str, np.ndarray], first: dict[str, np.ndarray],
                   action: np.ndarray, graph: np.ndarray, regime: int) -> None:  # fmt: skip
        """Store sub-env ``i``'s step from its terminal observation to the reset one
        (``action`` and ``graph`` only give the dtypes and shapes; they are zeroed)."""
        cur = self._open[i]
        for k in self.obs_keys:
            cur[k].append(np.asarray(terminal[k]))
        cur["action"].append(np.zeros_like(action))
        cur["reward"].append(np.float32(0.0))
        cur["terminated"].append(np.bool_(False))
        cur["truncated"].append(np.bool_(False))
        cur["valid"].append(np.bool_(False))
        cur["regime"].append(np.int64(regime))
        cur["token"].append(np.int64(regime))
        cur["graph"].append(np.zeros_like(graph))
        self._last_obs[i] = {k: np.asarray(first[k]) for k in self.obs_keys}
        self.added += 1
        if len(cur["action"]) >= self.chunk_len:
            self._finish(i)


def _obs_dict(obs: Any, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    if isinstance(obs, dict):
        return {k: np.asarray(obs[k]) for k in keys}
    return {"objects": np.asarray(obs, np.float32)}


class WorldModelCallback(BaseCallback):
    """Store every real transition and train the world model every ``train_freq`` steps.

    Works with on-policy (PPO, A2C) and off-policy (SAC, TD3, DQN) algorithms: it reads the
    step from ``self.locals`` (``clipped_actions`` or ``actions``, ``rewards``, ``dones``,
    ``infos``, ``new_obs``) and the previous observation from the algorithm. Observations
    must be unnormalised (no ``VecNormalize`` of observations).

    Args:
        world_model: The model to train (objects or pixels mode; a Dict env must then
            provide ``pixels`` and ``masks``).
        train_freq: Env steps (summed over sub-envs) between two training rounds.
        gradient_steps: Gradient steps per round.
        batch_size: Sequences per batch.
        seq_len: Transitions per sequence (windows never cross an episode end).
        learning_starts: Env steps stored before the first round.
        lr: Adam learning rate.
        grad_clip: Global gradient-norm clip.
        replay_dir: Folder of the replay's chunk files; None: a temporary folder.
        replay_capacity: Steps kept.
        chunk_len: Steps per chunk file (> seq_len).
        regime_key: Info key of the env's regime id (the codebook id the model trains
            with); when absent, ``default_regime`` is used.
        default_regime: Id used without ``regime_key`` (default: the first codebook id).
        seed: Seed of batch sampling and gate noise.
        verbose: SB3 verbosity.
    """

    def __init__(
        self,
        world_model: WorldModel,
        train_freq: int = 1_000,
        gradient_steps: int = 100,
        batch_size: int = 16,
        seq_len: int = 16,
        learning_starts: int = 1_000,
        lr: float = 1e-3,
        grad_clip: float = 10.0,
        replay_dir: str | Path | None = None,
        replay_capacity: int = 200_000,
        chunk_len: int = 256,
        regime_key: str = "regime",
        default_regime: int | None = None,
        seed: int = 0,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        for name, v in (("train_freq", train_freq), ("gradient_steps", gradient_steps),
                        ("batch_size", batch_size), ("seq_len", seq_len),
                        ("replay_capacity", replay_capacity)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if chunk_len < seq_len + 1:
            raise ValueError(f"chunk_len ({chunk_len}) must exceed seq_len ({seq_len})")
        if default_regime is not None and default_regime not in world_model.regime_ids:
            raise ValueError(f"default_regime {default_regime} is not in the codebook; "
                             f"allowed: {list(world_model.regime_ids)}")  # fmt: skip
        self.world_model = world_model
        self.train_freq, self.gradient_steps = train_freq, gradient_steps
        self.batch_size, self.seq_len = batch_size, seq_len
        self.learning_starts, self.grad_clip = learning_starts, grad_clip
        self.replay_capacity, self.chunk_len = replay_capacity, chunk_len
        self.regime_key = regime_key
        self.default_regime = (
            world_model.regime_ids[0] if default_regime is None else int(default_regime)
        )
        self._tmp: Any = None
        self.replay_dir = Path(replay_dir) if replay_dir is not None else None
        self.replay: TransitionReplay | None = None
        self.optimizer = torch.optim.Adam(world_model.parameters(), lr=lr)
        self.lagrangian = make_lagrangian(world_model)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.stored = self.updates = self.since_train = 0
        self.last: dict[str, float] = {}
        self.obs_keys: tuple[str, ...] = (
            ("objects",) if world_model.config.obs == "objects" else ("pixels", "masks")
        )

    # ------------------------------------------------------------------ storage
    def make_replay(self, num_envs: int) -> TransitionReplay:
        """Create the replay for ``num_envs`` sub-envs (done by SB3's callback init)."""
        if self.replay_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mbrl-causal-wm-")
            self.replay_dir = Path(self._tmp.name)
        self.replay = TransitionReplay(self.replay_dir, num_envs, self.chunk_len,
                                       self.replay_capacity, self.obs_keys)  # fmt: skip
        return self.replay

    def _init_callback(self) -> None:
        if self.replay is None:
            self.make_replay(self.training_env.num_envs)

    def _regime(self, info: dict[str, Any]) -> int:
        r = info.get(self.regime_key)
        r = self.default_regime if r is None else int(r)
        if r not in self.world_model.regime_ids:
            raise ValueError(f"info[{self.regime_key!r}] = {r} is not in the world model's "
                             f"codebook; allowed: {list(self.world_model.regime_ids)}")  # fmt: skip
        return r

    def store(self, obs: Any, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray,
              infos: list[dict[str, Any]], new_obs: Any) -> None:  # fmt: skip
        """Store one vector step in SB3's convention (see the module doc)."""
        dones = np.asarray(dones, bool)
        if self.replay is None:
            self.make_replay(len(dones))
        assert self.replay is not None
        o, nxt = _obs_dict(obs, self.obs_keys), _obs_dict(new_obs, self.obs_keys)
        after = {k: v.copy() for k, v in nxt.items()}
        trunc = np.zeros(len(dones), bool)
        for i in np.flatnonzero(dones):
            term_obs = _obs_dict(infos[i]["terminal_observation"], self.obs_keys)
            for k in self.obs_keys:
                after[k][i] = term_obs[k]
            trunc[i] = bool(infos[i].get("TimeLimit.truncated", False))
        regimes = np.array([self._regime(info) for info in infos], np.int64)
        n_obj = o[self.obs_keys[-1]].shape[1]
        graphs = np.stack([np.asarray(info.get("local_graph", np.zeros((n_obj + 2, n_obj), bool)),
                                      bool) for info in infos])  # fmt: skip
        self.replay.add(o, after, np.asarray(actions), np.asarray(rewards, np.float32),
                        dones & ~trunc, trunc, np.ones(len(dones), bool), regimes, regimes,
                        graphs)  # fmt: skip
        for i in np.flatnonzero(dones):
            self.replay.add_bridge(int(i), {k: v[i] for k, v in after.items()},
                                   {k: v[i] for k, v in nxt.items()}, np.asarray(actions)[i],
                                   graphs[i], int(regimes[i]))  # fmt: skip
        self.stored += len(dones)
        self.since_train += len(dones)

    def _on_step(self) -> bool:
        loc = self.locals
        prev = getattr(self.model, "_last_original_obs", None)
        prev = self.model._last_obs if prev is None else prev  # type: ignore[attr-defined]
        actions = loc["clipped_actions"] if "clipped_actions" in loc else loc["actions"]
        self.store(prev, actions, loc["rewards"], loc["dones"], loc["infos"], loc["new_obs"])
        if self.stored >= self.learning_starts and self.since_train >= self.train_freq:
            self.since_train = 0
            self.train_world_model(self.gradient_steps)
        return True

    # ------------------------------------------------------------------ training
    def train_world_model(self, steps: int | None = None) -> dict[str, float]:
        """Run ``steps`` gradient steps (default ``gradient_steps``) on replayed windows;
        returns the figures of the last step (also recorded to the SB3 logger)."""
        if self.replay is None or self.replay.windows(self.seq_len) == 0:
            if self.replay is not None:
                self.replay.flush()  # early: make the open chunks sampleable
            if self.replay is None or self.replay.windows(self.seq_len) == 0:
                return {}
        model, start = self.world_model, time.perf_counter()
        was_training = model.training
        model.train()
        try:
            for _ in range(steps or self.gradient_steps):
                batch = self.replay.sample(self.batch_size, self.seq_len, self.rng)
                weight = self.lagrangian.value if model.config.sparse else 0.0
                terms, out = model.loss(batch, weight, self.gen)
                check_finite(terms)
                self.optimizer.zero_grad(set_to_none=True)
                terms.total.backward()
                clip_gradients(model, self.grad_clip, "world-model")
                self.optimizer.step()
                if model.config.sparse:
                    feed_lagrangian(self.lagrangian, terms)
                self.updates += 1
        finally:
            model.train(was_training)
        rate = (steps or self.gradient_steps) / max(time.perf_counter() - start, 1e-9)
        figures = _figures(terms, out.graph, batch, self.lagrangian, rate)
        figures["world_model/updates_per_s"] = figures.pop("time/steps_per_s")
        figures["world_model/updates"] = float(self.updates)
        figures["world_model/replay_steps"] = float(self.replay.size)
        self.last = figures
        if getattr(self, "model", None) is not None:  # inside an SB3 algorithm's learn
            for k, v in figures.items():
                self.logger.record(k, v)
        return figures

    def start_states(self, limit: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``limit`` stored observations (S, N, F) and their regime ids (S,):
        the start states of an :class:`~mbrl_causal.sb3.ImaginationVecEnv`."""
        if self.replay is None or "objects" not in self.obs_keys:
            raise ValueError("start_states needs an objects-mode replay with stored steps")
        obs, regs = [], []
        for chunk in reversed(self.replay.chunks):
            obs.append(chunk["objects"][:-1][chunk["valid"]])
            regs.append(chunk["regime"][chunk["valid"]])
            if sum(len(o) for o in obs) >= limit:
                break
        if not obs or sum(len(o) for o in obs) == 0:
            raise ValueError("the replay holds no finished chunk yet; store more steps first")
        return np.concatenate(obs)[:limit], np.concatenate(regs)[:limit]

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Optimiser, Lagrangian, generators, counters and the replay's file list (the
        replay's open chunks are flushed first)."""
        if self.replay is not None:
            self.replay.flush()
        return {
            "optimizer": self.optimizer.state_dict(), "lagrangian": self.lagrangian.state_dict(),
            "rng": self.rng.bit_generator.state, "gen": self.gen.get_state(),
            "counters": [self.stored, self.updates, self.since_train], "last": dict(self.last),
            "replay": None if self.replay is None else self.replay.state_dict(),
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any], num_envs: int) -> None:
        """Restore :meth:`state_dict` (the replay's chunk files must be in ``replay_dir``)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.lagrangian.load_state_dict(state["lagrangian"])
        self.rng.bit_generator.state = state["rng"]
        self.gen.set_state(state["gen"])
        self.stored, self.updates, self.since_train = state["counters"]
        self.last = dict(state["last"])
        replay = self.make_replay(num_envs)
        if state["replay"] is not None:
            replay.load_state_dict(state["replay"])

    def close(self) -> None:
        """Remove the temporary replay folder (if one was made)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
