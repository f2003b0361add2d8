"""Typed configuration shared by the CLI, the YAML presets and Python callers.

Every component has one dataclass; a preset file under ``envs/`` (or ``agents/``) is
``{field: value}`` for it, and the CLI's ``--set key=value`` overrides a field. Unknown
keys and wrongly typed values are rejected with a message that lists what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

__all__ = ["EnvConfig", "check_field", "from_mapping", "load_yaml", "parse_overrides"]

C = TypeVar("C")


@dataclass
class EnvConfig:
    """How to build an environment (``mbrl-causal envs`` lists the ids).

    ``None`` keeps the registered id's own value.
    """

    id: str = "InterventionalPong-v0"
    """A registered id (``InterventionalPong-v0``, ``InterventionalPong-Gravity-v0``, ...)."""
    obs_mode: str = "objects"
    """``objects`` (float32 (n_objects, 4)), ``pixels`` (uint8 (S, S, 3)) or ``dict``."""
    action_type: str = "discrete"
    """``discrete`` (0 stay, 1 up, 2 down) or ``continuous`` (Box(-1, 1, (1,)))."""
    render_size: int = 32
    """Frame size S in pixels: 32, 64 or 84."""
    ball_trail: bool = True
    """Draw the ball's previous position faintly, so one frame carries its velocity."""
    points_to_win: int = 5
    """Points that end an episode."""
    noise_scale: float = 1.0
    """Multiplies the paddle and ball-direction noise (0 makes the game deterministic)."""
    observe_regime: bool = False
    """Add the regime id to a Dict observation."""
    regime_schedule: Any = None
    """Regime id/name, ``cycle``, ``random`` or ``[[episode, regime], ...]``; None: the id's."""
    switch_every: int | None = None
    """Episodes between scheduled switches; None: the id's (20)."""
    switch_every_steps: int | None = None
    """Steps between switches inside episodes (cycle/random schedules only)."""
    max_episode_steps: int | None = None
    """TimeLimit; None: the id's (1000)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments of the id's entry point (e.g. ``n_distractors``)."""

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``gymnasium.make`` / ``make_vec`` (without the id)."""
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("id", "extra") and getattr(self, f.name) is not None
        }
        out.update(self.extra)
        return out

    def make(self, **overrides: Any) -> Any:
        """``gymnasium.make`` of this config (``overrides`` win, e.g. ``render_mode``)."""
        import gymnasium as gym

        import mbrl_causal.envs  # noqa: F401  (registers the ids)

        return gym.make(self.id, **{**self.kwargs(), **overrides})

    def make_vec(self, num_envs: int, **overrides: Any) -> Any:
        """The native vector env of this config."""
        import gymnasium as gym

        import mbrl_causal.envs  # noqa: F401

        return gym.make_vec(
            self.id, num_envs=num_envs, vectorization_mode="vector_entry_point",
            **{**self.kwargs(), **overrides},
        )  # fmt: skip


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    hint = annotation
    origin = typing.get_origin(hint)
    options = typing.get_args(hint) if origin in (Union, types.UnionType) else (hint,)
    if Any in options:
        return value
    for opt in options:
        if opt is type(None) and value is None:
            return value
        base = typing.get_origin(opt) or opt
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if base is bool and isinstance(value, bool):
            return value
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base in (str, dict, list) and isinstance(value, base):
            return value
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ValueError(f"{name} must be {names}, got {value!r}")


def check_field(cls: type, name: str, value: Any, where: str = "config") -> Any:
    """``value`` as dataclass ``cls``'s field ``name`` takes it (YAML's "1e-4" text becomes
    a float); ValueError for an unknown field or a value of the wrong type."""
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise ValueError(f"unknown {where} key {name!r}")
    return _check_type(f"{where}.{name}", value, hints[name])


def from_mapping(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and bad types."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping of field: value, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown {where} key(s) {unknown}; allowed: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {k: _check_type(f"{where}.{k}", v, hints[k]) for k, v in data.items()}
    return cls(**values)


def load_yaml(cls: type[C], path: str | Path) -> C:
    """Load a preset file into dataclass ``cls``."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"preset file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"preset {str(p)!r} is not valid YAML: {e}") from None
    return from_mapping(cls, data, where=p.name)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` to a dict; values are parsed as YAML (``3``, ``true``, ``[1]``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out
