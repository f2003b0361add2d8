"""Distractor wrappers (spec section 6): extra objects, background noise, noise dimensions.

The dynamics and drawing live in small batched classes (:class:`DistractorBank`,
:class:`BackgroundBank`) used both by the wrappers (one env) and by the native vector env,
so the two agree exactly. Each wrapper has its own random generator, seeded from the seed
given to ``reset`` (through a :class:`numpy.random.SeedSequence` spawn key), so it never
consumes the wrapped env's random stream.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mbrl_causal.envs import physics as P
from mbrl_causal.envs.pong import InterventionalPongEnv, check_choice
from mbrl_causal.envs.render import draw_discs, grid

__all__ = [
    "BACKGROUND_LEVELS",
    "BackgroundBank",
    "BackgroundNoise",
    "DistractorBank",
    "DistractorObjects",
    "InterventionalPongDistractorsEnv",
    "NoiseDims",
    "make_distractor_pong",
]

DISTRACTOR_RADIUS = 1.0
DISTRACTOR_SPEED = (0.5, 1.5)
_DISTRACTOR_KEY = 0xD157
_BACKGROUND_KEY = 0xB6
_NOISE_DIMS_KEY = 0x7D
# level: (number of blobs, max blob intensity, per-pixel noise amplitude), values in 0..255
BACKGROUND_LEVELS: dict[str, tuple[int, int, int]] = {
    "easy": (2, 80, 0),
    "medium": (4, 140, 30),
    "hard": (8, 220, 80),
}


def wrapper_rng(seed: int | None, key: int) -> np.random.Generator:
    """A generator for a wrapper: derived from ``seed`` (or fresh entropy when None)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


