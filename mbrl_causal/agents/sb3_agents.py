"""``mbrl-causal train --agent ppo|ppo-imagination|sac-imagination``: SB3 agents.

- ``ppo``: Stable-Baselines3 PPO on the real env (objects mode), the model-free baseline.
- ``ppo-imagination`` / ``sac-imagination`` (Dyna / MBPO style), per iteration:
  1. collect ``collect_steps`` real env steps with the current policy (uniform random
     actions during the first ``prefill`` steps) into the world model's on-disk replay
     (:class:`~mbrl_causal.sb3.WorldModelCallback`);
  2. fit the world model for ``wm_updates`` gradient steps;
  3. refresh the :class:`~mbrl_causal.sb3.ImaginationVecEnv`'s start states from the
     replay (each imagined episode keeps its start state's regime) and let the SB3
     algorithm learn for ``imag_steps`` imagined steps.
  ``sac-imagination`` uses continuous-action Pong (``Box(-1, 1, (1,))``).

The run directory is the Dreamer agent's (:mod:`.run`): ``config.yaml`` (``{algorithm,
agent, world_model, seed}``), ``tb/``, ``metrics.jsonl``, ``checkpoints/step_*.pt``
(atomic; SB3 model, world model, optimiser, Lagrangian, replay list, counters),
``replay/`` and, at the end, ``model.zip`` (+ ``model.world_model.pt``,
:func:`~mbrl_causal.sb3.save_sb3`). Everything is logged through one SB3 ``Logger``
whose output is the run's TensorBoard writer and ``metrics.jsonl``, at real env steps.
Resume restores the checkpoint; the real env restarts its episodes (reset with a new
seed) and SAC's replay of imagined transitions starts empty.
"""

from __future__ import annotations

import dataclasses
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mbrl_causal.agents import run as R
from mbrl_causal.agents.config import PRESET_DIR, PRESETS
from mbrl_causal.config import from_mapping
from mbrl_causal.world_models.config import (
    CHANGEABLE_ON_RESUME,
    WorldModelConfig,
    _one_of,
    resumed_world_model_config,
)

__all__ = ["AGENTS", "SB3_ALGORITHMS", "SB3Agent", "SB3AgentConfig", "load_sb3_preset"]

SB3_ALGORITHMS: tuple[str, ...] = ("ppo", "ppo-imagination", "sac-imagination")
AGENTS: tuple[str, ...] = ("dreamer", *SB3_ALGORITHMS)
FIXED_ON_RESUME: tuple[str, ...] = ("algorithm", "env", "world_model", "num_envs",
                                    "imag_envs", "hidden", "chunk_len")  # fmt: skip


