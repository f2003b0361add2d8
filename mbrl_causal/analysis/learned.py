"""Learned world models on vector-state (MuJoCo) envs, compared with the Jacobian truth.

SPARTAN and S2-SSM (:class:`~mbrl_causal.world_models.WorldModel`) act on object tokens.
:class:`VectorTokens` turns a state vector into N group tokens of L numbers (zero-padded,
standardised), one per group of state dimensions; the default grouping is one token per
joint, holding the joint's position and velocity: ``[q_j, v_j]``. Only envs whose joints
are all hinges or slides qualify (then ``(qpos, qvel)`` are the tangent coordinates the
truth is taken in; Ant's quaternion does not). :class:`VectorWorldModel` is a
``WorldModel`` whose token projections take L numbers instead of 4, with a continuous
action token (one per step, all actuators).

Comparison on the same states as the truth (:func:`compare`), at threshold T:

- precision / recall of the non-zero entries (|J| >= T) of the model's Jacobian (autograd,
  eval mode: the gates are thresholded, so closed edges give exact zeros) against the
  ground-truth entries, pooled over samples;
- the sparsity-aware error (Pandaram et al.): mean |J_model| over the entries where the
  truth is zero (what a model that respects sparsity keeps at 0), next to the mean error
  |J_model - J_true| over all entries;
- the sparsity gap: mean local sparsity of the truth minus that of the model;
- the model's local graph (N + 2 parents incl. action and regime, N groups) against the
  truth aggregated to the same blocks.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mbrl_causal.analysis.jacobian import JacobianSamples
from mbrl_causal.io import write_atomic, write_json
from mbrl_causal.world_models.config import WorldModelConfig
from mbrl_causal.world_models.model import SequenceBatch, WorldModel

__all__ = [
    "VectorModelConfig",
    "VectorTokens",
    "VectorWorldModel",
    "compare",
    "model_record",
    "pattern_scores",
    "train_vector_model",
]


@dataclass
class VectorModelConfig:
    """A world model on a vector-state env (written as ``RUN_DIR/config.json``)."""

    env: str = "HalfCheetah-v5"
    """Gymnasium MuJoCo v5 id (hinge/slide joints only)."""
    world_model: str = "spartan"
    """``spartan`` or ``s2ssm``."""
    data_steps: int = 10_000
    """Random-policy env steps of training data."""
    train_steps: int = 2_000
    """Gradient steps."""
    batch_size: int = 32
    """Sequences per batch."""
    seq_len: int = 8
    """Transitions per sequence (within an episode)."""
    lr: float = 1e-3
    """Adam learning rate (cosine decay, see world_models.training.train)."""
    d_model: int = 64
    """Token width."""
    n_layers: int = 2
    """Layers / blocks of the core."""
    seed: int = 0
    """Seed of data, weights and gates."""
    groups: list[list[int]] | None = None
    """State indices per token; None: one token per joint, [q_j, v_j]."""

    def __post_init__(self) -> None:
        if self.world_model not in ("spartan", "s2ssm"):
            raise ValueError(f"world_model must be spartan or s2ssm, got {self.world_model!r}")
        for k in ("data_steps", "train_steps", "batch_size", "seq_len", "d_model", "n_layers"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be an int >= 1, got {v!r}")


class VectorTokens:
    """State vectors (..., D) <-> standardised group tokens (..., N, L), zero-padded.

    >>> tok = VectorTokens([[0, 2], [1]], mean=np.zeros(3), std=np.ones(3))
    >>> tok.encode(torch.tensor([[1.0, 2.0, 3.0]])).tolist()
    [[[1.0, 3.0], [2.0, 0.0]]]
    """

    def __init__(self, groups: list[list[int]], mean: np.ndarray, std: np.ndarray) -> None:
        flat = sorted(i for g in groups for i in g)
        if not groups or flat != list(range(len(mean))):
            raise ValueError(f"groups must cover state indices 0..{len(mean) - 1} once each")
        self.groups = [list(map(int, g)) for g in groups]
        self.n, self.width, self.dim = len(groups), max(map(len, groups)), len(mean)
        rows = [(k, j, i) for k, g in enumerate(self.groups) for j, i in enumerate(g)]
        self._slot = torch.tensor([k * self.width + j for k, j, _ in rows])
        self._index = torch.tensor([i for _, _, i in rows])
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.as_tensor(np.maximum(std, 1e-6), dtype=torch.float32)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.float() - self.mean) / self.std
        out = z.new_zeros(*z.shape[:-1], self.n * self.width)
        out[..., self._slot] = z[..., self._index]
        return out.reshape(*z.shape[:-1], self.n, self.width)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        flat = tokens.reshape(*tokens.shape[:-2], self.n * self.width)
        z = flat.new_zeros(*flat.shape[:-1], self.dim)
        z[..., self._index] = flat[..., self._slot]
        return z * self.std + self.mean


def joint_groups(model: Any) -> list[list[int]]:
    """One group per joint, [qpos index, qvel index] (hinge/slide joints only)."""
    import mujoco

    kinds = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
    if not np.isin(model.jnt_type, kinds).all() or model.na:
        raise ValueError(
            "learned models need envs with hinge/slide joints only (no free or "
            "ball joint, no activations): e.g. HalfCheetah, Hopper, Walker2d, "
            "Reacher, Swimmer, Pusher, InvertedPendulum"
        )
    return [
        [int(model.jnt_qposadr[j]), model.nq + int(model.jnt_dofadr[j])] for j in range(model.njnt)
    ]


class VectorWorldModel(WorldModel):
    """A :class:`WorldModel` on group tokens of width ``token_width`` (continuous action)."""

    def __init__(self, config: WorldModelConfig, token_width: int, action_dim: int) -> None:
        super().__init__(config, (0,), action_dim, discrete_actions=False)
        c, d = config, config.d_model
        self.latent_dim = token_width
        self.in_proj = nn.Sequential(
            nn.Linear(token_width, c.mlp_hidden), nn.SiLU(), nn.Linear(c.mlp_hidden, d)
        )
        self.out_proj = nn.Linear(d, token_width)


def _model_config(cfg: VectorModelConfig) -> WorldModelConfig:
    return WorldModelConfig(
        name=cfg.world_model,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=4,
        mlp_hidden=2 * cfg.d_model,
        ssm_backend="torch",
        sparsity_warmup=min(300, cfg.train_steps // 3),
        # the README's MuJoCo results were measured with these two
        sparsity_constraint="total",
        gate_logit_weight=0.0,
    )


def _episodes(env_id: str, steps: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random-policy episodes: (states (T + 1, D), actions (T, nu)) each."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    data = env.unwrapped.data  # type: ignore[attr-defined]
    out, xs, us = [], [np.concatenate([data.qpos, data.qvel])], []
    for t in range(steps):
        u = env.action_space.sample()
        _, _, term, trunc, _ = env.step(u)
        xs.append(np.concatenate([data.qpos, data.qvel]))
        us.append(u)
        if term or trunc or t == steps - 1:
            out.append((np.array(xs), np.array(us, np.float32)))
            env.reset()
            xs, us = [np.concatenate([data.qpos, data.qvel])], []
    env.close()
    return out


def _sampler(
    eps: list[tuple[np.ndarray, np.ndarray]], tok: VectorTokens, cfg: VectorModelConfig
) -> Any:
    starts = [(e, s) for e, (_, u) in enumerate(eps) for s in range(len(u) - cfg.seq_len + 1)]
    if not starts:
        raise ValueError(f"no episode is longer than seq_len={cfg.seq_len}; collect more data")
    rng = np.random.default_rng(cfg.seed)
    n, t = tok.n, cfg.seq_len

    def sample() -> SequenceBatch:
        pick = rng.integers(len(starts), size=cfg.batch_size)
        x = np.stack([eps[starts[i][0]][0][starts[i][1] : starts[i][1] + t + 1] for i in pick])
        u = np.stack([eps[starts[i][0]][1][starts[i][1] : starts[i][1] + t] for i in pick])
        b = cfg.batch_size
        return SequenceBatch(
            tok.encode(torch.as_tensor(x)),
            torch.as_tensor(u),
            torch.zeros(b, t),
            torch.ones(b, t),
            torch.zeros(b, dtype=torch.long),
            torch.zeros(b, t, n + 2, n, dtype=torch.bool),
        )

    return sample


def train_vector_model(
    cfg: VectorModelConfig,
    run_dir: str | Path,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Collect random-policy data, train, write ``RUN_DIR/{model.pt,config.json}``.

    ``progress(1)`` is called after every gradient step.
    """
    import gymnasium as gym

    from mbrl_causal.world_models.training import train

    env = gym.make(cfg.env)
    groups = cfg.groups or joint_groups(env.unwrapped.model)  # type: ignore[attr-defined]
    nu = int(env.action_space.shape[0])  # type: ignore[index]
    eps = _episodes(cfg.env, cfg.data_steps, cfg.seed)
    states = np.concatenate([x for x, _ in eps])
    tok = VectorTokens(groups, states.mean(0), states.std(0))
    torch.manual_seed(cfg.seed)
    model = VectorWorldModel(_model_config(cfg), tok.width, nu)

    def on_step(step: int, last: dict[str, float]) -> None:
        if progress is not None:
            progress(1)

    sample = _sampler(eps, tok, cfg)
    train(model, sample, cfg.train_steps, cfg.lr, seed=cfg.seed, on_step=on_step)
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": model.state_dict(),
        "groups": groups,
        "nu": nu,
        "mean": tok.mean,
        "std": tok.std,
    }
    write_atomic(out / "model.pt", lambda t: torch.save(payload, t), ".pt")
    write_json(out / "config.json", {**asdict(cfg), "groups": groups})
    return out


