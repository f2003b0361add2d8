"""``mbrl-causal evaluate RUN_DIR``: returns, world-model error and graphs per regime,
adaptation after a switch to held-out regimes, switch detection.

Protocol (the agent's latest checkpoint, loaded afresh for every regime, so an adapted
token of one regime never leaks into another):

- **training (simple) regimes**: ``episodes`` sub-envs fixed to the regime, one episode
  each; ``return_mean``/``return_std`` over them (reward units: points won minus points
  lost), ``mse`` the world model's one-step next-latent MSE over every step (objects mode:
  per object feature), ``shd`` differing graph entries per step against
  ``info["local_graph"]``, ``edges`` predicted edges per step, and
  ``per_edge["parent->child"]`` (object self edges left out) the fraction of steps with
  the edge ``true``, ``predicted``, a false positive ``fp`` and a false negative ``fn``
  (the numbers behind ``graphs.png``; the ``fp + fn`` of all entries add up to ``shd``).
  Under ``--regime-info none`` the agent starts from slot 0 and its trigger recalls the
  token.
- **held-out (composite) regimes**: one env plays ``pre_episodes`` episodes of neutral
  (the pre-switch level is their mean return), then the env's own schedule switches to
  the held-out regime for ``episodes`` episodes; ``returns_after_switch`` lists their
  returns in order, ``recovered_within_episodes`` is the first post-switch episode
  (1-based) whose return reaches the pre-switch level minus 10% of its magnitude
  (``>= pre - 0.1 |pre|``, i.e. >= 90% of a positive level), null if none. The agent
  adapts with ``--adapt-trigger`` (``none``: it keeps its pre-switch token). Its ``mse``,
  ``shd``, ``edges`` and ``per_edge`` are over every step of the stream, pre-switch
  steps included.
- **detection**: the surprise detector's alarms against the switches of the held-out
  streams: ``delay_mean`` (env steps from the switch to the alarm), ``false_alarms``.

Outputs in ``RUN_DIR/eval/`` (``RUN_DIR/eval/step_<step>/`` with ``--checkpoint STEP``):
``eval.json``, ``summary.md`` (the table), ``adaptation.png`` (returns per episode after
the switch, with the pre-switch level), ``graphs.png`` (per regime: edge frequencies
predicted vs true), and with ``--video`` ``videos/<regime>.mp4`` (the first episode of
each regime).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mbrl_causal.agents import run as R
from mbrl_causal.agents.config import AgentConfig
from mbrl_causal.agents.dreamer.agent import CausalDreamer
from mbrl_causal.envs.pong import OBJECT_NAMES
from mbrl_causal.envs.regimes import REGIMES
from mbrl_causal.io import write_atomic, write_json
from mbrl_causal.world_models.data import parse_regimes
from mbrl_causal.world_models.metrics import GraphStats

__all__ = ["evaluate_run", "summary_markdown"]

PRE_REGIME = 0  # neutral: the pre-switch regime of the held-out protocol
MAX_STEPS = 20_000  # safety bound on the steps of one evaluation stream


def _load(body: dict[str, Any], num_envs: int, env_kwargs: dict[str, Any],
          overrides: dict[str, Any]) -> CausalDreamer:  # fmt: skip
    agent = CausalDreamer._from_state(body, None, {"num_envs": num_envs, **overrides},
                                      env_kwargs)  # fmt: skip
    agent.learning = False
    agent.eval_graphs = GraphStats()
    agent.model.eval()
    return agent


def _run(agent: CausalDreamer, episodes: int, seed: int, frames: list | None) -> None:
    """Step until ``episodes`` episodes have finished (per sub-env when E > 1)."""
    agent._obs, _ = agent.env.reset(seed=seed)
    n = agent.config.num_envs
    per_env = episodes if n == 1 else 1
    for _ in range(MAX_STEPS):
        counts = np.bincount([f[3] for f in agent.finished], minlength=n)
        if (counts >= per_env).all():
            return
        if frames is not None and counts[0] == 0:
            frames.append(agent.env.render()[0])  # type: ignore[index]
        agent._env_step()
    raise RuntimeError(f"evaluation did not finish {episodes} episode(s) in {MAX_STEPS} steps")


def _figures(agent: CausalDreamer) -> dict[str, Any]:
    stats = agent.eval_graphs
    g = stats.result() if stats is not None else {}
    figures: dict[str, Any] = {
        "mse": float(np.mean(agent.eval_errors)) if agent.eval_errors else None,
        "shd": g.get("shd"),
        "edges": g.get("edges"),
    }
    if stats is not None and stats.count:
        env: Any = agent.env  # the native vector env: its graph_nodes, as fit names them
        nodes = list(env.graph_nodes)
        figures["per_edge"] = stats.per_edge(nodes, nodes[:-2])
    return figures


def evaluate_run(
    run_dir: str | Path,
    regimes: str = "all",
    episodes: int = 5,
    adapt_trigger: str | None = None,
    video: bool = False,
    seed: int = 10_000,
    pre_episodes: int = 2,
    checkpoint: int | None = None,
    adapt_ac_updates: int | None = None,
    recall_tolerance: float | None = None,
) -> dict[str, Any]:
    """Evaluate a run's checkpoint and return the record.

    ``checkpoint``: the env step of a kept checkpoint (None: the latest). Outputs go to
    ``RUN_DIR/eval/`` for the latest and to ``RUN_DIR/eval/step_<step>/`` for a given step,
    so evaluating a run's checkpoints one by one (a learning curve of deterministic
    returns, ``benchmarks/eval_curve.sh``) keeps every result.

    ``adapt_ac_updates``: overrides the run's ``adapt_ac_updates`` (actor-critic updates in
    imagination right after a token is fitted for a held-out regime, then the policy acts
    with it; 0: the policy acts with the best known slot's token). ``recall_tolerance``:
    overrides the run's ``recall_tolerance``.
    """
    rd = Path(run_dir)
    if R.read_config(rd).get("algorithm", "dreamer") != "dreamer":  # an SB3 agent's run
        from mbrl_causal.agents.sb3_evaluate import evaluate_sb3_run

        return evaluate_sb3_run(rd, regimes, episodes, seed, checkpoint)
    body = R.read_checkpoint(R.find_checkpoint(rd, checkpoint))
    ids = parse_regimes(regimes)
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    overrides: dict[str, Any] = {}
    if adapt_trigger is not None:
        overrides["adapt_trigger"] = adapt_trigger
    if adapt_ac_updates is not None:
        overrides["adapt_ac_updates"] = adapt_ac_updates
    if recall_tolerance is not None:
        overrides["recall_tolerance"] = recall_tolerance
    resolved = AgentConfig(**{**body["config"], **overrides})  # checks the overrides first
    out_dir = R.eval_dir(rd, checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_regime: dict[str, Any] = {}
    delays: list[int] = []
    false_alarms = switches = 0
    graphs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    videos: dict[str, list[np.ndarray]] = {}
    for rid in ids:
        reg = REGIMES[rid]
        frames: list[np.ndarray] | None = [] if video else None
        render = {"render_mode": "rgb_array"} if video else {}
        if reg.simple:
            agent = _load(body, episodes, {"regime_schedule": rid, **render}, overrides)
            if agent.config.regime_info == "none" and agent.config.adapt_trigger != "none":
                for i in range(episodes):
                    agent.adapter.trigger(i)  # infer the token from the first K steps
            _run(agent, episodes, seed + rid, frames)
            rets = [f[0] for f in agent.finished if f[1] > 0][:episodes]
            entry: dict[str, Any] = {
                "kind": "simple", "return_mean": float(np.mean(rets)),
                "return_std": float(np.std(rets)), **_figures(agent),
            }  # fmt: skip
        else:
            schedule = [[0, PRE_REGIME], [pre_episodes, rid]]
            agent = _load(body, 1, {"regime_schedule": schedule, **render}, overrides)
            _run(agent, pre_episodes + episodes, seed + rid, frames)
            rets = [f[0] for f in agent.finished]
            pre, post = rets[:pre_episodes], rets[pre_episodes : pre_episodes + episodes]
            level = float(np.mean(pre))
            ok = [i + 1 for i, r in enumerate(post) if r >= level - 0.1 * abs(level)]
            det = agent.detection
            delays += det.delays
            false_alarms += det.false_alarms
            switches += det.switches
            entry = {"kind": "composite", "return_mean": float(np.mean(post)),
                     "return_std": float(np.std(post)), **_figures(agent),
                     "pre_switch_return": level, "returns_after_switch": post,
                     "recovered_within_episodes": ok[0] if ok else None,
                     "adaptations": [e.as_dict() for e in agent.events]}  # fmt: skip
        per_regime[reg.name] = entry
        if agent.eval_graphs is not None and agent.eval_graphs.count:
            graphs[reg.name] = agent.eval_graphs.frequencies()
        if frames:
            videos[reg.name] = frames
        agent.close()
    cfg = body["config"]
    record = {
        "run_dir": str(rd), "env": cfg["env"], "world_model": cfg["world_model"],
        "regime_info": cfg["regime_info"],
        "adapt_trigger": resolved.adapt_trigger, "adapt_ac_updates": resolved.adapt_ac_updates,
        "recall_tolerance": resolved.recall_tolerance,
        "episodes": episodes, "pre_episodes": pre_episodes, "checkpoint_step":
        body["counters"]["steps"], "per_regime": per_regime,
        "detection": {"delay_mean": float(np.mean(delays)) if delays else None,
                      "false_alarms": false_alarms, "switches": switches,
                      "detected": len(delays)},
    }  # fmt: skip
    write_json(out_dir / "eval.json", record)
    write_atomic(out_dir / "summary.md", lambda t: t.write_text(summary_markdown(record)), ".md")
    _plot_adaptation(record, out_dir / "adaptation.png")
    _plot_graphs(graphs, out_dir / "graphs.png")
    if videos:
        from mbrl_causal.play import write_video

        (out_dir / "videos").mkdir(exist_ok=True)
        for name, fr in videos.items():
            write_video(out_dir / "videos" / f"{name.replace('+', '_')}.mp4", fr, "mp4")
    return record


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def summary_markdown(record: dict[str, Any]) -> str:
    """The evaluation table (Markdown) with the units of every column."""
    if record.get("algorithm", "dreamer") != "dreamer":
        from mbrl_causal.agents.sb3_evaluate import sb3_summary_markdown

        return sb3_summary_markdown(record)
    lines = [
        f"# Evaluation of {record['run_dir']} (step {record['checkpoint_step']})",
        "",
        f"World model {record['world_model']}, regime info {record['regime_info']}, "
        f"adapt trigger {record['adapt_trigger']}"
        + (
            f" (recall tolerance {record.get('recall_tolerance', '-')}; after a fitted "
            + (
                f"token {record['adapt_ac_updates']} policy updates in imagination on it)"
                if record.get("adapt_ac_updates")
                else "token the policy acts with the best known one)"
            )
            if record["adapt_trigger"] != "none"
            else ""
        )
        + f", {record['episodes']} episode(s) per regime.",
        "",
        "| regime | kind | return mean | return std | WM mse | SHD | returns after switch | "
        "recovered within |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for name, e in record["per_regime"].items():
        after = e.get("returns_after_switch")
        rec = _fmt(e.get("recovered_within_episodes"), "d") if after is not None else "-"
        lines.append(
            f"| {name} | {e['kind']} | {_fmt(e['return_mean'])} | {_fmt(e['return_std'])} | "
            f"{_fmt(e['mse'], '.2e')} | {_fmt(e['shd'])} | "
            f"{'-' if after is None else ', '.join(f'{r:+.0f}' for r in after)} | "
            f"{rec} |"
        )
    d = record["detection"]
    lines += [
        "",
        f"Detection (surprise detector vs the oracle's switches): {d['detected']} of "
        f"{d['switches']} switch(es) detected, mean delay {_fmt(d['delay_mean'], '.0f')} env "
        f"steps, {d['false_alarms']} false alarm(s).",
        "",
        "Return: points won minus points lost per episode. WM mse: one-step next-latent "
        "squared error per latent entry. SHD: differing local-graph entries per step. "
        "Recovered within: first post-switch episode with return >= the pre-switch level "
        "minus 10% of its magnitude.",
    ]
    return "\n".join(lines) + "\n"


def _plot_adaptation(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    held = {k: v for k, v in record["per_regime"].items() if "returns_after_switch" in v}
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, e) in enumerate(held.items()):
        xs = np.arange(1, len(e["returns_after_switch"]) + 1)
        (line,) = ax.plot(xs, e["returns_after_switch"], marker="o", label=name)
        ax.axhline(e["pre_switch_return"], color=line.get_color(), ls="--", lw=0.8,
                   label="pre-switch level" if i == 0 else None)  # fmt: skip
    ax.set_xlabel("episode after the switch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("return (points won - lost)")
    ax.set_title(f"Adaptation after a switch (trigger: {record['adapt_trigger']})")
    if held:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no held-out regime evaluated", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    write_atomic(path, lambda t: fig.savefig(t, format="png", dpi=100), ".png")
    plt.close(fig)


def _plot_graphs(graphs: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(graphs) or ["none"]
    fig, axes = plt.subplots(2, len(names), figsize=(1.6 * len(names) + 1.5, 5.0), squeeze=False,
                             layout="constrained")  # fmt: skip
    for j, name in enumerate(names):
        for i, label in enumerate(("predicted", "true")):
            ax = axes[i, j]
            if name in graphs:
                freq = graphs[name][i]
                im = ax.imshow(freq, vmin=0, vmax=1, cmap="viridis")
                n = freq.shape[1]
                names = [*OBJECT_NAMES[:n], *(f"d{k}" for k in range(n - len(OBJECT_NAMES)))]
                ax.set_xticks(range(n), names, rotation=90)
                ax.set_yticks(range(n + 2), [*names, "action", "regime"])
            ax.set_title(f"{name}\n{label}" if i == 0 else label, fontsize=7)
            if i == 1:
                ax.set_xlabel("child", fontsize=6)
            if j == 0:
                ax.set_ylabel("parent", fontsize=6)
            ax.tick_params(labelsize=5)
    if graphs:
        fig.colorbar(im, ax=axes, shrink=0.6, label="edge frequency per step")
    write_atomic(path, lambda t: fig.savefig(t, format="png", dpi=100), ".png")
    plt.close(fig)
