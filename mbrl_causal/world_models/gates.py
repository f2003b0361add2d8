"""Hard attention gates, gated multi-head attention and the path-matrix local graph.

Token layout everywhere: ``M = N + 2`` tokens per step, the N objects in observation
order, then the action token, then the regime token (the env's ``graph_nodes`` order).
``A[..., i, j] = 1`` means token i (child) reads token j (parent) in one layer.

Choices the SPARTAN paper leaves open (documented here and in the README):

- **Masked normaliser.** Attention weights are ``A_ij exp(s_ij) / sum_k A_ik exp(s_ik)``:
  the softmax is renormalised over the kept edges, so a token that keeps one parent reads
  it at full weight. The mask multiplies the exponentials (rather than adding -inf to the
  scores), so the straight-through gradient reaches every gate.
- **Self edges.** ``A_ii = 1`` always (the ``+ I`` of the path product), so the
  normaliser is never empty.
- **Exogenous tokens.** The action and regime tokens have no parents within a transition:
  their rows of A are the identity in every layer, they are inputs, never updated.
- **One gate per layer**, shared by the heads (the graph is per layer, not per head).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from mbrl_causal.world_models.config import GATE_ACTION_KEYS

__all__ = [
    "LOGIT_BOUND",
    "GatedAttention",
    "HardGate",
    "exploration_off",
    "graph_from_paths",
    "path_matrix",
    "straight_through",
]

LOGIT_BOUND = 6.0  # gate logits are soft-clipped to +-6 (see HardGate.logits)
EXP_CAP = 20.0  # default of GatedAttention's score_cap (WorldModelConfig.gate_score_cap)


class HardGate(nn.Module):
    """Edge gates ``A_ij ~ Bernoulli(sigmoid(q_i . k_j / sqrt(d) + b))`` (SPARTAN, eq. 3).

    Training samples with the binary Gumbel trick: ``hard = [logit + logistic noise > 0]``,
    and passes gradients straight through the relaxed ``sigmoid((logit + noise) / temp)``.
    Evaluation uses ``A = [logit > 0]``.

    Args:
        d_model: Token width.
        d_gate: Width of the gate's own query/key projections.
        bias_init: Initial bias b (positive: the graph starts open).
        temperature: Relaxation temperature.
        action_key: ``value``: the key of the action token is computed from the token, as
            for every other parent; ``type``: from a learned vector instead, so the gates
            of the edges ``action -> object`` read the child's state but not the action's
            value. A gate that reads the value can close for "no move" and so pass the
            action's information through the gate pattern itself, hiding an edge that is
            true on every step (docs/results/world-models.md).
        explore: In training, the chance that a gate the sample closed is opened anyway
            (each entry independently; self edges and exogenous rows are fixed as
            always). The forward pass then carries that parent's token, so the attention
            and the layers after it learn what the parent is worth where the gate is
            closed, and the gate's straight-through gradient there measures it; without
            it an edge closed early passes no information, its value is never learned
            and it stays closed (``WorldModelConfig.gate_explore``). 0: off. Evaluation
            never explores, nor does a regime-token fit (:func:`exploration_off`).

    Attribute ``estimator`` (set by the world model from
    ``WorldModelConfig.gate_estimator``): ``straight_through`` (above), or ``score`` and
    ``score_reach``: in training the forward pass returns the hard sample with no
    gradient and stores ``self.log_prob``, the log-probability of each sampled entry
    (Bernoulli with ``sigmoid(logit)``), for the world model's score-function term.
    """

    def __init__(
        self,
        d_model: int,
        d_gate: int,
        bias_init: float = 3.0,
        temperature: float = 1.0,
        action_key: str = "type",
        explore: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= explore < 1.0:
            raise ValueError(f"gate explore must be in [0, 1), got {explore!r}")
        if action_key not in GATE_ACTION_KEYS:
            raise ValueError(
                f"gate_action_key must be one of {GATE_ACTION_KEYS}, got {action_key!r}"
            )
        self.q = nn.Linear(d_model, d_gate)
        self.k = nn.Linear(d_model, d_gate)
        self.bias = nn.Parameter(torch.tensor(float(bias_init)))
        self.action_key: nn.Parameter | None = (
            nn.Parameter(torch.randn(d_model)) if action_key == "type" else None
        )
        self.scale = 1.0 / math.sqrt(d_gate)
        self.temperature = temperature
        self.explore = float(explore)
        self.excess: torch.Tensor | None = None
        self.estimator = "straight_through"
        self.log_prob: torch.Tensor | None = None

    def logits(self, x: torch.Tensor, n_objects: int | None = None) -> torch.Tensor:
        """Gate logits (..., M, M) from tokens x (..., M, d), soft-clipped to +-LOGIT_BOUND.

        ``n_objects`` (the action token's index) is required with ``action_key='type'``.

        The soft clip keeps every gate within reach of the logistic noise: a gate whose
        logit ran off to -50 would get no straight-through gradient and stay closed even
        after lambda falls (a collapsed graph that cannot recover).

        q and k are unbounded, so without a counterweight ``raw`` grows far past the bound
        (measured: +-30 to +-160 after long training, docs/results/world-models.md), where
        the tanh passes no gradient and the gate is frozen open or closed. In training
        (with gradients on) the call therefore stores ``self.excess``, the mean of
        ``relu(|raw| - LOGIT_BOUND)**2`` over the entries, which the world model's loss adds
        with weight ``gate_logit_weight``; it is zero while every raw logit is within the
        bound, so it changes nothing there. Its gradient reaches the gate's q, k and b and
        the tokens.
        """
        raw = self._raw(x, n_objects)
        if self.training and torch.is_grad_enabled():
            # on the live tokens: a version on detached tokens (gate weights only) did not
            # hold the logits (the excess grew to 75 in fit; docs/results/world-models.md)
            self.excess = F.relu(raw.abs() - LOGIT_BOUND).square().mean()
        else:
            self.excess = None
        return LOGIT_BOUND * torch.tanh(raw / LOGIT_BOUND)

    def _raw(self, x: torch.Tensor, n_objects: int | None) -> torch.Tensor:
        k = self.k(x)
        if self.action_key is not None:
            if n_objects is None:
                raise ValueError("a gate with action_key='type' needs n_objects")
            ka = self.k(self.action_key).expand(*k.shape[:-2], 1, k.shape[-1])
            k = torch.cat([k[..., :n_objects, :], ka, k[..., n_objects + 1 :, :]], -2)
        return (self.q(x) @ k.transpose(-1, -2)) * self.scale + self.bias

    def forward(
        self, x: torch.Tensor, n_objects: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sampled (training) or thresholded (evaluation) adjacency (..., M, M) in {0, 1}."""
        logit = self.logits(x, n_objects)
        self.log_prob = None
        if self.training:
            u = torch.rand(logit.shape, generator=generator, device=logit.device)
            u = u.clamp(1e-6, 1 - 1e-6).to(logit.dtype)
            noisy = logit + torch.log(u) - torch.log1p(-u)  # > 0 with prob. sigmoid(logit)
            if self.estimator != "straight_through":  # score, score_reach: no relaxation
                hard = (noisy > 0).to(logit.dtype)
                self.log_prob = hard * F.logsigmoid(logit) + (1 - hard) * F.logsigmoid(-logit)
                return fix_structure(hard, n_objects)
            soft = torch.sigmoid(noisy / self.temperature)
            hard = (soft > 0.5).to(logit.dtype)
            if self.explore > 0.0:  # open some closed gates at random (see the class doc)
                r = torch.rand(logit.shape, generator=generator, device=logit.device)
                hard = torch.maximum(hard, (r < self.explore).to(logit.dtype))
            a = hard + (soft - soft.detach())  # straight-through, exactly 0/1 forward
        else:
            a = (logit > 0).to(logit.dtype)
        return fix_structure(a, n_objects)


@contextmanager
def _on_gates(module: nn.Module, attribute: str, value: object) -> Iterator[None]:
    """Set ``attribute`` of every :class:`HardGate` in ``module``, restored on exit."""
    gates = [m for m in module.modules() if isinstance(m, HardGate)]
    saved = [getattr(g, attribute) for g in gates]
    for g in gates:
        setattr(g, attribute, value)
    try:
        yield
    finally:
        for g, old in zip(gates, saved, strict=True):
            setattr(g, attribute, old)


def exploration_off(module: nn.Module) -> AbstractContextManager[None]:
    """Gate exploration off for every :class:`HardGate` in ``module``, restored on exit
    (for training-mode passes that are not model training, such as a regime-token fit)."""
    return _on_gates(module, "explore", 0.0)


def straight_through(module: nn.Module) -> AbstractContextManager[None]:
    """Every :class:`HardGate` in ``module`` uses the straight-through estimator inside the
    block, restored on exit: for training-mode passes whose gradient must reach the
    tokens through the gates, such as a regime-token fit (a ``score`` gate passes none)."""
    return _on_gates(module, "estimator", "straight_through")


def fix_structure(a: torch.Tensor, n_objects: int) -> torch.Tensor:
    """Set self edges to 1 and the exogenous rows (action, regime) to the identity."""
    m = a.shape[-1]
    eye = torch.eye(m, dtype=a.dtype, device=a.device)
    keep = torch.zeros(m, m, dtype=a.dtype, device=a.device)
    keep[:n_objects] = 1.0
    keep = keep * (1.0 - eye)
    return a * keep + eye


class GatedAttention(nn.Module):
    """Multi-head attention over the M tokens of a step, masked by a gate adjacency.

    With ``gate=None`` (the dense baselines) it is plain softmax attention except for the
    exogenous rows, which stay the identity in both cases, so the models differ only in
    the gate.

    ``score_cap``: a closed edge (0 in the forward pass) enters the normaliser, and so its
    gate's straight-through gradient, with its score clamped to the largest kept score
    plus ``score_cap``: its weight in that gradient is at most e^cap times an open
    edge's (``WorldModelConfig.gate_score_cap``).

    Returns the attended values (..., M, d) and the head-averaged weights (..., M, M)
    (used for the dense baselines' thresholded graph).
    """

    def __init__(self, d_model: int, n_heads: int, score_cap: float = EXP_CAP) -> None:
        super().__init__()
        self.score_cap = score_cap
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, adjacency: torch.Tensor, n_objects: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        *lead, m, d = x.shape
        qkv = self.qkv(x).view(*lead, m, 3, self.n_heads, self.d_head)
        q, k, v = qkv.unbind(-3)  # (..., M, H, dh)
        q, k, v = (t.transpose(-2, -3) for t in (q, k, v))  # (..., H, M, dh)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)
        # masked normaliser: A * exp(s) / sum(A * exp(s)); the diagonal keeps it > 0.
        # The shift is the largest *kept* score, so the kept exponentials sum to >= 1: a
        # shift by the largest score of the row (kept or not) let every kept one underflow
        # when a closed edge scored ~90 above them, and the normaliser's gradient
        # (1 / sum^2) overflowed with a finite loss (docs/results/agent.md). Closed
        # edges enter at most at exp(score_cap) (they are 0 in the forward pass; only the
        # straight-through gradient of their gate sees the value), so nothing overflows.
        # The cap also bounds that gradient: a weight of at most e^cap times an open edge's.
        a = adjacency.unsqueeze(-3)
        kept_max = scores.masked_fill(a < 0.5, -torch.inf).amax(-1, keepdim=True).detach()
        e = torch.exp((scores - kept_max).clamp(max=self.score_cap))
        num = e * a
        w = num / num.sum(-1, keepdim=True)
        y = (w @ v).transpose(-2, -3).reshape(*lead, m, d)
        return self.out(y), w.mean(-3)


def path_matrix(adjacencies: list[torch.Tensor]) -> torch.Tensor:
    """``Abar = (A_L + I) ... (A_1 + I)`` with the identity already inside each A.

    ``Abar[..., i, j]`` counts the paths from token j (input) to token i (output) through
    the layers; j is a parent of i iff it is >= 1 (SPARTAN, eq. 5).
    """
    out = adjacencies[0]
    for a in adjacencies[1:]:
        out = a @ out
    return out


def graph_from_paths(paths: torch.Tensor, n_objects: int) -> torch.Tensor:
    """Local graph (..., N + 2, N) bool, parents x children, from a path matrix (..., M, M).

    Same layout as the env's ``info["local_graph"]``: ``G[j, i]`` is true iff token j
    reaches object i.
    """
    return (paths[..., :n_objects, :] >= 0.5).transpose(-1, -2)


def soft_gate_probability(logits: torch.Tensor) -> torch.Tensor:
    """Edge probabilities ``sigmoid(logit)`` (for logging)."""
    return F.sigmoid(logits)
