"""Typed configuration of the Dreamer-style agent (``mbrl-causal train``).

:class:`AgentConfig` holds everything but the world model's architecture (that is
:class:`~mbrl_causal.world_models.config.WorldModelConfig`). Presets are YAML files in
``mbrl_causal/agents/presets/`` (``debug``, ``quick``, ``default``, ``efficient``: the
sample-efficient SPARTAN recipe measured on InterventionalPong-Neutral-v0); each is a mapping
``{agent: {...}, world_model: {...}}`` of overrides. ``--preset`` also accepts the path of
a user's own YAML file of the same shape. Every field says its unit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mbrl_causal.config import from_mapping
from mbrl_causal.world_models.config import _one_of

__all__ = [
    "ADAPT_TRIGGERS",
    "FIXED_ON_RESUME",
    "PRESETS",
    "REGIME_INFO",
    "AgentConfig",
    "load_preset",
]

PRESETS: tuple[str, ...] = ("debug", "quick", "default", "efficient")
REGIME_INFO: tuple[str, ...] = ("oracle", "none")
ADAPT_TRIGGERS: tuple[str, ...] = ("oracle", "surprise", "none")
PRESET_DIR = Path(__file__).parent / "presets"
FIXED_ON_RESUME: tuple[str, ...] = ("env", "obs", "world_model", "num_envs", "hidden",
                                    "chunk_len", "regime_info", "tau_reference")  # fmt: skip
"""Agent fields that cannot change on resume (networks, env, replay layout)."""


@dataclass
class AgentConfig:
    """The loop, the actor-critic, replay, adaptation and bookkeeping of one run."""

    env: str = "InterventionalPong-v0"
    """Registered env id (its own regime schedule applies; see ``switch_every``)."""
    obs: str = "objects"
    """World-model input: ``objects`` (features) or ``pixels`` (masked images)."""
    world_model: str = "spartan"
    """``spartan``, ``s2ssm``, ``dense-transformer`` or ``dense-ssm``."""
    switch_every: int = 0
    """Episodes between regime switches of the env's schedule (0: the id's own)."""
    num_envs: int = 8
    """Sub-envs of the native vector env that the agent acts in."""
    total_steps: int = 200_000
    """Env steps of the run (summed over sub-envs)."""
    prefill: int = 2_000
    """Env steps with uniform random actions before the first update."""
    train_ratio: float = 128.0
    """Replayed steps per env step (DreamerV3's replay ratio): one update of
    batch_size x seq_len steps every :attr:`steps_per_update` env steps. At 16 the world
    model never learns the ball's bounces and the agent does not learn Neutral Pong; at
    128 it does (docs/results/agent.md)."""
    batch_size: int = 16
    """Sequences per world-model batch."""
    seq_len: int = 64
    """Transitions per sequence."""
    horizon: int = 15
    """Imagination horizon H (steps)."""
    ac_updates: int = 1
    """Actor-critic updates per world-model update, each from fresh start states of the
    same batch (imagination is cheaper than more real data; the actor needs many steps)."""
    imag_starts: int = 256
    """Start states of the imagined rollouts, drawn from the batch's states."""
    gamma: float = 0.985
    """Discount per env step."""
    lambda_: float = 0.95
    """lambda of the lambda-returns."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critic."""
    wm_lr: float = 1e-3
    """Adam learning rate of the world model."""
    grad_clip: float = 100.0
    """Global gradient-norm clip of every optimiser."""
    entropy: float = 3e-3
    """Entropy bonus coefficient of the actor (per unit of normalised return)."""
    slow_critic_decay: float = 0.98
    """EMA decay of the slow (target) critic, updated every update."""
    slow_critic_weight: float = 1.0
    """Weight of the regulariser pulling the critic to the slow critic's values."""
    replay_critic_weight: float = 0.3
    """Weight of the critic's regression on lambda-returns of *real* replayed sequences
    (DreamerV3's replay value loss; 0: the critic learns from imagination only)."""
    return_norm_decay: float = 0.99
    """EMA decay of the 5th-95th percentile range of the returns (DreamerV3)."""
    hidden: int = 256
    """Hidden width of the actor and critic MLPs (two layers)."""
    replay_capacity: int = 1_000_000
    """Steps kept in replay (the oldest chunks are dropped beyond it)."""
    chunk_len: int = 256
    """Steps per replay chunk file (per sub-env)."""
    regime_info: str = "oracle"
    """``oracle``: the env's regime id picks the codebook slot (in training each id gets
    its own; in evaluation an unseen id is adapted to); ``none``: inferred."""
    adapt_trigger: str = "surprise"
    """``oracle`` (info['regime_switched']), ``surprise`` (CUSUM on the WM error), ``none``."""
    adapt_k: int = 32
    """Transitions of the new regime used to recall or fit a token."""
    adapt_fit_steps: int = 100
    """Adam steps fitting a new token (model frozen)."""
    adapt_ac_updates: int = 0
    """Actor-critic updates in imagination under a newly fitted token, right after the
    fit (world model frozen; starts: the 2 K states of the K gathered transitions); the
    policy then acts with the new token, also in ``evaluate``. 0 (the default): no such
    updates; in training the policy learns the new slot from replay as usual, and in
    ``evaluate`` (learning off) it acts with the best known slot's token while the world
    model uses the new one (README "Regimes and adaptation": measured, this recovered more
    often than 200 updates)."""
    recall_tolerance: float = 4.0
    """Recall the best known token if its MSE on the K transitions is <= this x that
    slot's running training MSE. 4: above the 95th percentile (3.45) of that ratio for
    windows of *known* regimes scored with their own token (README "Regimes and
    adaptation"); at 2, 21 % of them were taken for a new regime."""
    surprise_threshold: float = 8.0
    """CUSUM alarm level h (in standard deviations of the log prediction error)."""
    surprise_drift: float = 1.0
    """CUSUM allowance k per step (standard deviations)."""
    surprise_warmup: int = 200
    """Steps of error statistics per sub-env before the detector may fire."""
    log_every: int = 1_000
    """Env steps between TensorBoard / metrics.jsonl records."""
    checkpoint_every: int = 10_000
    """Env steps between checkpoints (and one at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept (the newest ones)."""
    eval_episodes: int = 3
    """Episodes per regime of the evaluation at the end of ``train`` (0: none)."""
    threads: int = 0
    """torch threads (0: leave torch's default)."""
    tau_reference: str = "warmup"
    """Where the sparsity Lagrangian's automatic tau comes from (sparse world models):
    ``warmup`` (tau_factor x the model's MSE at the end of its warm-up, then fixed) or
    ``dense`` (a dense twin of the world model learns from the same replay batches, one
    more world-model update per update; tau = tau_factor x its running MSE, set again at
    every update; objects mode only). As ``fit --set tau_reference``; docs/results/agent.md
    has what each gave."""

    def __post_init__(self) -> None:
        from mbrl_causal.world_models.config import OBS_SETTINGS, TAU_REFERENCES, WORLD_MODELS

        _one_of("world_model", self.world_model, WORLD_MODELS)
        _one_of("obs", self.obs, OBS_SETTINGS)
        _one_of("regime_info", self.regime_info, REGIME_INFO)
        _one_of("adapt_trigger", self.adapt_trigger, ADAPT_TRIGGERS)
        _one_of("tau_reference", self.tau_reference, TAU_REFERENCES)
        for k in ("num_envs", "total_steps", "batch_size", "seq_len", "horizon", "imag_starts",
                  "ac_updates", "hidden", "replay_capacity", "chunk_len", "adapt_k",
                  "adapt_fit_steps", "log_every", "checkpoint_every",
                  "keep_checkpoints"):  # fmt: skip
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be an int >= 1, got {v!r}")
        for k in ("prefill", "switch_every", "eval_episodes", "threads", "surprise_warmup",
                  "adapt_ac_updates"):  # fmt: skip
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{k} must be an int >= 0, got {v!r}")
        for k in ("train_ratio", "actor_lr", "critic_lr", "wm_lr", "grad_clip",
                  "recall_tolerance", "surprise_threshold"):  # fmt: skip
            if not getattr(self, k) > 0:
                raise ValueError(f"{k} must be > 0, got {getattr(self, k)!r}")
        for k in ("entropy", "slow_critic_weight", "replay_critic_weight", "surprise_drift"):
            if not getattr(self, k) >= 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)!r}")
        for k in ("gamma", "lambda_", "slow_critic_decay", "return_norm_decay"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k} must be in [0, 1], got {getattr(self, k)!r}")
        if self.chunk_len < self.seq_len + 1:
            raise ValueError(
                f"chunk_len ({self.chunk_len}) must exceed seq_len ({self.seq_len}): "
                "sequences are cut inside one chunk"
            )
        if self.replay_capacity < 2 * self.chunk_len * self.num_envs:
            raise ValueError(
                f"replay_capacity ({self.replay_capacity}) must hold at least two chunks per "
                f"sub-env (2 x chunk_len x num_envs = {2 * self.chunk_len * self.num_envs})"
            )

    @property
    def steps_per_update(self) -> int:
        """Env steps between updates: each update trains on batch_size x seq_len steps,
        so ``train_ratio`` = replayed steps / env steps (DreamerV3's "replay ratio")."""
        return max(1, round(self.batch_size * self.seq_len / self.train_ratio))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AgentConfig:
        """The agent config of a preset (name or YAML file) with ``overrides``."""
        agent, _ = load_preset(name)
        return from_mapping(cls, {**agent, **overrides}, "agent config")


def load_preset(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Overrides ``(agent, world_model)`` of a preset name or a YAML file path."""
    path = PRESET_DIR / f"{name}.yaml" if name in PRESETS else Path(name)
    if not path.is_file():
        raise ValueError(
            f"--preset must be one of {', '.join(PRESETS)} or a YAML file; got {name!r}"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"preset {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or set(data) - {"agent", "world_model"}:
        raise ValueError(
            f"preset {str(path)!r} must be a mapping with the keys agent and world_model"
        )
    agent, model = data.get("agent") or {}, data.get("world_model") or {}
    from_mapping(AgentConfig, agent, f"{path.name}: agent")  # validates early
    return dict(agent), dict(model)
