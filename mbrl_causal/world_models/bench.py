"""``mbrl-causal bench models``: train-step time of the world models and two references.

One run times, at the default sizes (``WorldModelConfig()``) and the default batch of
``fit`` (32 sequences x 8 steps, 4 objects, so 6 tokens per step):

- each world model's full train step (loss, backward, Adam step) on objects mode;
- ``torch.nn.TransformerEncoder`` at SPARTAN's width and depth (same d_model, layers,
  heads, MLP width, pre-LN) over the same 256 x 6 tokens plus a linear head, the same
  step (the reference of the SPARTAN target: <= 1.5x);
- the selective scan alone, forward + backward, ours against the pure-PyTorch
  ``mambapy`` package's (``pscan``) at S2-SSM's shape (32 x 6 slot series of 8 steps,
  d_inner, d_state); and the Mamba layer stack of S2-SSM against ``mambapy``'s
  ``MambaBlock`` stack with the same sizes (target for the scan: >= 2x faster).
  ``mambapy`` is a benchmark-only dependency (``pip install .[bench]``); without it those
  figures are reported as skipped.

Every figure is the median over ``repeats`` timed runs of ``steps`` steps, in
milliseconds per step (``ms_per_step``; each run's figure is in ``runs_ms``); ratios
compare figures of the same run. The runs are interleaved (every case once, then every
case again, ...) after a warm-up of each, so a slow spell of a shared machine falls on
all the cases alike instead of on whichever ran then.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mbrl_causal.world_models.config import WORLD_MODELS, WorldModelConfig
from mbrl_causal.world_models.model import SequenceBatch, WorldModel
from mbrl_causal.world_models.ssm import MambaLayer, selective_scan

__all__ = ["bench_models"]


def _interleaved_ms(
    cases: dict[str, Callable[[], Any]],
    steps: int,
    repeats: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Time every case ``repeats`` times, interleaved; ms per step, median and runs."""
    for name, fn in cases.items():
        if progress:
            progress(f"warm-up: {name}")
        for _ in range(3):
            fn()
    runs: dict[str, list[float]] = {name: [] for name in cases}
    enabled = gc.isenabled()
    try:
        for r in range(repeats):
            if progress:
                progress(f"run {r + 1} of {repeats}")
            for name, fn in cases.items():
                gc.collect()
                gc.disable()  # as timeit does: no collector pause inside a timed run
                t0 = time.perf_counter()
                for _ in range(steps):
                    fn()
                runs[name].append((time.perf_counter() - t0) / steps * 1000.0)
                if enabled:
                    gc.enable()
    finally:
        if enabled:  # the collector as the caller had it, even after an error
            gc.enable()
    return {
        name: {"ms_per_step": statistics.median(ms), "runs_ms": ms} for name, ms in runs.items()
    }


def _batch(b: int, t: int, n: int, gen: torch.Generator) -> SequenceBatch:
    return SequenceBatch(
        torch.rand(b, t + 1, n, 4, generator=gen) * 2 - 1,
        torch.randint(0, 3, (b, t), generator=gen),
        torch.zeros(b, t),
        torch.ones(b, t),
        torch.zeros(b, dtype=torch.long),
        torch.zeros(b, t, n + 2, n, dtype=torch.bool),
    )


def _model_step(name: str, batch: SequenceBatch) -> Callable[[], None]:
    model = WorldModel(WorldModelConfig(name=name), (0,))
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        terms, _ = model.loss(batch, 1e-4, gen)
        opt.zero_grad()
        terms.total.backward()
        opt.step()

    return step


