"""Selective scan (Mamba's S6) in plain PyTorch, the Mamba layer, and backend choice.

The project's scan is the default everywhere and the reference of the tests; the CUDA
kernels of the optional ``mamba-ssm`` package (``pip install .[cuda]``) are used when
``ssm_backend`` is ``"mamba_ssm"``, or ``"auto"`` on a CUDA tensor with the package
importable. Both compute (Gu & Dao 2023, eq. 2a-2b, zero-order hold for A, Euler for B)::

    dA_t = exp(delta_t * A)            (b, d, n)
    h_t  = dA_t * h_{t-1} + delta_t * B_t * u_t
    y_t  = <C_t, h_t> + D * u_t

Our scan is sequential over time inside one autograd node: the forward loop runs without
building a graph, the backward is a hand-written reverse scan, and every other term of
the gradient is one batched product over all steps. On a CPU this has far less overhead
than a generic parallel (Blelloch) scan built from many small autograd ops.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MambaLayer", "MambaState", "mamba_ssm_available", "selective_scan"]


def mamba_ssm_available() -> bool:
    """True when the ``mamba_ssm`` CUDA kernels can be imported and a GPU is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import mamba_ssm.ops.selective_scan_interface  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA build raising anything at import
        return False
    return True


class _SelectiveScan(torch.autograd.Function):
    """Sequential selective scan with a reverse-scan backward; layout (b, L, d[, n]).

    Memory traffic is what costs on a CPU, so every (b, L, d, n) tensor is touched as few
    times as possible: the recurrences write into preallocated buffers (``addcmul`` with
    ``out=``), contractions over n or d are batched matrix products, and the backward
    leaves the saved tensors untouched (so ``retain_graph`` and gradcheck work).
    """

    @staticmethod
    def forward(ctx: Any, u, delta, A, B, C, D):  # type: ignore[no-untyped-def]
        length = u.shape[1]
        dA = torch.exp(delta.unsqueeze(-1) * A)  # (b, L, d, n)
        hs = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # dBu, overwritten by h in place
        for t in range(1, length):
            torch.addcmul(hs[:, t], dA[:, t], hs[:, t - 1], out=hs[:, t])
        y = (hs @ C.unsqueeze(-1)).squeeze(-1) + u * D
        ctx.save_for_backward(u, delta, A, B, C, D, dA, hs)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, gy):  # type: ignore[no-untyped-def]
        u, delta, A, B, C, D, dA, hs = ctx.saved_tensors
        length = u.shape[1]
        gy = gy.contiguous()
        # dL/dh_t = C_t gy_t + dA_{t+1} dL/dh_{t+1}  (reverse scan)
        gh = torch.empty_like(hs)
        g = torch.empty_like(dA)  # g[:, t] = dA_t * dL/dh_t, later * h_{t-1}
        carry = torch.zeros_like(hs[:, 0])
        for t in range(length - 1, -1, -1):
            torch.addcmul(carry, gy[:, t].unsqueeze(-1), C[:, t].unsqueeze(1), out=gh[:, t])
            carry = torch.mul(dA[:, t], gh[:, t], out=g[:, t])
        g[:, 1:].mul_(hs[:, :-1])  # dL/d(delta_t A) = dL/dh_t * dA_t * h_{t-1}
        g[:, 0].zero_()
        ghB = (gh @ B.unsqueeze(-1)).squeeze(-1)  # (b, L, d)
        g_delta = (g * A).sum(-1)
        g_delta = g_delta + ghB * u
        g_A = (g * delta.unsqueeze(-1)).sum((0, 1))
        g_u = ghB * delta + gy * D
        g_B = ((delta * u).unsqueeze(-2) @ gh).squeeze(-2)  # (b, L, n)
        g_C = (gy.unsqueeze(-2) @ hs).squeeze(-2)
        g_D = (gy * u).sum((0, 1))
        return g_u, g_delta, g_A, g_B, g_C, g_D


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    backend: str = "torch",
) -> torch.Tensor:
    """Selective scan over time; returns y (b, L, d).

    Args:
        u: Inputs (b, L, d).
        delta: Positive step sizes (b, L, d) (softplus already applied).
        A: Negative state matrix diagonal (d, n).
        B: Input projections (b, L, n).
        C: Output projections (b, L, n).
        D: Skip weights (d,).
        backend: ``torch`` (ours) or ``mamba_ssm`` (the CUDA kernel).

    >>> b, L, d, n = 2, 5, 3, 4
    >>> y = selective_scan(torch.randn(b, L, d), torch.rand(b, L, d), -torch.rand(d, n),
    ...                    torch.randn(b, L, n), torch.randn(b, L, n), torch.ones(d))
    >>> y.shape
    torch.Size([2, 5, 3])
    """
    if backend == "mamba_ssm":
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        y = selective_scan_fn(
            u.transpose(1, 2).contiguous(),
            delta.transpose(1, 2).contiguous(),
            A.contiguous(),
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            D.float(),
        )
        return y.transpose(1, 2)
    if backend != "torch":
        raise ValueError(f"backend must be 'torch' or 'mamba_ssm', got {backend!r}")
    out: torch.Tensor = _SelectiveScan.apply(u, delta, A, B, C, D)
    return out