@dataclass
class SB3AgentConfig:
    """One SB3 agent run (fields of other algorithms are ignored; units in each line)."""

    algorithm: str = "ppo-imagination"
    """``ppo``, ``ppo-imagination`` or ``sac-imagination``."""
    env: str = "InterventionalPong-v0"
    """Registered env id (objects mode; continuous actions for SAC)."""
    world_model: str = "spartan"
    """World model of the imagination agents (``spartan``, ``s2ssm``, ``dense-*``)."""
    switch_every: int = 0
    """Episodes between regime switches of the env's schedule (0: the id's own)."""
    num_envs: int = 8
    """Real sub-envs (SB3 DummyVecEnv)."""
    total_steps: int = 200_000
    """Real env steps of the run (summed over sub-envs)."""
    prefill: int = 2_000
    """Imagination agents: real steps with uniform random actions before the first fit."""
    collect_steps: int = 2_000
    """Imagination agents: real env steps per iteration."""
    wm_updates: int = 200
    """Imagination agents: world-model gradient steps per iteration."""
    batch_size: int = 16
    """Sequences per world-model batch."""
    seq_len: int = 16
    """Transitions per world-model sequence."""
    wm_lr: float = 1e-3
    """Adam learning rate of the world model."""
    grad_clip: float = 10.0
    """Gradient-norm clip of the world model."""
    imag_envs: int = 256
    """Imagined envs stepped together (one batched world-model call per step)."""
    horizon: int = 32
    """Imagined episode length before truncation (steps)."""
    imag_steps: int = 32_768
    """Imagined steps (summed over imagined envs) of SB3 learning per iteration."""
    learning_rate: float = 3e-4
    """Adam learning rate of the SB3 policy."""
    gamma: float = 0.99
    """Discount per step."""
    n_steps: int = 128
    """PPO: rollout steps per env per update."""
    ppo_batch_size: int = 512
    """PPO: minibatch size."""
    n_epochs: int = 4
    """PPO: epochs per update."""
    ent_coef: float = 0.01
    """PPO: entropy bonus coefficient."""
    sac_buffer: int = 200_000
    """SAC: replay size (imagined transitions)."""
    sac_batch_size: int = 256
    """SAC: minibatch size."""
    sac_learning_starts: int = 1_000
    """SAC: imagined steps with random actions before its first update."""
    sac_gradient_steps: int = 8
    """SAC: gradient steps per vector step of the imagined env."""
    hidden: int = 64
    """Width of the two hidden layers of the policy and value networks."""
    replay_capacity: int = 200_000
    """Real steps kept in the world model's replay."""
    chunk_len: int = 256
    """Steps per replay chunk file (per sub-env)."""
    log_every: int = 2_000
    """Real env steps between TensorBoard / metrics.jsonl records."""
    checkpoint_every: int = 10_000
    """Real env steps between checkpoints (and one at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept (the newest)."""
    eval_episodes: int = 3
    """Episodes per regime of the evaluation at the end of ``train`` (0: none)."""
    threads: int = 0
    """torch threads (0: leave torch's default)."""

    def __post_init__(self) -> None:
        from mbrl_causal.world_models.config import WORLD_MODELS

        _one_of("algorithm", self.algorithm, SB3_ALGORITHMS)
        _one_of("world_model", self.world_model, WORLD_MODELS)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            low = 0 if f.name in ("prefill", "switch_every", "eval_episodes", "threads") else 1
            if f.type in ("int", int) and (
                isinstance(v, bool) or not isinstance(v, int) or v < low
            ):
                raise ValueError(f"{f.name} must be an int >= {low}, got {v!r}")
        for k in ("wm_lr", "grad_clip", "learning_rate"):
            if not getattr(self, k) > 0:
                raise ValueError(f"{k} must be > 0, got {getattr(self, k)!r}")
        for k in ("gamma", "ent_coef"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k} must be in [0, 1], got {getattr(self, k)!r}")
        if self.chunk_len < self.seq_len + 1:
            raise ValueError(f"chunk_len ({self.chunk_len}) must exceed seq_len ({self.seq_len})")

    @property
    def imagination(self) -> bool:
        return self.algorithm != "ppo"

    @property
    def action_type(self) -> str:
        return "continuous" if self.algorithm.startswith("sac") else "discrete"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_sb3_preset(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Overrides ``(agent, world_model)`` of ``presets/sb3-<name>.yaml`` or a YAML file."""
    path = PRESET_DIR / f"sb3-{name}.yaml" if name in PRESETS else Path(name)
    if not path.is_file():
        raise ValueError(
            f"--preset must be one of {', '.join(PRESETS)} or a YAML file; got {name!r}"
        )
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or set(data) - {"agent", "world_model"}:
        raise ValueError(
            f"preset {str(path)!r} must be a mapping with the keys agent and world_model"
        )
    agent, model = dict(data.get("agent") or {}), dict(data.get("world_model") or {})
    from_mapping(SB3AgentConfig, agent, f"{path.name}: agent")
    return agent, model


def _run_log_format(logger: R.RunLogger) -> Any:
    """An SB3 ``KVWriter`` into the run's :class:`~.run.RunLogger` (TensorBoard + jsonl)."""
    from stable_baselines3.common.logger import KVWriter

    class _RunLogFormat(KVWriter):
        def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any],
                  step: int = 0) -> None:  # fmt: skip
            number = (int, float, np.number)
            values = {k: float(v) for k, v in key_values.items()
                      if isinstance(v, number) and not isinstance(v, bool)}  # fmt: skip
            logger.scalars(step, values)

        def close(self) -> None:
            pass

    return _RunLogFormat()


def _real_env(cfg: SB3AgentConfig, num_envs: int, seed: int, **kwargs: Any) -> Any:
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_vec_env

    import mbrl_causal.envs  # noqa: F401

    if cfg.env not in gym.registry:
        raise ValueError(f"unknown env id {cfg.env!r}; `mbrl-causal envs` lists them")
    env_kwargs: dict[str, Any] = {"obs_mode": "objects", "action_type": cfg.action_type, **kwargs}
    if cfg.switch_every:
        env_kwargs["switch_every"] = cfg.switch_every
    return make_vec_env(cfg.env, n_envs=num_envs, seed=seed, env_kwargs=env_kwargs)


