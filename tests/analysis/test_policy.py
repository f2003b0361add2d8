"""`mbrl-causal sparsity --policy RUN_DIR`: a trained run's policy acts on Pong while the
Jacobians are taken (Dreamer and SB3 runs), and the errors around it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mbrl_causal.analysis.policy import load_run_policy
from mbrl_causal.analysis.pong import collect_pong
from mbrl_causal.cli import main

NEUTRAL = "InterventionalPong-Neutral-v0"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, agent, extra in (("dreamer", "dreamer", []), ("ppo", "ppo", []),
                               ("sac-imagination", "sac-imagination", []),
                               ("dreamer-none", "dreamer", ["--regime-info", "none"])):  # fmt: skip
        run_dir = root / name
        argv = [
            "train",
            "--agent",
            agent,
            "--env",
            NEUTRAL,
            "--preset",
            "debug",
            "--no-eval",
            "--logdir",
            str(run_dir),
            "--no-progress",
            "--set",
            "threads=1",
            *extra,
        ]
        assert main(argv) == 0
        out[name] = run_dir
    return out


@pytest.mark.parametrize("agent", ["dreamer", "ppo", "sac-imagination"])
def test_the_runs_policy_chooses_every_action(runs: dict[str, Path], agent: str) -> None:
    policy = load_run_policy(runs[agent])
    assert policy.algorithm == agent
    chosen: list[Any] = []
    act = policy.act

    def recording(obs: Any, info: dict[str, Any]) -> Any:
        assert obs.shape == policy.obs_shape and "regime" in info
        chosen.append(act(obs, info))
        return chosen[-1]

    policy.act = recording
    samples = collect_pong(NEUTRAL, 25, episodes=2, seed=3, policy=policy)
    assert len(chosen) == 25
    np.testing.assert_array_equal(samples.actions, np.array(chosen))
    if agent != "sac-imagination":  # discrete actions: no action Jacobian
        assert policy.action_type == "discrete" and samples.J_a is None
        assert set(samples.actions.tolist()) <= {0, 1, 2} and samples.action_labels == []
    else:
        assert policy.action_type == "continuous" and samples.J_a is not None
        assert samples.J_a.shape == (25, 8, 1) and np.abs(samples.actions).max() <= 1.0
    assert samples.J_s.shape == (25, 8, 8) and np.isfinite(samples.J_s).all()
    # deterministic policy and seeded env: the same trajectory again
    again = collect_pong(NEUTRAL, 25, episodes=2, seed=3, policy=load_run_policy(runs[agent]))
    np.testing.assert_array_equal(again.actions, samples.actions)
    np.testing.assert_array_equal(again.J_s, samples.J_s)


@pytest.mark.parametrize("run", ["dreamer", "dreamer-none"])
def test_dreamer_gets_the_regime_token_only_under_oracle_regime_info(
    runs: dict[str, Path], run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mbrl_causal.agents.dreamer.agent import CausalDreamer

    asked: list[Any] = []
    predict = CausalDreamer.predict

    def recording(self: CausalDreamer, *args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("regime"))
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(CausalDreamer, "predict", recording)
    policy = load_run_policy(runs[run])
    seen: list[int] = []
    act = policy.act

    def acting(obs: Any, info: dict[str, Any]) -> Any:
        seen.append(int(info["regime"]))
        return act(obs, info)

    policy.act = acting
    # the switching env (a new regime every 20 episodes): 24 episodes of 2 steps
    collect_pong("InterventionalPong-v0", 48, episodes=24, seed=2, policy=policy)
    assert len(asked) == 48
    if run == "dreamer":
        assert asked == seen and len(set(seen)) > 1
    else:
        assert asked == [None] * 48


def test_command_with_a_run_policy(runs: dict[str, Path], tmp_path: Path) -> None:
    for agent, shapes in (("dreamer", {"J_s": [8, 8]}),
                          ("sac-imagination", {"J_s": [8, 8], "J_a": [8, 1]})):  # fmt: skip
        out = tmp_path / f"{agent}.json"
        argv = ["sparsity", "--env", NEUTRAL, "--steps", "15", "--policy", str(runs[agent]),
                "--json", str(out), "--no-progress"]  # fmt: skip
        assert main(argv) == 0
        r = json.loads(out.read_text())
        assert r["policy"] == str(runs[agent]) and r["policy_algorithm"] == agent
        assert r["shape"] == shapes and r["object_blocks"]["outside_graph"] == 0
    random_out = tmp_path / "random.json"
    assert main(["sparsity", "--env", NEUTRAL, "--steps", "5", "--json", str(random_out),
                 "--no-progress"]) == 0  # fmt: skip
    assert json.loads(random_out.read_text())["policy_algorithm"] == "random"


def test_run_policy_errors(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["--env", "Hopper-v5", "--policy", str(runs["dreamer"])],
         "--policy RUN_DIR acts on Interventional Pong only"),
        (["--env", NEUTRAL, "--policy", str(tmp_path)], "is not a run directory (no config.yaml)"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(["sparsity", *argv, "--steps", "3", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    # the distractor env has more objects than the run's env (Python API: the command
    # refuses that env id before)
    policy = load_run_policy(runs["sac-imagination"])
    with pytest.raises(
        ValueError, match=r"expects observations of shape \(4, 4\) .* gives \(6, 4\)"
    ):
        collect_pong("InterventionalPongDistractors-v0", 3, policy=policy)
