"""SPARTAN's dynamics core (Lei, Schoelkopf, Posner; arXiv 2411.06890) and its dense twin.

A pre-LayerNorm transformer over the M = N + 2 tokens of one step (objects, action,
regime). Each layer's attention is masked by a hard gate sampled per sample and per step
(:class:`~mbrl_causal.world_models.gates.HardGate`); the product of the layers' gates is
the path matrix whose object rows are the local graph. SPARTAN is Markov on tokens: every
step is predicted from that step's tokens alone, so :meth:`step` is the sequence forward
with T = 1 and carries no state. With ``sparse=False`` (``dense-transformer``) the gate is
all ones and the graph comes from thresholded soft attention instead.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from mbrl_causal.world_models.gates import EXP_CAP, GatedAttention, HardGate, fix_structure

__all__ = ["MLP", "CoreOutput", "SpartanCore"]


class CoreOutput(NamedTuple):
    """What a dynamics core returns for tokens (B, T, M, d).

    Attributes:
        h: Output tokens (B, T, M, d).
        adjacency: Per layer, the gate (B, T, M, M) in {0, 1} (all ones off the exogenous
            rows for the dense baselines); straight-through differentiable in training.
        attention: Per layer, the head-averaged attention weights (B, T, M, M).
    """

    h: torch.Tensor
    adjacency: list[torch.Tensor]
    attention: list[torch.Tensor]


class MLP(nn.Sequential):
    """Linear-SiLU-Linear-SiLU-Linear (the papers' 3-layer MLPs)."""

    def __init__(self, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__(
            nn.Linear(d_in, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, d_out),
        )


class GatedBlock(nn.Module):
    """Pre-LN gated attention then MLP, both residual: the cross-token mixing of a step."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        mlp_hidden: int,
        sparse: bool,
        bias_init: float,
        temperature: float,
        action_key: str = "type",
        detach_gate: bool = False,
        score_cap: float = EXP_CAP,
        explore: float = 0.0,
    ) -> None:
        super().__init__()
        self.detach_gate = detach_gate
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = GatedAttention(d_model, n_heads, score_cap)
        self.mlp = MLP(d_model, mlp_hidden, d_model)
        self.gate = (
            HardGate(
                d_model, max(8, d_model // n_heads), bias_init, temperature, action_key, explore
            )
            if sparse
            else None
        )

    def forward(
        self, x: torch.Tensor, n_objects: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.norm1(x)
        if self.gate is not None:
            # detach_gate: the gate's straight-through gradient trains the gate only
            a = self.gate(y.detach() if self.detach_gate else y, n_objects, generator)
        else:
            a = fix_structure(torch.ones(x.shape[-2], x.shape[-2], device=x.device), n_objects)
            a = a.expand(*x.shape[:-2], -1, -1)
        out, w = self.attn(y, a, n_objects)
        x = x + out
        return x + self.mlp(self.norm2(x)), a, w


class SpartanCore(nn.Module):
    """L gated transformer layers over the tokens of each step (SPARTAN, Sec. 3).

    Args:
        d_model: Token width (paper: 512).
        n_layers: Layers (paper: 3).
        n_heads: Heads per layer.
        mlp_hidden: Hidden width of the MLPs.
        sparse: Hard gates (SPARTAN) or none (dense-transformer).
        bias_init: Initial gate bias.
        temperature: Gate relaxation temperature.
        action_key: Key of the action token in the gates (``value`` or ``type``, see
            :class:`~mbrl_causal.world_models.gates.HardGate`).
        detach_gate: The gates read detached tokens (``WorldModelConfig.gate_detach``).
        score_cap: Bound on a closed edge's straight-through signal
            (``WorldModelConfig.gate_score_cap``, see GatedAttention).
        explore: Chance that a closed gate is opened in training
            (``WorldModelConfig.gate_explore``, see HardGate).
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        n_heads: int,
        mlp_hidden: int,
        sparse: bool = True,
        bias_init: float = 3.0,
        temperature: float = 1.0,
        action_key: str = "type",
        detach_gate: bool = False,
        score_cap: float = EXP_CAP,
        explore: float = 0.0,
    ) -> None:
        super().__init__()
        gate = (sparse, bias_init, temperature, action_key, detach_gate, score_cap, explore)
        self.layers = nn.ModuleList(
            GatedBlock(d_model, n_heads, mlp_hidden, *gate) for _ in range(n_layers)
        )

    def forward(
        self, x: torch.Tensor, n_objects: int, generator: torch.Generator | None = None
    ) -> CoreOutput:
        adj, att = [], []
        for layer in self.layers:
            x, a, w = layer(x, n_objects, generator)
            adj.append(a)
            att.append(w)
        return CoreOutput(x, adj, att)

    def initial_state(self, batch: int, n_tokens: int, device: torch.device) -> None:
        """SPARTAN is Markov on tokens: no recurrent state."""
        return None

    def step(
        self,
        x: torch.Tensor,
        n_objects: int,
        state: None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[CoreOutput, None]:
        """One step: tokens (B, M, d) -> outputs with T = 1."""
        return self.forward(x.unsqueeze(1), n_objects, generator), None
