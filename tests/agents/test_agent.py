"""The Dreamer-style agent end to end: `mbrl-causal train` and `evaluate` on the debug
preset, resume after a kill (simulated and a real SIGKILL), checkpoint errors, overrides
on resume, and bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from mbrl_causal.agents import AgentConfig, CausalDreamer
from mbrl_causal.agents import run as R
from mbrl_causal.agents.config import load_preset
from mbrl_causal.agents.train import FIXED_ON_RESUME, TrainRequest, _new_run
from mbrl_causal.cli import main
from mbrl_causal.config import from_mapping
from mbrl_causal.world_models.config import WorldModelConfig
from mbrl_causal.world_models.sparsity import SparsityLagrangian
from mbrl_causal.world_models.training import NonFiniteLoss

NAMESPACES = {"rollout", "world_model", "causal", "actor_critic", "adaptation", "time"}
QUIET = ["--no-progress", "--no-eval"]
FAST = [*QUIET, "--set", "threads=1"]
PNG = b"\x89PNG\r\n\x1a\n"
FIXED_VALUES = {"env": "InterventionalPong-Neutral-v0", "obs": "pixels", "world_model": "s2ssm",
                "num_envs": 4, "hidden": 64, "chunk_len": 64, "regime_info": "none",
                "tau_reference": "dense"}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as e:  # argparse's own errors exit from inside the parser
        return int(e.code or 0)


def _train(run_dir: Path, *args: str) -> int:
    return _cli(["train", "--preset", "debug", "--logdir", str(run_dir), *args, *FAST])


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _scalar_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in _records(run_dir) if r["kind"] == "scalars"]


def _latest(run_dir: Path) -> dict[str, Any]:
    return R.read_checkpoint(R.latest_checkpoint(run_dir))


def _copy(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run (path -> bytes): to show that a refused command changed nothing."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file()}  # fmt: skip


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mbrl-causal: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `mbrl-causal train --preset debug` run (spartan, objects, seed 0), shared."""
    run_dir = tmp_path_factory.mktemp("agent") / "spartan-objects"
    assert _train(run_dir) == 0
    return run_dir


# ---------------------------------------------------------------------- end to end
@pytest.mark.parametrize(
    ("world_model", "obs"), [("spartan", "objects"), ("s2ssm", "objects"), ("spartan", "pixels")]
)
def test_train_debug_end_to_end(
    request: pytest.FixtureRequest, tmp_path: Path, world_model: str, obs: str
) -> None:
    if (world_model, obs) == ("spartan", "objects"):
        run_dir = request.getfixturevalue("debug_run")
    else:
        run_dir = tmp_path / "run"
        assert _train(run_dir, "--world-model", world_model, "--obs", obs) == 0
    preset_agent, preset_wm = load_preset("debug")
    total = preset_agent["total_steps"]

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["seed"] == 0
    assert config["agent"]["world_model"] == world_model and config["agent"]["obs"] == obs
    assert config["world_model"]["name"] == world_model and config["world_model"]["obs"] == obs
    for key, value in preset_agent.items():
        assert config["agent"][key] == value, key
    for key, value in preset_wm.items():
        assert config["world_model"][key] == value, key
    cfg = AgentConfig(**config["agent"])

    assert list((run_dir / "tb").glob("events.out.tfevents.*"))

    records = _records(run_dir)
    scalars = [r for r in records if r["kind"] == "scalars"]
    assert scalars
    steps = [r["step"] for r in scalars]
    assert steps == sorted(set(steps)) and steps[-1] == total
    seen = set()
    for r in scalars:
        for key in set(r) - {"kind", "step"}:
            prefix, _, name = key.partition("/")
            assert prefix in NAMESPACES and name, key
            seen.add(prefix)
    assert seen == NAMESPACES
    losses = [r["world_model/loss"] for r in scalars if "world_model/loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)

    # checkpoints: the newest is at total_steps, at most keep_checkpoints are kept
    ckpts = R.checkpoint_paths(run_dir)
    assert 1 <= len(ckpts) <= cfg.keep_checkpoints
    assert ckpts[-1].name == f"step_{total:010d}.pt"
    body = R.read_checkpoint(ckpts[-1])
    assert body["counters"]["steps"] == total

    # updates happened: one every steps_per_update env steps once past prefill
    updates = body["counters"]["updates"]
    low = (total - cfg.prefill) // cfg.steps_per_update
    assert low >= 1 and low <= updates <= total // cfg.steps_per_update
    assert scalars[-1]["time/updates"] == updates
    fresh = CausalDreamer(cfg.env, WorldModelConfig(**body["world_model_config"]), cfg, None,
                          body["seed"])  # fmt: skip
    try:
        init = fresh.model.state_dict()
        assert any(not torch.equal(init[k], v) for k, v in body["model"].items())
    finally:
        fresh.close()

    # replay: chunk files with the mode's observation arrays; the checkpoint lists them
    files = {p.name for p in (run_dir / "replay").glob("*.npz")}
    assert files and set(body["replay"]["names"]) <= files
    keys = {"objects"} if obs == "objects" else {"objects", "pixels", "masks"}
    with np.load(run_dir / "replay" / body["replay"]["names"][-1]) as chunk:
        assert keys <= set(chunk.files)
        for k in keys:
            assert len(chunk[k]) == len(chunk["action"]) + 1

    # predict: one observation and a batch
    agent = CausalDreamer.load(ckpts[-1])
    try:
        space = agent.env.single_action_space
        batch, _ = agent.env.reset(seed=123)
        if isinstance(batch, dict):
            single: Any = {k: v[0] for k, v in batch.items()}
            big: Any = {k: np.concatenate([v, v, v]) for k, v in batch.items()}
        else:
            single, big = batch[0], np.concatenate([batch, batch, batch])
        n = len(batch["objects"] if isinstance(batch, dict) else batch)
        action, state = agent.predict(single)
        assert state is None and np.ndim(action) == 0 and space.contains(action)
        actions, _ = agent.predict(batch)
        assert actions.shape == (n,) and all(space.contains(a) for a in actions)
        greedy, _ = agent.predict(big, deterministic=True)
        assert greedy.shape == (3 * n,) and all(space.contains(a) for a in greedy)
        one, _ = agent.predict(single, deterministic=True)
        assert one == greedy[0] == greedy[n] == greedy[2 * n]
    finally:
        agent.close()


def test_metrics_records_keep_their_documented_kind(tmp_path: Path) -> None:
    """run.py documents {"kind": "scalars"|"adaptation"|"resume", ...} records; an
    adaptation event's own ``kind`` ("recall"/"new") must not replace the record kind.
    (Training adapts only without regime information: with ``oracle`` every regime has
    its own slot.)"""
    run_dir = tmp_path / "run"
    none = ["--regime-info", "none", "--adapt-trigger", "oracle"]
    assert _train(run_dir, "--world-model", "dense-transformer", *none) == 0
    events = _latest(run_dir)["events"]
    assert events, "the run adapts at least once (precondition)"
    records = _records(run_dir)
    assert {r["kind"] for r in records} <= {"scalars", "adaptation", "resume"}
    assert len([r for r in records if r["kind"] == "adaptation"]) == len(events)


# ---------------------------------------------------------------------- resume
class _Killed(Exception):
    """Stands in for the process dying."""


def _record_actions(agent: CausalDreamer, log: list, kill_at: int | None = None) -> None:
    """Log (env step, actions) of every policy call; raise _Killed from ``kill_at`` on.

    Wraps ``_policy`` on the instance (the env is pickled in checkpoints, the agent not).
    """
    policy = agent._policy

    def wrapped(z: torch.Tensor, slots: np.ndarray, deterministic: bool) -> np.ndarray:
        if kill_at is not None and agent.steps >= kill_at:
            raise _Killed
        actions = policy(z, slots, deterministic)
        log.append((agent.steps, actions.copy()))
        return actions

    agent._policy = wrapped  # type: ignore[method-assign]


def _without_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")}
            for r in records if r["kind"] == "scalars"]  # fmt: skip


