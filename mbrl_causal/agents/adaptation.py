"""Regime switches: the surprise detector, detection bookkeeping, recall-or-fit adaptation.

- :class:`SurpriseDetector`: one-sided CUSUM (Page 1954) per sub-env on the log of the
  world model's one-step prediction error. With running mean m and standard deviation s
  of x = log(error) (over about the last ``warmup`` steps)::

      g <- max(0, g + (x - m) / s - k);   alarm when g > h

  After an alarm the statistics are learned anew (the adapted model has another error
  level). It never reads the regime.
- :class:`DetectionStats`: detection delay (steps from the oracle's switch to the alarm)
  and false alarms (alarms with no undetected switch in the last ``window`` steps),
  measured against ``info["regime_switched"]``.
- :class:`Adapter`: after a trigger, gathers K transitions of the sub-env and then either
  recalls the codebook slot that explains them within tolerance or fits a new token in a
  free slot (world model frozen: :func:`~mbrl_causal.world_models.adaptation.fit_regime_token`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mbrl_causal.world_models.adaptation import fit_regime_token, regime_errors
from mbrl_causal.world_models.model import SequenceBatch, WorldModel

__all__ = ["AdaptationEvent", "Adapter", "DetectionStats", "SurpriseDetector"]


class SurpriseDetector:
    """CUSUM change detector on per-step prediction errors of ``num_envs`` streams.

    Args:
        num_envs: Streams.
        threshold: Alarm level h (standard deviations accumulated).
        drift: Allowance k per step (standard deviations).
        warmup: Steps of statistics before the first alarm (and after each alarm).

    >>> d = SurpriseDetector(1, threshold=8.0, drift=1.0, warmup=50)
    >>> rng = np.random.default_rng(0)
    >>> any(d.update(rng.lognormal(-5, 0.5, 1))[0] for _ in range(2000))
    False
    >>> any(d.update(rng.lognormal(-3, 0.5, 1))[0] for _ in range(20))
    True
    """

    def __init__(self, num_envs: int, threshold: float = 8.0, drift: float = 1.0,
                 warmup: int = 200) -> None:  # fmt: skip
        self.n, self.h, self.k, self.warmup = num_envs, threshold, drift, max(2, warmup)
        self.reset()

    def reset(self, index: int | None = None) -> None:
        """Forget the statistics of every stream (or of one)."""
        rows = slice(None) if index is None else slice(index, index + 1)
        if index is None:
            self.count = np.zeros(self.n, np.int64)
            self.mean = np.zeros(self.n)
            self.m2 = np.zeros(self.n)
            self.g = np.zeros(self.n)
        else:
            for a in (self.count, self.mean, self.m2, self.g):
                a[rows] = 0

    def update(self, errors: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        """Feed one error per stream (``active`` False skips a stream); returns alarms."""
        x = np.log(np.maximum(np.asarray(errors, np.float64), 1e-12))
        act = np.ones(self.n, bool) if active is None else np.asarray(active, bool)
        ready = act & (self.count >= self.warmup)
        std = np.sqrt(np.maximum(self.m2 / np.maximum(self.count - 1, 1), 1e-6))
        z = (x - self.mean) / std
        self.g = np.where(ready, np.maximum(0.0, self.g + z - self.k), self.g)
        alarm = ready & (self.g > self.h)
        learn = act & ~alarm
        # Welford's running mean and variance; past the warm-up the count stops growing,
        # so the statistics become moving averages over about ``warmup`` steps: slow
        # drifts (a policy that improves) are followed, a switch is faster than them.
        c = np.minimum(self.count + learn, self.warmup)
        delta = x - self.mean
        self.mean = np.where(learn, self.mean + delta / np.maximum(c, 1), self.mean)
        self.m2 = np.where(
            learn, self.m2 * np.where(self.count >= self.warmup, 1 - 1 / self.warmup, 1.0)
            + delta * (x - self.mean), self.m2,
        )  # fmt: skip
        self.count = np.where(learn, np.maximum(c, self.count), self.count)
        for i in np.flatnonzero(alarm):
            self.reset(int(i))
        return alarm

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).copy() for k in ("count", "mean", "m2", "g")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("count", "mean", "m2", "g"):
            setattr(self, k, np.asarray(state[k]).copy())


@dataclass
class DetectionStats:
    """Alarms scored against the oracle's switches (per stream).

    ``delays`` (steps from the oracle switch to the first alarm after it),
    ``false_alarms`` (alarms without an undetected switch in the last ``window`` steps),
    ``missed`` (switches not detected within ``window`` steps).
    """

    num_envs: int
    window: int = 2_000
    delays: list[int] = field(default_factory=list)
    false_alarms: int = 0
    missed: int = 0
    switches: int = 0
    pending: dict[int, int] = field(default_factory=dict)  # stream -> step of its switch

    def switch(self, index: int, step: int) -> None:
        """The oracle says stream ``index`` switched regime at ``step``."""
        if index in self.pending:
            self.missed += 1
        self.pending[index] = step
        self.switches += 1

    def alarm(self, index: int, step: int) -> int | None:
        """Score an alarm; returns the delay (or None for a false alarm)."""
        start = self.pending.get(index)
        if start is not None and step - start <= self.window:
            del self.pending[index]
            self.delays.append(step - start)
            return step - start
        self.false_alarms += 1
        return None

    def expire(self, step: int) -> None:
        """Count switches older than ``window`` steps with no alarm as missed."""
        for i, s in list(self.pending.items()):
            if step - s > self.window:
                del self.pending[i]
                self.missed += 1

    @property
    def delay_mean(self) -> float | None:
        return float(np.mean(self.delays)) if self.delays else None

    def summary(self) -> dict[str, Any]:
        return {
            "delay_mean": self.delay_mean,
            "delays": list(self.delays),
            "false_alarms": self.false_alarms,
            "missed": self.missed,
            "switches": self.switches,
        }

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("delays", "false_alarms", "missed", "switches",
                                               "pending")}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


@dataclass
class AdaptationEvent:
    """One adaptation: what was chosen and on how much data."""

    step: int
    env_index: int
    decision: str  # "recall" or "new"
    slot: int
    transitions: int
    best_error: float  # next-latent MSE of the best known slot on the K transitions
    reference_error: float  # the running training MSE of that slot (the recall yardstick)
    true_regime: int  # the env's regime (for the log only; never used to decide)
    best_slot: int = -1  # the best known slot (the recalled one, or the new token's init)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Adapter:
    """Recall-or-fit adaptation of the regime token of each sub-env.

    Args:
        num_envs: Sub-envs.
        k: Transitions gathered after a trigger before deciding.
        fit_steps: Adam steps of the new token's fit.
        tolerance: Recall when the best slot's error <= tolerance x the reference error.
    """

    def __init__(self, num_envs: int, k: int, fit_steps: int, tolerance: float) -> None:
        self.k, self.fit_steps, self.tolerance = k, fit_steps, tolerance
        self.buffers: list[list[tuple[Any, Any, Any]] | None] = [None] * num_envs
        self.last_best, self.last_reference = -1, math.inf  # of the latest decide()

    def trigger(self, index: int) -> None:
        """Start gathering transitions of sub-env ``index`` (restarts a running one)."""
        self.buffers[index] = []

    def cancel(self, index: int) -> None:
        """Stop gathering for sub-env ``index``."""
        self.buffers[index] = None

    def pending(self, index: int) -> bool:
        return self.buffers[index] is not None

    def add(self, index: int, obs: Any, action: Any, next_obs: Any) -> bool:
        """Add one valid transition of a gathering sub-env; True once K are there."""
        buf = self.buffers[index]
        if buf is None:
            return False
        buf.append((obs, action, next_obs))
        return len(buf) >= self.k

    def batch(self, index: int, device: str = "cpu") -> SequenceBatch:
        """The gathered transitions as K sequences of one step each."""
        buf = self.buffers[index] or []
        self.buffers[index] = None

        def stack(j: int) -> Any:
            first = buf[0][j]
            if isinstance(first, dict):
                return {key: torch.from_numpy(np.stack([b[j][key] for b in buf])) for key in first}
            return torch.from_numpy(np.stack([b[j] for b in buf]))

        o, a, o2 = stack(0), stack(1), stack(2)
        if isinstance(o, dict):
            obs: Any = {key: torch.stack([o[key], o2[key]], 1).to(device) for key in o}
        else:
            obs = torch.stack([o, o2], 1).to(device)
        k = len(buf)
        return SequenceBatch(
            obs, a[:, None].to(device), torch.zeros(k, 1), torch.ones(k, 1),
            torch.zeros(k, dtype=torch.long), torch.zeros(k, 1, 1, 1, dtype=torch.bool),
        )  # fmt: skip

    def decide(
        self,
        model: WorldModel,
        batch: SequenceBatch,
        known: list[int],
        free: int | None,
        reference: float | Mapping[int, float],
        seed: int,
    ) -> tuple[str, int, float]:
        """Recall a known slot or fit a new token into slot ``free``.

        Slots are codebook rows (``known``, ``free`` and the returned slot), whatever the
        model's regime ids are. ``reference``: the error level the best known slot is held
        to (recall when its error <= tolerance x reference), one number or one per known
        slot (the agent passes each slot's own running training MSE).

        Returns ``(kind, slot, best_error)``. With no free slot the best known slot is
        recalled whatever its error. :attr:`last_best` keeps the best known slot and
        :attr:`last_reference` the reference it was held to.
        """
        # regime_errors is keyed by the model's regime ids; slots are codebook rows
        row = {rid: i for i, rid in enumerate(model.regime_ids)}
        errors = {row[r]: e for r, e in regime_errors(model, batch).items() if row[r] in known}
        best = min(errors, key=errors.__getitem__) if errors else 0
        best_err = errors.get(best, math.inf)
        if isinstance(reference, Mapping) and best not in reference:
            raise ValueError(
                f"no reference error for slot {best}; the mapping has slots {sorted(reference)}"
            )
        ref = reference[best] if isinstance(reference, Mapping) else reference
        self.last_best, self.last_reference = best, float(ref)
        if free is None or best_err <= self.tolerance * ref:
            return "recall", best, best_err
        token = fit_regime_token(
            model, batch, steps=self.fit_steps, init=model.codebook.weight[best], seed=seed
        )
        with torch.no_grad():
            model.codebook.weight[free] = token
        return "new", free, best_err
