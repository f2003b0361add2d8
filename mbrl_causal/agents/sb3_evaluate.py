"""``mbrl-causal evaluate RUN_DIR`` for the SB3 agents (``--agent ppo|*-imagination``).

Per regime: ``episodes`` episodes of the real env fixed to it (objects mode), actions
from the SB3 policy of the latest checkpoint (or of ``--checkpoint STEP``), deterministic.
``return_mean``/``return_std`` over them (points won minus points lost); for the
imagination agents ``mse`` is the world model's one-step next-observation MSE per object
feature over every step (under the regime's codebook token) and ``shd`` the differing
local-graph entries per step against ``info["local_graph"]``, with ``edges`` and
``per_edge`` as for the Dreamer agent (:mod:`.evaluate`). The SB3 agents do not
adapt: held-out regimes are played directly. Writes ``RUN_DIR/eval/eval.json``,
``summary.md`` and ``graphs.png`` (in ``RUN_DIR/eval/step_<step>/`` with ``--checkpoint``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl_causal.agents import run as R
from mbrl_causal.envs.regimes import REGIMES
from mbrl_causal.io import write_atomic, write_json
from mbrl_causal.world_models.data import parse_regimes
from mbrl_causal.world_models.metrics import GraphStats

__all__ = ["evaluate_sb3_run", "sb3_summary_markdown"]

MAX_STEPS = 5_000  # safety bound on the steps of one evaluation episode


def _load(rd: Path, checkpoint: int | None = None) -> tuple[dict[str, Any], Any, Any]:
    from stable_baselines3 import PPO, SAC

    from mbrl_causal.world_models.config import stored_world_model_config
    from mbrl_causal.world_models.model import WorldModel

    body = R.read_checkpoint(R.find_checkpoint(rd, checkpoint))
    cls = SAC if body["algorithm"].startswith("sac") else PPO
    algo = cls.load(io.BytesIO(body["sb3"]), device="cpu")
    model = None
    if body.get("world_model_state") is not None:
        model = WorldModel(stored_world_model_config(body["world_model"]),
                           tuple(r.id for r in REGIMES),
                           int(getattr(algo.action_space, "n", 1)),
                           body["algorithm"] == "ppo-imagination")  # fmt: skip
        model.load_state_dict(body["world_model_state"])
        model.eval()
    return body, algo, model


@torch.no_grad()
def _episode(env: Any, algo: Any, model: Any, rid: int, seed: int,
             stats: GraphStats, errors: list[float]) -> float:  # fmt: skip
    obs, _ = env.reset(seed=seed)
    total = 0.0
    for _ in range(MAX_STEPS):
        action, _ = algo.predict(obs, deterministic=True)
        nxt, reward, term, trunc, info = env.step(action)
        total += float(reward)
        if model is not None:
            a = torch.as_tensor(np.asarray(action))[None]
            out, _ = model.step(torch.from_numpy(obs)[None], a, torch.tensor([rid]))
            errors.append(float((out.next_latent[0, 0] - torch.from_numpy(nxt)).square().mean()))
            stats.add(out.graph[:, 0], torch.from_numpy(info["local_graph"])[None])
        obs = nxt
        if term or trunc:
            return total
    raise RuntimeError(f"an evaluation episode did not end in {MAX_STEPS} steps")


def evaluate_sb3_run(
    run_dir: str | Path,
    regimes: str = "all",
    episodes: int = 5,
    seed: int = 10_000,
    checkpoint: int | None = None,
) -> dict[str, Any]:
    """Evaluate an SB3 run's checkpoint (the env step of a kept one; None: the latest);
    writes ``RUN_DIR/eval/`` (``RUN_DIR/eval/step_<step>/`` for a given step)."""

    import gymnasium as gym

    import mbrl_causal.envs  # noqa: F401

    rd = Path(run_dir)
    R.read_config(rd)
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    ids = parse_regimes(regimes)
    body, algo, model = _load(rd, checkpoint)
    cfg = body["agent"]
    action_type = "continuous" if body["algorithm"].startswith("sac") else "discrete"
    per_regime: dict[str, Any] = {}
    graphs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for rid in ids:
        env = gym.make(cfg["env"], regime_schedule=rid, obs_mode="objects",
                       action_type=action_type)  # fmt: skip
        stats, errors = GraphStats(), list[float]()
        rets = [_episode(env, algo, model, rid, seed + 100 * rid + k, stats, errors)
                for k in range(episodes)]  # fmt: skip
        nodes = list(env.get_wrapper_attr("graph_nodes"))
        env.close()
        g = stats.result() if stats.count else {}
        per_regime[REGIMES[rid].name] = {
            "kind": "simple" if REGIMES[rid].simple else "composite",
            "return_mean": float(np.mean(rets)), "return_std": float(np.std(rets)),
            "returns": rets, "mse": float(np.mean(errors)) if errors else None,
            "shd": g.get("shd"), "edges": g.get("edges"),
        }  # fmt: skip
        if stats.count:
            graphs[REGIMES[rid].name] = stats.frequencies()
            per_regime[REGIMES[rid].name]["per_edge"] = stats.per_edge(nodes, nodes[:-2])
    record = {"run_dir": str(rd), "algorithm": body["algorithm"], "env": cfg["env"],
              "world_model": cfg["world_model"] if model is not None else None,
              "episodes": episodes, "checkpoint_step": body["counters"]["steps"],
              "per_regime": per_regime}  # fmt: skip
    out_dir = R.eval_dir(rd, checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "eval.json", record)
    text = sb3_summary_markdown(record)
    write_atomic(out_dir / "summary.md", lambda t: t.write_text(text), ".md")
    if graphs:
        from mbrl_causal.agents.evaluate import _plot_graphs

        _plot_graphs(graphs, out_dir / "graphs.png")
    return record


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def sb3_summary_markdown(record: dict[str, Any]) -> str:
    """The evaluation table of an SB3 run (Markdown) with the units of every column."""
    lines = [
        f"# Evaluation of {record['run_dir']} (step {record['checkpoint_step']})",
        "",
        f"Agent {record['algorithm']}"
        + (f", world model {record['world_model']}" if record["world_model"] else "")
        + f", {record['episodes']} episode(s) per regime, deterministic actions.",
        "",
        "| regime | kind | return mean | return std | WM mse | SHD |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, e in record["per_regime"].items():
        mse, shd = _fmt(e["mse"], ".2e"), _fmt(e["shd"])
        lines.append(f"| {name} | {e['kind']} | {_fmt(e['return_mean'])} | "
                     f"{_fmt(e['return_std'])} | {mse} | {shd} |")  # fmt: skip
    lines += ["", "Return: points won minus points lost per episode. WM mse: one-step "
              "next-observation squared error per object feature. SHD: differing local-graph "
              "entries per step."]  # fmt: skip
    return "\n".join(lines) + "\n"