@pytest.mark.parametrize("regimes", ["oracle", "adapting", "dense-reference"])
def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path, regimes: str) -> None:
    """``adapting``: no regime information, switches trigger recall-or-fit, so the
    adapter's buffers, the per-slot errors and the fitted tokens cross the resume too.
    ``dense-reference``: ``tau_reference=dense``, so the dense twin crosses it too."""
    preset_agent, _ = load_preset("debug")
    n, c = preset_agent["total_steps"], preset_agent["checkpoint_every"]
    assert preset_agent["prefill"] < c < n
    extra = {"oracle": [], "adapting": ["regime_info=none", "adapt_trigger=oracle"],
             "dense-reference": ["tau_reference=dense"]}[regimes]  # fmt: skip

    def new(name: str) -> CausalDreamer:
        return _new_run(TrainRequest(preset="debug", logdir=str(tmp_path / name), seed=7,
                                     overrides=["threads=1", *extra],
                                     show_progress=False))  # fmt: skip

    a = new("A")
    log_a: list = []
    _record_actions(a, log_a)
    a.learn(n)
    a.env.close()

    b = new("B")
    _record_actions(b, [], kill_at=c + 120)
    with pytest.raises(_Killed):
        b.learn(n)
    b.env.close()
    run_b = tmp_path / "B"
    assert [p.name for p in R.checkpoint_paths(run_b)] == [f"step_{c:010d}.pt"]
    listed = set(_latest(run_b)["replay"]["names"])
    replay = run_b / "replay"
    shutil.copy(replay / sorted(listed)[-1], replay / "99999999-env0.npz")  # a stray chunk
    stray = {p.name for p in replay.glob("*.npz")} - listed
    assert "99999999-env0.npz" in stray and len(stray) > 1  # also chunks written after c
    assert max(_scalar_steps(run_b)) > c  # logs written after the checkpoint

    r = CausalDreamer.resume(run_b)
    assert r.steps == c
    assert {p.name for p in replay.glob("*.npz")} == listed
    log_b: list = []
    _record_actions(r, log_b)
    r.learn(n)
    r.env.close()

    after_a = [(s, x) for s, x in log_a if s >= c]
    assert after_a and len(after_a) == len(log_b)
    for (sa, xa), (sb, xb) in zip(after_a, log_b, strict=True):
        assert sa == sb
        np.testing.assert_array_equal(xa, xb, err_msg=f"actions differ at env step {sa}")
    for mine, theirs in ((a.model.state_dict(), r.model.state_dict()),
                         (a.ac.state_dict(), r.ac.state_dict())):  # fmt: skip
        assert mine.keys() == theirs.keys()
        for k in mine:
            assert torch.equal(mine[k], theirs[k]), k
    assert (a.steps, a.updates, a.episodes) == (r.steps, r.updates, r.episodes)
    assert [e.as_dict() for e in a.events] == [e.as_dict() for e in r.events]
    if regimes == "adapting":
        assert [e for e in a.events if e.step > c], "adaptations after the kill (precondition)"
        assert a.slot_mse == r.slot_mse
    if regimes == "dense-reference":
        assert a.reference is not None and r.reference is not None
        for k, v in a.reference.model.state_dict().items():
            assert torch.equal(v, r.reference.model.state_dict()[k]), k
        assert a.lagrangian.state_dict() == r.lagrangian.state_dict()
        parts = a.lagrangian.parts  # type: ignore[union-attr]
        assert all(p.reference_avg is not None for p in parts)
        assert all(p.tau == pytest.approx(p.tau_factor * p.reference_avg) for p in parts)
        assert any("reference/mse" in rec for rec in _records(tmp_path / "A"))
    # one consistent history: the killed part's logs were dropped and written again
    assert _without_time(_records(tmp_path / "A")) == _without_time(_records(run_b))


