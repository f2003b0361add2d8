"""Return estimates and normalisation of the actor-critic (DreamerV3, Hafner et al. 2023).

Time alignment of an imagined rollout of H steps (s_0 is a start state from replay)::

    state   s_0   s_1   ...   s_H
    action  a_0   a_1   ...   a_{H-1}
    reward        r_1   ...   r_H        (predicted by the world model for s_{t-1}, a_{t-1})
    cont          c_1   ...   c_H        (predicted continuation probability)
    value   v_0   v_1   ...   v_H

lambda-return (DreamerV3 eq. 7), computed backwards from R_H = v_H::

    R_t = r_{t+1} + gamma * c_{t+1} * ((1 - lambda) * v_{t+1} + lambda * R_{t+1})
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ReturnNormalizer", "lambda_returns"]


def lambda_returns(
    rewards: torch.Tensor,
    conts: torch.Tensor,
    values: torch.Tensor,
    gamma: float,
    lambda_: float,
) -> torch.Tensor:
    """lambda-returns R_0..R_{H-1} of a rollout (see the module's alignment).

    Args:
        rewards: r_1..r_H, shape (H, B).
        conts: c_1..c_H in [0, 1], shape (H, B).
        values: v_0..v_H, shape (H + 1, B).
        gamma: Discount per step.
        lambda_: Mixing of bootstrap (0: one-step TD target) and Monte Carlo (1).

    Returns:
        R_0..R_{H-1}, shape (H, B).

    >>> r = torch.tensor([[1.0], [1.0]]); c = torch.ones(2, 1); v = torch.zeros(3, 1)
    >>> lambda_returns(r, c, v, gamma=0.5, lambda_=1.0).squeeze(1).tolist()
    [1.5, 1.0]
    """
    h = rewards.shape[0]
    if conts.shape != rewards.shape or values.shape[0] != h + 1:
        raise ValueError(
            f"need rewards and conts of shape (H, B) and values (H + 1, B); got "
            f"{tuple(rewards.shape)}, {tuple(conts.shape)}, {tuple(values.shape)}"
        )
    out = []
    last = values[h]
    for t in reversed(range(h)):
        last = rewards[t] + gamma * conts[t] * ((1 - lambda_) * values[t + 1] + lambda_ * last)
        out.append(last)
    return torch.stack(out[::-1])


class ReturnNormalizer:
    """DreamerV3's return scale: an EMA of the 5th-95th percentile range, floored at 1.

    ``scale = max(1, S)`` with ``S <- decay * S + (1 - decay) * (P95(R) - P5(R))``; the actor
    sees ``(R - v) / scale``, so large returns are shrunk but small ones are not blown up.

    >>> n = ReturnNormalizer(decay=0.0)
    >>> n.update(torch.linspace(0, 10, 101))
    9.0
    """

    def __init__(self, decay: float = 0.99, low: float = 0.05, high: float = 0.95) -> None:
        self.decay, self.low, self.high = decay, low, high
        self.range: float | None = None

    def update(self, returns: torch.Tensor) -> float:
        """Feed a batch of returns; returns the new scale."""
        flat = returns.detach().float().flatten()
        q = torch.quantile(flat, torch.tensor([self.low, self.high], dtype=flat.dtype))
        spread = float(q[1] - q[0])
        self.range = (
            spread if self.range is None else self.decay * self.range + (1 - self.decay) * spread
        )
        return self.scale

    @property
    def scale(self) -> float:
        """The divisor of the advantages (>= 1)."""
        return max(1.0, self.range or 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"range": self.range}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.range = state["range"]
