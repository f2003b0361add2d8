"""`mbrl-causal train --agent ppo|ppo-imagination|sac-imagination` end to end on the debug
preset, `evaluate` on those runs, resume of an imagination run, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mbrl_causal.agents import run as R
from mbrl_causal.agents.sb3_agents import SB3AgentConfig
from mbrl_causal.agents.train import TrainRequest, train_command
from mbrl_causal.cli import main

NEUTRAL = "InterventionalPong-Neutral-v0"
FAST = ["--no-progress", "--set", "threads=1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as e:
        return int(e.code or 0)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize("agent", ["ppo", "ppo-imagination", "sac-imagination"])
def test_train_then_evaluate(tmp_path: Path, agent: str) -> None:
    run_dir = tmp_path / agent
    rc = _cli(["train", "--agent", agent, "--env", NEUTRAL, "--preset", "debug", "--logdir",
               str(run_dir), "--no-eval", *FAST])  # fmt: skip
    assert rc == 0
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["algorithm"] == agent and config["agent"]["algorithm"] == agent
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    records = [r for r in _records(run_dir) if r["kind"] == "scalars"]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)) and steps[-1] >= 600
    keys = {k for r in records for k in r if k not in ("kind", "step")}
    assert {k.split("/")[0] for k in keys} <= {"rollout", "world_model", "causal", "train",
                                               "imagination", "time"}  # fmt: skip
    assert "rollout/episode_return" in keys and any(k.startswith("train/") for k in keys)
    if agent != "ppo":
        assert {"world_model/mse", "causal/lambda", "imagination/steps"} <= keys
        assert (run_dir / "model.world_model.pt").is_file()
        assert list((run_dir / "replay").glob("*.npz"))
    assert (run_dir / "model.zip").is_file()
    body = R.read_checkpoint(R.latest_checkpoint(run_dir))
    assert body["algorithm"] == agent and body["counters"]["steps"] >= 600

    assert _cli(["evaluate", str(run_dir), "--regimes", "neutral", "--episodes", "1"]) == 0
    record = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert record["algorithm"] == agent
    neutral = record["per_regime"]["neutral"]
    assert -5.0 <= neutral["return_mean"] <= 5.0 and len(neutral["returns"]) == 1
    assert (neutral["mse"] is None) == (agent == "ppo")
    if agent != "ppo":  # the graph's entries, as for the Dreamer agent
        errors = sum(e["fp"] + e["fn"] for e in neutral["per_edge"].values())
        assert len(neutral["per_edge"]) == 20 and errors == pytest.approx(neutral["shd"])
        assert neutral["per_edge"]["action->agent"]["true"] == 1.0
    else:
        assert "per_edge" not in neutral
    assert "WM mse" in (run_dir / "eval" / "summary.md").read_text()
    if agent == "ppo":  # --checkpoint reaches the SB3 evaluation too
        first = R.checkpoint_step(R.checkpoint_paths(run_dir)[0])
        assert first < body["counters"]["steps"]
        assert _cli(["evaluate", str(run_dir), "--regimes", "neutral", "--episodes", "1",
                     "--checkpoint", str(first)]) == 0  # fmt: skip
        old = json.loads((run_dir / "eval" / f"step_{first}" / "eval.json").read_text())
        assert old["checkpoint_step"] == first and old["algorithm"] == "ppo"


def test_resume_of_an_imagination_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    base = ["train", "--agent", "ppo-imagination", "--env", NEUTRAL, "--preset", "debug",
            "--logdir", str(run_dir), "--no-eval", *FAST]  # fmt: skip
    assert _cli([*base, "--steps", "400"]) == 0
    first = R.read_checkpoint(R.latest_checkpoint(run_dir))
    assert first["counters"]["steps"] == 400
    imagined = first["counters"]["iterations"]
    assert _cli(base) != 0  # the folder already holds a run
    rc = _cli(["train", "--resume", str(run_dir), "--steps", "800", "--no-eval",
               "--no-progress"])  # fmt: skip
    assert rc == 0
    last = R.read_checkpoint(R.latest_checkpoint(run_dir))
    assert last["counters"]["steps"] == 800
    assert last["counters"]["iterations"] == imagined + 2
    assert last["storage"]["counters"][0] == 800  # real steps stored in the replay
    assert last["storage"]["counters"][1] > first["storage"]["counters"][1]  # WM updates
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["agent"]["total_steps"] == 800
    kinds = [r["kind"] for r in _records(run_dir)]
    assert "resume" in kinds
    steps = [r["step"] for r in _records(run_dir) if r["kind"] == "scalars"]
    assert steps == sorted(steps) and steps[-1] == 800
    # the world model and the policy continued from the checkpoint, not from scratch
    assert not torch.equal(first["world_model_state"]["codebook.weight"],
                           last["world_model_state"]["codebook.weight"])  # fmt: skip
    assert _cli(["train", "--resume", str(run_dir), "--agent", "ppo", *FAST]) == 2
    assert _cli(["train", "--resume", str(run_dir), "--set", "imag_envs=4", *FAST]) == 2
    # the run is finished: a change without --steps applies to that command only
    saved = (run_dir / "config.yaml").read_text()
    rc = _cli(["train", "--resume", str(run_dir), "--set", "log_every=100", "--no-eval",
               "--no-progress"])  # fmt: skip
    assert rc == 0
    assert (run_dir / "config.yaml").read_text() == saved
    assert R.read_checkpoint(R.latest_checkpoint(run_dir))["agent"]["log_every"] != 100
    record = [r for r in _records(run_dir) if r["kind"] == "resume"][-1]
    assert record["overrides"] == {"log_every": 100} and record["kept"] is False


def test_resume_of_an_imagination_run_with_a_new_sparsity_price(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The world model's price bounds change on resume of an SB3 run too (the callback's
    Lagrangian is rebuilt from the new config and loads its saved state)."""
    run_dir = tmp_path / "run"
    assert _cli(["train", "--agent", "ppo-imagination", "--env", NEUTRAL, "--preset", "debug",
                 "--logdir", str(run_dir), "--steps", "400", *FAST]) == 0  # fmt: skip
    first = R.read_checkpoint(R.latest_checkpoint(run_dir))
    old = first["world_model"]
    rc = _cli(["train", "--resume", str(run_dir), "--steps", "800", "--set", "lambda_min=0.05",
               "--set", "lambda_max=0.08", "--no-eval", "--no-progress"])  # fmt: skip
    assert rc == 0
    assert "'lambda_min': 0.05" in capsys.readouterr().err
    last = R.read_checkpoint(R.latest_checkpoint(run_dir))
    expected = {**old, "lambda_min": 0.05, "lambda_max": 0.08, "lambda_init": 0.05}
    assert last["world_model"] == expected
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["world_model"] == expected
    parts = last["storage"]["lagrangian"]["objects"]
    assert parts and all(p["updates"] >= old["sparsity_warmup"] for p in parts)
    before = [math.exp(p["log_lambda"]) for p in first["storage"]["lagrangian"]["objects"]]
    assert max(before) < 0.05
    assert all(0.05 * (1 - 1e-9) <= math.exp(p["log_lambda"]) <= 0.08 for p in parts)


