"""Sparsity metrics on small hand-built Jacobians with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from mbrl_causal.analysis.metrics import (
    check_threshold,
    run_lengths,
    sparsity_metrics,
    threshold_sweep,
)

# 5 samples of a 2 x 2 Jacobian in two episodes (ids 0, 0, 0, 1, 1). Entry (0, 0) is
# always tiny (zero at T = 1e-6), (0, 1) is zero at t = 1, 2 of episode 0, (1, 0) is never
# zero, (1, 1) is zero at t = 0 of episode 0 and throughout episode 1.
J = np.array(
    [
        [[1e-9, 3.0], [1.0, 0.0]],
        [[-1e-8, 0.0], [2.0, 5.0]],
        [[0.0, 1e-7], [3.0, 5.0]],
        [[1e-9, 1.0], [4.0, 0.0]],
        [[0.0, 1.0], [5.0, 0.0]],
    ]
)
EPISODES = np.array([0, 0, 0, 1, 1])


def test_global_and_local_sparsity() -> None:
    s = sparsity_metrics(J, EPISODES, threshold=1e-6)
    assert s.shape == (2, 2) and s.samples == 5
    assert s.global_zero_count == 1 and s.global_zero_fraction == 0.25
    # zeros per sample: 2, 2, 2, 2, 2 of 4 -> 0.5 each
    np.testing.assert_allclose(s.sparsity, [0.5, 0.5, 0.5, 0.5, 0.5])
    assert s.mean_sparsity == 0.5
    np.testing.assert_allclose(s.zero_frequency, [[1.0, 0.4], [0.0, 0.6]])


def test_run_lengths_stop_at_episode_ends() -> None:
    s = sparsity_metrics(J, EPISODES, threshold=1e-6)
    # zero runs: (0,0): 3 | 2; (0,1): 2; (1,1): 1 | 2  -> [3, 2, 2, 1, 2] (any order)
    assert sorted(s.zero_runs.tolist()) == [1, 2, 2, 2, 3]
    # non-zero runs: (0,1): 1 | 2; (1,0): 3 | 2; (1,1): 2  -> [1, 2, 3, 2, 2]
    assert sorted(s.nonzero_runs.tolist()) == [1, 2, 2, 2, 3]
    assert s.run_length_mean == {"zero": 2.0, "nonzero": 2.0}
    out = s.to_json(episode_sparsity=s.sparsity[:3])
    assert out["run_length_histogram"]["zero"] == [1, 3, 1]  # lengths 1, 2, 3
    assert out["global_zero_entries"] == [[0, 0]]
    assert out["sparsity_over_time"] == [0.5, 0.5, 0.5]
    assert sum(out["sparsity_histogram"]["counts"]) == 5


def test_threshold_changes_what_counts_as_zero() -> None:
    s = sparsity_metrics(J, EPISODES, threshold=1e-8)  # 1e-8 itself is not below 1e-8
    np.testing.assert_allclose(s.zero_frequency, [[0.8, 0.2], [0.0, 0.6]])
    assert s.global_zero_count == 0 and s.mean_sparsity == pytest.approx(0.4)
    sweep = threshold_sweep(J, EPISODES, (1e-6, 0.0, 10.0))
    assert [r["threshold"] for r in sweep] == [0.0, 1e-6, 10.0]
    assert [r["global_zero_count"] for r in sweep] == [0, 1, 4]
    assert [r["mean_sparsity"] for r in sweep] == [0.0, 0.5, 1.0]


def test_run_lengths_by_hand() -> None:
    mask = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 0]], bool)
    true_runs, false_runs = run_lengths(mask)
    assert sorted(true_runs.tolist()) == [1, 1, 2, 3]
    assert sorted(false_runs.tolist()) == [1, 1, 3]
    assert run_lengths(np.zeros((0, 2), bool))[0].size == 0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "x", True])
def test_bad_threshold(bad: object) -> None:
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
        check_threshold(bad)  # type: ignore[arg-type]


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="jacobians must have shape"):
        sparsity_metrics(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="one id per sample"):
        sparsity_metrics(np.zeros((3, 2, 2)), np.zeros(2))
