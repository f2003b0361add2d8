"""Learned vector-state world models against the Jacobian truth (tiny budgets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl_causal.analysis.jacobian import collect_mujoco
from mbrl_causal.analysis.learned import (
    VectorModelConfig,
    VectorTokens,
    compare,
    load_vector_model,
    model_jacobians,
    pattern_scores,
    train_vector_model,
)
from mbrl_causal.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pattern_scores_by_hand() -> None:
    true = np.array([[[1.0, 0.0, 0.0], [2.0, 3.0, 0.0]]])  # 3 non-zero of 6
    pred = np.array([[[0.5, 0.2, 0.0], [0.0, 1e-9, 0.0]]])  # non-zero at T=1e-6: 2
    s = pattern_scores(pred, true, threshold=1e-6)
    assert s["precision"] == 0.5  # (0,0) right, (0,1) wrong
    assert s["recall"] == pytest.approx(1 / 3)  # only (0,0) of (0,0), (1,0), (1,1)
    # truth zero at (0,1), (0,2), (1,2): |pred| there 0.2, 0, 0
    assert s["sparsity_aware_error"] == pytest.approx(0.2 / 3)
    assert s["sparsity_true"] == 0.5 and s["sparsity_model"] == pytest.approx(4 / 6)
    assert s["sparsity_gap"] == pytest.approx(0.5 - 4 / 6)
    assert pattern_scores(np.zeros((1, 2)), np.zeros((1, 2)), 1e-6)["precision"] is None


def test_tokens_round_trip_and_groups() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 5))
    tok = VectorTokens([[0, 3], [1, 4], [2]], x.mean(0), x.std(0))
    t = tok.encode(torch.as_tensor(x))
    assert t.shape == (5, 3, 2) and float(t[:, 2, 1].abs().max()) == 0.0  # padding
    np.testing.assert_allclose(tok.decode(t).numpy(), x, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="groups must cover"):
        VectorTokens([[0, 1]], np.zeros(3), np.ones(3))


@pytest.mark.parametrize("name", ["spartan", "s2ssm"])
def test_train_and_compare_on_a_tiny_budget(name: str, tmp_path: Path) -> None:
    cfg = VectorModelConfig(env="InvertedPendulum-v5", world_model=name, data_steps=200,
                            train_steps=3, batch_size=4, seq_len=4, d_model=16)  # fmt: skip
    train_vector_model(cfg, tmp_path / "run")
    cfg2, model, tok = load_vector_model(tmp_path / "run")
    assert cfg2.world_model == name and tok.groups == [[0, 2], [1, 3]]
    samples = collect_mujoco("InvertedPendulum-v5", steps=12)
    j_s, j_a, graphs = model_jacobians(model, tok, samples.states, samples.actions)
    assert j_s.shape == (12, 4, 4) and j_a.shape == (12, 4, 1) and graphs.shape == (12, 4, 2)
    # autograd against a central difference of the model itself, one sample
    x = torch.as_tensor(samples.states[:1], dtype=torch.float32)
    u = torch.as_tensor(samples.actions[:1], dtype=torch.float32)

    def f(xx: torch.Tensor) -> np.ndarray:
        out = model(tok.encode(xx)[:, None], u[:, None], torch.zeros(1, dtype=torch.long))
        return tok.decode(out.next_latent[:, 0]).detach().numpy()[0]

    h = 1e-2
    col = (f(x + h * torch.eye(4)[1]) - f(x - h * torch.eye(4)[1])) / (2 * h)
    np.testing.assert_allclose(j_s[0][:, 1], col, rtol=2e-2, atol=2e-3)
    r = compare(model, tok, samples, threshold=1e-6)
    assert set(r["J_s"]) >= {"precision", "recall", "sparsity_aware_error", "sparsity_gap"}
    assert r["J_s"]["recall"] is not None and 0.0 <= r["J_s"]["recall"] <= 1.0


def test_command_trains_and_compares(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    code = main(["sparsity", "--env", "InvertedPendulum-v5", "--steps", "10", "--model",
                 str(tmp_path / "run"), "--train-model", "spartan", "--train-steps", "2",
                 "--json", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    model = json.loads(out.read_text())["model"]
    assert model["world_model"] == "spartan" and "graph" in model
    assert main(["sparsity", "--env", "Ant-v5", "--steps", "2", "--model",
                 str(tmp_path / "nothing"), "--no-progress"]) == 2  # fmt: skip
