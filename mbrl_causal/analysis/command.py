"""``mbrl-causal sparsity``: ground-truth Jacobian sparsity of an env, and of a model.

Collects env-step Jacobians J_s and J_a along random-policy trajectories (Gymnasium
MuJoCo v5 envs: :mod:`.jacobian`; Interventional Pong: :mod:`.pong`, where a trained
run's policy can act instead: ``--policy RUN_DIR``, :mod:`.policy`), computes the
paper's sparsity figures at ``--threshold`` (and over a sweep with ``--sweep``), prints a
summary, and writes every figure as JSON (``--json``) and PNG (``--plots``). With
``--model RUN_DIR`` it also compares a learned world model's Jacobians and graphs with
the truth (:mod:`.learned`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mbrl_causal.analysis.metrics import (
    DEFAULT_SWEEP,
    SparsityStats,
    check_threshold,
    sparsity_metrics,
    threshold_sweep,
)

if TYPE_CHECKING:  # mujoco and gymnasium load only when the command runs
    from mbrl_causal.analysis.jacobian import JacobianSamples
    from mbrl_causal.analysis.policy import RunPolicy

__all__ = ["add_parser", "allowed_envs", "analyse", "run"]


def allowed_envs() -> tuple[list[str], list[str]]:
    """``(mujoco_ids, pong_ids)`` the command accepts."""
    import gymnasium as gym

    from mbrl_causal.envs import ENV_IDS

    mujoco_ids = [
        k
        for k, spec in gym.registry.items()
        if isinstance(spec.entry_point, str)
        and spec.entry_point.startswith("gymnasium.envs.mujoco")
        and k.endswith("-v5")
    ]
    return mujoco_ids, [k for k in ENV_IDS if k.startswith("InterventionalPong-")]


def _threshold(text: str) -> float:
    try:
        return check_threshold(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a finite number >= 0 (|J| < T counts as zero), got {text!r}"
        ) from None


def _eps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def add_parser(sub: Any) -> None:
    """Add the ``sparsity`` subcommand to the CLI's subparsers."""
    from mbrl_causal.cli import _positive_int

    p = sub.add_parser(
        "sparsity",
        help="ground-truth Jacobian sparsity of an env step (MuJoCo v5, Interventional "
        "Pong), learned vs true",
    )
    p.add_argument("--env", required=True, help="a Gymnasium MuJoCo v5 id or an "
                   "InterventionalPong id")  # fmt: skip
    p.add_argument("--steps", type=_positive_int, default=1000, help="Jacobian samples (1000)")
    p.add_argument("--episodes", type=_positive_int, default=1,
                   help="episodes the steps are split into (1)")  # fmt: skip
    p.add_argument("--policy", default="random", metavar="random|RUN_DIR",
                   help="behaviour policy: random (default), or a training run's latest "
                        "checkpoint (Interventional Pong envs only)")  # fmt: skip
    p.add_argument("--threshold", type=_threshold, default=1e-6,
                   help="|J| < T counts as zero (1e-6)")  # fmt: skip
    sweep = ", ".join(f"{t:g}" for t in DEFAULT_SWEEP)
    p.add_argument("--sweep", action="store_true", help=f"also report thresholds {sweep}")
    p.add_argument("--eps", type=_eps, default=1e-6, help="finite-difference step (1e-6)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="threads of the C call that runs the replays (default: the CPUs this "
                        "process may use, x4 on MuJoCo >= 4.0's mujoco.batch; the "
                        "results do not depend on it)")  # fmt: skip
    p.add_argument("--model", metavar="RUN_DIR",
                   help="compare the vector-state world model in RUN_DIR")  # fmt: skip
    p.add_argument("--train-model", choices=("spartan", "s2ssm"),
                   help="first train this world model on fresh random-policy transitions "
                   "and write it into --model RUN_DIR")  # fmt: skip
    p.add_argument("--train-steps", type=_positive_int, default=2000,
                   help="gradient steps of --train-model (2000)")  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON to FILE")
    p.add_argument("--plots", metavar="DIR", help="write the PNG figures into DIR")
    p.add_argument("--seed", type=int, default=0, help="seed of the env and the policy (0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_args(args: argparse.Namespace) -> str:
    """Validate the combination of options; return ``"mujoco"`` or ``"pong"``."""
    mujoco_ids, pong_ids = allowed_envs()
    if args.env not in mujoco_ids + pong_ids:
        raise ValueError(
            f"unknown env id {args.env!r}; allowed: {', '.join(mujoco_ids + pong_ids)}"
        )
    if args.policy != "random":
        if not Path(args.policy).is_dir():
            raise ValueError(
                f"--policy {args.policy!r}: expected 'random' or a run directory of "
                "`mbrl-causal train`, and no such directory exists"
            )
        if args.env in mujoco_ids:
            raise ValueError(
                f"--policy RUN_DIR acts on Interventional Pong only (every agent of this "
                f"project trains there); on {args.env} use --policy random"
            )
    if args.steps < args.episodes:
        raise ValueError(f"--steps ({args.steps}) must be >= --episodes ({args.episodes})")
    if args.train_model and not args.model:
        raise ValueError("--train-model needs --model RUN_DIR (where the model is written)")
    if args.model and args.env in pong_ids:
        raise ValueError("--model is for MuJoCo envs; on Interventional Pong use `mbrl-causal fit`")
    return "mujoco" if args.env in mujoco_ids else "pong"


def _collect(args: argparse.Namespace, kind: str, policy: RunPolicy | None) -> JacobianSamples:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), disable=args.no_progress) as bar:
        task = bar.add_task(f"Jacobians of {args.env}", total=args.steps)

        def advance(n: int) -> None:
            bar.update(task, advance=n)

        if kind == "pong":
            from mbrl_causal.analysis.pong import collect_pong

            return collect_pong(args.env, args.steps, args.episodes, args.seed, args.eps, advance,
                                policy)  # fmt: skip
        from mbrl_causal.analysis.jacobian import JacobianConfig, collect_mujoco, default_threads

        threads = args.threads or default_threads()  # CPUs, x4 on the mujoco.batch backend
        config = JacobianConfig(eps=args.eps, threads=threads)
        return collect_mujoco(args.env, args.steps, args.episodes, args.seed, config, advance)


