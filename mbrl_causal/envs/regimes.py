"""Intervention regimes of Interventional Pong and their switching schedules.

A *regime* is a set of mechanism interventions (spec section 4). Regimes 0-6 are the
simple ones used for training; 7-10 compose two simple ones and are held out for few-shot
adaptation. A :class:`RegimeSchedule` decides which regime is active, either per episode
or every ``switch_every_steps`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "COMPOSITE_REGIMES",
    "REGIMES",
    "SIMPLE_REGIMES",
    "Regime",
    "RegimeSchedule",
    "camel_name",
    "regime_id",
]


@dataclass(frozen=True)
class Regime:
    """One intervention regime.

    Attributes:
        id: Integer id, also ``info["regime"]``.
        name: Canonical name, e.g. ``"gravity+opponent-random"``.
        targets: Objects whose mechanism the regime changes (``"ball"``, ``"opponent"``,
            ``"agent"``).
        simple: True for the training regimes 0-6, False for the composite ones.
        gravity: Ball vy += 0.15 per step.
        curve: Ball direction rotates 0.12 rad per step.
        friction: Ball speed x0.92 per step inside the band 10 < x < 22.
        opponent: ``"track"``, ``"inverted"`` or ``"random"``.
        controls_inverted: The action moves the agent paddle the other way.
    """

    id: int
    name: str
    targets: tuple[str, ...]
    simple: bool
    gravity: bool = False
    curve: bool = False
    friction: bool = False
    opponent: str = "track"
    controls_inverted: bool = False

    @property
    def ball_changed(self) -> bool:
        """Whether the regime changes the ball mechanism."""
        return self.gravity or self.curve or self.friction

    def as_dict(self) -> dict[str, object]:
        """Plain description (id, name, targets, simple/composite) for JSON output."""
        return {
            "id": self.id,
            "name": self.name,
            "targets": list(self.targets),
            "kind": "simple" if self.simple else "composite",
        }


REGIMES: tuple[Regime, ...] = (
    Regime(0, "neutral", (), True),
    Regime(1, "gravity", ("ball",), True, gravity=True),
    Regime(2, "curve", ("ball",), True, curve=True),
    Regime(3, "friction", ("ball",), True, friction=True),
    Regime(4, "opponent-inverted", ("opponent",), True, opponent="inverted"),
    Regime(5, "opponent-random", ("opponent",), True, opponent="random"),
    Regime(6, "controls-inverted", ("agent",), True, controls_inverted=True),
    Regime(7, "gravity+opponent-random", ("ball", "opponent"), False, gravity=True,
           opponent="random"),
    Regime(8, "curve+controls-inverted", ("ball", "agent"), False, curve=True,
           controls_inverted=True),
    Regime(9, "friction+opponent-inverted", ("ball", "opponent"), False, friction=True,
           opponent="inverted"),
    Regime(10, "gravity+controls-inverted", ("ball", "agent"), False, gravity=True,
           controls_inverted=True),
)  # fmt: skip
SIMPLE_REGIMES: tuple[int, ...] = tuple(r.id for r in REGIMES if r.simple)
COMPOSITE_REGIMES: tuple[int, ...] = tuple(r.id for r in REGIMES if not r.simple)
_BY_NAME = {r.name: r.id for r in REGIMES}


def camel_name(regime: Regime) -> str:
    """CamelCase name used in registered ids, e.g. ``GravityOpponentRandom``."""
    parts = regime.name.replace("+", "-").split("-")
    return "".join(p.capitalize() for p in parts)


def regime_id(value: int | str) -> int:
    """Resolve a regime given as id, name or CamelCase name.

    >>> regime_id("gravity"), regime_id(5), regime_id("CurveControlsInverted")
    (1, 5, 8)

    Raises:
        ValueError: if the value names no regime (the message lists the allowed ones).
    """
    if isinstance(value, bool):
        raise ValueError(f"regime must be an int or a name, got {value!r}")
    if isinstance(value, int) or (hasattr(value, "__index__") and not isinstance(value, str)):
        idx = int(value)
        if 0 <= idx < len(REGIMES):
            return idx
    elif isinstance(value, str):
        key = value.strip()
        if key.isdigit():
            return regime_id(int(key))
        if key in _BY_NAME:
            return _BY_NAME[key]
        for r in REGIMES:
            if camel_name(r).lower() == key.lower():
                return r.id
    allowed = ", ".join(f"{r.id}={r.name}" for r in REGIMES)
    raise ValueError(f"unknown regime {value!r}; allowed: {allowed}")


class RegimeSchedule:
    """Decides the active regime (spec section 4, "Switching").

    Args:
        schedule: An int or name (fixed regime, restored at every reset), ``"cycle"`` or
            ``"random"`` (over the simple regimes), or a sequence of ``(episode, regime)``
            pairs (the regime of the last pair whose episode is <= the current episode;
            neutral before the first pair).
        switch_every: For ``"cycle"``/``"random"``: switch every this many episodes.
        switch_every_steps: For ``"cycle"``/``"random"``: switch every this many env steps
            instead (inside episodes); overrides ``switch_every``.

    ``"random"`` draws, at each switch point, a simple regime different from the current one
    (so every scheduled switch really changes a mechanism); the first regime is uniform over
    the simple regimes. The uniform number used comes from the env's per-step random draws,
    so the schedule never shifts the env's random stream.
    """

    def __init__(
        self,
        schedule: int | str | Sequence[tuple[int, int | str]] = "random",
        switch_every: int = 20,
        switch_every_steps: int | None = None,
    ) -> None:
        if isinstance(switch_every, bool) or not isinstance(switch_every, int) or switch_every < 1:
            raise ValueError(f"switch_every must be a positive int, got {switch_every!r}")
        if switch_every_steps is not None and (
            isinstance(switch_every_steps, bool)
            or not isinstance(switch_every_steps, int)
            or switch_every_steps < 1
        ):
            raise ValueError(
                f"switch_every_steps must be a positive int or None, got {switch_every_steps!r}"
            )
        self.switch_every = switch_every
        self.switch_every_steps = switch_every_steps
        self.pairs: tuple[tuple[int, int], ...] = ()
        self.fixed: int | None = None
        if isinstance(schedule, str) and schedule in ("cycle", "random"):
            self.kind = schedule
        elif isinstance(schedule, (int, str)) and not isinstance(schedule, bool):
            self.kind = "fixed"
            try:
                self.fixed = regime_id(schedule)
            except ValueError as e:
                raise ValueError(
                    f"{e}; or a schedule: 'cycle', 'random' or a list of (episode, regime) pairs"
                ) from None
        elif isinstance(schedule, Sequence):
            self.kind = "list"
            pairs = []
            for item in schedule:
                if not (isinstance(item, Sequence) and len(item) == 2):
                    raise ValueError(
                        f"regime_schedule list items must be (episode, regime) pairs, got {item!r}"
                    )
                episode, reg = item[0], item[1]
                if isinstance(episode, bool) or not isinstance(episode, int) or episode < 0:
                    raise ValueError(f"episode in regime_schedule must be an int >= 0: {item!r}")
                pairs.append((episode, regime_id(reg)))
            if not pairs:
                raise ValueError("regime_schedule list must not be empty")
            self.pairs = tuple(sorted(pairs))
        else:
            raise ValueError(
                "regime_schedule must be a regime id or name, 'cycle', 'random' or a list of "
                f"(episode, regime) pairs; got {schedule!r}"
            )
        if self.kind in ("fixed", "list") and switch_every_steps is not None:
            raise ValueError(
                "switch_every_steps only applies to the 'cycle' and 'random' schedules"
            )

    @property
    def step_based(self) -> bool:
        """Whether switches happen inside episodes (every ``switch_every_steps`` steps)."""
        return self.kind in ("cycle", "random") and self.switch_every_steps is not None

    def _pick(self, slot: int, current: int | None, u: float) -> int:
        if self.kind == "cycle":
            return SIMPLE_REGIMES[slot % len(SIMPLE_REGIMES)]
        # random: uniform over the simple regimes other than the current one
        choices = (
            [r for r in SIMPLE_REGIMES if r != current]
            if current is not None
            else list(SIMPLE_REGIMES)
        )
        return choices[min(int(u * len(choices)), len(choices) - 1)]

    def at_reset(self, episode: int, current: int | None, u: float) -> int | None:
        """Regime for the episode that starts now, or None to keep the current one.

        Args:
            episode: Index of the starting episode (0 for the first).
            current: The regime in force, None before the first episode.
            u: A uniform number in [0, 1) from the env's draws.
        """
        if self.kind == "fixed":
            return self.fixed  # a do-intervention on a fixed env lasts until the next reset
        if self.kind == "list":
            reg = 0
            for ep, r in self.pairs:
                if ep <= episode:
                    reg = r
            return reg
        if self.step_based:
            return self._pick(0, None, u) if current is None else None
        if current is None or episode % self.switch_every == 0:
            return self._pick(episode // self.switch_every, current, u)
        return None

    def at_step(self, total_steps: int, current: int, u: float) -> int | None:
        """Regime after ``total_steps`` steps in all (called after each step), or None.

        Steps ``[0, K)`` run under the first regime, ``[K, 2K)`` under the second, ...
        """
        if not self.step_based or total_steps == 0:
            return None
        assert self.switch_every_steps is not None
        if total_steps % self.switch_every_steps != 0:
            return None
        return self._pick(total_steps // self.switch_every_steps, current, u)
