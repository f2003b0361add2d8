"""`mbrl-causal fit --preset debug` end to end, and its input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from mbrl_causal.cli import main
from mbrl_causal.envs.regimes import REGIMES
from mbrl_causal.world_models import WorldModel

SIMPLE = [r.name for r in REGIMES if r.simple]
COMPOSITE = [r.name for r in REGIMES if not r.simple]
GRAPH_KEYS = ("mse", "shd", "precision", "recall", "edges")


def _check_figures(figures: dict, n_entries: int = 20) -> None:
    for key in GRAPH_KEYS:
        assert math.isfinite(figures[key]), key
    assert 0.0 <= figures["shd"] <= n_entries
    assert 0.0 <= figures["precision"] <= 1.0 and 0.0 <= figures["recall"] <= 1.0
    assert figures["mse"] >= 0.0


@pytest.mark.parametrize(
    ("model", "obs"), [("spartan", "objects"), ("dense-transformer", "objects"),
                       ("s2ssm", "pixels")],
)  # fmt: skip
def test_fit_debug_end_to_end(tmp_path: Path, model: str, obs: str) -> None:
    out, js = tmp_path / "run", tmp_path / "fit.json"
    args = ["--world-model", model, "--obs", obs, "--out", str(out), "--json", str(js)]
    code = main(["fit", "--preset", "debug", *args, "--no-progress", "--set", "threads=1"])
    assert code == 0
    record = json.loads(js.read_text())
    assert record == json.loads((out / "fit.json").read_text())
    assert record["world_model"] == model and record["obs"] == obs
    _check_figures(record["overall"])
    assert sorted(record["per_regime"]) == sorted(SIMPLE)
    for figures in record["per_regime"].values():
        _check_figures(figures)
    assert sorted(record["few_shot"]) == sorted(COMPOSITE)
    for curve in record["few_shot"].values():
        assert math.isfinite(curve["1"]) and math.isfinite(curve["2"])
        assert math.isfinite(curve["reference_mse"])
    assert math.isfinite(record["robustness"]["error_change_pct"])
    per_edge = record["per_edge"]  # 6 parents x 4 children, object self edges left out
    assert len(per_edge) == 20 and "ball->score" in per_edge and "ball->ball" not in per_edge
    errors = sum(e["fp"] + e["fn"] for e in per_edge.values())
    assert math.isclose(errors, record["overall"]["shd"], rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(per_edge["action->agent"]["true"], 1.0)  # the action always moves it
    diag = record["diagnostics"]
    assert set(diag) == {"event_max", "event_edges", "regime_token_value"}
    for key, e in diag["event_edges"].items():
        assert 0.0 < per_edge[key]["true"] <= diag["event_max"] and 0 <= e["open_when_true"] <= 1
    assert sorted(diag["regime_token_value"]["per_regime"]) == sorted(SIMPLE[1:])
    assert record["train_seconds"] > 0
    assert record["config"]["model"]["name"] == model
    assert (record["graph_threshold"] is None) == (model != "dense-transformer")
    loaded = WorldModel.load(out / "model.pt")
    assert loaded.config.name == model and loaded.config.obs == obs
    assert list(loaded.regime_ids) == list(range(7))
    assert any((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "config.yaml").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--world-model", "bogus"], "invalid choice"),
        (["--set", "nosuchkey=1"], "allowed"),
        (["--regimes", "nosuchregime"], "nosuchregime"),
        (["--set", "d_model=-4"], "d_model"),
        (["--set", "train_steps=5"], "--train-steps"),
        (["--set", "tau_reference=median"], "tau_reference must be one of dense, warmup"),
        (
            ["--world-model", "dense-transformer", "--set", "tau_reference=dense"],
            "tau_reference=dense needs a sparse world model",
        ),
        (["--set", "tau_reference=dense", "--set", "tau=0.01"], "tau=0.01"),
        (["--obs", "pixels", "--set", "tau_reference=dense"], "obs='pixels'"),
    ],
)
def test_fit_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    try:
        code = main(["fit", "--preset", "debug", "--out", str(tmp_path / "r"), *args])
    except SystemExit as e:  # argparse's own errors exit from inside the parser
        code = e.code
    assert code == 2
    assert needle in capsys.readouterr().err


def test_set_reads_exponent_floats() -> None:
    """YAML 1.1 parses ``1e-4`` as a string; float fields still accept it."""
    from mbrl_causal.config import from_mapping, parse_overrides
    from mbrl_causal.world_models import WorldModelConfig

    cfg = from_mapping(WorldModelConfig, parse_overrides(["lambda_init=1e-4"]))
    assert cfg.lambda_init == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="lambda_init must be float"):
        from_mapping(WorldModelConfig, parse_overrides(["lambda_init=abc"]))


@pytest.mark.parametrize(
    "args", [["--env", "Bogus-v0"], ["--regimes", "nosuchregime"]], ids=["env", "regimes"]
)
def test_fit_bad_input_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    out = tmp_path / "run"
    assert main(["fit", "--preset", "debug", "--out", str(out), *args]) == 2
    assert not out.exists()
    assert args[1] in capsys.readouterr().err


def _debug_run(tmp_path: Path) -> Any:
    from mbrl_causal.world_models.config import FitConfig, WorldModelConfig, preset
    from mbrl_causal.world_models.fit import FitRun

    model_over, fit_over = preset("debug")
    return FitRun(WorldModelConfig(**model_over), FitConfig(**fit_over), 0, tmp_path, False)


def test_few_shot_windows_double_the_budget_until_k_rows_have_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mbrl_causal.world_models import fit as fit_mod

    budgets: list[int] = []
    real_collect, real_windows = fit_mod.collect, fit_mod._one_window_per_row

    def counting_collect(*args: Any) -> Any:
        budgets.append(args[2])
        return real_collect(*args)

    def short_first(data: Any, length: int) -> Any:  # as if episodes ended early once
        starts = real_windows(data, length)
        return starts[:1] if len(budgets) == 1 else starts

    monkeypatch.setattr(fit_mod, "collect", counting_collect)
    monkeypatch.setattr(fit_mod, "_one_window_per_row", short_first)
    run = _debug_run(tmp_path)
    _, starts = fit_mod._adaptation_windows(run, "InterventionalPong-v0", 7, 3, 16)
    assert budgets == [3 * (16 + 40), 3 * 2 * (16 + 40)]  # doubled once, then enough
    assert len(starts) == 3 and len(set(starts[:, 0].tolist())) == 3  # one per sub-env


def test_fit_failing_after_training_says_what_it_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No episode is 1,200 steps long: few-shot fails after the model is trained and
    saved. The error says so; no fit.json pretends the run finished."""
    out = tmp_path / "run"
    args = ["--out", str(out), "--no-progress", "--set", "threads=1"]
    assert main(["fit", "--preset", "debug", *args, "--set", "few_shot_traj_len=1200"]) == 2
    err = capsys.readouterr().err
    assert "adaptation trajectories of 1200 steps" in err
    assert "model.pt" in err and "fit.json was not written" in err
    assert (out / "model.pt").is_file() and not (out / "fit.json").exists()
    WorldModel.load(out / "model.pt")  # complete, loadable


