"""The sparsity Lagrangian: minimise the number of paths subject to E[MSE] <= tau.

SPARTAN (Sec. 3.3) trains ``MSE + lambda * |Abar|`` where lambda is the Lagrange
multiplier of the constraint ``E[MSE] <= tau``. Our update, made once per train step::

    mse_avg  <- ema * mse_avg + (1 - ema) * mse
    log lam  <- log lam + lr * clip((tau - mse_avg) / tau, -1, 1)
    lam      in [lambda_min, lambda_max]

So lambda (the price of a path) grows while the model predicts better than tau and
shrinks as soon as it predicts worse. It is multiplicative because the useful lambda
spans orders of magnitude, and clipped so that it moves at most ``lr`` in log space per
step (a lambda that moves too fast is the known cause of a collapsed, empty graph).

Guard against collapse: lambda can only grow while the constraint holds, so a tau below
what the model can reach drives lambda *down* to ``lambda_min`` (the graph stays as the
prediction loss wants it) instead of emptying the graph; in addition, when the average
MSE exceeds ``collapse_factor * tau`` lambda is halved at once. ``tau=None`` sets
``tau = tau_factor * mse_avg`` at the end of the warm-up (lambda = 0 during the warm-up,
so that figure is the loss the model reaches with a free graph: the dense reference).

**A live dense reference** (``mbrl-causal fit --set tau_reference=dense``): the warm-up
figure goes stale. The model is still learning at step 300, so ``tau`` is loose, the
constraint holds for the rest of training whatever the graph, lambda sits at
``lambda_max``, and the sparse model's error stays far above what a dense model reaches
(measured: 7.1e-3 against 5.2e-3 after 3,000 steps; docs/results/world-models.md). With
a reference, :meth:`SparsityLagrangian.update` is also given the MSE that a dense twin
trained beside the model (same batches, same steps) reaches on the same batch;
``tau = tau_factor * ema(reference)`` is then set again at every update, so the
constraint follows the dense model's learning curve: "predict within ``tau_factor`` of
what a dense model predicts at this point of training". Measured at fit's default budget
it does what it is for on the error (6.6e-3 instead of 7.1e-3) but keeps many more false
edges (SHD 6.7 and 7.2 on seeds 0 and 1 against 0.9 and 1.6), so it is an option, not
the default.

**One constraint per child object** (:class:`ObjectLagrangians`, the default through
``WorldModelConfig.sparsity_constraint = "per_object"``): object i gets its own
``lambda_i``, the price of the paths *into* i, and its own constraint
``E[MSE_i] <= tau_i`` on its own next-step error. With a single constraint on the MSE
averaged over objects, an edge that matters for one object only in rare events (a paddle
hit or a point changes the ball on ~3 % of the steps) changes the average by less than
the slack ``tau_factor`` and is pruned; measured on the ball's own error it is not. That
is the design reason; in the README's measurements per-object constraints lower the MSE
by 8-9 % but still miss the event edges.

**A price schedule** (``schedule``, ``WorldModelConfig.lambda_schedule``): an entry
``(N, lambda_min, lambda_max)`` replaces the bounds after N updates (counted like the
warm-up: the lambda returned by the N-th update, used from train step N + 1 on, is
clamped into the new bounds, so a raised floor acts at once; an entry within the warm-up
sets the bounds the Lagrangian starts with). The use it was made for: a price low enough that an
edge worth something only at rare events (a paddle hit) is kept while its worth is still
being learned, then a higher one that closes the edges worth nothing; measured in the
SB3 agent (docs/results/sb3.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["ObjectLagrangians", "SparsityLagrangian", "check_lambda_schedule"]


def _number(value: Any) -> float | None:
    """A schedule value as a float (YAML 1.1 reads ``5e-3`` as text), None if it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def check_lambda_schedule(schedule: Any) -> list[tuple[int, float, float]]:
    """Validate a price schedule (:class:`SparsityLagrangian`): a list of ``[update,
    lambda_min, lambda_max]`` entries with whole, positive, strictly increasing updates
    and ``0 < lambda_min <= lambda_max`` (numbers, or text that reads as one, such as
    YAML's ``5e-3``); returns them as tuples."""
    form = "a list of [update, lambda_min, lambda_max] entries, e.g. [[21000, 0.005, 0.01]]"
    if isinstance(schedule, str | bytes) or not isinstance(schedule, Sequence):
        raise ValueError(f"lambda_schedule must be {form}; got {schedule!r}")
    out: list[tuple[int, float, float]] = []
    for entry in schedule:
        ok = isinstance(entry, Sequence) and not isinstance(entry, str | bytes)
        parsed = [_number(v) for v in entry] if ok else []
        values = [v for v in parsed if v is not None]
        if len(values) != 3 or len(parsed) != 3:
            raise ValueError(f"lambda_schedule must be {form}; got the entry {entry!r}")
        at, low, high = values
        if not math.isfinite(at) or at != int(at) or at < 1 or (out and at <= out[-1][0]):
            raise ValueError(
                f"lambda_schedule updates must be whole numbers >= 1, increasing; got {entry!r}"
            )
        if not (math.isfinite(high) and 0 < low <= high):
            raise ValueError(f"lambda_schedule needs 0 < lambda_min <= lambda_max, got {entry!r}")
        out.append((int(at), low, high))
    return out


