"""The command line: every command runs, and bad input gives the documented error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mbrl_causal.cli import main
from mbrl_causal.envs import ENV_IDS


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("envs", "play", "bench"):
        assert f"    {command} " in out


def test_envs_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envs", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in records] == list(ENV_IDS)
    for r in records:
        assert r["obs_modes"] == ["objects", "pixels", "dict"] and r["regime"] and r["description"]


def test_envs_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envs"]) == 0
    assert "InterventionalPong" in capsys.readouterr().out


def test_play_writes_results_and_videos(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "play.json"
    args = ["play", "--env", "InterventionalPong-v0", "--episodes", "3", "--policy", "tracking",
            "--set", "switch_every=1", "--set", "points_to_win=2", "--json", str(out)]  # fmt: skip
    assert main([*args, "--video", str(tmp_path / "mp4")]) == 0
    results = json.loads(out.read_text())
    assert len(results) == 3
    for r in results:
        assert max(r["score"]) == 2 and r["return_"] == r["score"][1] - r["score"][0]
    # switch_every=1 switches at every reset, reported on the first step of the episode
    assert all(r["switches"] and r["switches"][0]["step"] == 1 for r in results[1:])
    text = capsys.readouterr().out
    assert "episode 2: return" in text and "switches: step 1:" in text
    videos = sorted((tmp_path / "mp4").glob("*.mp4"))
    assert [v.name for v in videos] == ["episode_0.mp4", "episode_1.mp4", "episode_2.mp4"]
    assert all(v.stat().st_size > 1000 for v in videos)
    assert main(["play", "--env", "InterventionalPong-Neutral-v0", "--episodes", "1",
                 "--set", "points_to_win=1", "--video", str(tmp_path / "gif"),
                 "--video-format", "gif"]) == 0  # fmt: skip
    gif = tmp_path / "gif" / "episode_0.gif"
    assert gif.read_bytes()[:6] == b"GIF89a"
    assert not list((tmp_path / "gif").glob(".*")), "no temporary files left behind"


def test_play_from_preset(tmp_path: Path) -> None:
    preset = Path(__file__).resolve().parents[1] / "envs" / "interventional_pong.yaml"
    out = tmp_path / "r.json"
    assert main(["play", "--env", str(preset), "--episodes", "1", "--set", "points_to_win=1",
                 "--json", str(out)]) == 0  # fmt: skip
    assert len(json.loads(out.read_text())) == 1


def test_bench_envs_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "envs", "--json", str(out), "--steps", "300", "--vector-steps", "20",
                 "--ale-steps", "100", "--repeats", "1"]) == 0  # fmt: skip
    data = json.loads(out.read_text())
    for key in ("objects", "pixels", "vector", "ale_pong"):
        assert key in data
    for key in ("objects", "pixels", "vector"):
        assert data[key]["steps_per_s"] > 0 and data[key]["settings"]
    assert data["vector"]["settings"]["num_envs"] == 64


@pytest.mark.parametrize(
    "argv, message",
    [
        (["play", "--env", "Pong-v9"], "unknown env id 'Pong-v9'; allowed: InterventionalPong-v0"),
        (
            ["play", "--env", "InterventionalPong-v0", "--set", "obs_mode=rgb"],
            "obs_mode must be one of ('objects', 'pixels', 'dict')",
        ),
        (
            ["play", "--env", "InterventionalPong-v0", "--set", "speed=3"],
            "unknown env config key(s) ['speed']; allowed: id, obs_mode",
        ),
        (
            ["play", "--env", "InterventionalPong-v0", "--set", "render_size=big"],
            "render_size must be int",
        ),
        (
            ["play", "--env", "InterventionalPong-v0", "--set", "extra={'gravity': 1}"],
            "unknown env argument(s) ['gravity']",
        ),
        (["play", "--env", "missing.yaml"], "preset file 'missing.yaml' does not exist"),
        (["play", "--env", "InterventionalPong-v0", "--episodes", "0"], "positive integer"),
        (["play", "--env", "InterventionalPong-v0", "--policy", "smart"], "invalid choice"),
        (["bench", "trains"], "invalid choice"),
        (["fly"], "invalid choice"),
    ],
)
def test_bad_input_one_line_exit_2(argv: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mbrl_causal.cli", *argv], capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in lines[0]


def test_bad_paths(tmp_path: Path) -> None:
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "mbrl_causal.cli", "play", "--env", "InterventionalPong-v0",
         "--video", str(a_file)], capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "is a file; give a folder" in proc.stderr
    assert main(["bench", "envs", "--json", str(tmp_path)]) == 2


def test_bench_models_json_times_every_case_interleaved(tmp_path: Path) -> None:
    import torch

    out = tmp_path / "models.json"
    threads = torch.get_num_threads()
    try:
        assert main(["bench", "models", "--json", str(out), "--steps", "1", "--repeats", "2"]) == 0
    finally:
        torch.set_num_threads(threads)  # the command sets one thread (its default)
    result = json.loads(out.read_text())
    assert result["machine"]["torch_threads"] == 1
    assert result["unit"].startswith("milliseconds per train step")
    cases = ["spartan", "s2ssm", "dense-transformer", "dense-ssm", "transformer_encoder"]
    for case in cases:
        runs = result[case]["runs_ms"]
        assert len(runs) == 2 and all(r > 0 for r in runs)
        assert result[case]["ms_per_step"] == pytest.approx(sum(runs) / 2)  # median of two
    ratios = result["ratios"]
    assert ratios["spartan_over_transformer_encoder"] == pytest.approx(
        result["spartan"]["ms_per_step"] / result["transformer_encoder"]["ms_per_step"]
    )
    # mambapy is a benchmark-only extra: timed when installed, a stated skip otherwise
    for case in ("mambapy_scan", "mambapy_layers"):
        assert "runs_ms" in result[case] or "mambapy" in result[case]["skipped"]


def test_bench_models_without_mambapy_reports_the_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    from mbrl_causal.world_models import bench

    def missing(*args: object) -> None:
        raise bench.MambapyMissing("No module named 'mambapy'")

    monkeypatch.setattr(bench, "_mamba_cases", missing)
    result = bench.bench_models(steps=1, repeats=1)
    for case in ("mambapy_scan", "mambapy_layers"):
        assert result[case] == {"skipped": "mambapy is not installed (pip install '.[bench]')"}
    assert result["ratios"]["mambapy_scan_over_ours"] is None
    assert result["spartan"]["ms_per_step"] > 0


def test_interleaved_timing_order_median_and_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case once per round after a warm-up of each; the collector off inside a run
    and back as it was afterwards, also after an error; the median of the runs."""
    import gc
    import itertools

    from mbrl_causal.world_models import bench

    calls: list[tuple[str, bool]] = []
    clock = itertools.count()
    # each timed run of 1 step reads the clock twice: a case's run lasts 1 tick unless it
    # is case b's second run (5 ticks), so b's runs are 1, 5, 1 ms-units: median 1, mean 2.3
    durations = iter([1, 1, 1, 5, 1, 1])

    def fake_clock() -> float:
        return float(next(clock))

    def make(name: str):  # type: ignore[no-untyped-def]
        def step() -> None:
            calls.append((name, gc.isenabled()))
            if len(calls) > 6:  # after the warm-ups: advance the clock by this run's length
                for _ in range(next(durations) - 1):
                    next(clock)

        return step

    monkeypatch.setattr(bench.time, "perf_counter", fake_clock)
    assert gc.isenabled()
    out = bench._interleaved_ms({"a": make("a"), "b": make("b")}, steps=1, repeats=3)
    assert [c[0] for c in calls] == ["a"] * 3 + ["b"] * 3 + ["a", "b"] * 3
    assert all(on for _, on in calls[:6]) and not any(on for _, on in calls[6:])
    assert gc.isenabled()
    assert out["b"]["runs_ms"] == [1000.0, 5000.0, 1000.0]
    assert out["b"]["ms_per_step"] == 1000.0  # the median, not the mean

    def broken() -> None:
        if not gc.isenabled():
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        bench._interleaved_ms({"x": broken}, steps=1, repeats=1)
    assert gc.isenabled()
    gc.disable()
    try:
        bench._interleaved_ms({"a": lambda: None}, steps=1, repeats=2)
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()
