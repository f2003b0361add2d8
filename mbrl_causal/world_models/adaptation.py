"""Few-shot adaptation to a new regime, and recall of a known one.

- :func:`fit_regime_token`: freeze the whole model, add one fresh free regime token
  (initialised at the codebook entry that best explains the K trajectories) and fit it by
  Adam on them, minimising the next-latent MSE (SPARTAN Sec. 4.3; S2-SSM infers its
  environment slot the same way). Only the token changes; the returned token is passed
  wherever a regime is expected. The gates are *sampled* during the fit (straight
  through), as in training: with deterministic gates a closed regime edge passes no
  gradient to the token, and the fit would never open it.
- :func:`recall_regime`: score every codebook entry on K transitions and return the env
  regime id whose token explains them best (lowest next-latent MSE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mbrl_causal.world_models.gates import exploration_off, straight_through
from mbrl_causal.world_models.model import SequenceBatch, WorldModel

__all__ = ["fit_regime_token", "recall_regime", "regime_errors"]


def _freeze(model: WorldModel) -> list[bool]:
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    return flags


def _unfreeze(model: WorldModel, flags: list[bool]) -> None:
    for p, f in zip(model.parameters(), flags, strict=True):
        p.requires_grad_(f)


def _prediction_mse(model: WorldModel, batch: SequenceBatch, token: torch.Tensor) -> torch.Tensor:
    z = model.encode(batch.obs)
    out = model(z[:, :-1], batch.actions, token.expand(z.shape[0], -1))
    return F.mse_loss(out.next_latent, z[:, 1:])


def fit_regime_token(
    model: WorldModel,
    batch: SequenceBatch,
    steps: int = 150,
    lr: float = 0.05,
    init: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Fit a free regime token (d_model,) on ``batch`` with the model frozen.

    Args:
        model: A trained world model (its weights are left unchanged; its train/eval
            mode is restored afterwards).
        batch: The K adaptation trajectories as one batch (B = K sequences).
        steps: Adam steps.
        lr: Adam learning rate.
        init: Starting token; default the best-fitting codebook entry (:func:`recall_regime`).
        seed: Seed of the gate samples.

    Returns:
        The fitted token, detached, shape (d_model,).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if init is None:
        init = model.codebook.weight[model.regime_ids.index(recall_regime(model, batch))]
    was_training = model.training
    flags = _freeze(model)
    token = init.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([token], lr=lr)
    gen = torch.Generator(device=token.device).manual_seed(seed)
    try:
        with torch.no_grad():
            z = model.encode(batch.obs)
        model.train()  # sampled straight-through gates: the token reaches closed edges
        # the model's own gates, not random extra edges, with the straight-through
        # gradient whatever the model's gate_estimator (the token's way to a closed edge)
        with exploration_off(model), straight_through(model):
            for _ in range(steps):
                out = model(z[:, :-1], batch.actions, token.expand(z.shape[0], -1), gen)
                loss = F.mse_loss(out.next_latent, z[:, 1:])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        _unfreeze(model, flags)
        model.train(was_training)
    return token.detach()


@torch.no_grad()
def regime_errors(model: WorldModel, batch: SequenceBatch) -> dict[int, float]:
    """Next-latent MSE of ``batch`` under each codebook entry, keyed by env regime id."""
    was_training = model.training
    model.eval()
    try:
        return {
            rid: float(_prediction_mse(model, batch, model.codebook.weight[i]))
            for i, rid in enumerate(model.regime_ids)
        }
    finally:
        model.train(was_training)


def recall_regime(model: WorldModel, batch: SequenceBatch) -> int:
    """The env regime id whose codebook token best explains ``batch``."""
    errors = regime_errors(model, batch)
    return min(errors, key=errors.__getitem__)