class SparsityLagrangian:
    """State and update rule of lambda (plain Python floats, saved in checkpoints).

    Args:
        tau: Constraint level, or None for automatic (see the module doc).
        tau_factor: Slack over the warm-up MSE (or the reference, see :meth:`update`) when
            tau is automatic.
        warmup: Updates with lambda = 0 before the Lagrangian starts.
        lambda_init, lambda_min, lambda_max: Start and bounds of lambda.
        lr: Largest step of log(lambda) per update.
        ema: Decay of the MSE moving average.
        collapse_factor: Halve lambda while mse_avg > collapse_factor * tau.
        schedule: ``(N, lambda_min, lambda_max)`` entries, N increasing: the bounds
            after N updates (module doc). Empty: the bounds above throughout.

    >>> lag = SparsityLagrangian(tau=1.0, warmup=0, lambda_init=0.1, lr=0.1)
    >>> lag.update(0.5) > 0.1   # predicting better than tau: paths get dearer
    True
    """

    def __init__(
        self,
        tau: float | None = None,
        tau_factor: float = 1.1,
        warmup: int = 500,
        lambda_init: float = 1e-4,
        lambda_min: float = 1e-7,
        lambda_max: float = 1.0,
        lr: float = 0.02,
        ema: float = 0.98,
        collapse_factor: float = 2.0,
        schedule: Sequence[Sequence[float]] = (),
    ) -> None:
        if not 0 < lambda_min <= lambda_init <= lambda_max:
            raise ValueError(
                "need 0 < lambda_min <= lambda_init <= lambda_max, got "
                f"{lambda_min}, {lambda_init}, {lambda_max}"
            )
        self.schedule = check_lambda_schedule(schedule)
        self.tau = tau
        self.fixed_tau = tau
        self.tau_factor, self.warmup, self.lr, self.ema = tau_factor, warmup, lr, ema
        self.lambda_min, self.lambda_max = lambda_min, lambda_max
        self.lambda_init = lambda_init
        self.collapse_factor = collapse_factor
        self.log_lambda = math.log(lambda_init)
        self.mse_avg: float | None = None
        self.reference_avg: float | None = None
        self.updates = 0

    @property
    def active(self) -> bool:
        """False during the warm-up."""
        return self.updates >= self.warmup

    @property
    def value(self) -> float:
        """Current lambda (0 during the warm-up)."""
        return math.exp(self.log_lambda) if self.active else 0.0

    def update(self, mse: float, reference: float | None = None) -> float:
        """Feed this step's prediction MSE; returns the lambda for the next step.

        ``reference``: the dense twin's MSE on the same batch (module doc). When given, an
        automatic tau (``tau=None`` at construction) follows ``tau_factor`` x its moving
        average from the end of the warm-up on; a fixed tau is kept.
        """
        if not math.isfinite(mse):
            raise ValueError(f"the prediction MSE fed to the Lagrangian is {mse}")
        if reference is not None and not math.isfinite(reference):
            raise ValueError(f"the reference MSE fed to the Lagrangian is {reference}")
        self.mse_avg = (
            mse if self.mse_avg is None else self.ema * self.mse_avg + (1 - self.ema) * mse
        )
        if reference is not None:
            self.reference_avg = (
                reference
                if self.reference_avg is None
                else self.ema * self.reference_avg + (1 - self.ema) * reference
            )
        self.updates += 1
        if reference is not None and self.fixed_tau is None and self.updates >= self.warmup:
            self.tau = self.tau_factor * self.reference_avg  # type: ignore[operator]
        if self.updates == self.warmup and self.tau is None:
            self.tau = self.tau_factor * self.mse_avg
        if not self.active:
            return 0.0
        if self.tau is None:  # warmup == 0 and automatic tau: take the first average
            self.tau = self.tau_factor * self.mse_avg
        tau = max(self.tau, 1e-12)
        if self.mse_avg > self.collapse_factor * tau:
            self.log_lambda -= math.log(2.0)
        else:
            step = max(-1.0, min(1.0, (tau - self.mse_avg) / tau))
            self.log_lambda += self.lr * step
        low, high = self.bounds
        self.log_lambda = min(max(self.log_lambda, math.log(low)), math.log(high))
        return self.value

    @property
    def bounds(self) -> tuple[float, float]:
        """(lambda_min, lambda_max) at the current update count (``schedule``)."""
        low, high = self.lambda_min, self.lambda_max
        for at, lo, hi in self.schedule:
            if self.updates >= at:
                low, high = lo, hi
        return low, high

    def summary(self) -> dict[str, float]:
        """Logged figures: lambda and tau (0 while unset)."""
        return {"causal/lambda": self.value, "causal/tau": float(self.tau or 0.0)}

    def state_dict(self) -> dict[str, Any]:
        keys = ("tau", "log_lambda", "mse_avg", "reference_avg", "updates")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "objects" in state:
            raise ValueError(
                "this checkpoint holds per-object Lagrangians; load it with "
                "sparsity_constraint='per_object'"
            )
        for k in ("tau", "log_lambda", "mse_avg", "updates"):
            setattr(self, k, state[k])
        self.reference_avg = state.get("reference_avg")  # absent before the reference
        if self.active:  # bounds changed on resume act at once (else a no-op: see update)
            low, high = self.bounds
            self.log_lambda = min(max(self.log_lambda, math.log(low)), math.log(high))


