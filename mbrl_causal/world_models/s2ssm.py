"""S2-SSM's dynamics core (Petri, Asprino, Gangemi; arXiv 2505.02074) and its dense twin.

SlotSSM blocks over the M = N + 2 slots (objects, action, regime)::

    x <- x + Mamba(LN(x))               per slot, over time   ((B M), T, d), weights shared
    x <- x + GatedAttention(LN(x))      per step, over slots  ((B T), M, d)
    x <- x + MLP(LN(x))                 per token

The cross-slot attention carries SPARTAN's hard gate (:mod:`.gates`); the graph of a step
is the product of the blocks' gates at that step. Paths through time (object j at t-1 ->
object i at t via the Mamba state) are not part of the local graph, as in the paper: the
graph describes which slots are read at the step being predicted.

:meth:`S2SSMCore.step` runs the same network one step at a time, carrying each block's
Mamba state (convolution window and scan state); fed a sequence from
:meth:`initial_state` it reproduces :meth:`forward` (tested).
"""

from __future__ import annotations

import torch
from torch import nn

from mbrl_causal.world_models.gates import EXP_CAP
from mbrl_causal.world_models.spartan import CoreOutput, GatedBlock
from mbrl_causal.world_models.ssm import MambaLayer, MambaState

__all__ = ["S2SSMCore"]


class S2SSMCore(nn.Module):
    """SlotSSM blocks with gated cross-slot attention.

    Args:
        d_model: Slot width (SlotSSM default 256).
        n_layers: Blocks (SlotSSM default 4).
        n_heads: Attention heads.
        mlp_hidden: Hidden width of the MLPs.
        d_state, expand, d_conv: Mamba layer sizes.
        backend: Selective-scan backend (``auto``, ``torch``, ``mamba_ssm``).
        sparse: Hard gates (S2-SSM) or none (dense-ssm).
        bias_init, temperature: Gate initial bias and relaxation temperature.
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
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        backend: str = "auto",
        sparse: bool = True,
        bias_init: float = 3.0,
        temperature: float = 1.0,
        action_key: str = "type",
        detach_gate: bool = False,
        score_cap: float = EXP_CAP,
        explore: float = 0.0,
    ) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.mambas: list[MambaLayer] = nn.ModuleList(  # type: ignore[assignment]
            MambaLayer(d_model, d_state, expand, d_conv, backend) for _ in range(n_layers)
        )
        gate = (sparse, bias_init, temperature, action_key, detach_gate, score_cap, explore)
        self.mixers = nn.ModuleList(
            GatedBlock(d_model, n_heads, mlp_hidden, *gate) for _ in range(n_layers)
        )

    def forward(
        self, x: torch.Tensor, n_objects: int, generator: torch.Generator | None = None
    ) -> CoreOutput:
        """Tokens (B, T, M, d), causal in time -> outputs (B, T, M, d) and gates."""
        b, t, m, d = x.shape
        adj, att = [], []
        for norm, mamba, mixer in zip(self.norms, self.mambas, self.mixers, strict=True):
            slots = norm(x).transpose(1, 2).reshape(b * m, t, d)
            x = x + mamba(slots).view(b, m, t, d).transpose(1, 2)
            x, a, w = mixer(x, n_objects, generator)
            adj.append(a)
            att.append(w)
        return CoreOutput(x, adj, att)

    def initial_state(self, batch: int, n_tokens: int, device: torch.device) -> list[MambaState]:
        """Zero Mamba states, one per block, for ``batch * n_tokens`` slot series."""
        return [m.initial_state(batch * n_tokens, device) for m in self.mambas]

    def step(
        self,
        x: torch.Tensor,
        n_objects: int,
        state: list[MambaState] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[CoreOutput, list[MambaState]]:
        """One step: tokens (B, M, d) and the carried state -> outputs with T = 1."""
        b, m, d = x.shape
        if state is None:
            state = self.initial_state(b, m, x.device)
        new_state, adj, att = [], [], []
        for norm, mamba, mixer, s in zip(self.norms, self.mambas, self.mixers, state, strict=True):
            y, s2 = mamba.step(norm(x).reshape(b * m, d), s)
            new_state.append(s2)
            x = x + y.view(b, m, d)
            x, a, w = mixer(x, n_objects, generator)
            adj.append(a.unsqueeze(1))
            att.append(w.unsqueeze(1))
        return CoreOutput(x.unsqueeze(1), adj, att), new_state