def load_vector_model(
    run_dir: str | Path,
) -> tuple[VectorModelConfig, VectorWorldModel, VectorTokens]:
    """The config, model (eval mode) and tokens of a run written by train_vector_model."""
    rd = Path(run_dir)
    if not (rd / "model.pt").is_file() or not (rd / "config.json").is_file():
        raise ValueError(
            f"{str(rd)!r} holds no vector world model (model.pt, config.json); "
            "train one with --train-model spartan|s2ssm"
        )
    cfg = VectorModelConfig(**json.loads((rd / "config.json").read_text()))
    body = torch.load(rd / "model.pt", map_location="cpu", weights_only=True)
    tok = VectorTokens(body["groups"], body["mean"].numpy(), body["std"].numpy())
    model = VectorWorldModel(_model_config(cfg), tok.width, int(body["nu"]))
    model.load_state_dict(body["state_dict"])
    return cfg, model.eval(), tok


def model_jacobians(
    model: VectorWorldModel, tok: VectorTokens, states: np.ndarray, actions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Autograd J_s (S, D, D), J_a (S, D, nu) in raw state units, and graphs (S, N+2, N)."""
    x = torch.as_tensor(states, dtype=torch.float32).requires_grad_(True)
    u = torch.as_tensor(actions, dtype=torch.float32).requires_grad_(True)
    out = model(tok.encode(x)[:, None], u[:, None], torch.zeros(len(x), dtype=torch.long))
    nxt = tok.decode(out.next_latent[:, 0])
    j_s, j_a = [], []
    for k in range(nxt.shape[1]):  # samples are independent: d(sum_b y_bk)/dx_b = dy_bk/dx_b
        gs, ga = torch.autograd.grad(nxt[:, k].sum(), (x, u), retain_graph=True)
        j_s.append(gs)
        j_a.append(ga)
    graphs = out.graph[:, 0].detach().numpy()
    return torch.stack(j_s, 1).numpy(), torch.stack(j_a, 1).numpy(), graphs


def pattern_scores(pred: np.ndarray, true: np.ndarray, threshold: float) -> dict[str, float | None]:
    """Precision/recall of |pred| >= T against |true| >= T, the sparsity-aware error and gap.

    Precision (recall) is None when nothing is predicted (true) non-zero.

    >>> pattern_scores(np.array([[1.0, 0.5]]), np.array([[2.0, 0.0]]), 1e-6)["precision"]
    0.5
    """
    p, t = np.abs(pred) >= threshold, np.abs(true) >= threshold
    tp = float((p & t).sum())
    zero = ~t
    return {
        "precision": tp / float(p.sum()) if p.any() else None,
        "recall": tp / float(t.sum()) if t.any() else None,
        "sparsity_aware_error": float(np.abs(pred[zero]).mean()) if zero.any() else 0.0,
        "mean_abs_error": float(np.abs(pred - true).mean()),
        "sparsity_true": float(zero.mean()),
        "sparsity_model": float((~p).mean()),
        "sparsity_gap": float(zero.mean() - (~p).mean()),
    }


def _true_blocks(samples: JacobianSamples, groups: list[list[int]], thr: float) -> np.ndarray:
    n = len(groups)
    g = np.zeros((len(samples.J_s), n + 2, n), bool)
    for c, rows in enumerate(groups):
        for p, cols in enumerate(groups):
            g[:, p, c] = (np.abs(samples.J_s[:, rows][:, :, cols]) >= thr).any((1, 2))
        if samples.J_a is not None:
            g[:, n, c] = (np.abs(samples.J_a[:, rows]) >= thr).any((1, 2))
    return g


GRAPH_KEYS = ("precision", "recall", "sparsity_true", "sparsity_model", "sparsity_gap")


def compare(
    model: VectorWorldModel, tok: VectorTokens, samples: JacobianSamples, threshold: float
) -> dict[str, Any]:
    """Learned vs true on the states of ``samples`` (see the module docstring)."""
    if samples.states.shape[1] != tok.dim:
        raise ValueError(
            f"the model's state has {tok.dim} numbers, the env's "
            f"{samples.states.shape[1]}: not the same env"
        )
    j_s, j_a, graphs = model_jacobians(model, tok, samples.states, samples.actions)
    truth = _true_blocks(samples, tok.groups, threshold)
    graph = pattern_scores(graphs.astype(float), truth.astype(float), 0.5)
    return {
        "J_s": pattern_scores(j_s, samples.J_s, threshold),
        "J_a": pattern_scores(j_a, samples.J_a, threshold) if samples.J_a is not None else None,
        "graph": {
            k: graph[k]
            for k in ("precision", "recall", "sparsity_true", "sparsity_model", "sparsity_gap")
        },
        "groups": tok.groups,
    }


def model_record(args: argparse.Namespace, samples: JacobianSamples) -> dict[str, Any]:
    """``--model RUN_DIR`` (and ``--train-model``) of the sparsity command."""
    if args.train_model:
        cfg = VectorModelConfig(
            env=args.env, world_model=args.train_model, train_steps=args.train_steps, seed=args.seed
        )
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), disable=args.no_progress) as bar:
            task = bar.add_task(f"training {cfg.world_model}", total=cfg.train_steps)
            train_vector_model(cfg, args.model, lambda n: bar.update(task, advance=n))
    cfg, model, tok = load_vector_model(args.model)
    if cfg.env != args.env:
        raise ValueError(f"the model in {args.model!r} was trained on {cfg.env}, not {args.env}")
    record = compare(model, tok, samples, args.threshold)
    return {
        "run_dir": str(args.model),
        "world_model": cfg.world_model,
        "train_steps": cfg.train_steps,
        **record,
    }
