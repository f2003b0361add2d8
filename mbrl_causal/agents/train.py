"""``mbrl-causal train``: resolve the config, create or resume the run, learn, evaluate.

Config precedence (lowest first): the preset (``--preset``), the options (``--env``,
``--world-model``, ``--obs``, ``--steps``, ``--regime-info``, ``--adapt-trigger``), then
``--set key=value`` (agent or world-model fields). On ``--resume`` the run's saved config
is used; ``--steps``, ``--adapt-trigger``, ``--set`` of agent fields and of the world
model's training settings (:data:`~mbrl_causal.world_models.config.CHANGEABLE_ON_RESUME`)
are applied and printed (and logged as a ``resume`` record in metrics.jsonl and written to
config.yaml); options that would change the networks, the env, the replay or the saved
state are refused.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbrl_causal.agents import run as R
from mbrl_causal.agents.config import FIXED_ON_RESUME, AgentConfig, load_preset
from mbrl_causal.config import from_mapping, parse_overrides
from mbrl_causal.world_models.config import (
    CHANGEABLE_ON_RESUME,
    WorldModelConfig,
    resumed_world_model_config,
)
from mbrl_causal.world_models.training import check_dense_reference

__all__ = ["TrainRequest", "resolve_configs", "train_command"]


@dataclass
class TrainRequest:
    """The command line of ``train`` (None: not given)."""

    env: str | None = None
    world_model: str | None = None
    obs: str | None = None
    preset: str | None = None
    steps: int | None = None
    logdir: str | None = None
    seed: int = 0
    regime_info: str | None = None
    adapt_trigger: str | None = None
    overrides: list[str] = field(default_factory=list)
    resume: str | None = None
    evaluate: bool = True
    show_progress: bool = True
    agent: str | None = None  # dreamer (default), ppo, ppo-imagination, sac-imagination


def apply_overrides(
    overrides: list[str], agent: dict[str, Any], model: dict[str, Any], agent_fields: set[str]
) -> None:
    """Route ``--set key=value`` items into the agent or the world-model mapping (in place);
    a key of neither gives a ValueError listing every settable field."""
    model_fields = {f.name for f in dataclasses.fields(WorldModelConfig)} - {"name", "obs"}
    for key, value in parse_overrides(overrides).items():
        if key in agent_fields:
            agent[key] = value
        elif key in model_fields:
            model[key] = value
        else:
            allowed = ", ".join(sorted(agent_fields | model_fields))
            raise ValueError(f"--set {key}: not a settable field; allowed: {allowed}")


def check_steps_left(steps: int, total: int, changed: dict[str, Any]) -> None:
    """ValueError when world-model fields change on resume of a run with no steps left: no
    checkpoint would then hold them, and the next resume would go back to the old ones."""
    if steps >= total:
        raise ValueError(
            f"--set {next(iter(changed))}: the run is at env step {steps} of its {total}, so "
            f"nothing would train with it; give --steps N (N > {steps}) as well"
        )


def keep_resume_changes(steps: int, total: int) -> bool:
    """Whether the config changes of a resume are written to config.yaml: only when the run
    trains on (``steps < total``), so that a checkpoint holds them too. A finished run
    resumed with changes (no ``--steps``, or one at or below its step) uses them for this
    command alone, that is for its evaluation (``eval_episodes``; for the Dreamer agent also
    ``adapt_trigger``, ``adapt_ac_updates``, ``recall_tolerance``), and says so;
    config.yaml and the checkpoint keep their values, which a later resume starts from."""
    if steps < total:
        return True
    print(
        f"resume: the run is at env step {steps} of its {total}, so nothing trains; the "
        "overrides apply to this command only (config.yaml is unchanged), that is to its "
        "evaluation (eval_episodes; for the Dreamer agent also adapt_trigger, "
        f"adapt_ac_updates, recall_tolerance); give --steps N (N > {steps}) to train with "
        "them",
        file=sys.stderr,
    )
    return False


def resume_record(changes: dict[str, Any], kept: bool) -> dict[str, Any]:
    """Body of the ``resume`` record of metrics.jsonl: the overrides, and ``"kept": false``
    when they applied to that command only (:func:`keep_resume_changes`)."""
    return {"overrides": changes} if kept else {"overrides": changes, "kept": False}


def split_resume_overrides(
    overrides: list[str], agent_fields: set[str], fixed: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` items of a resume, as (agent fields, world-model fields); a field that may
    not change on resume gives a ValueError listing the ones that may."""
    over: dict[str, Any] = {}
    wm_over: dict[str, Any] = {}
    for key, value in parse_overrides(overrides).items():
        if key in agent_fields and key not in fixed:
            over[key] = value
        elif key in CHANGEABLE_ON_RESUME:
            wm_over[key] = value
        else:
            raise ValueError(
                f"--set {key} cannot change on resume; allowed: agent fields "
                f"{', '.join(sorted(agent_fields - set(fixed)))}; world-model fields "
                f"{', '.join(CHANGEABLE_ON_RESUME)}"
            )
    return over, wm_over