def test_resume_of_a_ppo_run_refuses_world_model_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert _cli(["train", "--agent", "ppo", "--env", NEUTRAL, "--preset", "debug",
                 "--logdir", str(run_dir), "--steps", "256", "--no-eval", *FAST]) == 0  # fmt: skip
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    rc = _cli(["train", "--resume", str(run_dir), "--steps", "512", "--set", "lambda_min=0.05",
               "--no-eval", "--no-progress"])  # fmt: skip
    assert rc == 2
    assert "this ppo run has no world model" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before


def test_bad_agent_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["train", "--agent", "a2c", "--logdir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert (
        "invalid choice: 'a2c'" in err and "ppo-imagination" in err and len(err.splitlines()) == 1
    )
    with pytest.raises(ValueError, match="--agent must be one of dreamer, ppo"):
        train_command(TrainRequest(agent="dqn", logdir=str(tmp_path / "y")))
    rc = _cli(["train", "--agent", "ppo", "--regime-info", "none", "--logdir", str(tmp_path / "z"),
               "--preset", "debug"])  # fmt: skip
    assert rc == 2
    assert "applies to --agent dreamer only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="algorithm must be one of"):
        SB3AgentConfig(algorithm="td3")
    with pytest.raises(ValueError, match="imag_envs must be an int >= 1"):
        SB3AgentConfig(imag_envs=0)
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()