class ObjectLagrangians:
    """One :class:`SparsityLagrangian` per child object (module doc).

    The number of objects is taken from the first :meth:`update` (the model serves any N).
    ``value`` is then the list of lambdas, one per object, the weights of the paths into
    each object; before that it is the common starting lambda (0 during the warm-up).

    >>> lag = ObjectLagrangians(tau=[1.0, 1.0], warmup=0, lambda_init=0.1, lr=0.1)
    >>> up, down = lag.update([0.5, 2.0])   # object 0 within tau, object 1 not
    >>> up > 0.1 > down
    True
    """

    def __init__(self, tau: Sequence[float] | float | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.fixed_tau = tau
        self._template = SparsityLagrangian(**kwargs)  # validates the arguments
        self.parts: list[SparsityLagrangian] = []

    def _size(self, n: int) -> None:
        if self.parts:
            if len(self.parts) != n:
                raise ValueError(f"the Lagrangian has {len(self.parts)} objects, got {n} MSEs")
            return
        taus = self.fixed_tau
        if taus is None or isinstance(taus, int | float):
            taus = [taus] * n  # type: ignore[list-item]
        if len(taus) != n:
            raise ValueError(f"tau has {len(taus)} entries for {n} objects")
        self.parts = [SparsityLagrangian(tau=t, **self.kwargs) for t in taus]

    @property
    def active(self) -> bool:
        """False during the warm-up."""
        return (self.parts[0] if self.parts else self._template).active

    @property
    def value(self) -> float | list[float]:
        """Lambda per object (a single float before the first update)."""
        return [p.value for p in self.parts] if self.parts else self._template.value

    @property
    def tau(self) -> list[float | None] | None:
        """Constraint level per object (None before the first update)."""
        return [p.tau for p in self.parts] if self.parts else None

    def summary(self) -> dict[str, float]:
        """Logged figures: lambda and tau, arithmetic means over the objects (so the mean
        lambda mostly shows the largest one); 0 while unset."""
        if not self.parts:
            return {"causal/lambda": self._template.value, "causal/tau": 0.0}
        n = len(self.parts)
        return {
            "causal/lambda": sum(p.value for p in self.parts) / n,
            "causal/tau": sum(float(p.tau or 0.0) for p in self.parts) / n,
        }

    def update(self, mse: Sequence[float], reference: Sequence[float] | None = None) -> list[float]:
        """Feed this step's per-object MSEs (and the dense twin's, see
        :meth:`SparsityLagrangian.update`); returns the lambdas for the next step."""
        values = [float(m) for m in mse]
        refs = None if reference is None else [float(r) for r in reference]
        if not all(math.isfinite(v) for v in values + (refs or [])):  # refuse before any moves
            raise ValueError(
                f"the per-object MSEs fed to the Lagrangian are {values} (reference {refs})"
            )
        if refs is not None and len(refs) != len(values):
            raise ValueError(f"{len(values)} MSEs but {len(refs)} reference MSEs")
        self._size(len(values))
        if refs is None:
            return [p.update(m) for p, m in zip(self.parts, values, strict=True)]
        return [p.update(m, r) for p, m, r in zip(self.parts, values, refs, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        return {"objects": [p.state_dict() for p in self.parts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "objects" not in state:
            raise ValueError(
                "this checkpoint holds a single (total-MSE) Lagrangian; load it with "
                "sparsity_constraint='total'"
            )
        self.parts = []
        if state["objects"]:
            self._size(len(state["objects"]))
            for p, sd in zip(self.parts, state["objects"], strict=True):
                p.load_state_dict(sd)
