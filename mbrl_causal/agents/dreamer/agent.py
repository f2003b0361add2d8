"""``CausalDreamer``: the Dreamer-style agent with a causal world model (SB3-shaped API).

The loop (``../shared/specs/agent.md``): act in a native vector env with the actor; store
every step in the on-disk replay; every ``steps_per_update`` env steps sample B sequences
of T transitions, update the world model (next-token loss + sparsity Lagrangian + reward
and continuation heads [+ VAE terms]) and then the actor-critic on rollouts imagined from
the batch's states; log, checkpoint. Regime tokens: see :mod:`..adaptation` and
:meth:`CausalDreamer._regime_step`.

>>> from mbrl_causal.agents import AgentConfig, CausalDreamer
>>> agent = CausalDreamer("InterventionalPong-Neutral-v0", "spartan",
...                       AgentConfig.preset("debug"), run_dir=None)   # doctest: +SKIP
>>> agent.learn(2_000).predict(obs, deterministic=True)               # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mbrl_causal.agents import run as R
from mbrl_causal.agents.adaptation import AdaptationEvent, Adapter, DetectionStats, SurpriseDetector
from mbrl_causal.agents.config import FIXED_ON_RESUME, AgentConfig
from mbrl_causal.agents.dreamer.actor_critic import (
    ActorCritic,
    ImaginationLoss,
    RealSequences,
    features,
)
from mbrl_causal.agents.replay import Replay
from mbrl_causal.config import from_mapping
from mbrl_causal.io import write_atomic
from mbrl_causal.world_models.config import (
    WorldModelConfig,
    resumed_world_model_config,
    stored_world_model_config,
)
from mbrl_causal.world_models.metrics import GraphStats
from mbrl_causal.world_models.model import SequenceBatch, WorldModel
from mbrl_causal.world_models.training import (
    DenseReference,
    check_finite,
    clip_gradients,
    feed_lagrangian,
    make_lagrangian,
)

__all__ = ["MAX_SLOTS", "CausalDreamer"]

MAX_SLOTS = 16  # codebook slots: known regimes plus room for adapted tokens
AGENT_FORMAT = "mbrl-causal-agent"


def make_env(config: AgentConfig, num_envs: int, **kwargs: Any) -> gym.vector.VectorEnv:
    """The native vector env of ``config.env`` (objects, or dict obs for pixels mode)."""
    import mbrl_causal.envs  # noqa: F401  (registers the ids)

    if config.env not in gym.registry:
        raise ValueError(f"unknown env id {config.env!r}; `mbrl-causal envs` lists them")
    extra: dict[str, Any] = {"obs_mode": "objects" if config.obs == "objects" else "dict"}
    if config.switch_every:
        extra["switch_every"] = config.switch_every
    extra.update(kwargs)
    return gym.make_vec(
        config.env, num_envs=num_envs, vectorization_mode="vector_entry_point", **extra
    )


def obs_arrays(obs: Any) -> dict[str, np.ndarray]:
    """The env's observation as the replay's arrays (objects, and pixels/masks)."""
    if isinstance(obs, dict):
        return {k: obs[k] for k in ("objects", "pixels", "masks") if k in obs}
    return {"objects": obs}


class CausalDreamer:
    """Dreamer-style agent whose world model is SPARTAN, S2-SSM or a dense baseline.

    Args:
        env: A registered env id (the agent builds its native vector env).
        world_model: A model name or a full :class:`WorldModelConfig`.
        config: The agent config (``AgentConfig.preset("quick")`` etc.).
        run_dir: Run directory (replay, logs, checkpoints); None: a temporary folder.
        seed: Seed of envs, weights, sampling and actions.
        show_progress: Live progress bar on stderr during :meth:`learn`.
    """

    def __init__(
        self,
        env: str = "InterventionalPong-v0",
        world_model: str | WorldModelConfig = "spartan",
        config: AgentConfig | None = None,
        run_dir: str | Path | None = None,
        seed: int = 0,
        show_progress: bool = False,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        cfg = dataclasses.replace(config or AgentConfig(), env=env)
        if isinstance(world_model, WorldModelConfig):
            wm_cfg = dataclasses.replace(world_model, obs=cfg.obs)
        else:
            wm_cfg = WorldModelConfig(name=world_model, obs=cfg.obs)
        cfg = dataclasses.replace(cfg, world_model=wm_cfg.name)
        self.config, self.wm_config, self.seed = cfg, wm_cfg, int(seed)
        self.changes: dict[str, Any] = {}
        """Agent fields changed on resume (:meth:`resume`), else empty."""
        self.wm_changes: dict[str, Any] = {}
        """World-model fields changed on resume (:meth:`resume`), else empty."""
        self.previous: dict[str, Any] = {}
        """The checkpoint's values of the fields changed on resume."""
        self.show_progress = show_progress
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self._tmp: Any = None
        if run_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mbrl-causal-")
            run_dir = self._tmp.name
        self.run_dir = Path(run_dir)
        self.env = make_env(cfg, cfg.num_envs, **(env_kwargs or {}))
        space = self.env.single_action_space
        self.discrete = isinstance(space, gym.spaces.Discrete)
        action_dim = int(space.n) if self.discrete else int(np.prod(space.shape or (1,)))  # type: ignore[attr-defined]
        space_o: Any = self.env.single_observation_space
        objects_space: Any = space_o["objects"] if isinstance(space_o, gym.spaces.Dict) else space_o
        self.n_objects = int(objects_space.shape[0])
        with torch.random.fork_rng():  # seeded weights without touching the caller's RNG
            torch.manual_seed(self.seed)
            self.model = WorldModel(wm_cfg, tuple(range(MAX_SLOTS)), action_dim, self.discrete)
            feat_dim = self.n_objects * self.model.latent_dim + wm_cfg.d_model
            self.ac = ActorCritic(feat_dim, action_dim, self.discrete, cfg)
        self.wm_opt = torch.optim.Adam(self.model.parameters(), lr=cfg.wm_lr)
        self.lagrangian = make_lagrangian(self.model)
        self.reference: DenseReference | None = None
        if cfg.tau_reference == "dense":
            self.reference = DenseReference(self.model, None, cfg.wm_lr, cfg.grad_clip, self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        obs_keys = ("objects",) if cfg.obs == "objects" else ("objects", "pixels", "masks")
        self.replay = Replay(self.run_dir / "replay", cfg.num_envs, cfg.chunk_len,
                             cfg.replay_capacity, obs_keys)  # fmt: skip
        n = cfg.num_envs
        self.detector = SurpriseDetector(n, cfg.surprise_threshold, cfg.surprise_drift,
                                         cfg.surprise_warmup)  # fmt: skip
        self.detection = DetectionStats(n)
        self.adapter = Adapter(n, cfg.adapt_k, cfg.adapt_fit_steps, cfg.recall_tolerance)
        self.slot_of: dict[int, int] = {}  # env regime id -> slot (regime_info oracle)
        self.used_slots: list[int] = [0] if cfg.regime_info == "none" else []
        self.env_slot = np.zeros(n, np.int64)
        self.steps = self.updates = self.episodes = 0
        self.since_update = 0
        self.events: list[AdaptationEvent] = []
        self.ep_return = np.zeros(n)
        self.ep_length = np.zeros(n, np.int64)
        self.finished: list[tuple[float, int, int, int]] = []  # return, length, regime, env
        self.learning = True  # False in evaluation: nothing stored, no new slot learned
        self.eval_graphs: GraphStats | None = None  # evaluation: graph figures per step
        self.eval_errors: list[float] = []
        self.mse_avg: float | None = None
        # running training MSE per slot (EMA 0.98 over updates that sample the slot): the
        # yardstick of a recall, since regimes differ in how predictable they are
        self.slot_mse: dict[int, float] = {}
        # evaluation: a freshly fitted slot -> the best known slot, whose token the policy
        # acts with (it cannot train on the new one; the world model uses the new one)
        self.policy_alias: dict[int, int] = {}
        self.last: dict[str, float] = {}
        self._obs: Any = None
        self._logger: R.RunLogger | None = None

    # ------------------------------------------------------------------ tokens
    def _slot_for(self, regime: int) -> int:
        """Slot of an env regime id under ``regime_info=oracle`` (allocating a new one)."""
        if regime not in self.slot_of:
            self.slot_of[regime] = self._free_slot() or 0
            self.used_slots.append(self.slot_of[regime])
        return self.slot_of[regime]

    def _free_slot(self) -> int | None:
        free = [s for s in range(MAX_SLOTS) if s not in self.used_slots]
        return free[0] if free else None

    def tokens(self, slots: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Codebook tokens (B, d) of slots (B,) (detached)."""
        return self.model.codebook.weight[torch.as_tensor(slots, dtype=torch.long)].detach()

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def _latents(self, obs: dict[str, np.ndarray]) -> torch.Tensor:
        """Object latents (B, N, L) of a batch of observations."""
        if self.config.obs == "objects":
            x: Any = torch.from_numpy(np.asarray(obs["objects"], np.float32))[:, None]
        else:
            x = {k: torch.from_numpy(np.asarray(obs[k]))[:, None] for k in ("pixels", "masks")}
        return self.model.encode(x)[:, 0]

    def _policy(self, z: torch.Tensor, slots: np.ndarray, deterministic: bool) -> np.ndarray:
        if self.policy_alias:  # fitted slots the policy never trained on (evaluation)
            slots = np.array([self.policy_alias.get(int(s), int(s)) for s in slots])
        with torch.no_grad():
            a = self.ac.act(features(z, self.tokens(slots)), self.gen, deterministic)
        return a.numpy()

    def _env_step(self, random_actions: bool = False) -> None:
        """One vector step: act, store, track episodes, detect and adapt."""
        obs = obs_arrays(self._obs)
        z = self._latents(obs)
        n = self.config.num_envs
        if random_actions:
            if self.discrete:
                actions = self.rng.integers(0, self.model.action_dim, n)
            else:
                actions = self.rng.uniform(-1, 1, (n, self.model.action_dim)).astype(np.float32)
        else:
            actions = self._policy(z, self.env_slot, False)
        slots = self.env_slot.copy()
        nxt, reward, term, trunc, info = self.env.step(actions)
        nobs = obs_arrays(nxt)
        valid = np.asarray(info["_local_graph"], bool)
        if self.learning:
            self.replay.add(obs, nobs, actions, reward.astype(np.float32), term, trunc, valid,
                            info["regime"], slots, info["local_graph"])  # fmt: skip
        errors, graph = self._prediction_errors(z, actions, slots, nobs)
        if self.eval_graphs is not None and valid.any():
            self.eval_graphs.add(graph[valid], torch.from_numpy(info["local_graph"][valid]))
            self.eval_errors.extend(errors[valid].tolist())
        self._track_episodes(reward, term, trunc, valid, info)
        self._regime_step(obs, actions, nobs, valid, errors, info)
        self._obs = nxt
        self.steps += n
        self.since_update += n

    @torch.no_grad()
    def _prediction_errors(
        self, z: torch.Tensor, actions: np.ndarray, slots: np.ndarray, nobs: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, torch.Tensor]:
        """One-step next-latent MSE per sub-env (the surprise signal; eval mode) and the
        predicted local graphs (E, N + 2, N)."""
        out, _ = self.model.step(z, torch.as_tensor(actions), self.tokens(slots))
        err = (out.next_latent[:, 0] - self._latents(nobs)).square().mean((1, 2)).numpy()
        return err, out.graph[:, 0]

    def _track_episodes(self, reward: np.ndarray, term: np.ndarray, trunc: np.ndarray,
                        valid: np.ndarray, info: dict[str, Any]) -> None:  # fmt: skip
        self.ep_return += np.where(valid, reward, 0.0)
        self.ep_length += valid
        for i in np.flatnonzero(term | trunc):
            self.finished.append((float(self.ep_return[i]), int(self.ep_length[i]),
                                  int(info["regime"][i]), int(i)))  # fmt: skip
            self.ep_return[i], self.ep_length[i] = 0.0, 0
            self.episodes += 1

    def _regime_step(self, obs: dict[str, np.ndarray], actions: np.ndarray,
                     nobs: dict[str, np.ndarray], valid: np.ndarray, errors: np.ndarray,
                     info: dict[str, Any]) -> None:  # fmt: skip
        """Detection bookkeeping, triggers, the gathering of K transitions, decisions.

        ``regime_info=oracle``: a sub-env's slot is its regime id's slot. In training a
        regime id never seen before gets a fresh slot of its own, learned online (the id
        is privileged information: two regimes never share a token because the untrained
        model could not tell them apart). In evaluation (``learning`` off) an unseen id, a
        held-out regime, starts the recall-or-fit procedure (``adapt_trigger=none``: the
        sub-env keeps its old token). ``regime_info=none``: the trigger (``oracle``:
        info["regime_switched"]; ``surprise``: the detector) starts it.
        """
        c = self.config
        switched = np.asarray(info["regime_switched"], bool)
        alarms = self.detector.update(errors, valid)
        for j in np.flatnonzero(switched):
            self.detection.switch(int(j), self.steps)
        for j in np.flatnonzero(alarms):
            self.detection.alarm(int(j), self.steps)
        self.detection.expire(self.steps)
        regimes = np.asarray(info["regime"])
        for i in range(c.num_envs):
            if c.regime_info == "oracle":
                r = int(regimes[i])
                if r in self.slot_of:
                    self.env_slot[i] = self.slot_of[r]
                    self.adapter.cancel(i)  # another sub-env adapted to it meanwhile
                elif not self.slot_of or self.learning:
                    self.env_slot[i] = self._slot_for(r)  # a fresh slot, learned online
                elif c.adapt_trigger == "none":
                    pass  # evaluation without adaptation: keep acting with the old token
                elif not self.adapter.pending(i):
                    self.adapter.trigger(i)
            else:
                fire = switched[i] if c.adapt_trigger == "oracle" else alarms[i]
                if c.adapt_trigger != "none" and fire:
                    self.adapter.trigger(i)
            if valid[i] and self.adapter.pending(i):
                pick = {k: v[i] for k, v in obs.items()}
                npick = {k: v[i] for k, v in nobs.items()}
                if self.adapter.add(i, pick if c.obs != "objects" else pick["objects"],
                                    actions[i],
                                    npick if c.obs != "objects" else npick["objects"]):  # fmt: skip
                    self._adapt(i, int(regimes[i]))

    def _adapt(self, i: int, true_regime: int) -> None:
        c = self.config
        batch = self.adapter.batch(i)
        if c.obs != "objects":
            batch = batch._replace(obs={k: v for k, v in batch.obs.items() if k != "objects"})
        known = sorted(set(self.used_slots))
        overall = self.mse_avg if self.mse_avg is not None else math.inf
        refs = {s: self.slot_mse.get(s, overall) for s in known}
        free = self._free_slot()
        kind, slot, best = self.adapter.decide(self.model, batch, known, free, refs,
                                               self.seed + len(self.events))  # fmt: skip
        ref, best_slot = self.adapter.last_reference, self.adapter.last_best
        if kind == "new":
            self.used_slots.append(slot)
            if c.adapt_ac_updates > 0:
                self._train_actor_on_token(batch, slot)
            elif not self.learning and best_slot >= 0:
                self.policy_alias[slot] = best_slot
        if c.regime_info == "oracle":
            self.slot_of[true_regime] = slot
        self.env_slot[i] = slot
        self.detector.reset(i)
        event = AdaptationEvent(self.steps, i, kind, slot, c.adapt_k, best, ref, true_regime,
                                best_slot)  # fmt: skip
        self.events.append(event)
        if self._logger is not None:
            self._logger.record("adaptation", self.steps, event.as_dict())

    def _train_actor_on_token(self, batch: SequenceBatch, slot: int) -> None:
        """``adapt_ac_updates`` actor-critic steps in imagination under the token of
        ``slot`` from the 2 K states of the adaptation batch (the world model frozen):
        step (3) of the spec's adaptation, "keep training", for the policy, which has
        never seen a freshly fitted token. Runs in evaluation too."""
        c = self.config
        with torch.no_grad():
            z = self.model.encode(batch.obs).flatten(0, 1)  # (2 K, N, L)
        tok = self.tokens(np.full(c.imag_starts, slot))
        for _ in range(c.adapt_ac_updates):
            pick = torch.randint(len(z), (c.imag_starts,), generator=self.gen)
            self.ac.update(self.model, z[pick], tok, self.gen)

    # ------------------------------------------------------------------ learning
    def _update(self) -> dict[str, float]:
        """One world-model step and one actor-critic step (raises on NaN/inf)."""
        c = self.config
        start = time.perf_counter()
        batch = self.replay.sample(c.batch_size, c.seq_len, self.rng)
        ref = self.reference.step(batch) if self.reference is not None else None
        self.model.train()
        weight = self.lagrangian.value if self.model.config.sparse else 0.0
        terms, out = self.model.loss(batch, weight, self.gen)
        check_finite(terms)
        self.wm_opt.zero_grad(set_to_none=True)
        terms.total.backward()
        clip_gradients(self.model, c.grad_clip, "world-model")
        self.wm_opt.step()
        terms = type(terms)(*(t.detach() for t in terms))
        mse = float(terms.mse)
        if self.model.config.sparse:
            feed_lagrangian(self.lagrangian, terms, ref)
        self.mse_avg = mse if self.mse_avg is None else 0.98 * self.mse_avg + 0.02 * mse
        with torch.no_grad():
            z_all = self.model.encode(batch.obs)  # (B, T + 1, N, L) states of the batch
            # objects mode: exactly the loss's error per sequence; pixels mode: against
            # the encoder after this step (one Adam step from the loss's targets)
            per_seq = (out.next_latent.detach() - z_all[:, 1:]).square().mean((1, 2, 3))
        for s in torch.unique(batch.regimes).tolist():
            m = float(per_seq[batch.regimes == s].mean())
            old = self.slot_mse.get(int(s))
            self.slot_mse[int(s)] = m if old is None else 0.98 * old + 0.02 * m
        z = z_all[:, :-1]
        b, t = z.shape[:2]
        tok = self.tokens(batch.regimes)[:, None].expand(b, t + 1, -1)
        real = RealSequences(torch.cat([z_all.flatten(2), tok], -1), batch.rewards, batch.conts)
        figures: list[ImaginationLoss] = []
        for _ in range(c.ac_updates):
            pick = torch.randperm(b * t, generator=self.gen)[: c.imag_starts]
            starts = z.reshape(b * t, *z.shape[2:])[pick]
            slots = batch.regimes[:, None].expand(b, t).reshape(-1)[pick]
            figures.append(self.ac.update(self.model, starts, self.tokens(slots), self.gen, real))
        ac = ImaginationLoss(*(float(np.mean(v)) for v in zip(*figures, strict=True)))
        self.updates += 1
        self.model.eval()  # acting, surprise and adaptation use deterministic gates
        stats = GraphStats()
        stats.add(out.graph, batch.graphs)
        g = stats.result()
        return {
            "world_model/loss": float(terms.total), "world_model/mse": mse,
            "world_model/reward_mse": float(terms.reward),
            "world_model/cont_bce": float(terms.cont),
            "world_model/recon": float(terms.recon), "world_model/kl": float(terms.kl),
            **self.lagrangian.summary(), "causal/paths": float(terms.sparsity),
            "causal/gate_excess": float(terms.gate_excess),
            "causal/edges": g["edges"], "causal/shd": g["shd"],
            **{f"actor_critic/{k}": v for k, v in ac._asdict().items()},
            **({} if ref is None else {"reference/mse": float(ref.mse)}),
            "time/update_s": time.perf_counter() - start,
        }  # fmt: skip

    def learn(self, total_steps: int) -> CausalDreamer:
        """Run the loop until ``total_steps`` env steps in all (counting earlier ones)."""
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        c = self.config
        resume_step = self.steps if self.steps else None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (self.run_dir / "config.yaml").is_file():  # a run started from Python
            R.write_config(self.run_dir, {"agent": self.config.to_dict(),
                                          "world_model": self.wm_config.to_dict(),
                                          "seed": self.seed})  # fmt: skip
        self._logger = logger = R.RunLogger(self.run_dir, total_steps, self.show_progress,
                                            resume_step)  # fmt: skip
        if self._obs is None:
            self._obs, _ = self.env.reset(seed=self.seed)
        self.model.eval()
        next_log = (self.steps // c.log_every + 1) * c.log_every
        next_ckpt = (self.steps // c.checkpoint_every + 1) * c.checkpoint_every
        window: dict[str, list[float]] = {}
        t0, s0, u0 = time.perf_counter(), self.steps, self.updates
        try:
            while self.steps < total_steps:
                self._env_step(random_actions=self.steps < c.prefill)
                while self.steps >= c.prefill and self.since_update >= c.steps_per_update:
                    self.since_update -= c.steps_per_update
                    if self.replay.windows(c.seq_len) == 0:
                        self.replay.flush()  # early: make the first chunks sampleable
                        if self.replay.windows(c.seq_len) == 0:
                            break
                    for k, v in self._update().items():
                        window.setdefault(k, []).append(v)
                if self.steps >= next_log or self.steps >= total_steps:
                    dt = max(time.perf_counter() - t0, 1e-9)
                    self._log(logger, window, (self.steps - s0) / dt, (self.updates - u0) / dt)
                    window, t0, s0, u0 = {}, time.perf_counter(), self.steps, self.updates
                    next_log += c.log_every
                logger.advance(self.steps, self._bar_text())
                if self.steps >= next_ckpt:
                    self.checkpoint()
                    next_ckpt += c.checkpoint_every
            self.checkpoint()
        finally:
            logger.close()
            self._logger = None
        return self

    def _log(self, logger: R.RunLogger, window: dict[str, list[float]], fps: float,
             ups: float) -> None:  # fmt: skip
        values: dict[str, float | None] = {k: float(np.mean(v)) for k, v in window.items()}
        recent = self.finished[-100:]
        det = self.detection
        values.update({
            "rollout/episode_return": float(np.mean([f[0] for f in recent])) if recent else None,
            "rollout/episode_length": float(np.mean([f[1] for f in recent])) if recent else None,
            "rollout/episodes": float(self.episodes),
            "adaptation/events": float(len(self.events)),
            "adaptation/new_tokens": float(sum(e.decision == "new" for e in self.events)),
            "adaptation/recalls": float(sum(e.decision == "recall" for e in self.events)),
            "adaptation/detection_delay": det.delay_mean,
            "adaptation/false_alarms": float(det.false_alarms),
            "adaptation/missed_switches": float(det.missed),
            "time/env_steps_per_s": fps,
            "time/updates_per_s": ups,
            "time/updates": float(self.updates),
        })  # fmt: skip
        self.last = {k: v for k, v in values.items() if v is not None}
        logger.scalars(self.steps, values)  # type: ignore[arg-type]

    def _bar_text(self) -> str:
        g = self.last.get
        ret = g("rollout/episode_return")
        return (
            f"fps {g('time/env_steps_per_s', 0):.0f} | return "
            f"{'-' if ret is None else f'{ret:+.2f}'} | "
            f"wm loss {g('world_model/loss', math.nan):.4f}"
            f" | edges {g('causal/edges', math.nan):.2f} | adaptations {len(self.events)}"
        )

    # ------------------------------------------------------------------ inference
    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
        regime: int | None = None,
    ) -> tuple[np.ndarray, None]:
        """Actions for one observation or a batch (SB3's signature; no recurrent state).

        The regime token is the slot of ``regime`` (an env regime id the agent knows), or
        else sub-env 0's current slot.
        """
        obs = obs_arrays(observation)
        single = np.asarray(obs["objects"]).ndim == 2
        if single:
            obs = {k: np.asarray(v)[None] for k, v in obs.items()}
        if regime is not None and regime in self.slot_of:
            slot = self.slot_of[regime]
        else:
            slot = int(self.env_slot[0])
        z = self._latents(obs)
        a = self._policy(z, np.full(len(z), slot), deterministic)
        return (a[0] if single else a), None

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(), "world_model_config": self.wm_config.to_dict(),
            "seed": self.seed, "model": self.model.state_dict(), "ac": self.ac.full_state(),
            "slot_of": dict(self.slot_of), "used_slots": list(self.used_slots),
            "env_slot": self.env_slot.copy(), "mse_avg": self.mse_avg,
            "slot_mse": dict(self.slot_mse),
        }  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write the agent (configs, world model, actor-critic, slots) atomically."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": AGENT_FORMAT, "version": 1, **self._state()}
        write_atomic(p, lambda t: torch.save(payload, t), ".pt")
        return p

    @classmethod
    def load(cls, path: str | Path, run_dir: str | Path | None = None) -> CausalDreamer:
        """An agent from :meth:`save`'s file (or a checkpoint) for :meth:`predict`."""
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"agent file {str(p)!r} does not exist")
        try:
            body = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ValueError(f"{str(p)!r} is not a readable agent file ({e})") from None
        formats = (AGENT_FORMAT, R.CHECKPOINT_FORMAT)
        if not isinstance(body, dict) or body.get("format") not in formats:
            raise ValueError(f"{str(p)!r} is not an mbrl-causal agent file")
        agent = cls._from_state(body, run_dir)
        return agent

    @classmethod
    def _from_state(
        cls,
        body: dict[str, Any],
        run_dir: str | Path | None,
        overrides: dict[str, Any] | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> CausalDreamer:
        cfg = AgentConfig(**{**body["config"], **(overrides or {})})
        agent = cls(cfg.env, stored_world_model_config(body["world_model_config"]), cfg, run_dir,
                    body["seed"], env_kwargs=env_kwargs)  # fmt: skip
        agent.model.load_state_dict(body["model"])
        agent.ac.load_full_state(body["ac"])
        agent.slot_of = {int(k): int(v) for k, v in body["slot_of"].items()}
        agent.used_slots = [int(s) for s in body["used_slots"]]
        if len(body["env_slot"]) == cfg.num_envs:
            agent.env_slot = np.asarray(body["env_slot"]).copy()
        agent.mse_avg = body["mse_avg"]
        # checkpoints from before per-slot figures: every slot is held to mse_avg until
        # training has sampled it again
        agent.slot_mse = {int(k): float(v) for k, v in body.get("slot_mse", {}).items()}
        return agent

    def checkpoint(self) -> Path:
        """Flush the replay and write a full checkpoint (everything :meth:`resume` needs)."""
        self.replay.flush()
        payload = {
            **self._state(),
            "wm_opt": self.wm_opt.state_dict(), "lagrangian": self.lagrangian.state_dict(),
            "reference": None if self.reference is None else self.reference.state_dict(),
            "counters": {"steps": self.steps, "updates": self.updates,
                         "episodes": self.episodes, "since_update": self.since_update},
            "rng": self.rng.bit_generator.state, "gen": self.gen.get_state(),
            "replay": self.replay.state_dict(),
            "env": pickle.dumps((self.env, self._obs, self.ep_return, self.ep_length)),
            "detector": self.detector.state_dict(), "detection": self.detection.state_dict(),
            "adapter": pickle.dumps(self.adapter.buffers),
            "events": [e.as_dict() for e in self.events], "finished": list(self.finished),
            "last": dict(self.last),
        }  # fmt: skip
        return R.save_checkpoint(self.run_dir, self.steps, payload, self.config.keep_checkpoints)

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        overrides: dict[str, Any] | None = None,
        show_progress: bool = False,
        world_model_overrides: dict[str, Any] | None = None,
    ) -> CausalDreamer:
        """Continue a run from its latest checkpoint (``overrides``: agent config fields;
        ``world_model_overrides``: fields of
        :data:`~mbrl_causal.world_models.config.CHANGEABLE_ON_RESUME`, such as the
        sparsity price's bounds or schedule).

        Fields that shape the networks or the replay cannot change on resume. The fields
        that differ from the checkpoint's are in the returned agent's ``changes`` (agent
        fields) and ``wm_changes`` (world-model fields), their checkpoint values in
        ``previous``.
        """
        rd = Path(run_dir)
        R.read_config(rd)
        body = R.read_checkpoint(R.latest_checkpoint(rd))
        for k in overrides or {}:
            if k in FIXED_ON_RESUME:
                raise ValueError(
                    f"{k} cannot change on resume (fixed: {', '.join(FIXED_ON_RESUME)})"
                )
        wm, wm_changes = resumed_world_model_config(
            body["world_model_config"], world_model_overrides or {}
        )
        changes = {k: v for k, v in (overrides or {}).items() if body["config"].get(k) != v}
        previous = {k: body["config"].get(k) for k in changes}
        wm_old = stored_world_model_config(body["world_model_config"]).to_dict()
        previous |= {k: wm_old.get(k) for k in wm_changes}
        body = {**body, "config": {**body["config"], **changes},
                "world_model_config": wm.to_dict()}  # fmt: skip
        from_mapping(AgentConfig, body["config"], "agent config")  # validate the overrides
        agent = cls._from_state(body, rd)
        agent.changes, agent.wm_changes, agent.previous = changes, wm_changes, previous
        agent.show_progress = show_progress
        agent.wm_opt.load_state_dict(body["wm_opt"])
        agent.lagrangian.load_state_dict(body["lagrangian"])
        if agent.reference is not None:  # tau_reference is fixed on resume
            if body.get("reference") is None:
                raise ValueError(
                    f"{rd} says tau_reference=dense but its checkpoint has no dense twin"
                )
            agent.reference.load_state_dict(body["reference"])
        cnt = body["counters"]
        agent.steps, agent.updates = cnt["steps"], cnt["updates"]
        agent.episodes, agent.since_update = cnt["episodes"], cnt["since_update"]
        agent.rng.bit_generator.state = body["rng"]
        agent.gen.set_state(body["gen"])
        agent.replay.load_state_dict(body["replay"])
        agent.env.close()
        agent.env, agent._obs, agent.ep_return, agent.ep_length = pickle.loads(body["env"])
        agent.detector.load_state_dict(body["detector"])
        agent.detection.load_state_dict(body["detection"])
        agent.adapter.buffers = pickle.loads(body["adapter"])
        agent.events = [AdaptationEvent(**e) for e in body["events"]]
        agent.finished = [tuple(f) for f in body["finished"]]  # type: ignore[misc]
        agent.last = body["last"]
        return agent

    def close(self) -> None:
        self.env.close()
        if self._tmp is not None:
            self._tmp.cleanup()
