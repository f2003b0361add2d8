"""Training and evaluation loops of the world models (infrastructure, not method).

:func:`train` runs the optimiser and the sparsity Lagrangian with a progress bar and
TensorBoard scalars; :func:`evaluate` computes every figure of a model on held-out data;
:func:`choose_threshold` picks the dense baselines' attention threshold on validation
data. TensorBoard keys (all means over the logged step's batch):

- ``world_model/loss``: the objective; ``world_model/mse``: next-latent MSE (objects mode:
  squared error per object feature, features scaled to about [-1, 1]);
  ``world_model/reward_mse`` (reward units squared); ``world_model/cont_bce`` (nats);
  ``world_model/recon`` (pixels: the reconstruction term summed per masked image, binary
  cross-entropy in nats, or the squared error with ``recon_loss=squared``) and
  ``world_model/kl`` (pixels: nats per object);
- ``causal/lambda`` (price of one path), ``causal/tau`` (MSE constraint level); with
  per-object constraints both are means over the child objects;
  ``causal/paths`` (paths per transition in the object rows of the path matrix),
  ``causal/gate_excess`` (mean of relu(|raw logit| - 6)^2 over gate entries, summed over
  layers, logit units squared: how far the gates ran past their soft clip),
  ``causal/edges`` and ``causal/shd`` (predicted edges and SHD per transition against the
  env's local graphs, gates sampled as in training);
- ``time/steps_per_s``: gradient steps per second of wall time;
- with a dense reference (``train(..., reference=True)``; ``fit --set
  tau_reference=dense``, objects mode only): ``reference/mse`` (the dense twin's
  next-step MSE per object feature on the same batch, the unit of ``world_model/mse``);
  ``causal/tau`` then follows ``tau_factor`` x its moving average.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mbrl_causal.world_models.config import WorldModelConfig
from mbrl_causal.world_models.data import TransitionData
from mbrl_causal.world_models.metrics import GraphStats
from mbrl_causal.world_models.model import LossTerms, SequenceBatch, WorldModel
from mbrl_causal.world_models.sparsity import ObjectLagrangians, SparsityLagrangian

Lagrangian = SparsityLagrangian | ObjectLagrangians

__all__ = [
    "DENSE_TWIN",
    "DenseReference",
    "NonFiniteLoss",
    "check_dense_reference",
    "choose_threshold",
    "clip_gradients",
    "evaluate",
    "feed_lagrangian",
    "make_lagrangian",
    "train",
]

THRESHOLDS = (0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class NonFiniteLoss(FloatingPointError, RuntimeError):
    """A loss term (or the gradient of finite ones) became NaN or inf; the update was not
    applied. A ``FloatingPointError``, like the actor-critic's refusals, so the command
    line reports either in one line."""


def make_lagrangian(model: WorldModel) -> Lagrangian:
    """The Lagrangian configured by the model's config (per object or on the total MSE,
    warm-up, tau, lambda bounds)."""
    c = model.config
    kind = ObjectLagrangians if c.sparsity_constraint == "per_object" else SparsityLagrangian
    return kind(
        tau=c.tau,
        tau_factor=c.tau_factor,
        warmup=c.sparsity_warmup,
        lambda_init=c.lambda_init,
        lambda_min=c.lambda_min,
        lambda_max=c.lambda_max,
        lr=c.lambda_lr,
        ema=c.mse_ema,
        schedule=c.lambda_schedule,
    )


def feed_lagrangian(lag: Lagrangian, terms: LossTerms, reference: LossTerms | None = None) -> None:
    """Update lambda from a train step's MSE (per object or averaged, as ``lag`` wants);
    ``reference``: the dense twin's terms on the same batch (:class:`DenseReference`)."""
    if isinstance(lag, ObjectLagrangians):
        ref = None if reference is None else reference.mse_objects.detach().cpu().tolist()
        lag.update(terms.mse_objects.detach().cpu().tolist(), ref)
    else:
        lag.update(float(terms.mse.detach()), None if reference is None else float(reference.mse))


