"""Run-directory infrastructure of ``mbrl-causal train``: logs, progress, checkpoints.

Layout (default ``runs/<env>-<world_model>-<timestamp>``)::

    config.yaml      the resolved config: {agent, world_model, seed}
    tb/              TensorBoard event files (keys namespaced, see the README)
    metrics.jsonl    one JSON record per line: {"kind": "scalars", "step", ...keys} or
                     {"kind": "adaptation", "env_index", "decision" (recall | new),
                     "slot", "transitions", "best_error", "reference_error",
                     "true_regime", "best_slot"} or {"kind": "resume", "overrides"} (with
                     "kept": false when the overrides applied to that command only: a
                     finished run resumed without --steps above its step)
    checkpoints/     step_<env steps>.pt, written atomically; the newest ``keep`` kept
    replay/          the replay's chunk files (:mod:`.replay`)
    eval/            what ``mbrl-causal evaluate`` writes
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from mbrl_causal.io import write_atomic

__all__ = [
    "CHECKPOINT_FORMAT",
    "RunLogger",
    "eval_dir",
    "find_checkpoint",
    "latest_checkpoint",
    "read_checkpoint",
]

CHECKPOINT_FORMAT = "mbrl-causal-agent-checkpoint"
CHECKPOINT_VERSION = 1


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    write_atomic(
        run_dir / "config.yaml", lambda t: t.write_text(yaml.safe_dump(config, sort_keys=False)),
        ".yaml",
    )  # fmt: skip


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ValueError(f"{str(run_dir)!r} is not a run directory (no config.yaml)")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "agent" not in data or "world_model" not in data:
        raise ValueError(f"{str(path)!r} is not an mbrl-causal agent config")
    return data


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    return sorted((run_dir / "checkpoints").glob("step_*.pt"))


def latest_checkpoint(run_dir: Path) -> Path:
    paths = checkpoint_paths(run_dir)
    if not paths:
        raise ValueError(f"{str(run_dir)!r} has no checkpoint in checkpoints/")
    return paths[-1]


def checkpoint_step(path: Path) -> int:
    """Env step of a checkpoint file ``step_<step>.pt``."""
    return int(path.stem.removeprefix("step_"))


def find_checkpoint(run_dir: Path, step: int | None = None) -> Path:
    """The checkpoint written at env step ``step`` (None: the latest); a step the run does
    not keep raises ValueError naming the steps it has."""
    if step is None:
        return latest_checkpoint(run_dir)
    paths = checkpoint_paths(run_dir)
    for path in paths:
        if checkpoint_step(path) == step:
            return path
    have = ", ".join(str(checkpoint_step(p)) for p in paths) or "none"
    raise ValueError(
        f"{str(run_dir)!r} has no checkpoint at step {step}; it keeps the steps: {have} "
        "(keep more with --set keep_checkpoints=N at training time)"
    )


def eval_dir(run_dir: Path, checkpoint: int | None) -> Path:
    """Where ``evaluate`` writes: ``RUN_DIR/eval/`` (latest) or ``.../eval/step_<step>/``."""
    return run_dir / "eval" if checkpoint is None else run_dir / "eval" / f"step_{checkpoint}"


def save_checkpoint(run_dir: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Write ``checkpoints/step_<step>.pt`` atomically and drop all but the newest ``keep``."""
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:010d}.pt"
    body = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    write_atomic(path, lambda t: torch.save(body, t), ".pt")
    for old in checkpoint_paths(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint; a corrupt or foreign file raises ValueError naming it."""
    try:
        body = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or unreadable ({e})") from None
    if not isinstance(body, dict) or body.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not an mbrl-causal agent checkpoint")
    if body.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{str(path)!r} has checkpoint version {body.get('version')}; this mbrl-causal "
            f"reads version {CHECKPOINT_VERSION}"
        )
    return body


def append_record(run_dir: Path, kind: str, step: int, values: dict[str, Any]) -> None:
    """Append one record to ``metrics.jsonl``."""
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")


class RunLogger:
    """TensorBoard scalars plus ``metrics.jsonl`` plus a rich progress bar.

    On resume (``resume_step``) TensorBoard events and metrics records after the
    checkpoint's step are dropped, so the logs show one consistent history.
    """

    def __init__(
        self, run_dir: Path, total: int, show_progress: bool, resume_step: int | None = None
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = run_dir
        self.metrics = run_dir / "metrics.jsonl"
        if resume_step is not None and self.metrics.is_file():
            kept = [
                line for line in self.metrics.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]  # fmt: skip
            write_atomic(self.metrics, lambda t: t.write_text("".join(k + "\n" for k in kept)),
                         ".jsonl")  # fmt: skip
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)
        self._file = open(self.metrics, "a")
        self.progress: Any = None
        self.task: Any = None
        if show_progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                refresh_per_second=4,
            )  # fmt: skip
            self.progress.start()
            self.task = self.progress.add_task("train", total=total, info="")
        self.start = time.perf_counter()

    def record(self, kind: str, step: int, values: dict[str, Any]) -> None:
        self._file.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        self._file.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            if v is not None:
                self.writer.add_scalar(k, v, step)
        self.writer.flush()
        self.record("scalars", step, values)

    def advance(self, step: int, info: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.writer.close()
        self._file.close()
