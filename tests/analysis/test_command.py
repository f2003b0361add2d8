"""`mbrl-causal sparsity` end to end on small step counts, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mbrl_causal.cli import main

PLOTS = ("zero_frequency", "sparsity_histogram", "sparsity_over_time", "run_lengths")


def test_mujoco_end_to_end(tmp_path: Path) -> None:
    out, plots = tmp_path / "r.json", tmp_path / "plots"
    argv = ["--env", "HalfCheetah-v5", "--steps", "30", "--episodes", "2", "--sweep"]
    code = main(["sparsity", *argv, "--json", str(out), "--plots", str(plots), "--no-progress"])
    assert code == 0
    r = json.loads(out.read_text())
    assert r["env"] == "HalfCheetah-v5" and r["steps"] == 30 and r["threshold"] == 1e-6
    assert r["shape"] == {"J_s": [18, 18], "J_a": [18, 6]}
    for key in ("J_s", "J_a"):
        fig = r[key]
        for k in ("global_zero_count", "global_zero_fraction", "mean_sparsity",
                  "sparsity_histogram", "zero_frequency", "sparsity_over_time",
                  "run_length_histogram"):  # fmt: skip
            assert k in fig, (key, k)
        assert set(fig["run_length_mean"]) == {"zero", "nonzero"}
        assert 0.0 <= fig["mean_sparsity"] <= 1.0
        assert len(fig["sparsity_over_time"]) == 15  # first of 2 episodes of 15 steps
    assert [row["threshold"] for row in r["sweep"]["J_s"]] == r["sweep"]["thresholds"]
    assert len(r["labels"]["state"]) == 18 and r["episodes"] == 2
    for name in (*PLOTS, "threshold_sweep"):
        assert (plots / f"{name}.png").stat().st_size > 1000


def test_pong_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    code = main(["sparsity", "--env", "InterventionalPong-v0", "--steps", "20",
                 "--json", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    r = json.loads(out.read_text())
    assert r["shape"] == {"J_s": [8, 8], "J_a": [8, 1]}
    assert r["object_blocks"]["outside_graph"] == 0 and r["sweep"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "Nope-v0"], "unknown env id 'Nope-v0'; allowed: "),
        (["--env", "Hopper-v5", "--policy", "runs/x"], "expected 'random' or a run directory"),
        (["--env", "Hopper-v5", "--steps", "2", "--episodes", "3"], "must be >= --episodes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sparsity", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_threshold_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["sparsity", "--env", "Hopper-v5", "--threshold", "-1"])
    assert e.value.code == 2
    assert "expected a finite number >= 0" in capsys.readouterr().err