class SB3Agent:
    """One SB3 agent run (see the module doc); SB3-shaped ``learn`` / ``predict``."""

    def __init__(self, config: SB3AgentConfig, wm_config: WorldModelConfig, run_dir: str | Path,
                 seed: int = 0, show_progress: bool = False) -> None:  # fmt: skip
        from mbrl_causal.envs.regimes import REGIMES
        from mbrl_causal.sb3 import ImaginationVecEnv, WorldModelCallback
        from mbrl_causal.world_models.model import WorldModel

        c = self.config = config
        self.wm_config, self.seed, self.show_progress = wm_config, int(seed), show_progress
        self.wm_changes: dict[str, Any] = {}
        """World-model fields changed on resume (:meth:`from_checkpoint`), else empty."""
        self.run_dir = Path(run_dir)
        if c.threads:
            torch.set_num_threads(c.threads)
        self.real = _real_env(c, c.num_envs, self.seed)
        self._obs: Any = None
        self.rng = np.random.default_rng(self.seed)
        self.steps = self.iterations = self.episodes = 0
        self._logged = -1
        self.finished: list[tuple[float, int]] = []
        self.last: dict[str, float] = {}
        self.model: Any = None
        self.storage: Any = None
        self.imag: Any = None
        if c.imagination:
            space = self.real.action_space
            discrete = c.action_type == "discrete"
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                self.model = WorldModel(wm_config, tuple(r.id for r in REGIMES),
                                        int(space.n) if discrete else 1, discrete)  # fmt: skip
            self.storage = WorldModelCallback(
                self.model, batch_size=c.batch_size, seq_len=c.seq_len, lr=c.wm_lr,
                grad_clip=c.grad_clip, replay_dir=self.run_dir / "replay",
                replay_capacity=c.replay_capacity, chunk_len=c.chunk_len, seed=self.seed,
            )  # fmt: skip
            self.storage.make_replay(c.num_envs)
            first = np.asarray(self.real.reset())
            self.imag = ImaginationVecEnv(self.model, first, c.imag_envs, c.horizon,
                                          regime=0, seed=self.seed)  # fmt: skip
        self.algo = self._make_algo()

    def _make_algo(self) -> Any:
        from stable_baselines3 import PPO, SAC

        c = self.config
        env = self.imag if c.imagination else self.real
        net = {"net_arch": [c.hidden, c.hidden]}
        if c.algorithm == "sac-imagination":
            return SAC("MlpPolicy", env, learning_rate=c.learning_rate, gamma=c.gamma,
                       buffer_size=c.sac_buffer, batch_size=c.sac_batch_size,
                       learning_starts=c.sac_learning_starts,
                       gradient_steps=c.sac_gradient_steps, seed=self.seed,
                       policy_kwargs=net)  # fmt: skip
        batch = min(c.ppo_batch_size, c.n_steps * env.num_envs)  # no truncated minibatch
        return PPO("MlpPolicy", env, learning_rate=c.learning_rate, gamma=c.gamma,
                   n_steps=c.n_steps, batch_size=batch, n_epochs=c.n_epochs,
                   ent_coef=c.ent_coef, seed=self.seed, policy_kwargs=net)  # fmt: skip

    # ------------------------------------------------------------------ acting
    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:  # fmt: skip
        """The SB3 policy's actions (SB3's signature)."""
        return self.algo.predict(observation, state, episode_start, deterministic)

    def _track(self, infos: list[dict[str, Any]]) -> None:
        for info in infos:
            if "episode" in info:  # SB3's Monitor: the real episode's return and length
                self.finished.append((float(info["episode"]["r"]), int(info["episode"]["l"])))
                self.episodes += 1

    def _collect(self, n: int) -> None:
        c = self.config
        if self._obs is None:
            self._obs = self.real.reset()
        for _ in range(math.ceil(n / c.num_envs)):
            if self.steps < c.prefill:
                if c.action_type == "discrete":
                    actions = self.rng.integers(0, 3, c.num_envs)
                else:
                    actions = self.rng.uniform(-1, 1, (c.num_envs, 1)).astype(np.float32)
            else:
                actions, _ = self.algo.predict(self._obs, deterministic=False)
            new_obs, rewards, dones, infos = self.real.step(actions)
            self.storage.store(self._obs, actions, rewards, dones, infos, new_obs)
            self._track(infos)
            self._obs = new_obs
            self.steps += c.num_envs

    # ------------------------------------------------------------------ learning
    def learn(self, total_steps: int) -> SB3Agent:
        """Run until ``total_steps`` real env steps in all (counting earlier ones)."""
        from stable_baselines3.common.logger import Logger

        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (self.run_dir / "config.yaml").is_file():
            R.write_config(self.run_dir, self._config_record())
        log = R.RunLogger(self.run_dir, total_steps, self.show_progress,
                          self.steps if self.steps else None)  # fmt: skip
        self.algo.set_logger(Logger(None, [_run_log_format(log)]))
        c = self.config
        self._next_log = (self.steps // c.log_every + 1) * c.log_every
        self._next_ckpt = (self.steps // c.checkpoint_every + 1) * c.checkpoint_every
        self._t0, self._s0, self._i0 = time.perf_counter(), self.steps, self._imagined()
        try:
            if c.imagination:
                self._learn_imagination(total_steps, log)
            else:
                self._learn_real(total_steps, log)
            if self._logged != self.steps:
                self._log(log)
            self.checkpoint()
            self._save_final()
        finally:
            log.close()
        return self

    def _imagined(self) -> int:
        return int(self.algo.num_timesteps) if self.config.imagination else 0

    def _after_steps(self, log: R.RunLogger) -> None:
        if self.steps >= self._next_log:
            self._log(log)
            self._next_log = (self.steps // self.config.log_every + 1) * self.config.log_every
        if self.steps >= self._next_ckpt:
            self.checkpoint()
            self._next_ckpt += self.config.checkpoint_every
        log.advance(self.steps, self._bar_text())

    def _learn_real(self, total: int, log: R.RunLogger) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        agent = self

        class _Loop(BaseCallback):
            def _on_step(self) -> bool:
                agent.steps = int(self.model.num_timesteps)
                agent._track(self.locals["infos"])
                agent._after_steps(log)
                return True

        self.algo.learn(total - self.steps, callback=_Loop(), reset_num_timesteps=False,
                        log_interval=None)  # type: ignore[arg-type]  # fmt: skip

    def _learn_imagination(self, total: int, log: R.RunLogger) -> None:
        c = self.config
        while self.steps < total:
            n = c.prefill - self.steps if self.steps < c.prefill else c.collect_steps
            self._collect(min(max(n, c.num_envs), total - self.steps))
            for k, v in self.storage.train_world_model(c.wm_updates).items():
                self.algo.logger.record(k, v)
            states, regimes = self.storage.start_states()
            self.imag.set_start_states(states, regimes)
            self.imag.set_regime("start")
            self.algo._last_obs = self.imag.reset()  # imagination restarts from real states
            self.algo._last_episode_starts = np.ones(c.imag_envs, bool)
            self.algo.learn(c.imag_steps, reset_num_timesteps=False,
                            log_interval=None)  # type: ignore[arg-type]  # fmt: skip
            self.iterations += 1
            self._after_steps(log)

    def _log(self, log: R.RunLogger) -> None:
        dt = max(time.perf_counter() - self._t0, 1e-9)
        recent = self.finished[-100:]
        values: dict[str, float | None] = {
            "rollout/episode_return": float(np.mean([f[0] for f in recent])) if recent else None,
            "rollout/episode_length": float(np.mean([f[1] for f in recent])) if recent else None,
            "rollout/episodes": float(self.episodes),
            "time/env_steps_per_s": (self.steps - self._s0) / dt,
        }
        if self.config.imagination:
            ir = self.imag.episode_returns
            values.update({
                "imagination/episode_return": float(np.mean(ir)) if ir else None,
                "imagination/episode_length":
                    float(np.mean(self.imag.episode_lengths)) if ir else None,
                "imagination/steps": float(self._imagined()),
                "imagination/iterations": float(self.iterations),
                "time/imagined_steps_per_s": (self._imagined() - self._i0) / dt,
            })  # fmt: skip
        self._t0, self._s0, self._i0 = time.perf_counter(), self.steps, self._imagined()
        self._logged = self.steps
        for k, v in values.items():
            if v is not None:
                self.algo.logger.record(k, v)
        self.last = {**self.last, **{k: v for k, v in values.items() if v is not None}}
        self.algo.logger.dump(self.steps)

    def _bar_text(self) -> str:
        ret = self.last.get("rollout/episode_return")
        text = f"{self.config.algorithm} | return {'-' if ret is None else f'{ret:+.2f}'}"
        if self.storage is not None and self.storage.last:
            text += f" | wm mse {self.storage.last['world_model/mse']:.2e}"
        return text

    # ------------------------------------------------------------------ persistence
    def _config_record(self) -> dict[str, Any]:
        return {"algorithm": self.config.algorithm, "agent": self.config.to_dict(),
                "world_model": self.wm_config.to_dict(), "seed": self.seed}  # fmt: skip

    def checkpoint(self) -> Path:
        """Write ``checkpoints/step_<steps>.pt`` atomically (everything resume needs)."""
        buf = io.BytesIO()
        self.algo.save(buf)
        payload = {
            **self._config_record(), "sb3": buf.getvalue(),
            "world_model_state": None if self.model is None else self.model.state_dict(),
            "storage": None if self.storage is None else self.storage.state_dict(),
            "counters": {"steps": self.steps, "iterations": self.iterations,
                         "episodes": self.episodes},
            "finished": list(self.finished), "rng": self.rng.bit_generator.state,
            "last": dict(self.last),
        }  # fmt: skip
        return R.save_checkpoint(self.run_dir, self.steps, payload,
                                 self.config.keep_checkpoints)  # fmt: skip

    def _save_final(self) -> None:
        from mbrl_causal.sb3 import save_sb3

        if self.model is not None:
            save_sb3(self.algo, self.run_dir / "model.zip", self.model)
        else:
            from mbrl_causal.io import write_atomic

            write_atomic(self.run_dir / "model.zip", lambda t: self.algo.save(t), ".zip")

    @classmethod
    def from_checkpoint(
        cls,
        body: dict[str, Any],
        run_dir: str | Path,
        overrides: dict[str, Any] | None = None,
        world_model_overrides: dict[str, Any] | None = None,
    ) -> SB3Agent:
        """The agent of a checkpoint (``overrides``: agent fields; ``world_model_overrides``:
        fields of :data:`~mbrl_causal.world_models.config.CHANGEABLE_ON_RESUME`; both
        validated, the world-model ones that changed in the agent's ``wm_changes``)."""
        cfg = from_mapping(SB3AgentConfig, {**body["agent"], **(overrides or {})}, "agent config")
        wm, wm_changes = resumed_world_model_config(body["world_model"],
                                                    world_model_overrides or {})  # fmt: skip
        agent = cls(cfg, wm, run_dir, body["seed"])
        agent.wm_changes = wm_changes
        algo_cls = type(agent.algo)
        env = agent.imag if cfg.imagination else agent.real
        agent.algo = algo_cls.load(io.BytesIO(body["sb3"]), env=env, device="cpu")
        if agent.model is not None:
            agent.model.load_state_dict(body["world_model_state"])
            agent.storage.load_state_dict(body["storage"], cfg.num_envs)
        cnt = body["counters"]
        agent.steps, agent.iterations, agent.episodes = (cnt["steps"], cnt["iterations"],
                                                         cnt["episodes"])  # fmt: skip
        agent.finished = [tuple(f) for f in body["finished"]]  # type: ignore[misc]
        agent.rng.bit_generator.state = body["rng"]
        agent.last = dict(body["last"])
        if cfg.imagination and agent.steps:
            agent.imag.set_start_states(*agent.storage.start_states())
        agent.real.seed(agent.seed + agent.steps)  # resumed real episodes start afresh
        return agent

    def close(self) -> None:
        self.real.close()
        if self.imag is not None:
            self.imag.close()


# ---------------------------------------------------------------------- the command
def resolve_sb3(req: Any, algorithm: str) -> tuple[SB3AgentConfig, WorldModelConfig]:
    """Preset, then options, then ``--set`` (agent or world-model fields)."""
    for flag, value in (("--regime-info", req.regime_info), ("--adapt-trigger", req.adapt_trigger)):
        if value is not None:
            raise ValueError(f"{flag} applies to --agent dreamer only (the SB3 agents take "
                             "the regime from the data)")  # fmt: skip
    if req.obs not in (None, "objects"):
        raise ValueError(f"--obs must be one of objects with --agent {algorithm}, got {req.obs!r}")
    if req.preset == "efficient" and algorithm != "ppo-imagination":
        others = ", ".join(p for p in PRESETS if p != "efficient")
        raise ValueError(f"--preset efficient is made for --agent dreamer and ppo-imagination, "
                         f"not {algorithm}; use one of {others} or a YAML file")  # fmt: skip
    agent, model = load_sb3_preset(req.preset or "default")
    options = {"env": req.env, "world_model": req.world_model, "total_steps": req.steps}
    agent.update({k: v for k, v in options.items() if v is not None}, algorithm=algorithm)
    from mbrl_causal.agents.train import apply_overrides

    agent_fields = {f.name for f in dataclasses.fields(SB3AgentConfig)} - {"algorithm"}
    apply_overrides(req.overrides, agent, model, agent_fields)
    cfg = from_mapping(SB3AgentConfig, agent, "agent config")
    wm = from_mapping(WorldModelConfig, {**model, "name": cfg.world_model, "obs": "objects"},
                      "world-model config")  # fmt: skip
    return cfg, wm


def _resume(req: Any) -> SB3Agent:
    run_dir = Path(req.resume)
    given = {"--env": req.env, "--world-model": req.world_model, "--obs": req.obs,
             "--preset": req.preset, "--logdir": req.logdir}  # fmt: skip
    refused = [k for k, v in given.items() if v is not None]
    if refused:
        raise ValueError(f"{', '.join(refused)} cannot be given with --resume: the run keeps "
                         "its config (allowed on resume: --steps, --set of agent fields except "
                         f"{', '.join(FIXED_ON_RESUME)}, and --set of the world-model fields "
                         f"{', '.join(CHANGEABLE_ON_RESUME)})")  # fmt: skip
    from mbrl_causal.agents.train import (
        check_steps_left,
        keep_resume_changes,
        resume_record,
        split_resume_overrides,
    )

    over, wm_over = split_resume_overrides(
        req.overrides, set(SB3AgentConfig.__dataclass_fields__), FIXED_ON_RESUME
    )
    if req.steps is not None:
        over["total_steps"] = req.steps
    body = R.read_checkpoint(R.latest_checkpoint(run_dir))
    _, wm_changes = resumed_world_model_config(body["world_model"], wm_over)  # checks them
    if wm_changes:
        if body["world_model_state"] is None:
            raise ValueError(
                f"--set {next(iter(wm_changes))}: this {body['algorithm']} run has no world "
                "model (world-model fields apply to ppo-imagination and sac-imagination)"
            )
        total = over.get("total_steps", body["agent"]["total_steps"])
        check_steps_left(body["counters"]["steps"], total, wm_changes)
    changed = {k: v for k, v in over.items() if body["agent"].get(k) != v}
    agent = SB3Agent.from_checkpoint(body, run_dir, changed, wm_over)
    agent.show_progress = req.show_progress
    changed.update(agent.wm_changes)
    kept = True
    if changed:
        print(f"resume: applied overrides {changed}", file=sys.stderr)
        kept = keep_resume_changes(agent.steps, agent.config.total_steps)
        if kept:
            R.write_config(run_dir, agent._config_record())
    R.append_record(run_dir, "resume", agent.steps, resume_record(changed, kept))
    print(f"resume: {run_dir} from env step {agent.steps}", file=sys.stderr)
    return agent


def train_sb3_command(req: Any, algorithm: str) -> None:
    """``mbrl-causal train --agent ppo|ppo-imagination|sac-imagination`` (or its resume)."""
    if req.resume:
        agent = _resume(req)
    else:
        cfg, wm = resolve_sb3(req, algorithm)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(req.logdir or f"runs/{cfg.env}-{algorithm}-{stamp}")
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"--logdir {str(run_dir)!r} exists and is not a folder")
        if run_dir.is_dir() and R.checkpoint_paths(run_dir):
            raise ValueError(f"{str(run_dir)!r} already holds a run; continue it with --resume "
                             f"{run_dir} or choose another --logdir")  # fmt: skip
        agent = SB3Agent(cfg, wm, run_dir, req.seed, req.show_progress)
    cfg = agent.config
    try:
        if agent.steps < cfg.total_steps:
            agent.learn(cfg.total_steps)
    finally:
        agent.close()
    print(f"trained {agent.steps} real env steps ({cfg.algorithm}, {agent.episodes} episodes, "
          f"{agent._imagined()} imagined steps); run directory {agent.run_dir}")  # fmt: skip
    if req.evaluate and cfg.eval_episodes:
        from mbrl_causal.agents.sb3_evaluate import evaluate_sb3_run
        from mbrl_causal.agents.train import evaluate_and_print

        evaluate_and_print(agent.run_dir, cfg.env, cfg.eval_episodes, evaluate_sb3_run,
                           "eval.json, summary.md")  # fmt: skip