def test_sigkill_then_resume_finishes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, total = tmp_path / "run", 2_000
    script = Path(sys.executable).with_name("mbrl-causal")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "mbrl_causal.cli"]
    command += ["train", "--preset", "debug", "--logdir", str(run_dir), "--steps", str(total),
                *FAST]  # fmt: skip
    log = tmp_path / "train.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not R.checkpoint_paths(run_dir):
            assert proc.poll() is None, f"train ended before a checkpoint:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _latest(run_dir)["counters"]["steps"]
    assert killed_at < total

    assert _cli(["train", "--resume", str(run_dir), *QUIET]) == 0
    assert f"from env step {killed_at}" in capsys.readouterr().err
    latest = R.latest_checkpoint(run_dir)
    assert latest.name == f"step_{total:010d}.pt"
    assert R.read_checkpoint(latest)["counters"]["steps"] == total
    steps = _scalar_steps(run_dir)
    assert steps == sorted(set(steps)) and steps[-1] == total


def test_api_run_directory_is_resumable(tmp_path: Path) -> None:
    """A run directory made by the Python API (learn with run_dir) can be resumed."""
    agent_over, wm_over = load_preset("debug")
    cfg = from_mapping(AgentConfig, {**agent_over, "threads": 1})
    wm = from_mapping(WorldModelConfig, {**wm_over, "name": "spartan"})
    run_dir = tmp_path / "run"
    agent = CausalDreamer("InterventionalPong-v0", wm, cfg, run_dir, seed=0)
    agent.learn(cfg.checkpoint_every)
    agent.close()
    assert R.checkpoint_paths(run_dir)
    resumed = CausalDreamer.resume(run_dir)
    try:
        assert resumed.steps == cfg.checkpoint_every
    finally:
        resumed.close()


def _corrupt_truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_garbage(path: Path) -> Path:
    path.write_bytes(b"\x00not a checkpoint\xff" * 64)
    return path


def _foreign_dict(path: Path) -> Path:
    newer = path.with_name("step_9999999999.pt")
    torch.save({"model": {"w": torch.zeros(3)}, "steps": 5}, newer)
    return newer


def _wrong_version(path: Path) -> Path:
    body = torch.load(path, weights_only=False)
    torch.save({**body, "version": 999}, path)
    return path