DENSE_TWIN = {"spartan": "dense-transformer", "s2ssm": "dense-ssm"}
"""The dense baseline of each sparse model: the same network with the gate off."""


def check_dense_reference(config: WorldModelConfig) -> None:
    """Refuse ``tau_reference=dense`` where it cannot apply (one message for every caller):
    it needs a sparse model, an automatic tau and objects mode (a pixels twin has its own
    VAE, so its latent error is not in the model's units)."""
    if config.name not in DENSE_TWIN or config.tau is not None or config.obs != "objects":
        raise ValueError(
            "tau_reference=dense needs a sparse world model (spartan, s2ssm) with an "
            f"automatic tau (tau unset) in objects mode; got {config.name!r}, "
            f"tau={config.tau!r}, obs={config.obs!r} (use tau_reference=warmup)"
        )


class DenseReference:
    """A dense twin trained beside a sparse model, on the same batches, for the tau of its
    Lagrangian (:mod:`~mbrl_causal.world_models.sparsity`, "A live dense reference").

    The twin is the sparse model's dense baseline (:data:`DENSE_TWIN`) with the same sizes,
    regimes and action space, on the model's device and dtype, with its own Adam with the
    same learning-rate schedule and a seed of its own. It costs one more forward and
    backward pass per train step; it is not saved (it exists only to set tau while the
    sparse model trains). Objects mode only: in pixels mode the twin would have its own
    VAE, and its latent error would not be in the model's units.
    """

    def __init__(
        self, model: WorldModel, steps: int | None, lr: float, grad_clip: float, seed: int
    ) -> None:
        """``steps``: length of the cosine learning-rate decay (None: a constant rate, as
        the agent's world model has)."""
        check_dense_reference(model.config)
        with torch.random.fork_rng():  # leave the sparse model's random stream alone
            torch.manual_seed(seed + 1)
            self.model = WorldModel(
                dataclasses.replace(model.config, name=DENSE_TWIN[model.config.name]),
                model.regime_ids,
                model.action_dim,
                model.discrete_actions,
            )
        like = next(model.parameters())
        self.model.to(device=like.device, dtype=like.dtype).train()
        self.grad_clip = grad_clip
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.sched = (
            None if steps is None else torch.optim.lr_scheduler.LambdaLR(self.opt, _cosine(steps))
        )

    def step(self, batch: SequenceBatch) -> LossTerms:
        """One update of the twin on ``batch``; returns its loss terms (detached)."""
        terms, _ = self.model.loss(batch, 0.0)
        check_finite(terms, "dense reference")
        self.opt.zero_grad(set_to_none=True)
        terms.total.backward()
        clip_gradients(self.model, self.grad_clip, "dense reference")
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        return LossTerms(*(t.detach() for t in terms))

    def state_dict(self) -> dict[str, Any]:
        """The twin's weights and optimiser (and schedule) state, for checkpoints."""
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": None if self.sched is None else self.sched.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.sched is not None and state.get("sched") is not None:
            self.sched.load_state_dict(state["sched"])


def _cosine(steps: int) -> Callable[[int], float]:
    """Learning-rate factor: cosine decay from 1 to 0.1 over ``steps``."""
    return lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))


def check_finite(terms: LossTerms, what: str = "world-model") -> None:
    """Raise :class:`NonFiniteLoss` naming the first NaN/inf term (of ``what``)."""
    items = list(terms._asdict().items())
    for name, value in items[1:] + items[:1]:  # the terms first: "total" is NaN with any
        if not torch.isfinite(value).all():
            raise NonFiniteLoss(
                f"{what} loss term {name!r} is {value.tolist()}; the update was skipped "
                "(lower the learning rate or check the data)"
            )