def resolve_configs(req: TrainRequest) -> tuple[AgentConfig, WorldModelConfig]:
    """Preset, then options, then ``--set``; unknown or ill-typed fields raise ValueError."""
    agent, model = load_preset(req.preset or "default")
    options = {"env": req.env, "world_model": req.world_model, "obs": req.obs,
               "total_steps": req.steps, "regime_info": req.regime_info,
               "adapt_trigger": req.adapt_trigger}  # fmt: skip
    agent.update({k: v for k, v in options.items() if v is not None})
    apply_overrides(req.overrides, agent, model, {f.name for f in dataclasses.fields(AgentConfig)})
    cfg = from_mapping(AgentConfig, agent, "agent config")
    wm = from_mapping(WorldModelConfig, {**model, "name": cfg.world_model, "obs": cfg.obs},
                      "world-model config")  # fmt: skip
    return cfg, wm


def _new_run(req: TrainRequest) -> Any:
    import gymnasium as gym

    import mbrl_causal.envs  # noqa: F401
    from mbrl_causal.agents.dreamer.agent import CausalDreamer

    cfg, wm = resolve_configs(req)
    if cfg.env not in gym.registry:
        raise ValueError(f"unknown env id {cfg.env!r}; `mbrl-causal envs` lists them")
    if cfg.tau_reference == "dense":  # before the run folder is made
        check_dense_reference(wm)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(req.logdir or f"runs/{cfg.env}-{cfg.world_model}-{stamp}")
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--logdir {str(run_dir)!r} exists and is not a folder")
    if run_dir.is_dir() and R.checkpoint_paths(run_dir):
        raise ValueError(
            f"{str(run_dir)!r} already holds a run; continue it with --resume {run_dir} "
            "or choose another --logdir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    R.write_config(run_dir, {"agent": cfg.to_dict(), "world_model": wm.to_dict(),
                             "seed": req.seed})  # fmt: skip
    return CausalDreamer(cfg.env, wm, cfg, run_dir, req.seed, req.show_progress)


def _resume(req: TrainRequest) -> Any:
    from mbrl_causal.agents.dreamer.agent import CausalDreamer

    run_dir = Path(req.resume or "")
    saved = R.read_config(run_dir)
    given = {"--env": req.env, "--world-model": req.world_model, "--obs": req.obs,
             "--preset": req.preset, "--regime-info": req.regime_info,
             "--logdir": req.logdir}  # fmt: skip
    refused = [k for k, v in given.items() if v is not None]
    if refused:
        raise ValueError(
            f"{', '.join(refused)} cannot be given with --resume: the run keeps its config "
            f"(allowed on resume: --steps, --adapt-trigger, --set of agent fields except "
            f"{', '.join(FIXED_ON_RESUME)}, and --set of the world-model fields "
            f"{', '.join(CHANGEABLE_ON_RESUME)})"
        )
    agent_fields = {f.name for f in dataclasses.fields(AgentConfig)}
    over, wm_over = split_resume_overrides(req.overrides, agent_fields, FIXED_ON_RESUME)
    if req.steps is not None:
        over["total_steps"] = req.steps
    if req.adapt_trigger is not None:
        over["adapt_trigger"] = req.adapt_trigger
    old = saved["agent"]
    _, wm_changes = resumed_world_model_config(saved["world_model"], wm_over)  # checks them
    if wm_changes:  # before the resume touches the run (it trims the replay)
        at = R.checkpoint_step(R.latest_checkpoint(run_dir))
        check_steps_left(at, over.get("total_steps", old["total_steps"]), wm_changes)
    # what changed is judged against the checkpoint, which the run continues from (its
    # config.yaml can lag it: a resume stopped before its first checkpoint)
    agent = CausalDreamer.resume(run_dir, over, req.show_progress, wm_over)
    changed, wm_changed = agent.changes, agent.wm_changes
    kept = True
    if changed or wm_changed:
        report = ", ".join(
            f"{k}: {agent.previous.get(k)!r} -> {v!r}" for k, v in (changed | wm_changed).items()
        )
        print(f"resume: applied overrides {report}", file=sys.stderr)
        kept = keep_resume_changes(agent.steps, agent.config.total_steps)
        if kept:
            R.write_config(run_dir, {**saved, "agent": agent.config.to_dict(),
                                     "world_model": agent.wm_config.to_dict()})  # fmt: skip
    R.append_record(run_dir, "resume", agent.steps, resume_record(changed | wm_changed, kept))
    print(f"resume: {run_dir} from env step {agent.steps}", file=sys.stderr)
    return agent


