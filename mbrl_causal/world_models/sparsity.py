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
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["SparsityLagrangian"]


class SparsityLagrangian:
    """State and update rule of lambda (plain Python floats, saved in checkpoints).

    Args:
        tau: Constraint level, or None for automatic (see the module doc).
        tau_factor: Slack over the warm-up MSE when tau is automatic.
        warmup: Updates with lambda = 0 before the Lagrangian starts.
        lambda_init, lambda_min, lambda_max: Start and bounds of lambda.
        lr: Largest step of log(lambda) per update.
        ema: Decay of the MSE moving average.
        collapse_factor: Halve lambda while mse_avg > collapse_factor * tau.

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
    ) -> None:
        if not 0 < lambda_min <= lambda_init <= lambda_max:
            raise ValueError(
                "need 0 < lambda_min <= lambda_init <= lambda_max, got "
                f"{lambda_min}, {lambda_init}, {lambda_max}"
            )
        self.tau = tau
        self.tau_factor, self.warmup, self.lr, self.ema = tau_factor, warmup, lr, ema
        self.lambda_min, self.lambda_max = lambda_min, lambda_max
        self.lambda_init = lambda_init
        self.collapse_factor = collapse_factor
        self.log_lambda = math.log(lambda_init)
        self.mse_avg: float | None = None
        self.updates = 0

    @property
    def active(self) -> bool:
        """False during the warm-up."""
        return self.updates >= self.warmup

    @property
    def value(self) -> float:
        """Current lambda (0 during the warm-up)."""
        return math.exp(self.log_lambda) if self.active else 0.0

    def update(self, mse: float) -> float:
        """Feed this step's prediction MSE; returns the lambda for the next step."""
        if not math.isfinite(mse):
            raise ValueError(f"the prediction MSE fed to the Lagrangian is {mse}")
        self.mse_avg = (
            mse if self.mse_avg is None else self.ema * self.mse_avg + (1 - self.ema) * mse
        )
        self.updates += 1
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
        self.log_lambda = min(
            max(self.log_lambda, math.log(self.lambda_min)), math.log(self.lambda_max)
        )
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("tau", "log_lambda", "mse_avg", "updates")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("tau", "log_lambda", "mse_avg", "updates"):
            setattr(self, k, state[k])