def analyse(
    samples: JacobianSamples, threshold: float, sweep: bool
) -> tuple[dict[str, SparsityStats], dict[str, Any]]:
    """Sparsity figures of J_s and J_a: ``(stats, record)`` (the record is JSON-ready)."""
    jacs = {"J_s": samples.J_s, "J_a": samples.J_a}
    stats = {k: sparsity_metrics(v, samples.episodes, threshold) for k, v in jacs.items()
             if v is not None}  # fmt: skip
    first = samples.episodes == samples.episodes[0]
    record: dict[str, Any] = {
        "shape": {k: list(s.shape) for k, s in stats.items()},
        **{k: s.to_json(episode_sparsity=s.sparsity[first]) for k, s in stats.items()},
        "sweep": None,
    }
    if sweep:
        record["sweep"] = {"thresholds": sorted(DEFAULT_SWEEP)}
        for k, v in jacs.items():
            if v is not None:
                record["sweep"][k] = threshold_sweep(v, samples.episodes, DEFAULT_SWEEP)
    return stats, record


def _print_summary(record: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{record['env']}: {record['steps']} steps, T = {record['threshold']:g}")
    for col in ("Jacobian", "shape", "global zero", "mean local", "zero run", "non-zero run"):
        table.add_column(col, justify="right")
    for key in ("J_s", "J_a"):
        if key in record["shape"]:
            r = record[key]
            table.add_row(key, "x".join(map(str, record["shape"][key])),
                          f"{r['global_zero_count']} ({r['global_zero_fraction']:.3f})",
                          f"{r['mean_sparsity']:.3f}", f"{r['run_length_mean']['zero']:.1f}",
                          f"{r['run_length_mean']['nonzero']:.1f}")  # fmt: skip
    Console().print(table)


def run(args: argparse.Namespace) -> None:
    """Run the command (ValueError for bad input: the CLI prints it and exits with 2)."""
    from mbrl_causal.io import output_file, write_json

    kind = _check_args(args)
    json_path = output_file(args.json) if args.json else None
    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise ValueError(f"--plots {args.plots!r} exists and is not a folder")
    policy = None
    if args.policy != "random":  # a run directory; _check_args made sure the env is Pong
        from mbrl_causal.analysis.policy import load_run_policy

        policy = load_run_policy(args.policy)
    samples = _collect(args, kind, policy)
    stats, figures = analyse(samples, args.threshold, args.sweep)
    record: dict[str, Any] = {
        "env": args.env, "steps": len(samples.episodes),
        "episodes": int(np.unique(samples.episodes).size), "policy": args.policy,
        "policy_algorithm": policy.algorithm if policy is not None else "random",
        "seed": args.seed, "threshold": args.threshold, "eps": args.eps, **figures,
        "labels": {"state": samples.state_labels, "action": samples.action_labels},
    }  # fmt: skip
    if kind == "pong":
        from mbrl_causal.analysis.pong import block_agreement

        record["object_blocks"] = block_agreement(samples, args.threshold)
    if args.model:
        from mbrl_causal.analysis.learned import model_record

        record["model"] = model_record(args, samples)
    _print_summary(record)
    if json_path is not None:
        write_json(json_path, record)
        print(f"wrote {json_path}")
    if args.plots:
        from mbrl_causal.analysis.plots import write_plots

        labels = {"state": samples.state_labels, "action": samples.action_labels}
        paths = write_plots(args.plots, args.env, stats, samples.episodes, labels,
                            figures["sweep"])  # fmt: skip
        print(f"wrote {len(paths)} plots into {args.plots}")