def _reflect(p: np.ndarray, v: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    low, high = p < lo, p > hi
    p = np.where(low, 2.0 * lo - p, np.where(high, 2.0 * hi - p, p))
    v = np.where(low, np.abs(v), np.where(high, -np.abs(v), v))
    return p, v


class DistractorBank:
    """K bouncing distractor objects in each of N envs (x, y, vx, vy in field units).

    They start uniformly in x in [4, 28], y in [6, 26] with a random direction and a speed
    uniform in [0.5, 1.5], move in straight lines and reflect off the walls and the field's
    ends. They touch nothing and nothing touches them.
    """

    def __init__(self, n_envs: int, k: int, first_colour: int = 0) -> None:
        self.k = k
        self.first_colour = first_colour  # index of the first distractor's colour
        self.state = np.zeros((n_envs, k, 4))

    def reset(self, i: int, rng: np.random.Generator) -> None:
        """Draw fresh distractors for env ``i``."""
        k = self.k
        x = rng.uniform(4.0, 28.0, k)
        y = rng.uniform(6.0, 26.0, k)
        speed = rng.uniform(*DISTRACTOR_SPEED, k)
        g = rng.standard_normal((k, 2))
        norm = np.sqrt(g[:, 0] * g[:, 0] + g[:, 1] * g[:, 1])
        self.state[i] = np.stack([x, y, speed * g[:, 0] / norm, speed * g[:, 1] / norm], 1)

    def step(self, envs: np.ndarray | None = None) -> None:
        """Move the distractors of every env (or of those in the bool mask ``envs``)."""
        s = self.state
        r = DISTRACTOR_RADIUS
        x, vx = _reflect(s[..., 0] + s[..., 2], s[..., 2], r, P.FIELD - r)
        y, vy = _reflect(s[..., 1] + s[..., 3], s[..., 3], P.WALL_TOP + r, P.WALL_BOTTOM - r)
        moved = np.stack([x, y, vx, vy], -1)
        if envs is None:
            self.state = moved
        else:
            self.state[envs] = moved[envs]

    def features(self) -> np.ndarray:
        """float32 (N, K, 4) observation rows, scaled like the ball's and clipped."""
        s = self.state
        half = P.FIELD / 2.0
        f = np.stack(
            [(s[..., 0] - half) / half, (s[..., 1] - half) / half,
             s[..., 2] / P.MAX_SPEED, s[..., 3] / P.MAX_SPEED], -1,
        ).astype(np.float32)  # fmt: skip
        return np.clip(f, -1.0, 1.0, out=f)

    def draw(self, img: np.ndarray) -> np.ndarray:
        """Draw onto uint8 (N, S, S, 3) frames in place; return bool (N, K, S, S) masks."""
        s = self.state
        return draw_discs(img, s[..., 0], s[..., 1], DISTRACTOR_RADIUS, self.first_colour)


class BackgroundBank:
    """Background distraction for N envs of frame size S (pixel-only).

    Blobs (discs of radius 2-5 units, random dim colours) drift and bounce across the
    frame; ``medium`` and ``hard`` add per-pixel uniform noise. Dynamic mode moves the blobs
    and redraws the noise every step; static mode draws one background per episode. Only
    background pixels (pure black in the clean frame) are replaced, so object and wall
    pixels stay untouched.
    """

    def __init__(self, n_envs: int, size: int, level: str, dynamic: bool) -> None:
        check_choice("level", level, tuple(BACKGROUND_LEVELS))
        self.size, self.level, self.dynamic = size, level, bool(dynamic)
        self.n_blobs, self.intensity, self.noise = BACKGROUND_LEVELS[level]
        k = self.n_blobs
        self.blobs = np.zeros((n_envs, k, 4))
        self.radii = np.zeros((n_envs, k))
        self.colours = np.zeros((n_envs, k, 3), np.uint8)
        self.image = np.zeros((n_envs, size, size, 3), np.uint8)

    def reset(self, i: int, rng: np.random.Generator) -> None:
        """New blobs for env ``i`` and its first background image."""
        k = self.n_blobs
        pos = rng.uniform(0.0, P.FIELD, (k, 2))
        vel = rng.uniform(-1.0, 1.0, (k, 2)) if self.dynamic else np.zeros((k, 2))
        self.blobs[i] = np.concatenate([pos, vel], 1)
        self.radii[i] = rng.uniform(2.0, 5.0, k)
        self.colours[i] = rng.integers(20, self.intensity + 1, (k, 3), dtype=np.uint8)
        self._paint(i, rng)

    def step(self, i: int, rng: np.random.Generator) -> None:
        """Advance env ``i``'s background one step (nothing in static mode)."""
        if not self.dynamic:
            return
        b = self.blobs[i]
        x, vx = _reflect(b[:, 0] + b[:, 2], b[:, 2], 0.0, P.FIELD)
        y, vy = _reflect(b[:, 1] + b[:, 3], b[:, 3], 0.0, P.FIELD)
        self.blobs[i] = np.stack([x, y, vx, vy], 1)
        self._paint(i, rng)

    def _paint(self, i: int, rng: np.random.Generator) -> None:
        g = grid(self.size)
        img = np.zeros((self.size, self.size, 3), np.uint8)
        b = self.blobs[i]
        for j in range(self.n_blobs):
            dx = g.centres - b[j, 0]
            dy = g.centres - b[j, 1]
            img[(dy * dy)[:, None] + (dx * dx)[None, :] <= self.radii[i, j] ** 2] = self.colours[
                i, j
            ]
        if self.noise:
            noise = rng.integers(0, self.noise + 1, img.shape, dtype=np.uint8)
            img = np.maximum(img, noise)
        self.image[i] = img

    def compose(self, frames: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """Frames (N', S, S, 3) with background pixels replaced (a new array)."""
        bg = self.image if index is None else self.image[index]
        empty = ~frames.any(axis=-1, keepdims=True)
        return np.where(empty, bg, frames)


class DistractorObjects(gym.Wrapper):
    """Adds ``n`` bouncing distractor objects to an Interventional Pong env.

    They appear in every observation mode (object rows after the env's objects, discs in
    the pixels, one mask each), in ``graph_nodes`` (``distractor_<i>``) and in the local
    graph (self edge only), and in the ``get_state`` snapshot (``objects["distractor_<i>"]``
    with ``x, y, vx, vy``; the wrapper's generator under ``"distractor_rng"``).
    """

    def __init__(self, env: gym.Env, n: int = 2) -> None:
        super().__init__(env)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n (number of distractor objects) must be an int >= 1, got {n!r}")
        nodes = tuple(env.get_wrapper_attr("graph_nodes"))
        inner_objects = nodes[:-2]
        offset = sum(name.startswith("distractor_") for name in inner_objects)
        self.distractor_names = tuple(f"distractor_{offset + j}" for j in range(n))
        self.graph_nodes = (*inner_objects, *self.distractor_names, "action", "regime")
        self._n_inner = len(inner_objects)
        self._obs_mode = env.get_wrapper_attr("obs_mode")
        make_space = env.get_wrapper_attr("make_observation_space")
        self.observation_space = make_space(self._n_inner + n)
        self.bank = DistractorBank(1, n, first_colour=offset)
        self._rng = wrapper_rng(None, _DISTRACTOR_KEY)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._rng = wrapper_rng(seed, _DISTRACTOR_KEY)
        self.bank.reset(0, self._rng)
        return self._augment(obs), info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.bank.step()
        if "local_graph" in info:
            info = {**info, "local_graph": self.extend_graph(info["local_graph"])}
        return self._augment(obs), reward, terminated, truncated, info

    def extend_graph(self, g: np.ndarray) -> np.ndarray:
        """Insert the distractors' rows and columns (self edges only) into a local graph."""
        m, k = self._n_inner, self.bank.k
        out = np.zeros((m + k + 2, m + k), bool)
        out[:m, :m] = g[:m]
        out[m + k :, :m] = g[m:]
        out[np.arange(m, m + k), np.arange(m, m + k)] = True
        return out

    def _augment(self, obs: Any) -> Any:
        if isinstance(obs, dict):
            obs = dict(obs)
            if "objects" in obs:
                obs["objects"] = np.concatenate([obs["objects"], self.bank.features()[0]])
            if "pixels" in obs:
                img = obs["pixels"][None].copy()
                masks = self.bank.draw(img)
                obs["pixels"] = img[0]
                if "masks" in obs:
                    obs["masks"] = np.concatenate([obs["masks"], masks[0]])
            return obs
        if self._obs_mode == "objects":
            return np.concatenate([obs, self.bank.features()[0]])
        img = obs[None].copy()
        self.bank.draw(img)
        return img[0]

    def render(self) -> Any:
        frame = self.env.render()
        if frame is None:
            return None
        img = np.asarray(frame)[None].copy()
        self.bank.draw(img)
        return img[0]

    def get_state(self) -> dict[str, Any]:
        """The wrapped env's snapshot plus the distractors (see the class docstring)."""
        state = self.env.get_wrapper_attr("get_state")()
        for j, name in enumerate(self.distractor_names):
            x, y, vx, vy = (float(v) for v in self.bank.state[0, j])
            state["objects"][name] = {"x": x, "y": y, "vx": vx, "vy": vy}
        state.setdefault("distractor_rng", {})[self.distractor_names[0]] = copy.deepcopy(
            self._rng.bit_generator.state
        )
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`get_state` (or a modified copy of one)."""
        state = copy.copy(state)
        objects = dict(state["objects"])
        try:
            rows = [objects.pop(name) for name in self.distractor_names]
            rng_states = dict(state["distractor_rng"])
            rng_state = rng_states.pop(self.distractor_names[0])
            values = np.array([[r["x"], r["y"], r["vx"], r["vy"]] for r in rows], np.float64)
        except (KeyError, TypeError) as e:
            raise ValueError(f"snapshot lacks this wrapper's distractor entry {e}") from None
        if not np.all(np.isfinite(values)):
            raise ValueError("distractor variables must be finite")
        state["objects"] = objects
        state["distractor_rng"] = rng_states
        self.env.get_wrapper_attr("set_state")(state)
        self.bank.state[0] = values
        self._rng.bit_generator.state = copy.deepcopy(rng_state)


class BackgroundNoise(gym.Wrapper):
    """Pixel-only background distraction (see :class:`BackgroundBank`).

    Acts on every frame the env shows: the ``pixels`` observation (alone or in a dict) and
    ``render()``; an objects-mode observation passes unchanged. The snapshot gains a
    ``"background"`` entry so that ``set_state`` reproduces the frames exactly.
    """

    def __init__(self, env: gym.Env, level: str = "medium", dynamic: bool = True) -> None:
        super().__init__(env)
        size = env.get_wrapper_attr("render_size")
        self.bank = BackgroundBank(1, size, level, dynamic)
        self._rng = wrapper_rng(None, _BACKGROUND_KEY)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._rng = wrapper_rng(seed, _BACKGROUND_KEY)
        self.bank.reset(0, self._rng)
        return self._compose(obs), info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.bank.step(0, self._rng)
        return self._compose(obs), reward, terminated, truncated, info

    def _compose(self, obs: Any) -> Any:
        if isinstance(obs, dict):
            if "pixels" in obs:
                obs = {**obs, "pixels": self.bank.compose(obs["pixels"][None])[0]}
            return obs
        if isinstance(obs, np.ndarray) and obs.dtype == np.uint8 and obs.ndim == 3:
            return self.bank.compose(obs[None])[0]
        return obs

    def render(self) -> Any:
        frame = self.env.render()
        return None if frame is None else self.bank.compose(np.asarray(frame)[None])[0]

    def get_state(self) -> dict[str, Any]:
        """The wrapped env's snapshot plus the background state."""
        state = self.env.get_wrapper_attr("get_state")()
        b = self.bank
        state["background"] = {
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "blobs": b.blobs[0].copy(),
            "radii": b.radii[0].copy(),
            "colours": b.colours[0].copy(),
            "image": b.image[0].copy(),
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`get_state`."""
        state = copy.copy(state)
        try:
            bg = state.pop("background")
            blobs, radii, colours, image = bg["blobs"], bg["radii"], bg["colours"], bg["image"]
            rng_state = bg["rng"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"snapshot lacks the background entry {e}") from None
        self.env.get_wrapper_attr("set_state")(state)
        b = self.bank
        b.blobs[0], b.radii[0], b.colours[0], b.image[0] = blobs, radii, colours, image
        self._rng.bit_generator.state = copy.deepcopy(rng_state)


class NoiseDims(gym.ObservationWrapper):
    """Appends ``k`` irrelevant random-walk features to a 1-D Box observation.

    Each feature starts uniform in [-1, 1] and moves by N(0, ``sigma``) per step, clipped
    to [-1, 1]. Intended for vector-state envs (e.g. MuJoCo) to test that a world model
    ignores dimensions that nothing depends on.
    """

    def __init__(self, env: gym.Env, k: int, sigma: float = 0.1) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(
                f"NoiseDims needs a 1-D Box observation space, got {space}; flatten it first "
                "(gymnasium.wrappers.FlattenObservation)"
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k (number of noise features) must be an int >= 1, got {k!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        self.k, self.sigma = k, float(sigma)
        low = np.concatenate([space.low, -np.ones(k, space.dtype)])
        high = np.concatenate([space.high, np.ones(k, space.dtype)])
        self.observation_space = spaces.Box(low, high, dtype=space.dtype)  # type: ignore[arg-type]
        self._rng = wrapper_rng(None, _NOISE_DIMS_KEY)
        self._walk = np.zeros(k)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self._rng = wrapper_rng(seed, _NOISE_DIMS_KEY)
        self._walk = self._rng.uniform(-1.0, 1.0, self.k)
        obs, info = self.env.reset(seed=seed, options=options)
        return self._append(obs), info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        self._walk = np.clip(self._walk + self._rng.normal(0.0, self.sigma, self.k), -1.0, 1.0)
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._append(obs), reward, terminated, truncated, info

    def observation(self, observation: Any) -> Any:
        return self._append(observation)

    def _append(self, obs: np.ndarray) -> np.ndarray:
        dtype = self.observation_space.dtype
        return np.concatenate([obs, self._walk]).astype(dtype, copy=False)


class InterventionalPongDistractorsEnv(gym.Env):
    """Interventional Pong with distractor objects and background noise, as one env.

    The entry point of ``InterventionalPongDistractors-v0``: it composes
    ``BackgroundNoise(DistractorObjects(InterventionalPongEnv(...)))`` inside a plain
    ``gym.Env`` so that ``env.unwrapped`` is the whole distracted game (Gymnasium's checker
    and ``get_wrapper_attr`` then see one env). Attributes of the composed chain
    (``graph_nodes``, ``get_state``, ``set_state``, ``set_regime``, ``regimes``, ...) are
    forwarded.

    Args:
        n_distractors: Distractor objects (:class:`DistractorObjects`), >= 1.
        background: :class:`BackgroundNoise` level, or None for none.
        dynamic_background: Moving background (True) or one per episode (False).
        **kwargs: Passed to :class:`InterventionalPongEnv`.
    """

    def __init__(
        self,
        n_distractors: int = 2,
        background: str | None = "medium",
        dynamic_background: bool = True,
        **kwargs: Any,
    ) -> None:
        self.base = InterventionalPongEnv(**kwargs)
        chain: gym.Env = DistractorObjects(self.base, n_distractors)
        if background is not None:
            chain = BackgroundNoise(chain, background, dynamic_background)
        self.chain = chain
        self.metadata = self.base.metadata
        self.render_mode = self.base.render_mode
        self.observation_space = chain.observation_space
        self.action_space = chain.action_space

    # The random generator is the base game's (Gymnasium's checker reads ``_np_random``).
    @property  # type: ignore[override]
    def _np_random(self) -> np.random.Generator | None:  # type: ignore[override]
        return self.base._np_random

    @_np_random.setter
    def _np_random(self, value: np.random.Generator | None) -> None:
        self.base._np_random = value

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        return self.chain.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        return self.chain.step(action)

    def render(self) -> Any:  # type: ignore[override]
        return self.chain.render()

    def get_state(self) -> dict[str, Any]:
        """Snapshot of the game, the distractors and the background (bit-exact replay)."""
        return self.chain.get_wrapper_attr("get_state")()

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`get_state` (or a modified copy: a do-intervention)."""
        self.chain.get_wrapper_attr("set_state")(state)

    @property
    def graph_nodes(self) -> tuple[str, ...]:
        """Objects in observation order (distractors included), then action and regime."""
        return tuple(self.chain.get_wrapper_attr("graph_nodes"))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("base", "chain"):
            raise AttributeError(name)
        return self.chain.get_wrapper_attr(name)


def make_distractor_pong(
    n_distractors: int = 2,
    background: str | None = "medium",
    dynamic_background: bool = True,
    **kwargs: Any,
) -> gym.Env:
    """Entry point of ``InterventionalPongDistractors-v0`` (see the class for arguments)."""
    return InterventionalPongDistractorsEnv(n_distractors, background, dynamic_background, **kwargs)