def test_few_shot_windows_longer_than_any_episode_fail_clearly(tmp_path: Path) -> None:
    from mbrl_causal.world_models.fit import _adaptation_windows

    with pytest.raises(ValueError, match="only 0 of 1 adaptation trajectories of 1200 steps"):
        _adaptation_windows(_debug_run(tmp_path), "InterventionalPong-v0", 7, 1, 1200, tries=2)


def test_fit_with_a_dense_reference_logs_it_and_sets_tau_from_it(tmp_path: Path) -> None:
    """``--set tau_reference=dense``: the dense twin trains beside the model; its MSE is
    logged and the Lagrangian's tau is tau_factor x its average (not the model's own)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    args = ["--world-model", "spartan", "--out", str(out), "--no-progress"]
    sets = ["threads=1", "tau_reference=dense", "robustness=false", "few_shot_reference=false"]
    assert main(["fit", "--preset", "debug", *args, *[a for s in sets for a in ("--set", s)]]) == 0
    record = json.loads((out / "fit.json").read_text())
    assert record["config"]["fit"]["tau_reference"] == "dense"
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    ref = [e.value for e in events.Scalars("reference/mse")]
    own = [e.value for e in events.Scalars("world_model/mse")]
    tau = [e.value for e in events.Scalars("causal/tau")]
    assert len(ref) == len(own) == len(tau) >= 3 and all(v > 0 for v in ref)
    assert ref != own  # a second network, not the model's own figure
    # the debug preset's warm-up ends at step 10: the warm-up rule would then freeze tau;
    # with the reference it moves with the twin's average at every step
    assert tau[-1] > 0 and tau[-2] > 0 and tau[-1] != tau[-2]


def test_fit_with_the_score_function_gate_estimator(tmp_path: Path) -> None:
    """``--set gate_estimator=score`` trains end to end and is recorded in the JSON."""
    out = tmp_path / "run"
    args = ["--world-model", "spartan", "--out", str(out), "--no-progress"]
    sets = ["threads=1", "gate_estimator=score", "robustness=false", "few_shot_reference=false"]
    assert main(["fit", "--preset", "debug", *args, *[a for s in sets for a in ("--set", s)]]) == 0
    record = json.loads((out / "fit.json").read_text())
    assert record["config"]["model"]["gate_estimator"] == "score"
    _check_figures(record["overall"])
