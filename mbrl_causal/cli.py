"""The ``mbrl-causal`` command line.

Every command validates its input at the boundary: an unknown env id, a bad ``--set``
value or an unusable path prints one line ``mbrl-causal: error: ...`` naming what is
allowed and exits with code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from mbrl_causal.analysis import command as _sparsity
from mbrl_causal.io import output_file, write_json

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_NUMERIC = 1  # a NaN/inf loss or gradient stopped training


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``, else an error naming ``what`` is expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mbrl-causal",
        description="Model-based RL with causal world models: environments, world models, "
        "the Dreamer-style agent, benchmarks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("envs", help="list every registered env id with its regime and obs modes")
    p.add_argument("--json", action="store_true", help="print the list as JSON")

    p = sub.add_parser(
        "play", help="run episodes with a scripted policy; print returns and regime switches"
    )
    p.add_argument("--env", required=True, help="a registered id or a preset YAML file (envs/)")
    p.add_argument("--episodes", type=_positive_int, default=3, help="episodes to run (3)")
    p.add_argument("--policy", choices=("random", "tracking"), default="random",
                   help="random actions or move towards the ball (default random)")  # fmt: skip
    p.add_argument("--video", metavar="DIR", help="write one video per episode into DIR")
    p.add_argument("--video-format", choices=("mp4", "gif"), default="mp4",
                   help="video container (default mp4)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the first reset (0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an env config field, e.g. --set obs_mode=pixels")  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="also write the per-episode results as JSON")

    p = sub.add_parser(
        "fit",
        help="collect data, train a world model, evaluate it (graph, few-shot, "
        "robustness) and write JSON",
    )
    p.add_argument("--env", default="InterventionalPong-v0", help="registered env id")
    p.add_argument("--world-model", default="spartan",
                   choices=("spartan", "s2ssm", "dense-transformer", "dense-ssm"))  # fmt: skip
    p.add_argument("--obs", choices=("objects", "pixels"), default="objects",
                   help="per-object features or masked images through a conv VAE")  # fmt: skip
    p.add_argument(
        "--regimes",
        default="simple",
        help="simple (0-6), all, or comma-separated ids/names (default simple)",
    )
    p.add_argument("--data-steps", type=_positive_int, help="env steps of training data")
    p.add_argument("--train-steps", type=_positive_int, help="gradient steps")
    p.add_argument("--preset", choices=("default", "debug"), default="default",
                   help="debug shrinks everything to finish in seconds")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of data, weights and gates (0)")
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/fit-MODEL-OBS-SEED)")
    p.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model or fit config field, e.g. --set d_model=64")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser(
        "train", help="train the Dreamer-style agent with a causal world model (run directory)"
    )
    p.add_argument("--env", help="registered env id (default InterventionalPong-v0)")
    p.add_argument("--world-model", choices=("spartan", "s2ssm", "dense-transformer",
                   "dense-ssm"), help="world model (default spartan)")  # fmt: skip
    p.add_argument("--obs", choices=("objects", "pixels"), help="world-model input (objects)")
    p.add_argument("--preset", help="debug, quick, default (the default), efficient (the "
                   "sample-efficient SPARTAN recipe, dreamer and ppo-imagination; README), "
                   "or a YAML file {agent: ..., world_model: ...}")  # fmt: skip
    p.add_argument("--steps", type=_positive_int, help="env steps in all (the preset's otherwise)")
    p.add_argument("--logdir", metavar="DIR",
                   help="run directory (default runs/<env>-<world_model>-<timestamp>)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed (0)")
    p.add_argument("--regime-info", choices=("oracle", "none"),
                   help="oracle: the regime id picks the token; none: inferred")  # fmt: skip
    p.add_argument("--adapt-trigger", choices=("oracle", "surprise", "none"),
                   help="what starts an adaptation (surprise)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an agent or world-model field, e.g. horizon=10")  # fmt: skip
    p.add_argument("--agent", choices=("dreamer", "ppo", "ppo-imagination", "sac-imagination"),
                   help="dreamer (default); ppo: SB3 PPO on the real env; ppo-imagination / "
                   "sac-imagination: SB3 learning in the world model (Dyna)")  # fmt: skip
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "evaluate", help="evaluate a run per regime (returns, WM error, graphs, adaptation)"
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `mbrl-causal train`")
    p.add_argument("--regimes", default="all",
                   help="all, simple, composite, or comma-separated ids/names (all)")  # fmt: skip
    p.add_argument("--episodes", type=_positive_int, default=5, help="episodes per regime (5)")
    p.add_argument("--adapt-trigger", choices=("oracle", "surprise", "none"),
                   help="override the run's adaptation trigger")  # fmt: skip
    p.add_argument("--adapt-ac-updates", type=_non_negative_int, metavar="N",
                   help="actor-critic updates in imagination after a new token is fitted "
                   "(default: the run's adapt_ac_updates; 0: none, the policy then acts "
                   "with the best known token)")  # fmt: skip
    p.add_argument("--recall-tolerance", type=float, metavar="X",
                   help="recall a known token if its error <= X times its slot's running "
                   "training error (default: the run's recall_tolerance)")  # fmt: skip
    p.add_argument("--video", action="store_true", help="also write RUN_DIR/eval/videos/")
    p.add_argument("--seed", type=int, default=10_000, help="seed of the evaluation envs")
    p.add_argument("--checkpoint", type=int, metavar="STEP",
                   help="evaluate the checkpoint of env step STEP (default: the latest); "
                   "results go to RUN_DIR/eval/step_STEP/")  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="also write the results to FILE")

    _sparsity.add_parser(sub)  # mbrl-causal sparsity (mbrl_causal.analysis.command)

    p = sub.add_parser("bench", help="speed benchmarks that write JSON")
    bench = p.add_subparsers(dest="bench", metavar="WHAT", parser_class=_Parser)
    bench.required = True
    b = bench.add_parser("envs", help="env steps/s: objects, pixels, vector (N=64), ALE Pong")
    b.add_argument("--json", metavar="FILE", help="write the results to FILE")
    b.add_argument("--steps", type=_positive_int, default=50_000, help="steps per single-env run")
    b.add_argument("--vector-steps", type=_positive_int, default=2_000,
                   help="vector-env steps per run (each steps 64 envs)")  # fmt: skip
    b.add_argument("--ale-steps", type=_positive_int, default=10_000, help="ALE Pong steps per run")
    b.add_argument("--repeats", type=_positive_int, default=3, help="timed runs (median reported)")
    b = bench.add_parser(
        "models", help="world-model train-step time vs TransformerEncoder and mambapy"
    )
    b.add_argument("--json", metavar="FILE", help="write the results to FILE")
    b.add_argument("--steps", type=_positive_int, default=20, help="train steps per timed run")
    b.add_argument("--repeats", type=_positive_int, default=5,
                   help="timed runs of every case, interleaved (median reported; 5)")  # fmt: skip
    b.add_argument("--threads", type=_positive_int, default=1,
                   help="torch threads (1: the steadiest figures on a small machine)")  # fmt: skip
    b = bench.add_parser("agent", help="agent updates/s (batch 16 x 64) and loop env steps/s")
    b.add_argument("--json", metavar="FILE", help="write the results to FILE")
    b.add_argument("--world-model", default="spartan",
                   choices=("spartan", "s2ssm", "dense-transformer", "dense-ssm"))  # fmt: skip
    b.add_argument("--updates", type=_positive_int, default=10, help="updates per timed run")
    b.add_argument("--loop-steps", type=_positive_int, default=4_000,
                   help="env steps per timed loop run")  # fmt: skip
    b.add_argument("--repeats", type=_positive_int, default=3, help="timed runs (median reported)")
    b = bench.add_parser(
        "sb3", help="ImaginationVecEnv steps/s (256 envs) vs the real env through DummyVecEnv"
    )
    b.add_argument("--json", metavar="FILE", help="write the results to FILE")
    b.add_argument("--envs", type=_positive_int, default=256, help="envs of both vector envs")
    b.add_argument("--steps", type=_positive_int, default=200, help="vector steps per timed run")
    b.add_argument("--repeats", type=_positive_int, default=3, help="timed runs (median reported)")
    return parser


def _cmd_bench_agent(args: argparse.Namespace) -> None:
    from rich.console import Console

    from mbrl_causal.agents.bench import bench_agent

    path = output_file(args.json) if args.json else None
    with Console(stderr=True).status("benchmarking") as status:
        result = bench_agent(args.world_model, updates=args.updates, loop_steps=args.loop_steps,
                             repeats=args.repeats,
                             progress=lambda m: status.update(f"benchmarking {m}"))  # fmt: skip
    print(json.dumps(result, indent=2))
    if path is not None:
        write_json(path, result)
        print(f"wrote {path}")


def _cmd_envs(args: argparse.Namespace) -> None:
    from mbrl_causal.envs import env_catalogue

    records = env_catalogue()
    if args.json:
        print(json.dumps(records, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mbrl-causal environments (TimeLimit 1000 steps)")
    table.add_column("id", no_wrap=True)
    for col in ("regime", "obs modes", "description"):
        table.add_column(col)
    for r in records:
        table.add_row(r["id"], r["regime"], ", ".join(r["obs_modes"]), r["description"])
    Console().print(table)


def _cmd_bench_models(args: argparse.Namespace) -> None:
    import torch
    from rich.console import Console
    from rich.table import Table

    from mbrl_causal.world_models.bench import bench_models

    path = output_file(args.json) if args.json else None
    torch.set_num_threads(args.threads)
    with Console(stderr=True).status("benchmarking") as status:
        result = bench_models(args.steps, args.repeats,
                              progress=lambda m: status.update(f"benchmarking {m}"))  # fmt: skip
    table = Table(title="train step, ms (median of runs)")
    table.add_column("case")
    table.add_column("ms/step", justify="right")
    for key, value in result.items():
        if isinstance(value, dict) and ("ms_per_step" in value or "skipped" in value):
            ms = value.get("ms_per_step")
            table.add_row(key, f"{ms:.1f}" if ms is not None else value["skipped"])
    for key, value in result["ratios"].items():
        table.add_row(key, "-" if value is None else f"{value:.2f}x")
    Console().print(table)
    if path is not None:
        write_json(path, result)
        print(f"wrote {path}")


def _cmd_bench(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from mbrl_causal.bench import bench_envs

    if args.bench == "models":
        _cmd_bench_models(args)
        return
    if args.bench == "agent":
        _cmd_bench_agent(args)
        return
    if args.bench == "sb3":
        from mbrl_causal.bench_sb3 import cmd_bench_sb3

        cmd_bench_sb3(args)
        return
    console = Console(stderr=True)
    path = output_file(args.json) if args.json else None
    with console.status("benchmarking") as status:
        result = bench_envs(
            steps=args.steps, vector_steps=args.vector_steps, ale_steps=args.ale_steps,
            repeats=args.repeats, progress=lambda m: status.update(f"benchmarking {m}"),
        )  # fmt: skip
    table = Table(title="env steps per second (median of runs)")
    table.add_column("case")
    table.add_column("steps/s", justify="right")
    table.add_column("x ALE Pong", justify="right")
    for key in ("objects", "pixels", "vector", "ale_pong"):
        rate = result[key]["steps_per_s"]
        ratio = result["ratios"].get(f"{key}_over_ale_pong") if key != "ale_pong" else 1.0
        table.add_row(
            key,
            f"{rate:,.0f}" if rate else result[key].get("skipped", "-"),
            f"{ratio:.1f}" if ratio else "-",
        )
    Console().print(table)
    if path is not None:
        write_json(path, result)
        print(f"wrote {path}")


def _cmd_fit(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mbrl_causal.config import from_mapping, parse_overrides
    from mbrl_causal.world_models.config import FitConfig, WorldModelConfig, preset
    from mbrl_causal.world_models.fit import FitRun, fit, summary_table

    model_over, fit_over = preset(args.preset)
    model_fields = {f.name for f in dataclasses.fields(WorldModelConfig)}
    fit_fields = {f.name for f in dataclasses.fields(FitConfig)}
    by_option = {"name": "--world-model", "obs": "--obs", "env": "--env",
                 "regimes": "--regimes", "data_steps": "--data-steps",
                 "train_steps": "--train-steps"}  # fmt: skip
    for key, value in parse_overrides(args.set).items():
        if key in by_option:
            raise ValueError(f"--set {key}: use the option {by_option[key]} instead")
        if key in model_fields:
            model_over[key] = value
        elif key in fit_fields:
            fit_over[key] = value
        else:
            allowed = sorted((model_fields | fit_fields) - set(by_option))
            raise ValueError(f"--set {key}: not a settable field; allowed: {', '.join(allowed)}")
    fit_over.update(env=args.env, regimes=args.regimes)
    if args.data_steps:
        fit_over["data_steps"] = args.data_steps
    if args.train_steps:
        fit_over["train_steps"] = args.train_steps
    model_cfg = from_mapping(WorldModelConfig, {**model_over, "name": args.world_model,
                                                "obs": args.obs}, "model config")  # fmt: skip
    fit_cfg = from_mapping(FitConfig, fit_over, "fit config")
    json_path = output_file(args.json) if args.json else None
    out = Path(args.out or f"runs/fit-{args.world_model}-{args.obs}-{args.seed}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    record = fit(FitRun(model_cfg, fit_cfg, args.seed, out, not args.no_progress))
    from rich.console import Console

    Console().print(summary_table(record))
    if json_path is not None:
        write_json(json_path, record)
    print(f"wrote {out / 'fit.json'} and {out / 'model.pt'}")


def _cmd_train(args: argparse.Namespace) -> None:
    from mbrl_causal.agents.train import TrainRequest, train_command

    train_command(TrainRequest(
        env=args.env, world_model=args.world_model, obs=args.obs, preset=args.preset,
        steps=args.steps, logdir=args.logdir, seed=args.seed, regime_info=args.regime_info,
        adapt_trigger=args.adapt_trigger, overrides=args.set, resume=args.resume,
        evaluate=not args.no_eval, show_progress=not args.no_progress, agent=args.agent,
    ))  # fmt: skip


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    from mbrl_causal.agents.evaluate import evaluate_run, summary_markdown
    from mbrl_causal.agents.run import eval_dir

    path = output_file(args.json) if args.json else None
    with Console(stderr=True).status("evaluating"):
        record = evaluate_run(args.run_dir, args.regimes, args.episodes, args.adapt_trigger,
                              args.video, args.seed, checkpoint=args.checkpoint,
                              adapt_ac_updates=args.adapt_ac_updates,
                              recall_tolerance=args.recall_tolerance)  # fmt: skip
    Console().print(Markdown(summary_markdown(record)))
    if path is not None:
        write_json(path, record)
    print(f"wrote {eval_dir(Path(args.run_dir), args.checkpoint)}/")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mbrl-causal`` console script; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    from mbrl_causal import play

    commands = {"envs": _cmd_envs, "play": play.cmd_play, "bench": _cmd_bench, "fit": _cmd_fit,
                "train": _cmd_train, "evaluate": _cmd_evaluate,
                "sparsity": _sparsity.run}  # fmt: skip
    try:
        commands[args.command](args)
    except ValueError as e:  # includes UsageError
        print(f"mbrl-causal: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except FloatingPointError as e:  # NaN/inf in a loss or gradient: the update was refused
        hint = (" (the run's checkpoints are those written before; --resume continues "
                "from the latest)" if args.command == "train" else "")  # fmt: skip
        print(f"mbrl-causal: stopped: {e}{hint}", file=sys.stderr)
        return EXIT_NUMERIC
    except KeyboardInterrupt:
        print("mbrl-causal: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
