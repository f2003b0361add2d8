"""Typed configuration of the world models and of ``mbrl-causal fit``.

One dataclass per component (:class:`WorldModelConfig` for the network and its losses,
:class:`FitConfig` for data, training and evaluation); ``preset("debug")`` shrinks both
so that the tests finish in seconds. Every field says its unit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from mbrl_causal.world_models.sparsity import check_lambda_schedule

__all__ = [
    "CHANGEABLE_ON_RESUME",
    "OBS_SETTINGS",
    "PRESETS",
    "WORLD_MODELS",
    "FitConfig",
    "WorldModelConfig",
    "preset",
    "resumed_world_model_config",
    "stored_world_model_config",
]

WORLD_MODELS: tuple[str, ...] = ("spartan", "s2ssm", "dense-transformer", "dense-ssm")
TAU_REFERENCES: tuple[str, ...] = ("dense", "warmup")
OBS_SETTINGS: tuple[str, ...] = ("objects", "pixels")
SSM_BACKENDS: tuple[str, ...] = ("auto", "torch", "mamba_ssm")
SPARSITY_CONSTRAINTS: tuple[str, ...] = ("per_object", "total")
GATE_ACTION_KEYS: tuple[str, ...] = ("value", "type")
GATE_ESTIMATORS: tuple[str, ...] = ("straight_through", "score", "score_reach")
RECON_LOSSES: tuple[str, ...] = ("bce", "squared")
CHANGEABLE_ON_RESUME: tuple[str, ...] = (
    "lambda_min", "lambda_max", "lambda_schedule", "lambda_lr", "gate_explore",
    "gate_score_cap", "gate_temperature", "gate_logit_weight", "kl_weight", "recon_weight",
    "token_weight", "reward_weight", "cont_weight", "gate_detach", "mse_ema",
)  # fmt: skip
"""World-model fields that ``train --resume`` may change: the sparsity price's bounds,
schedule and step, the gates' training settings, the loss weights and the decay of the
MSE's moving average. None of them shapes
a parameter or a saved state, so the checkpoint loads unchanged and they act from the next
update. Everything else (sizes, the sparsity constraint's kind, tau, the warm-up) is
fixed once a run has started."""
PRESETS: tuple[str, ...] = ("default", "debug")


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass
class WorldModelConfig:
    """Architecture and losses of one world model (names as in ``--world-model``)."""

    name: str = "spartan"
    """``spartan``, ``s2ssm``, ``dense-transformer`` or ``dense-ssm``."""
    obs: str = "objects"
    """``objects`` (per-object features) or ``pixels`` (masked images through a conv VAE)."""
    d_model: int = 64
    """Token width inside the dynamics network."""
    n_layers: int = 3
    """Transformer layers (SPARTAN) or SlotSSM blocks (S2-SSM)."""
    n_heads: int = 4
    """Attention heads; the hard gate is shared by the heads of a layer."""
    mlp_hidden: int = 128
    """Hidden width of the per-token MLPs (and of the reward/continuation heads)."""
    d_state: int = 8
    """S2-SSM: state size of the selective scan per channel."""
    expand: int = 1
    """S2-SSM: inner width of the Mamba layer = expand * d_model."""
    d_conv: int = 4
    """S2-SSM: causal depthwise convolution width of the Mamba layer."""
    ssm_backend: str = "auto"
    """``auto`` (mamba_ssm kernels on CUDA if importable, else torch), ``torch``, ``mamba_ssm``."""
    latent_dim: int = 16
    """Pixels mode: VAE latent size per object (objects mode uses the 4 features as is)."""
    image_size: int = 32
    """Pixels mode: frame size in pixels (the env's render_size)."""
    kl_weight: float = 0.01
    """Pixels mode: weight of the VAE's KL term (nats per object)."""
    recon_weight: float = 1.0
    """Pixels mode: weight of the reconstruction term (``recon_loss``, summed per image)."""
    recon_loss: str = "bce"
    """Pixels mode: the VAE's reconstruction term, summed over each masked image's
    3 x H x W values in [0, 1]. ``bce``: binary cross-entropy against the decoder's logits
    (nats; the default). ``squared``: squared error of the sigmoid image (the only term
    before this option existed; files saved without the field load with ``bce``, which
    matters only if training goes on). With ``squared`` the VAE of a 1,500-step pixels fit
    never got past the blank image: its latents varied by about 1e-4 per entry and
    SPARTAN's graph was empty (docs/results/world-models.md)."""
    token_weight: float = 1.0
    """Weight of the next-token MSE (the dynamics' prediction term)."""
    gate_bias_init: float = 3.0
    """Initial gate logit bias: positive starts the graph fully open (logit units)."""
    gate_temperature: float = 2.0
    """Temperature of the binary Gumbel (logistic-noise) relaxation of the gates."""
    gate_action_key: str = "type"
    """Key of the action token in the gates: ``type`` (a learned vector: the gates of
    ``action -> object`` read the child's state, not the action's value) or ``value``
    (computed from the token like every parent; the behaviour before this option, and
    of saved files without it). See HardGate."""
    gate_logit_weight: float = 1.0
    """Weight of the penalty ``mean(relu(|raw| - 6)**2)`` on the gates' raw logits (summed
    over layers): keeps them inside the +-6 soft clip, where the gates still get gradients
    (0: off, the behaviour of saved files without this field; see HardGate.logits). On by
    default since it gave the better graphs on Interventional Pong in ``fit`` for both
    sparse models (SPARTAN two seeds, with a lower error too; S2-SSM one seed, error 6 %
    higher; docs/results/world-models.md); without it SPARTAN's raw logits ran to +-12 to
    +-95 within 3,000 fit steps and the gates froze. The agents use the same default."""
    gate_detach: bool = False
    """The gates compute their logits from detached tokens, so their straight-through
    gradient (and the logit penalty) trains the gates' own q, k and bias only, not the
    tokens that the prediction is made from. With gradients into the tokens (False, the
    behaviour of saved files without this field) SPARTAN with every gate open and no
    price predicted 1.39x worse than the dense transformer in ``fit``; with detached
    tokens 1.12x. Not the default: with the default price it was better on one seed and
    worse on the other, on both error and graph (docs/results/world-models.md)."""
    gate_score_cap: float = 20.0
    """A closed edge's attention score enters its gate's straight-through gradient
    clamped to the largest kept score plus this cap, so its weight in that gradient is at
    most e^cap times an open edge's (the forward pass is unchanged). 20: the
    value since the masked-softmax fix; lower caps hold the gates' raw logits in the
    agent (see GatedAttention and docs/results/agent.md)."""
    gate_estimator: str = "straight_through"
    """How the gates learn (sparse models, training only; evaluation thresholds the logits
    either way). ``straight_through`` (the default, and the behaviour of saved files
    without this field): the binary Gumbel sample with the relaxed sigmoid's gradient
    (SPARTAN's estimator). ``score``: a score-function (REINFORCE) estimate with two gate
    samples per batch, each the other's baseline, unbiased for the gradient of the
    expected objective (a last-layer gate is credited with its object's terms and the
    reward and continuation terms, an earlier one with the whole transition; see
    WorldModel._score_function_loss); two forward passes per step, and the network
    trains on the sampled hard graphs. ``score_reach``: the same with less variance and a
    small bias: a gate of token i is credited only with the prediction and price terms
    of the children that i reaches through the later layers' sampled gates (it ignores
    that the later gates' logits read token i). Neither combines with ``gate_explore``
    (its samples would not be the gates' own). In ``fit`` (``lambda_init=1e-5``,
    ``lambda_max=1e-4``, four seeds) ``score_reach`` gave a lower error than the default
    (within 1.2x of the dense baseline on all four seeds) and learned the point edge
    ``ball -> score``, but worse graphs on all four; ``score`` kept more false edges
    still (mean SHD 7.9). Neither is the default (docs/results/world-models.md)."""
    gate_explore: float = 0.0
    """In training, the chance that a gate the sample closed is opened anyway (each edge
    of each step independently; see HardGate). An edge closed early passes no
    information, so nothing learns what it would be worth and it stays closed: the paddle
    hits (``agent -> ball``, true on about 3 % of the steps) were closed on every step in
    the SB3 agent's SPARTAN model, with the ball's prediction unchanged when the paddle
    was moved even with every gate forced open. Exploration keeps the parent's token in
    front of the attention now and then. Measured (docs/results/sb3.md): under the usual
    price (lambda >= 0.01) it changed nothing there; with lambda held at 1e-4 to 1e-3 and
    0.3 the model kept that edge at every hit on 3 seeds of 4 (and those agents learned).
    The training graph (``causal/edges``, ``causal/shd``, ``causal/paths``) then counts the
    explored edges; evaluation and regime-token fits never explore. 0 (off) reproduces
    the earlier behaviour; in [0, 1)."""
    sparsity_constraint: str = "per_object"
    """``per_object``: one Lagrangian per child object, each on that object's own MSE (its
    lambda prices the paths into it); ``total``: one on the MSE averaged over objects."""
    tau: float | None = None
    """Constraint level E[MSE] <= tau of the sparsity Lagrangian (``per_object``: the same
    level for each object's own MSE); None: set automatically to ``tau_factor`` x the
    moving-average MSE (per object) at the end of ``sparsity_warmup``, or, with ``fit
    --set tau_reference=dense``, x a dense twin's moving-average MSE at every step."""
    tau_factor: float = 1.1
    """Slack over the warm-up MSE (or the dense twin's MSE) when ``tau`` is automatic."""
    sparsity_warmup: int = 300
    """Train steps with lambda = 0 before the Lagrangian starts (the model with every gate
    free: its MSE then is the warm-up rule's reference)."""
    lambda_init: float = 1e-4
    """Lambda when the Lagrangian starts (weight of one path of the path matrix); must lie
    within [lambda_min, lambda_max], so raise it with a higher lambda_min."""
    lambda_lr: float = 0.02
    """Step of log(lambda) per update, times clip((tau - mse_avg) / tau, -1, 1)."""
    lambda_min: float = 1e-7
    """Lower bound of lambda (it never reaches zero, so it can grow back quickly)."""
    lambda_max: float = 0.1
    """Upper bound of lambda."""
    lambda_schedule: list[Any] = field(default_factory=list)
    """Later bounds of lambda: ``[[N, lambda_min, lambda_max], ...]``, each replacing the
    bounds after N Lagrangian updates (world-model train steps, counted like
    ``sparsity_warmup``); lambda is clamped into them at once. Empty (the default):
    ``lambda_min`` and ``lambda_max`` throughout. Made for a price that starts low, so
    that an edge worth something only at rare events is kept while its worth is learned,
    and rises later to close the edges worth nothing: in the SB3 agent
    ``[[21000, 0.005, 0.01]]`` after ``lambda_min=1e-4 lambda_max=1e-3`` and
    ``gate_explore=0.3`` (with ``collect_steps=wm_updates=1000`` and ``prefill=2000``,
    update 21,000 falls at env step 22,000; docs/results/sb3.md). Example:
    ``--set "lambda_schedule=[[21000, 0.005, 0.01]]"``."""
    mse_ema: float = 0.98
    """Decay of the moving average of the MSE that drives lambda."""
    reward_weight: float = 1.0
    """Weight of the reward head's MSE."""
    cont_weight: float = 1.0
    """Weight of the continuation head's binary cross-entropy."""

    def __post_init__(self) -> None:
        _one_of("world_model", self.name, WORLD_MODELS)
        _one_of("obs", self.obs, OBS_SETTINGS)
        _one_of("ssm_backend", self.ssm_backend, SSM_BACKENDS)
        _one_of("sparsity_constraint", self.sparsity_constraint, SPARSITY_CONSTRAINTS)
        _one_of("gate_action_key", self.gate_action_key, GATE_ACTION_KEYS)
        _one_of("gate_estimator", self.gate_estimator, GATE_ESTIMATORS)
        _one_of("recon_loss", self.recon_loss, RECON_LOSSES)
        for k in (
            "d_model",
            "n_layers",
            "n_heads",
            "mlp_hidden",
            "d_state",
            "expand",
            "d_conv",
            "latent_dim",
            "gate_temperature",
            "tau_factor",
            "lambda_init",
            "lambda_max",
            "lambda_min",
            "lambda_lr",
        ):
            _positive(k, getattr(self, k))
        for k in (
            "kl_weight",
            "recon_weight",
            "gate_logit_weight",
            "gate_score_cap",
            "reward_weight",
            "cont_weight",
            "sparsity_warmup",
        ):
            _positive(k, getattr(self, k), allow_zero=True)
        if self.tau is not None:
            _positive("tau", self.tau, allow_zero=True)
        if not self.lambda_min <= self.lambda_init <= self.lambda_max:
            # Checked here too (SparsityLagrangian checks it again) so that a run is refused
            # before its directory is made.
            raise ValueError(
                "need lambda_min <= lambda_init <= lambda_max, got "
                f"{self.lambda_min}, {self.lambda_init}, {self.lambda_max}"
            )
        self.lambda_schedule = [list(e) for e in check_lambda_schedule(self.lambda_schedule)]
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads")
        if self.image_size not in (32, 64, 84):
            raise ValueError(f"image_size must be 32, 64 or 84, got {self.image_size}")
        if not 0 <= self.gate_explore < 1:
            raise ValueError(f"gate_explore must be in [0, 1), got {self.gate_explore}")
        if self.gate_estimator != "straight_through" and self.gate_explore > 0:
            raise ValueError(
                f"gate_estimator={self.gate_estimator!r} needs gate_explore=0 (explored gates "
                "are not samples of the gates' own probabilities), got "
                f"gate_explore={self.gate_explore}"
            )
        if not 0 <= self.mse_ema < 1:
            raise ValueError(f"mse_ema must be in [0, 1), got {self.mse_ema}")

    @property
    def sparse(self) -> bool:
        """True for the gated models (SPARTAN, S2-SSM), False for the dense baselines."""
        return not self.name.startswith("dense")

    @property
    def family(self) -> str:
        """``transformer`` or ``ssm``."""
        return "ssm" if self.name in ("s2ssm", "dense-ssm") else "transformer"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def stored_world_model_config(mapping: dict[str, Any]) -> WorldModelConfig:
    """The config of a saved model, run or checkpoint; fields added since it was written get
    the value that reproduces the old behaviour (``sparsity_constraint="total"``,
    ``gate_action_key="value"``, ``gate_logit_weight=0``, ``gate_detach=False``,
    ``gate_score_cap=20``)."""
    old = {"sparsity_constraint": "total", "gate_action_key": "value", "gate_logit_weight": 0.0,
           "gate_detach": False, "gate_score_cap": 20.0}  # fmt: skip
    return WorldModelConfig(**{**old, **mapping})


def resumed_world_model_config(
    saved: dict[str, Any], changes: dict[str, Any]
) -> tuple[WorldModelConfig, dict[str, Any]]:
    """The world-model config of a run resumed with ``changes`` (``--set`` on resume).

    Returns the validated config and the changes that differ from ``saved`` (as the config
    holds them: YAML's "5e-3" text is a number there). ``lambda_init`` only sets the price
    at the first update, long past on resume; when new bounds leave it outside them it is
    clamped into them (so that the config stays valid). The Lagrangian clamps lambda itself
    into the new bounds when it is loaded.

    Raises:
        ValueError: for a field not in :data:`CHANGEABLE_ON_RESUME` (naming the allowed
            ones), a value the config refuses, ``lambda_min > lambda_max``, or new bounds
            for a run with a ``lambda_schedule`` without a new schedule (the schedule's
            entries replace the bounds from their update on, so the new bounds would not
            act once an entry has).
    """
    bad = [k for k in changes if k not in CHANGEABLE_ON_RESUME]
    if bad:
        raise ValueError(
            f"--set {bad[0]} cannot change on resume; world-model fields allowed on resume: "
            f"{', '.join(CHANGEABLE_ON_RESUME)}"
        )
    from mbrl_causal.config import check_field

    old = stored_world_model_config(saved)
    where = "world-model config"
    typed = {k: check_field(WorldModelConfig, k, v, where) for k, v in changes.items()}
    mapping = {**old.to_dict(), **typed}
    low, high = mapping["lambda_min"], mapping["lambda_max"]
    if {"lambda_min", "lambda_max"} & typed.keys():
        if 0 < high < low:
            raise ValueError(f"lambda_min ({low}) must be <= lambda_max ({high})")
        if mapping["lambda_schedule"] and "lambda_schedule" not in typed:
            raise ValueError(
                f"this run has lambda_schedule={mapping['lambda_schedule']}, whose entries "
                "replace lambda_min and lambda_max from their update on; give "
                "--set lambda_schedule=... with the new bounds (lambda_schedule=[] drops it)"
            )
        if 0 < low <= high:
            mapping["lambda_init"] = min(max(mapping["lambda_init"], low), high)
    new = WorldModelConfig(**mapping)
    changed = {k: getattr(new, k) for k in typed if getattr(new, k) != getattr(old, k)}
    return new, changed


@dataclass
class FitConfig:
    """Data, training and evaluation of ``mbrl-causal fit``."""

    env: str = "InterventionalPong-v0"
    """Registered env id; its regime schedule is replaced by the regimes below."""
    regimes: str = "simple"
    """Training regimes: ``simple`` (0-6), ``all`` (0-10) or comma-separated ids/names."""
    data_steps: int = 50_000
    """Env steps of training data (split evenly over the regimes)."""
    eval_steps: int = 8_000
    """Env steps of held-out evaluation data (other seeds), split over the regimes."""
    num_envs: int = 8
    """Sub-envs per regime while collecting."""
    random_fraction: float = 0.5
    """Behaviour policy: probability of a uniform random action, else ball tracking."""
    train_steps: int = 3_000
    """Gradient steps of the main model."""
    batch_size: int = 32
    """Sequences per batch."""
    seq_len: int = 8
    """Steps per sequence (transitions)."""
    lr: float = 1e-3
    """Adam learning rate (cosine decay to 10% over train_steps)."""
    grad_clip: float = 10.0
    """Global gradient-norm clip."""
    log_every: int = 50
    """Steps between TensorBoard scalars."""
    few_shot_ks: list[int] = field(default_factory=lambda: [1, 2, 5, 10])
    """Numbers of adaptation trajectories for the few-shot curve."""
    few_shot_traj_len: int = 64
    """Steps per adaptation trajectory."""
    few_shot_steps: int = 150
    """Adam steps fitting the fresh regime token."""
    few_shot_reference: bool = True
    """Also train a reference model on the composite regimes' data (same train_steps)."""
    robustness: bool = True
    """Also train on the distractor env and measure the error change without distractors."""
    robustness_train_steps: int = 2_000
    """Gradient steps of the robustness model."""
    rollout_horizon: int = 10
    """Steps of the open-loop rollout error."""
    threads: int = 0
    """torch threads (0: leave torch's default)."""
    tau_reference: str = "warmup"
    """Sparse models with an automatic tau: ``warmup`` fixes tau from the model's own MSE
    at the end of ``sparsity_warmup`` (the rule of the agent and of the SB3 callback too);
    ``dense`` trains the dense baseline beside the model on the same batches and sets tau
    to ``tau_factor`` x its moving-average MSE at every step (one more forward and
    backward pass per step). ``dense`` gives the lower MSE but, measured at the default
    budget, the worse graphs (docs/results/world-models.md), so it is not the default."""

    def __post_init__(self) -> None:
        _one_of("tau_reference", self.tau_reference, TAU_REFERENCES)
        for k in (
            "data_steps",
            "eval_steps",
            "num_envs",
            "train_steps",
            "batch_size",
            "seq_len",
            "lr",
            "log_every",
            "few_shot_traj_len",
            "few_shot_steps",
            "robustness_train_steps",
            "rollout_horizon",
            "grad_clip",
        ):
            _positive(k, getattr(self, k))
        if not 0.0 <= self.random_fraction <= 1.0:
            raise ValueError(f"random_fraction must be in [0, 1], got {self.random_fraction}")
        if not self.few_shot_ks or any(
            isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.few_shot_ks
        ):
            raise ValueError(f"few_shot_ks must be positive ints, got {self.few_shot_ks!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_DEBUG_MODEL: dict[str, Any] = {
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 2,
    "mlp_hidden": 64,
    "d_state": 4,
    "latent_dim": 8,
    "sparsity_warmup": 10,
}
_DEBUG_FIT: dict[str, Any] = {
    "data_steps": 1_500,
    "eval_steps": 600,
    "num_envs": 4,
    "train_steps": 30,
    "batch_size": 8,
    "seq_len": 8,
    "log_every": 10,
    "few_shot_ks": [1, 2],
    "few_shot_traj_len": 16,
    "few_shot_steps": 5,
    "robustness_train_steps": 20,
    "rollout_horizon": 4,
}


def preset(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Overrides ``(model, fit)`` of a named preset (``default`` changes nothing)."""
    _one_of("preset", name, PRESETS)
    if name == "debug":
        return dict(_DEBUG_MODEL), dict(_DEBUG_FIT)
    return {}, {}