class MambaState(NamedTuple):
    """Recurrent state of one Mamba layer: the last inputs of the causal convolution
    (b, d_inner, d_conv - 1) and the scan's state (b, d_inner, d_state)."""

    conv: torch.Tensor
    ssm: torch.Tensor


class MambaLayer(nn.Module):
    """One Mamba layer (selective SSM with gating), sequence and one-step modes.

    Args:
        d_model: Input/output width.
        d_state: Scan state size n.
        expand: Inner width = expand * d_model.
        d_conv: Causal depthwise convolution width.
        backend: ``auto``, ``torch`` or ``mamba_ssm`` (see the module doc).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if backend not in ("auto", "torch", "mamba_ssm"):
            raise ValueError(f"ssm_backend must be auto, torch or mamba_ssm; got {backend!r}")
        if backend == "mamba_ssm" and not mamba_ssm_available():
            raise ValueError(
                "ssm_backend='mamba_ssm' needs the mamba-ssm package and a CUDA GPU "
                "(pip install '.[cuda]'); use 'auto' or 'torch'"
            )
        self.backend = backend
        d_inner = expand * d_model
        self.d_inner, self.d_state, self.d_conv = d_inner, d_state, d_conv
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        # Mamba's initialisation: dt in [1e-3, 1e-1] log-uniformly, A_n = -n (S4D-real)
        dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def resolved_backend(self, x: torch.Tensor) -> str:
        if self.backend == "auto":
            return "mamba_ssm" if x.is_cuda and mamba_ssm_available() else "torch"
        return self.backend

    def _ssm_inputs(
        self, xc: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        dbc = self.x_proj(xc)
        dt, B, C = dbc.split([self.dt_rank, self.d_state, self.d_state], -1)
        delta = F.softplus(self.dt_proj(dt))
        return delta, -torch.exp(self.A_log), B, C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sequence mode: x (b, L, d_model) -> (b, L, d_model), causal in time."""
        length = x.shape[1]
        xz = self.in_proj(x)
        xs, z = xz.chunk(2, -1)
        xc = F.silu(self.conv(xs.transpose(1, 2))[..., :length].transpose(1, 2))
        delta, A, B, C = self._ssm_inputs(xc)
        y = selective_scan(xc, delta, A, B, C, self.D, self.resolved_backend(x))
        return self.out_proj(y * F.silu(z))

    def initial_state(self, batch: int, device: torch.device | None = None) -> MambaState:
        return MambaState(
            torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device),
            torch.zeros(batch, self.d_inner, self.d_state, device=device),
        )

    def step(self, x: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        """One-step mode: x (b, d_model) and the state -> output (b, d_model), new state.

        Feeding a sequence one step at a time from :meth:`initial_state` gives the same
        outputs as :meth:`forward` (a test holds it to that).
        """
        xs, z = self.in_proj(x).chunk(2, -1)
        window = torch.cat([state.conv, xs.unsqueeze(-1)], -1)  # (b, d_inner, d_conv)
        bias = self.conv.bias if self.conv.bias is not None else 0.0
        xc = F.silu((window * self.conv.weight.squeeze(1)).sum(-1) + bias)
        delta, A, B, C = self._ssm_inputs(xc)
        h = torch.exp(delta.unsqueeze(-1) * A) * state.ssm + (delta * xc).unsqueeze(
            -1
        ) * B.unsqueeze(1)
        y = (h * C.unsqueeze(1)).sum(-1) + self.D * xc
        return self.out_proj(y * F.silu(z)), MambaState(window[..., 1:], h)