def clip_gradients(module: torch.nn.Module, max_norm: float, what: str) -> float:
    """``clip_grad_norm_`` that refuses a NaN/inf gradient: raises :class:`NonFiniteLoss`
    naming the first parameter with one, before anything is changed (the caller then skips
    its optimiser step, so the weights stay as they were).

    Finite loss terms can still give a non-finite gradient (an overflow in the backward
    pass); clipping would spread it to every parameter (a NaN norm scales every gradient
    by NaN) and the optimiser step would write NaN into all the weights.
    """
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    if torch.isfinite(norm):
        return float(norm)
    bad = next((n for n, p in module.named_parameters()
                if p.grad is not None and not torch.isfinite(p.grad).all()), "?")  # fmt: skip
    # clip_grad_norm_ has scaled the gradients by NaN: drop them
    module.zero_grad(set_to_none=True)
    raise NonFiniteLoss(
        f"{what} gradient is {float(norm)} (first in {bad!r}) although the loss terms are "
        "finite; the update was skipped (lower the learning rate or check the data)"
    )


def train(
    model: WorldModel,
    sample: Callable[[], SequenceBatch],
    steps: int,
    lr: float = 1e-3,
    grad_clip: float = 10.0,
    seed: int = 0,
    lagrangian: Lagrangian | None = None,
    log: Callable[[str, float, int], None] | None = None,
    log_every: int = 50,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    reference: bool = False,
) -> dict[str, float]:
    """Train ``model`` for ``steps`` gradient steps on batches from ``sample``.

    Adam with a cosine decay of the learning rate to 10%; the Lagrangian (sparse models)
    sets the weight of the path count. With ``reference`` (sparse models only) a
    :class:`DenseReference` trains beside the model and sets the Lagrangian's tau.
    Returns the last logged figures.
    """
    lag = lagrangian if lagrangian is not None else make_lagrangian(model)
    twin = DenseReference(model, steps, lr, grad_clip, seed) if reference else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(steps))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    start, last = time.perf_counter(), {}
    for step in range(1, steps + 1):
        batch = sample()
        ref = twin.step(batch) if twin is not None else None
        weight = lag.value if model.config.sparse else 0.0
        terms, out = model.loss(batch, weight, gen)
        check_finite(terms)
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        clip_gradients(model, grad_clip, "world-model")
        opt.step()
        sched.step()
        if model.config.sparse:
            feed_lagrangian(lag, terms, ref)
        if step % log_every == 0 or step == steps:
            last = _figures(terms, out.graph, batch, lag, step / (time.perf_counter() - start))
            if ref is not None:
                last["reference/mse"] = float(ref.mse)
            if log is not None:
                for k, v in last.items():
                    log(k, v, step)
        if on_step is not None:
            on_step(step, last)
    return last


def _figures(
    terms: LossTerms,
    graph: torch.Tensor,
    batch: SequenceBatch,
    lag: Lagrangian,
    rate: float,
) -> dict[str, float]:
    stats = GraphStats()
    stats.add(graph, batch.graphs)
    g = stats.result()
    terms = LossTerms(*(t.detach() for t in terms))
    return {
        "world_model/loss": float(terms.total),
        "world_model/mse": float(terms.mse),
        "world_model/reward_mse": float(terms.reward),
        "world_model/cont_bce": float(terms.cont),
        "world_model/recon": float(terms.recon),
        "world_model/kl": float(terms.kl),
        **lag.summary(),
        "causal/paths": float(terms.sparsity),
        "causal/gate_excess": float(terms.gate_excess),
        "causal/edges": g["edges"],
        "causal/shd": g["shd"],
        "time/steps_per_s": rate,
    }


def eval_starts(data: TransitionData, length: int, limit: int | None = None) -> np.ndarray:
    """Non-overlapping windows (every ``length``-th start) of held-out data."""
    starts = data.window_starts(length)
    starts = starts[starts[:, 1] % length == 0]
    return starts if limit is None else starts[:limit]