@pytest.mark.parametrize(
    ("damage", "needle"),
    [(_corrupt_truncated, "corrupt"), (_corrupt_garbage, "corrupt"),
     (_foreign_dict, "not an mbrl-causal agent checkpoint"), (_wrong_version, "version 999")],
    ids=["truncated", "garbage", "foreign", "version"],
)  # fmt: skip
def test_bad_checkpoint_is_a_clear_error(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Any, needle: str
) -> None:
    run_dir = _copy(debug_run, tmp_path / "run")
    bad = damage(R.latest_checkpoint(run_dir))
    assert R.latest_checkpoint(run_dir) == bad
    with pytest.raises(ValueError, match=needle) as e:
        CausalDreamer.resume(run_dir)
    assert bad.name in str(e.value)
    before = _snapshot(run_dir)
    assert _cli(["train", "--resume", str(run_dir), *QUIET]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert needle in line and bad.name in line
    assert _cli(["evaluate", str(run_dir), "--regimes", "neutral", "--episodes", "1"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert needle in line
    assert _snapshot(run_dir) == before


def test_checkpoint_from_before_per_object_constraints_resumes(
    debug_run: Path, tmp_path: Path
) -> None:
    """A run saved before ``sparsity_constraint`` existed: one Lagrangian on the total MSE,
    no such key in the stored config. It resumes with that Lagrangian."""
    run_dir = _copy(debug_run, tmp_path / "run")
    path = R.latest_checkpoint(run_dir)
    body = torch.load(path, map_location="cpu", weights_only=False)
    assert body["world_model_config"].pop("sparsity_constraint") == "per_object"
    old = body["lagrangian"]["objects"][0]  # the scalar state has the same keys
    body["lagrangian"] = dict(old)
    torch.save(body, path)
    agent = CausalDreamer.resume(run_dir)
    assert agent.wm_config.sparsity_constraint == "total"
    assert isinstance(agent.lagrangian, SparsityLagrangian)
    assert agent.lagrangian.state_dict() == old
    steps = agent.steps
    agent.learn(steps + 200)
    assert agent.steps >= steps + 200 and agent.lagrangian.updates > old["updates"]


def test_resume_applies_and_reports_overrides(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(debug_run, tmp_path / "run")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    old = saved["agent"]
    at = _latest(run_dir)["counters"]["steps"]
    total, log_every = old["total_steps"] + 400, old["log_every"] * 2
    trigger = "oracle" if old["adapt_trigger"] != "oracle" else "none"
    code = _cli(["train", "--resume", str(run_dir), "--steps", str(total), "--set",
                 f"log_every={log_every}", "--adapt-trigger", trigger, *QUIET])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if x.startswith("resume: applied overrides")]
    assert f"total_steps: {old['total_steps']!r} -> {total!r}" in line
    assert f"log_every: {old['log_every']!r} -> {log_every!r}" in line
    assert f"adapt_trigger: {old['adapt_trigger']!r} -> {trigger!r}" in line

    expected = {"total_steps": total, "log_every": log_every, "adapt_trigger": trigger}
    resumes = [r for r in _records(run_dir) if r["kind"] == "resume"]
    assert resumes == [{"kind": "resume", "step": at, "overrides": expected}]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["agent"] == {**old, **expected}
    assert config["world_model"] == saved["world_model"] and config["seed"] == saved["seed"]
    body = _latest(run_dir)
    assert body["counters"]["steps"] == total
    assert body["config"] == config["agent"]
    later = [s for s in _scalar_steps(run_dir) if s > at]
    assert later == list(range((at // log_every + 1) * log_every, total + 1, log_every))


def test_resume_of_a_finished_run_without_steps_keeps_its_config(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Agent-field changes to a finished run (no --steps: nothing trains, no checkpoint
    would hold them) apply to that command only: config.yaml keeps what the checkpoint
    has, the record says so, and a later resume starts from the checkpoint's values."""
    run_dir = _copy(debug_run, tmp_path / "run")
    saved = (run_dir / "config.yaml").read_text()
    old = yaml.safe_load(saved)["agent"]
    assert _latest(run_dir)["counters"]["steps"] >= old["total_steps"]  # finished
    log_every = old["log_every"] * 2
    assert _cli(["train", "--resume", str(run_dir), "--set", f"log_every={log_every}",
                 *QUIET]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"log_every: {old['log_every']!r} -> {log_every!r}" in err
    assert "the overrides apply to this command only (config.yaml is unchanged)" in err
    assert (run_dir / "config.yaml").read_text() == saved
    [record] = [r for r in _records(run_dir) if r["kind"] == "resume"]
    assert record["overrides"] == {"log_every": log_every} and record["kept"] is False
    names = [[p.name for p in R.checkpoint_paths(d)] for d in (run_dir, debug_run)]
    assert names[0] == names[1]  # no checkpoint written
    # ... and they act on that command: its evaluation uses them
    assert old["adapt_trigger"] != "oracle" and old["recall_tolerance"] != 7.5
    assert _cli(["train", "--resume", str(run_dir), "--adapt-trigger", "oracle", "--set",
                 "recall_tolerance=7.5", "--no-progress"]) == 0  # fmt: skip
    evaluated = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert (evaluated["adapt_trigger"], evaluated["recall_tolerance"]) == ("oracle", 7.5)
    assert (run_dir / "config.yaml").read_text() == saved


def test_resume_judges_changes_against_the_checkpoint(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """config.yaml can lag the checkpoint the run continues from (a resume stopped before
    its first checkpoint, or a finished run's changes written by an older release): a --set
    equal to config.yaml's value but not to the checkpoint's is a change, reported against
    the checkpoint's value."""
    run_dir = _copy(debug_run, tmp_path / "run")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    old = _latest(run_dir)["config"]["log_every"]
    config["agent"]["log_every"] = new = old * 2
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert _cli(["train", "--resume", str(run_dir), "--set", f"log_every={new}", *QUIET]) == 0
    assert f"log_every: {old!r} -> {new!r}" in capsys.readouterr().err
    [record] = [r for r in _records(run_dir) if r["kind"] == "resume"]
    assert record["overrides"] == {"log_every": new}


def _lambdas(body: dict[str, Any]) -> list[float]:
    """lambda of every per-object Lagrangian of a checkpoint (0 for one still warming up)."""
    parts = body["lagrangian"]["objects"]
    warmup = body["world_model_config"]["sparsity_warmup"]
    return [math.exp(p["log_lambda"]) if p["updates"] >= warmup else 0.0 for p in parts]


def test_resume_changes_the_sparsity_price_and_gate_training(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """World-model training fields (CHANGEABLE_ON_RESUME) change on resume: the new price
    bounds hold lambda from the next update on, the gates explore, and the config, the
    checkpoint and the resume record say so."""
    run_dir = _copy(debug_run, tmp_path / "run")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    before = _latest(run_dir)
    at = before["counters"]["steps"]
    assert max(_lambdas(before)) < 0.05  # the debug run's price is far below the new floor
    sets = ["lambda_min=5e-2", "lambda_max=0.08", "gate_explore=0.2"]
    args = [x for kv in sets for x in ("--set", kv)]
    assert _cli(["train", "--resume", str(run_dir), "--steps", str(at + 400), *args, *QUIET]) == 0
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("resume: applied")]
    old = saved["world_model"]
    assert f"lambda_min: {old['lambda_min']!r} -> 0.05" in line
    assert f"gate_explore: {old['gate_explore']!r} -> 0.2" in line
    expected = {"lambda_min": 0.05, "lambda_max": 0.08, "gate_explore": 0.2}
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    # lambda_init (only the first update's price) is clamped into the new bounds
    assert config["world_model"] == {**old, **expected, "lambda_init": 0.05}
    after = _latest(run_dir)
    assert after["world_model_config"] == config["world_model"]
    assert (
        after["lagrangian"]["objects"][0]["updates"] > before["lagrangian"]["objects"][0]["updates"]
    )
    assert all(0.05 * (1 - 1e-9) <= v <= 0.08 * (1 + 1e-9) for v in _lambdas(after))
    [record] = [r for r in _records(run_dir) if r["kind"] == "resume"]
    assert record["overrides"] == {"total_steps": at + 400, **expected}
    agent = CausalDreamer.resume(run_dir)  # and a later resume keeps them
    assert {g.explore for g in agent.model.modules() if hasattr(g, "explore")} == {0.2}
    assert {p.bounds for p in agent.lagrangian.parts} == {(0.05, 0.08)}
    agent.close()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--world-model", "s2ssm"], "--world-model"),
        (["--obs", "pixels"], "--obs"),
        (["--env", "InterventionalPong-Neutral-v0"], "--env"),
        (["--set", "hidden=64"], "hidden"),
        (["--set", "num_envs=4"], "num_envs"),
        (["--set", "regime_info=none"], "regime_info"),
        (["--set", "d_model=64"], "d_model"),
        # world-model fields: only CHANGEABLE_ON_RESUME, with valid values, and steps left
        (["--set", "tau=0.1"], "world-model fields lambda_min, lambda_max, lambda_schedule"),
        (["--set", "sparsity_warmup=5"], "cannot change on resume"),
        (["--set", "lambda_min=-1"], "lambda_min must be > 0"),
        (["--set", "lambda_min=0.5"], "lambda_min (0.5) must be <= lambda_max (0.1)"),
        (["--set", "lambda_schedule=[[5, 0.1]]"], "lambda_schedule must be a list of"),
        (["--set", "gate_explore=1.5"], "gate_explore must be in [0, 1)"),
        # the debug run is at its last step: no checkpoint would hold the change
        (["--set", "gate_explore=0.2"], "nothing would train with it; give --steps N"),
    ],
)
def test_resume_refuses_fixed_options(
    debug_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needle: str,
) -> None:
    run_dir = _copy(debug_run, tmp_path / "run")
    before = _snapshot(run_dir)
    assert _cli(["train", "--resume", str(run_dir), *args, *QUIET]) == 2
    assert needle in _one_line_error(capsys.readouterr().err)
    assert _snapshot(run_dir) == before


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [*((k, FIXED_VALUES[k], "cannot change on resume") for k in FIXED_ON_RESUME),
     ("d_model", 64, "d_model"), ("horizon", -1, "horizon")],
)  # fmt: skip
def test_api_resume_refuses_fixed_and_bad_fields(
    debug_run: Path, tmp_path: Path, key: str, value: Any, needle: str
) -> None:
    """CausalDreamer.resume refuses what `train --resume` refuses (FIXED_ON_RESUME), and
    an unknown or invalid field is a ValueError like every other bad config value."""
    run_dir = _copy(debug_run, tmp_path / "run")
    try:
        agent = CausalDreamer.resume(run_dir, {key: value})
    except ValueError as e:
        assert needle in str(e)
        return
    agent.close()
    pytest.fail(f"resume accepted {key}={value!r} (config now {agent.config.to_dict()[key]!r})")


# ---------------------------------------------------------------------- evaluate
def test_evaluate_writes_documented_record(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    js = tmp_path / "eval.json"
    regimes = ["neutral", "gravity+opponent-random"]
    args = ["evaluate", str(debug_run), "--regimes", ",".join(regimes), "--episodes", "2"]
    assert _cli([*args, "--json", str(js)]) == 0
    assert f"wrote {debug_run}/eval/" in capsys.readouterr().out
    record = json.loads(js.read_text())
    assert record == json.loads((debug_run / "eval" / "eval.json").read_text())
    body = _latest(debug_run)
    assert record["checkpoint_step"] == body["counters"]["steps"]
    assert record["world_model"] == "spartan" and record["episodes"] == 2
    assert record["adapt_ac_updates"] == body_config(debug_run)["adapt_ac_updates"]
    assert record["recall_tolerance"] == body_config(debug_run)["recall_tolerance"]
    assert list(record["per_regime"]) == regimes

    for name, entry in record["per_regime"].items():
        for key in ("return_mean", "return_std", "mse", "shd"):
            assert isinstance(entry[key], float) and math.isfinite(entry[key]), (name, key)
        assert entry["return_std"] >= 0 and entry["mse"] >= 0 and entry["shd"] >= 0
        per_edge = entry["per_edge"]  # 4 objects: 6 parents x 4 children, no self edges
        assert len(per_edge) == 6 * 4 - 4 and "action->agent" in per_edge
        assert "regime->ball" in per_edge and "ball->ball" not in per_edge
        assert per_edge["action->agent"]["true"] == 1.0  # pins the order of the names
        assert "agent->action" not in per_edge  # action and regime are parents only
        for e in per_edge.values():
            assert all(0.0 <= e[k] <= 1.0 for k in ("true", "predicted", "fp", "fn"))
            assert e["predicted"] - e["true"] == pytest.approx(e["fp"] - e["fn"], abs=1e-9)
        errors = sum(e["fp"] + e["fn"] for e in per_edge.values())
        assert errors == pytest.approx(entry["shd"], abs=1e-6), name
    simple = record["per_regime"]["neutral"]
    assert simple["kind"] == "simple" and "returns_after_switch" not in simple
    held = record["per_regime"]["gravity+opponent-random"]
    assert held["kind"] == "composite"
    post = held["returns_after_switch"]
    assert len(post) == 2 and all(math.isfinite(x) for x in post)
    assert held["return_mean"] == pytest.approx(np.mean(post))
    assert held["return_std"] == pytest.approx(np.std(post))
    level = held["pre_switch_return"]
    ok = [i + 1 for i, x in enumerate(post) if x >= level - 0.1 * abs(level)]
    assert held["recovered_within_episodes"] == (ok[0] if ok else None)

    det = record["detection"]
    assert det["switches"] == 1  # one held-out stream, one switch
    assert 0 <= det["detected"] <= det["switches"]
    assert isinstance(det["false_alarms"], int) and det["false_alarms"] >= 0
    if det["detected"]:
        assert math.isfinite(det["delay_mean"]) and det["delay_mean"] >= 0
    else:
        assert det["delay_mean"] is None

    out = debug_run / "eval"
    summary = (out / "summary.md").read_text()
    for name in regimes:
        assert f"| {name} |" in summary
    for png in ("adaptation.png", "graphs.png"):
        assert (out / png).read_bytes()[:8] == PNG


def test_evaluate_names_distractor_edges_as_the_env_does(tmp_path: Path) -> None:
    """``per_edge`` takes the env's ``graph_nodes`` (``distractor_<i>``, as in ``fit``)."""
    run_dir = tmp_path / "distractors"
    assert _train(run_dir, "--env", "InterventionalPongDistractors-v0", "--steps", "300") == 0
    assert _cli(["evaluate", str(run_dir), "--regimes", "neutral", "--episodes", "1"]) == 0
    entry = json.loads((run_dir / "eval" / "eval.json").read_text())["per_regime"]["neutral"]
    per_edge = entry["per_edge"]
    assert "distractor_0->ball" in per_edge and "ball->distractor_1" in per_edge
    assert len(per_edge) == 8 * 6 - 6  # 6 objects (2 distractors), action and regime
    assert per_edge["distractor_0->ball"]["true"] == 0.0  # distractors cause nothing
    assert sum(e["fp"] + e["fn"] for e in per_edge.values()) == pytest.approx(entry["shd"])


def test_evaluate_an_older_checkpoint(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(debug_run, tmp_path / "run")
    steps = [R.checkpoint_step(p) for p in R.checkpoint_paths(run_dir)]
    assert len(steps) >= 2, steps  # the debug preset keeps two
    old = steps[0]
    args = ["evaluate", str(run_dir), "--regimes", "neutral", "--episodes", "1"]
    latest_place = {k: v for k, v in _snapshot(run_dir).items() if k.startswith("eval/eval.")}
    assert _cli([*args, "--checkpoint", str(old)]) == 0
    assert f"wrote {run_dir}/eval/step_{old}/" in capsys.readouterr().out
    record = json.loads((run_dir / "eval" / f"step_{old}" / "eval.json").read_text())
    assert record["checkpoint_step"] == old != _latest(run_dir)["counters"]["steps"]
    assert (run_dir / "eval" / f"step_{old}" / "summary.md").is_file()
    after = {k: v for k, v in _snapshot(run_dir).items() if k.startswith("eval/eval.")}
    assert after == latest_place  # the latest checkpoint's results are untouched

    before = _snapshot(run_dir)
    assert _cli([*args, "--checkpoint", "123"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "no checkpoint at step 123" in line and ", ".join(map(str, steps)) in line
    assert _snapshot(run_dir) == before


# ---------------------------------------------------------------------- bad input
def test_unknown_env_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert _train(run_dir, "--env", "Bogus-v0") == 2
    assert "Bogus-v0" in _one_line_error(capsys.readouterr().err)
    assert not run_dir.exists()
    with pytest.raises(ValueError, match="Bogus-v0"):
        CausalDreamer("Bogus-v0", "spartan", AgentConfig.preset("debug"), run_dir)
    assert not run_dir.exists()


def test_inconsistent_lambda_bounds_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bound is valid alone; only their order is wrong (lambda_init below lambda_min)."""
    run_dir = tmp_path / "run"
    assert _train(run_dir, "--set", "lambda_min=0.01") == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "lambda_min <= lambda_init <= lambda_max" in line and "0.01, 0.0001, 0.1" in line
    assert not run_dir.exists()


def test_train_refuses_to_overwrite_a_run(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(debug_run, tmp_path / "run")
    before = _snapshot(run_dir)
    assert _train(run_dir) == 2
    assert "--resume" in _one_line_error(capsys.readouterr().err)
    assert _snapshot(run_dir) == before
    assert _cli(["train", "--resume", str(tmp_path / "nothing"), *QUIET]) == 2
    assert "not a run directory" in _one_line_error(capsys.readouterr().err)


def _poison_reward_head(agent: CausalDreamer) -> None:
    with torch.no_grad():
        next(agent.model.reward_head.parameters()).fill_(float("nan"))


def _state(agent: CausalDreamer) -> dict[str, torch.Tensor]:
    both = {**{f"wm.{k}": v for k, v in agent.model.state_dict().items()},
            **{f"ac.{k}": v for k, v in agent.ac.state_dict().items()}}  # fmt: skip
    return {k: v.detach().clone() for k, v in both.items()}


def test_nan_world_model_loss_stops_the_update(debug_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(debug_run, tmp_path / "run")
    agent = CausalDreamer.resume(run_dir)
    try:
        assert agent.replay.windows(agent.config.seq_len) > 0
        _poison_reward_head(agent)
        before, updates = _state(agent), agent.updates
        opt_before = {k: dict(v) for k, v in agent.wm_opt.state_dict()["state"].items()}
        with pytest.raises(NonFiniteLoss, match=r"world-model loss term '[a-z_]+' is nan"):
            agent._update()
        assert agent.updates == updates
        after = _state(agent)
        for k, v in before.items():
            torch.testing.assert_close(after[k], v, rtol=0, atol=0, equal_nan=True, msg=k)
        opt_after = agent.wm_opt.state_dict()["state"]
        for k, v in opt_before.items():
            assert torch.equal(opt_after[k]["step"], v["step"])

        checkpoints = R.checkpoint_paths(run_dir)
        with pytest.raises(NonFiniteLoss):
            agent.learn(agent.steps + 2 * agent.config.steps_per_update)
        assert agent.updates == updates
        assert R.checkpoint_paths(run_dir) == checkpoints  # no checkpoint of a broken model
    finally:
        agent.close()


def test_non_finite_gradient_behind_a_finite_loss_stops_the_update(
    debug_run: Path, tmp_path: Path
) -> None:
    """An overflow in the backward pass (finite loss terms, inf gradient) once wrote NaN
    into every weight through the gradient clipping; the update must be refused instead."""
    agent = CausalDreamer.resume(_copy(debug_run, tmp_path / "run"))
    try:
        head = next(agent.model.reward_head.parameters())
        hook = head.register_hook(lambda g: torch.full_like(g, math.inf))
        before, updates = _state(agent), agent.updates
        opt_before = {k: dict(v) for k, v in agent.wm_opt.state_dict()["state"].items()}
        with pytest.raises(NonFiniteLoss, match=r"world-model gradient is (inf|nan) "
                           r"\(first in 'reward_head\.0\.weight'\)"):  # fmt: skip
            agent._update()
        hook.remove()
        assert agent.updates == updates
        after = _state(agent)
        for k, v in before.items():
            torch.testing.assert_close(after[k], v, rtol=0, atol=0, msg=k)
        opt_after = agent.wm_opt.state_dict()["state"]
        for k, v in opt_before.items():
            assert torch.equal(opt_after[k]["step"], v["step"])
        agent._update()  # the next update goes through and keeps the weights finite
        assert all(torch.isfinite(v).all() for v in _state(agent).values())
    finally:
        agent.close()


def test_cli_reports_a_refused_update_in_one_line(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    run_dir = _copy(debug_run, tmp_path / "run")
    checkpoints = R.checkpoint_paths(run_dir)

    def refuse(self: CausalDreamer) -> None:
        raise NonFiniteLoss("world-model loss term 'reward' is nan; the update was skipped")

    monkeypatch.setattr(CausalDreamer, "_update", refuse)
    steps = str(_latest(run_dir)["counters"]["steps"] + 400)
    assert _cli(["train", "--resume", str(run_dir), "--steps", steps, *QUIET]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the resume's own two lines
    assert last.startswith("mbrl-causal: stopped: ") and "term 'reward' is nan" in last, err
    assert R.checkpoint_paths(run_dir) == checkpoints


def test_nan_loss_message_names_the_offending_term(debug_run: Path, tmp_path: Path) -> None:
    """A NaN reward head makes the 'reward' term NaN; the message should say so, not just
    'total' (which is NaN whenever any term is)."""
    agent = CausalDreamer.resume(_copy(debug_run, tmp_path / "run"))
    try:
        _poison_reward_head(agent)
        with pytest.raises(NonFiniteLoss, match="term 'reward' is nan"):
            agent._update()
    finally:
        agent.close()


def test_ac_updates_takes_that_many_actor_critic_steps_per_world_model_step(
    tmp_path: Path,
) -> None:
    agent_over, wm_over = load_preset("debug")
    steps = {}
    for k in (1, 3):
        cfg = from_mapping(AgentConfig, {**agent_over, "threads": 1, "ac_updates": k})
        wm = from_mapping(WorldModelConfig, {**wm_over, "name": "spartan"})
        agent = CausalDreamer("InterventionalPong-Neutral-v0", wm, cfg, tmp_path / str(k), 0)
        try:
            agent.learn(cfg.prefill + 4 * int(cfg.steps_per_update))
            assert agent.updates > 0
            actor_steps = agent.ac.actor_opt.state_dict()["state"][0]["step"]
            steps[k] = (int(actor_steps), agent.updates)
        finally:
            agent.close()
    assert steps[1][0] == steps[1][1]
    assert steps[3][0] == 3 * steps[3][1]
    with pytest.raises(ValueError, match="ac_updates must be an int >= 1"):
        AgentConfig(ac_updates=0)


def test_oracle_training_gives_every_regime_its_own_slot(tmp_path: Path) -> None:
    """With ``regime_info=oracle`` the regime id is privileged: in training every regime
    gets a slot of its own at once. (The recall-or-fit procedure used to run here too, and
    with an untrained model it recalled the first regime's slot for every later regime,
    so all regimes shared one token.)"""
    agent_over, wm_over = load_preset("debug")
    cfg = from_mapping(AgentConfig, {**agent_over, "threads": 1, "regime_info": "oracle",
                                     "adapt_trigger": "surprise"})  # fmt: skip
    wm = from_mapping(WorldModelConfig, {**wm_over, "name": "dense-transformer"})
    agent = CausalDreamer("InterventionalPong-v0", wm, cfg, tmp_path / "run", 0,
                          env_kwargs={"switch_every_steps": 25})  # fmt: skip
    try:
        agent.learn(600)
        assert len(agent.slot_of) >= 4, agent.slot_of  # precondition: several regimes seen
        assert len(set(agent.slot_of.values())) == len(agent.slot_of), agent.slot_of
        assert agent.events == []  # no recall, no fitted token in training
        assert sorted(agent.used_slots) == sorted(agent.slot_of.values())
    finally:
        agent.close()


@pytest.mark.parametrize("updates", [0, 3])
def test_after_a_fitted_token_the_policy_trains_on_it_or_acts_with_the_best_known(
    debug_run: Path, monkeypatch: pytest.MonkeyPatch, updates: int
) -> None:
    """After a new token is fitted in evaluation (learning off): with
    ``adapt_ac_updates`` > 0 the agent runs that many actor-critic steps in imagination
    under the new token and acts with it (the actor changes, the world model does not);
    with 0 the actor is untouched and acts with the best known slot's token, while the
    world model's predictions use the new one."""
    from mbrl_causal.agents.evaluate import _load

    agent = _load(_latest(debug_run), 1, {"regime_schedule": 7}, {"adapt_ac_updates": updates})
    try:
        agent._obs, _ = agent.env.reset(seed=0)
        agent.adapter.trigger(0)
        for _ in range(agent.config.adapt_k):
            obs = agent._obs["objects"][0] if isinstance(agent._obs, dict) else agent._obs[0]
            nxt, *_ = agent.env.step(np.zeros(1, np.int64))
            nobs = nxt["objects"][0] if isinstance(nxt, dict) else nxt[0]
            agent.adapter.add(0, obs, np.int64(0), nobs)
            agent._obs = nxt
        free = agent._free_slot()
        known = sorted(agent.used_slots)
        best_known = known[-1]

        def decide(*a: Any, **k: Any) -> tuple[str, int, float]:
            agent.adapter.last_best, agent.adapter.last_reference = best_known, 1.0
            return "new", free, 1.0

        monkeypatch.setattr(agent.adapter, "decide", decide)
        seen_tokens: list[torch.Tensor] = []
        update = agent.ac.update

        def spy(model: Any, latents: Any, tokens: torch.Tensor, *a: Any) -> Any:
            seen_tokens.append(tokens)
            return update(model, latents, tokens, *a)

        monkeypatch.setattr(agent.ac, "update", spy)
        actor = [p.detach().clone() for p in agent.ac.actor.parameters()]
        model = {k: v.clone() for k, v in agent.model.state_dict().items()}
        opt_steps = agent.ac.actor_opt.state_dict()["state"]
        before = int(opt_steps[0]["step"]) if opt_steps else 0
        agent._adapt(0, 7)
        assert agent.env_slot[0] == free and agent.events[-1].decision == "new"
        assert len(seen_tokens) == updates  # every update under the new slot's token:
        for tok in seen_tokens:
            assert torch.equal(tok, agent.model.codebook.weight[free].detach().expand_as(tok))
        state = agent.ac.actor_opt.state_dict()["state"]
        assert (int(state[0]["step"]) if state else 0) == before + updates
        now = list(agent.ac.actor.parameters())
        changed = any(not torch.equal(a, p) for a, p in zip(actor, now, strict=True))
        assert changed == (updates > 0)
        after = agent.model.state_dict()
        assert all(torch.equal(model[k], after[k]) for k in model if "codebook" not in k)
        assert agent.policy_alias == ({} if updates else {free: best_known})
        # the tokens the policy acts with: the new one after training on it, else the best
        # known one
        acted: list[torch.Tensor] = []
        act = agent.ac.act
        monkeypatch.setattr(agent.ac, "act", lambda f, *a: acted.append(f) or act(f, *a))
        agent._env_step()
        tok = acted[-1][0, -agent.model.codebook.weight.shape[1] :]
        want = free if updates else best_known
        assert torch.equal(tok, agent.model.codebook.weight[want].detach())
        assert int(agent.env_slot[0]) == free  # the world model keeps the new token
    finally:
        agent.close()


def body_config(run_dir: Path) -> dict[str, Any]:
    return dict(_latest(run_dir)["config"])


def test_evaluate_refuses_bad_adaptation_overrides(
    debug_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(["evaluate", str(debug_run), "--adapt-ac-updates", "-1"]) == 2
    assert "expected an integer >= 0, got '-1'" in capsys.readouterr().err
    assert _cli(["evaluate", str(debug_run), "--recall-tolerance", "0"]) == 2
    assert "recall_tolerance must be > 0, got 0.0" in capsys.readouterr().err


def test_evaluate_applies_the_recall_tolerance(debug_run: Path, tmp_path: Path) -> None:
    """--recall-tolerance decides recall vs new: huge -> every held-out regime recalls a
    known slot; tiny -> every one gets a new token."""
    from mbrl_causal.agents.evaluate import evaluate_run

    kinds = {}
    for tol in (1e9, 1e-9):
        run = _copy(debug_run, tmp_path / str(tol))
        rec = evaluate_run(run, "gravity+opponent-random", 1, "oracle", recall_tolerance=tol,
                           adapt_ac_updates=0)  # fmt: skip
        assert rec["recall_tolerance"] == tol
        events = rec["per_regime"]["gravity+opponent-random"]["adaptations"]
        kinds[tol] = {e["decision"] for e in events if e["true_regime"] == 7}
        for e in events:  # the best known slot is logged; a recall takes it
            assert e["best_slot"] in _latest(debug_run)["used_slots"]
            assert e["decision"] == "new" or e["best_slot"] == e["slot"]
    assert kinds == {1e9: {"recall"}, 1e-9: {"new"}}


@pytest.mark.parametrize("trigger", ["surprise", "none"])
def test_evaluation_adapts_to_an_unseen_regime_id(debug_run: Path, trigger: str) -> None:
    """In evaluation (learning off) an unseen regime id is a held-out regime: it starts
    recall-or-fit (``none``: the sub-env keeps its old token), never a fresh slot."""
    from mbrl_causal.agents.evaluate import _load

    body = _latest(debug_run)
    assert 7 not in body["slot_of"]  # precondition: the debug run trains on simple regimes
    agent = _load(body, 1, {"regime_schedule": 7}, {"adapt_trigger": trigger})
    try:
        old_slot = int(agent.env_slot[0])
        agent._obs, _ = agent.env.reset(seed=0)
        agent._env_step()
        assert 7 not in agent.slot_of and int(agent.env_slot[0]) == old_slot
        assert agent.adapter.pending(0) == (trigger != "none")
        for _ in range(agent.config.adapt_k + 5):
            agent._env_step()
        if trigger == "none":
            assert not agent.events and 7 not in agent.slot_of
        else:
            assert [e.true_regime for e in agent.events] == [7]
            assert agent.slot_of[7] == agent.events[0].slot == int(agent.env_slot[0])
    finally:
        agent.close()


def test_training_keeps_a_running_error_per_slot_and_adapts_against_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each slot's running training MSE is kept (and checkpointed); a recall holds the
    best known slot to its own figure, not to the average over slots."""
    agent_over, wm_over = load_preset("debug")
    cfg = from_mapping(AgentConfig, {**agent_over, "threads": 1})
    wm = from_mapping(WorldModelConfig, {**wm_over, "name": "dense-transformer"})
    run_dir = tmp_path / "run"
    agent = CausalDreamer("InterventionalPong-v0", wm, cfg, run_dir, 0,
                          env_kwargs={"switch_every_steps": 25})  # fmt: skip
    try:
        agent.learn(cfg.checkpoint_every)
        assert len(agent.slot_mse) >= 2 and set(agent.slot_mse) <= set(agent.used_slots)
        assert all(math.isfinite(v) and v > 0 for v in agent.slot_mse.values())
        assert len(set(agent.slot_mse.values())) == len(agent.slot_mse)  # really per slot
        saved = dict(agent.slot_mse)
    finally:
        agent.close()
    old = _copy(run_dir, tmp_path / "old")  # a checkpoint from before per-slot figures
    latest = R.latest_checkpoint(old)
    body = torch.load(latest, weights_only=False)
    del body["slot_mse"]
    torch.save(body, latest)
    legacy = CausalDreamer.resume(old)
    try:
        assert legacy.slot_mse == {}  # every slot falls back to the overall figure
    finally:
        legacy.close()
    resumed = CausalDreamer.resume(run_dir)
    try:
        assert resumed.slot_mse == pytest.approx(saved)
        seen: dict[str, Any] = {}

        def decide(model: Any, batch: Any, known: list[int], free: Any, ref: Any,
                   seed: int) -> tuple[str, int, float]:  # fmt: skip
            seen["ref"] = ref
            return "recall", known[0], 1.0

        monkeypatch.setattr(resumed.adapter, "decide", decide)
        resumed.adapter.trigger(0)
        obs = np.zeros((4, 4), np.float32)
        for _ in range(resumed.config.adapt_k):
            resumed.adapter.add(0, obs, np.int64(0), obs)
        resumed._adapt(0, 0)
        known = sorted(set(resumed.used_slots))
        assert seen["ref"] == {s: saved.get(s, resumed.mse_avg) for s in known}
    finally:
        resumed.close()


@pytest.mark.parametrize(
    ("world_model", "extra", "needle"),
    [("dense-transformer", [], "'dense-transformer', tau=None"),
     ("spartan", ["tau=0.01"], "'spartan', tau=0.01")],
)  # fmt: skip
def test_dense_reference_needs_a_sparse_model_with_automatic_tau(
    tmp_path: Path, world_model: str, extra: list[str], needle: str
) -> None:
    overrides = ["tau_reference=dense", *extra]
    request = TrainRequest(preset="debug", world_model=world_model, logdir=str(tmp_path / "r"),
                           overrides=overrides, show_progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="tau_reference=dense needs a sparse world model") as e:
        _new_run(request)
    assert needle in str(e.value)
    assert not (tmp_path / "r").exists()  # refused before the run folder is made