def _encoder_step(cfg: WorldModelConfig, tokens: torch.Tensor) -> Callable[[], None]:
    layer = nn.TransformerEncoderLayer(
        cfg.d_model,
        cfg.n_heads,
        cfg.mlp_hidden,
        dropout=0.0,
        batch_first=True,
        norm_first=True,
        activation="gelu",
    )
    net = nn.Sequential(
        nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False),
        nn.Linear(cfg.d_model, 4),
    )
    opt = torch.optim.Adam(net.parameters(), 1e-4)

    def step() -> None:
        loss = net(tokens).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _scan_inputs(b: int, t: int, d: int, n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [
        torch.randn(b, t, d, generator=g).requires_grad_(),
        (torch.rand(b, t, d, generator=g) * 0.1).requires_grad_(),
        (-torch.rand(d, n, generator=g) * n).requires_grad_(),
        torch.randn(b, t, n, generator=g).requires_grad_(),
        torch.randn(b, t, n, generator=g).requires_grad_(),
        torch.ones(d).requires_grad_(),
    ]


class MambapyMissing(Exception):
    """The benchmark-only ``mambapy`` package cannot be imported."""


def _mambapy_scan(u, delta, A, B, C, D):  # type: ignore[no-untyped-def]
    from mambapy.pscan import pscan

    dA = torch.exp(delta.unsqueeze(-1) * A)
    bx = delta.unsqueeze(-1) * B.unsqueeze(2) * u.unsqueeze(-1)
    return (pscan(dA, bx) @ C.unsqueeze(-1)).squeeze(3) + D * u


def _mamba_cases(cfg: WorldModelConfig, slots: int, t: int) -> dict[str, Callable[[], Any]]:
    """The scan and layer-stack steps, ours and mambapy's (MambapyMissing without it)."""
    try:
        from mambapy.mamba import MambaBlock, MambaConfig
    except ImportError as e:
        raise MambapyMissing(str(e)) from e

    d_inner = cfg.expand * cfg.d_model
    u, delta, A, B, C, D = _scan_inputs(slots, t, d_inner, cfg.d_state)
    x = torch.randn(slots, t, cfg.d_model)
    ours = nn.Sequential(
        *(
            MambaLayer(cfg.d_model, cfg.d_state, cfg.expand, cfg.d_conv, "torch")
            for _ in range(cfg.n_layers)
        )
    )
    mcfg = MambaConfig(
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        d_state=cfg.d_state,
        expand_factor=cfg.expand,
        d_conv=cfg.d_conv,
        pscan=True,
    )
    ref = nn.Sequential(*(MambaBlock(mcfg) for _ in range(cfg.n_layers)))
    return {
        "scan": lambda: selective_scan(u, delta, A, B, C, D).square().mean().backward(),
        "mambapy_scan": lambda: _mambapy_scan(u, delta, A, B, C, D).square().mean().backward(),
        "mamba_layers": lambda: ours(x).square().mean().backward(),
        "mambapy_layers": lambda: ref(x).square().mean().backward(),
    }


def bench_models(
    steps: int = 20,
    repeats: int = 5,
    batch: int = 32,
    seq_len: int = 8,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time every world model's train step and the references (see the module doc)."""
    cfg, n = WorldModelConfig(), 4
    gen = torch.Generator().manual_seed(0)
    data = _batch(batch, seq_len, n, gen)
    result: dict[str, Any] = {
        "unit": "milliseconds per train step (median of runs)",
        "batch": {"sequences": batch, "steps": seq_len, "objects": n, "tokens": n + 2},
        "sizes": {
            k: getattr(cfg, k)
            for k in ("d_model", "n_layers", "n_heads", "mlp_hidden", "d_state", "expand", "d_conv")
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "steps": steps,
        "repeats": repeats,
    }
    cases = {name: _model_step(name, data) for name in WORLD_MODELS}
    tokens = torch.randn(batch * seq_len, n + 2, cfg.d_model)
    cases["transformer_encoder"] = _encoder_step(cfg, tokens)
    try:
        cases.update(_mamba_cases(cfg, batch * (n + 2), seq_len))
    except MambapyMissing:
        reason = "mambapy is not installed (pip install '.[bench]')"
        result["mambapy_scan"] = result["mambapy_layers"] = {"skipped": reason}
    result.update(_interleaved_ms(cases, steps, repeats, progress))
    result["ratios"] = _ratios(result)
    return result


def _ratios(r: dict[str, Any]) -> dict[str, float | None]:
    def ms(key: str) -> float | None:
        v = r.get(key, {})
        return v.get("ms_per_step") if isinstance(v, dict) else None

    def ratio(a: str, b: str) -> float | None:
        x, y = ms(a), ms(b)
        return None if x is None or y is None else x / y

    return {
        "spartan_over_transformer_encoder": ratio("spartan", "transformer_encoder"),
        "dense_transformer_over_transformer_encoder": ratio(
            "dense-transformer", "transformer_encoder"
        ),
        "mambapy_scan_over_ours": ratio("mambapy_scan", "scan"),
        "mambapy_layers_over_ours": ratio("mambapy_layers", "mamba_layers"),
        "s2ssm_over_spartan": ratio("s2ssm", "spartan"),
    }