@torch.no_grad()
def evaluate(
    model: WorldModel,
    data: TransitionData,
    obs: str,
    length: int,
    batch_size: int = 64,
    regime: torch.Tensor | None = None,
    objects: int | None = None,
    limit: int | None = None,
    node_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Figures of ``model`` on held-out ``data`` (deterministic gates).

    Returns ``mse`` (next-latent MSE; objects mode: object features), ``reward_mse``,
    ``cont_bce`` and the graph figures (:mod:`.metrics`). ``regime`` replaces the data's
    regime (a fitted token); ``objects`` keeps only the first ``objects`` objects in the
    input and scores only those (the distractor-removal protocol). With ``node_names``
    (the env's ``graph_nodes``) the figures gain ``per_edge``
    (:meth:`~mbrl_causal.world_models.metrics.GraphStats.per_edge`).
    """
    model.eval()
    starts = eval_starts(data, length, limit)
    if len(starts) == 0:
        raise ValueError(f"no held-out window of {length} steps; collect more eval data")
    stats, sq, rew, cont, count = GraphStats(), 0.0, 0.0, 0.0, 0
    for i in range(0, len(starts), batch_size):
        b = data.batch(starts[i : i + batch_size], length, obs)
        z = model.encode(b.obs)
        n = z.shape[2] if objects is None else objects
        z = z[:, :, :n]
        reg = b.regimes if regime is None else regime.expand(len(z), -1)
        out = model(z[:, :-1], b.actions, reg)
        k = len(z)
        sq += float(F.mse_loss(out.next_latent, z[:, 1:])) * k
        rew += float(F.mse_loss(out.reward, b.rewards)) * k
        cont += float(F.binary_cross_entropy_with_logits(out.cont_logit, b.conts)) * k
        true = b.graphs if objects is None else _keep_objects(b.graphs, n)
        stats.add(out.graph, true)
        count += k
    figures: dict[str, Any] = {
        "mse": sq / count,
        "reward_mse": rew / count,
        "cont_bce": cont / count,
        **stats.result(),
    }
    if node_names is not None:
        n_children = len(node_names) - 2
        figures["per_edge"] = stats.per_edge(node_names, node_names[:n_children])
    return figures


def _keep_objects(graphs: torch.Tensor, n: int) -> torch.Tensor:
    total = graphs.shape[-1]
    parents = torch.cat([graphs[..., :n, :], graphs[..., total:, :]], -2)
    return parents[..., :n]


@torch.no_grad()
def rollout_mse(
    model: WorldModel, data: TransitionData, obs: str, horizon: int, limit: int = 256
) -> float:
    """Open-loop error: from o_0, predict H steps feeding the model its own latents;
    the mean over the H steps of the MSE against the encoded true observations."""
    model.eval()
    starts = eval_starts(data, horizon, limit)
    if len(starts) == 0:
        return float("nan")
    b = data.batch(starts, horizon, obs)
    z = model.encode(b.obs)
    latent, state, err = z[:, 0], model.initial_state(len(z), z.shape[2]), 0.0
    for t in range(horizon):
        out, state = model.step(latent, b.actions[:, t], b.regimes, state)
        latent = out.next_latent[:, 0]
        err += float(F.mse_loss(latent, z[:, t + 1]))
    return err / horizon


@torch.no_grad()
def choose_threshold(
    model: WorldModel, data: TransitionData, obs: str, length: int, limit: int = 128
) -> float:
    """Dense baselines: set the attention threshold that minimises SHD on ``data``."""
    if model.config.sparse:
        return float("nan")
    best, best_shd = THRESHOLDS[0], math.inf
    for theta in THRESHOLDS:
        model.graph_threshold.fill_(theta)
        shd = evaluate(model, data, obs, length, limit=limit)["shd"]
        if shd < best_shd:
            best, best_shd = theta, shd
    model.graph_threshold.fill_(best)
    return best


def summary(figures: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The named subset of a figures dict."""
    return {k: figures[k] for k in keys}