def _eval_regimes(env_id: str) -> str:
    from mbrl_causal.envs import env_catalogue

    for rec in env_catalogue():
        if rec["id"] == env_id and isinstance(rec["kwargs"].get("regime_schedule"), int):
            return str(rec["kwargs"]["regime_schedule"])
    return "all"


def evaluate_and_print(
    run_dir: Path, env_id: str, episodes: int, evaluator: Any, files: str
) -> None:
    """The end of ``train``: evaluate the run (spinner), print the table, say what was
    written. ``evaluator(run_dir, regimes, episodes)`` returns the eval record."""
    from rich.console import Console
    from rich.markdown import Markdown

    from mbrl_causal.agents.evaluate import summary_markdown

    with Console(stderr=True).status("evaluating"):
        record = evaluator(run_dir, _eval_regimes(env_id), episodes)
    Console().print(Markdown(summary_markdown(record)))
    print(f"wrote {run_dir}/eval/ ({files})")


def _agent_kind(req: TrainRequest) -> str:
    """``--agent``, or on ``--resume`` the run's own (config.yaml's ``algorithm``)."""
    from mbrl_causal.agents.sb3_agents import AGENTS

    if req.agent is not None and req.agent not in AGENTS:
        raise ValueError(f"--agent must be one of {', '.join(AGENTS)}; got {req.agent!r}")
    if not req.resume:
        return req.agent or "dreamer"
    kind = str(R.read_config(Path(req.resume)).get("algorithm", "dreamer"))
    if req.agent is not None and req.agent != kind:
        raise ValueError(f"--agent {req.agent} does not match the run's agent {kind}")
    return kind


def train_command(req: TrainRequest) -> None:
    """What ``mbrl-causal train`` does (see the module doc)."""
    kind = _agent_kind(req)
    if kind != "dreamer":  # the SB3 agents (mbrl_causal.agents.sb3_agents)
        from mbrl_causal.agents.sb3_agents import train_sb3_command

        train_sb3_command(req, kind)
        return
    agent = _resume(req) if req.resume else _new_run(req)
    cfg = agent.config
    try:
        if agent.steps < cfg.total_steps:
            agent.learn(cfg.total_steps)
    finally:
        agent.env.close()
    print(f"trained {agent.steps} env steps ({agent.updates} updates, {agent.episodes} "
          f"episodes, {len(agent.events)} adaptations); run directory {agent.run_dir}")  # fmt: skip
    if req.evaluate and cfg.eval_episodes:
        from mbrl_causal.agents.evaluate import evaluate_run

        # the command's config (a finished run resumed with --adapt-trigger or --set of
        # these evaluates with them; otherwise they are the checkpoint's own)
        evaluator = functools.partial(
            evaluate_run, adapt_trigger=cfg.adapt_trigger,
            adapt_ac_updates=cfg.adapt_ac_updates, recall_tolerance=cfg.recall_tolerance,
        )  # fmt: skip
        evaluate_and_print(agent.run_dir, cfg.env, cfg.eval_episodes, evaluator,
                           "eval.json, summary.md, plots")  # fmt: skip
