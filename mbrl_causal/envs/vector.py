"""Native NumPy-batched vector env for Interventional Pong.

``gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")`` builds it.
Sub-env i seeded with ``seed + i`` makes exactly the transitions of a single env reset with
that seed (same observations, rewards, flags, regimes and local graphs), because both
consume one row of random draws per reset or step and use the same arithmetic
(:mod:`.physics`). Autoreset follows Gymnasium's default ``NEXT_STEP`` mode: the step after
a sub-env ends resets it (reward 0, not terminated or truncated, reset info).

``info`` holds arrays in Gymnasium's vector convention (key plus ``_key`` mask):
``regime`` (int64 (N,)), ``regime_switched`` (bool (N,)) and, in every ``step``,
``local_graph`` (bool (N, n_nodes, n_objects); ``_local_graph`` is False, and the graph
empty, for sub-envs that were reset in that step).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from mbrl_causal.envs import physics as P
from mbrl_causal.envs.distractors import (
    _BACKGROUND_KEY,
    _DISTRACTOR_KEY,
    BackgroundBank,
    DistractorBank,
    wrapper_rng,
)
from mbrl_causal.envs.pong import (
    BLOCK,
    OBJECT_NAMES,
    InterventionalPongEnv,
)
from mbrl_causal.envs.regimes import REGIMES, regime_id
from mbrl_causal.envs.render import render_pong

__all__ = ["InterventionalPongVectorEnv", "make_distractor_pong_vec"]


def _flags(attr: str, value: Any = True) -> np.ndarray:
    return np.array([getattr(r, attr) == value for r in REGIMES])


_GRAVITY, _CURVE, _FRICTION = _flags("gravity"), _flags("curve"), _flags("friction")
_OPP_INVERTED, _OPP_RANDOM = _flags("opponent", "inverted"), _flags("opponent", "random")
_CONTROLS_INVERTED, _BALL_CHANGED = _flags("controls_inverted"), _flags("ball_changed")
_DIRECTIONS = np.array([0.0, -1.0, 1.0])
_HALF = P.FIELD / 2.0


class InterventionalPongVectorEnv(VectorEnv):
    """N Interventional Pong envs stepped together with NumPy.

    Args:
        num_envs: Number of sub-envs N.
        max_episode_steps: Truncate episodes after this many steps (None: never).
        n_distractors: Distractor objects per env (as :class:`DistractorObjects`).
        background: Background level (as :class:`BackgroundNoise`) or None.
        dynamic_background: Moving background (True) or one per episode.
        **kwargs: The single env's arguments (:class:`InterventionalPongEnv`).
    """

    metadata = {  # noqa: RUF012
        "render_modes": ["rgb_array"],
        "render_fps": 30,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        n_distractors: int = 0,
        background: str | None = None,
        dynamic_background: bool = True,
        **kwargs: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if max_episode_steps is not None and (
            not isinstance(max_episode_steps, int) or max_episode_steps < 1
        ):
            raise ValueError(
                f"max_episode_steps must be an int >= 1 or None: {max_episode_steps!r}"
            )
        if (
            isinstance(n_distractors, bool)
            or not isinstance(n_distractors, int)
            or (n_distractors < 0)
        ):
            raise ValueError(f"n_distractors must be an int >= 0, got {n_distractors!r}")
        # The single env validates every shared argument and builds the spaces.
        self.template = InterventionalPongEnv(**kwargs)
        t = self.template
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.schedule = t.schedule
        self.obs_mode, self.render_size = t.obs_mode, t.render_size
        self.render_mode = t.render_mode
        n = num_envs
        self.n_objects = len(OBJECT_NAMES) + n_distractors
        self.graph_nodes = (
            *OBJECT_NAMES,
            *(f"distractor_{j}" for j in range(n_distractors)),
            "action",
            "regime",
        )
        self.single_observation_space = t.make_observation_space(self.n_objects)
        self.single_action_space = t.action_space
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self.distractors = DistractorBank(n, n_distractors) if n_distractors else None
        self.background = (
            BackgroundBank(n, t.render_size, background, dynamic_background)
            if background is not None
            else None
        )
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._d_rngs = [wrapper_rng(None, _DISTRACTOR_KEY) for _ in range(n)]
        self._b_rngs = [wrapper_rng(None, _BACKGROUND_KEY) for _ in range(n)]
        self._rows = np.zeros((n, BLOCK, P.ROW))
        self._row_i = np.full(n, BLOCK)
        self.regime = np.full(n, -1)  # -1: none yet
        self._prev = np.full(n, -1)
        self._episode = np.full(n, -1)
        self._episode_steps = np.zeros(n, np.int64)
        self._total_steps = np.zeros(n, np.int64)
        self._oy, self._ay = np.full(n, _HALF), np.full(n, _HALF)
        self._ovy, self._avy = np.zeros(n), np.zeros(n)
        self._ball = np.zeros((n, 4))
        self._points = np.zeros((n, 2), np.int64)
        self._needs_reset = np.ones(n, bool)
        self._ar = np.arange(n)
        self._objects_template = np.zeros((n, 4, 4), np.float32)
        self._objects_template[:, 0, 0] = (P.OPPONENT_X - _HALF) / _HALF
        self._objects_template[:, 1, 0] = (P.AGENT_X - _HALF) / _HALF
        # self edges and action -> agent: true on every transition
        self._graph_template = np.zeros((n, self.n_objects + 2, self.n_objects), bool)
        self._graph_template[:, np.arange(self.n_objects), np.arange(self.n_objects)] = True
        self._graph_template[:, self.n_objects, 1] = True
        self._all = np.ones(n, bool)

    # ------------------------------------------------------------------ random stream
    def _draw(self, envs: np.ndarray) -> np.ndarray:
        """One row of draws for each env in ``envs`` (bool mask), float64 (N, 7)."""
        empty = envs & (self._row_i >= BLOCK)
        for i in np.flatnonzero(empty):
            rng = self._rngs[i]
            if rng is None:
                rng, _ = seeding.np_random(None)
                self._rngs[i] = rng
            self._rows[i] = P.draw_rows(rng, self.template.noise_scale, BLOCK)
            self._row_i[i] = 0
        idx = np.minimum(self._row_i, BLOCK - 1)
        rows = self._rows[self._ar, idx]
        self._row_i = self._row_i + envs
        return rows

    # ------------------------------------------------------------------ reset
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset all sub-envs (or those in ``options["reset_mask"]``).

        ``seed``: an int (sub-env i gets ``seed + i``) or one seed per sub-env.
        ``options["regime"]``: force the regime of the new episodes.
        """
        n = self.num_envs
        options = dict(options or {})
        unknown = set(options) - {"regime", "reset_mask"}
        if unknown:
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; allowed: regime, reset_mask"
            )
        mask = np.asarray(options.get("reset_mask", np.ones(n, bool)), bool)
        if mask.shape != (n,):
            raise ValueError(f"reset_mask must be a bool array of shape ({n},)")
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"seed list must have {n} entries, got {len(seeds)}")
        for i in np.flatnonzero(mask):
            if seeds[i] is not None:
                self._rngs[i], _ = seeding.np_random(seeds[i])
                self._row_i[i] = BLOCK
                self._d_rngs[i] = wrapper_rng(seeds[i], _DISTRACTOR_KEY)
                self._b_rngs[i] = wrapper_rng(seeds[i], _BACKGROUND_KEY)
        forced = None if options.get("regime") is None else regime_id(options["regime"])
        rows = self._draw(mask)
        self._reset_envs(mask, rows, forced)
        self._needs_reset = self._needs_reset & ~mask
        info = self._info(np.zeros(n, bool), None, mask, self.regime)
        return self._observation(), info

    def _reset_envs(self, mask: np.ndarray, rows: np.ndarray, forced: int | None) -> None:
        for i in np.flatnonzero(mask):
            self._episode[i] += 1
            current = None if self.regime[i] < 0 else int(self.regime[i])
            new = (
                forced
                if forced is not None
                else self.schedule.at_reset(
                    int(self._episode[i]), current, float(rows[i, P.U_REGIME])
                )
            )
            if new is not None:
                self.regime[i] = new
            if self.distractors is not None:
                self.distractors.reset(int(i), self._d_rngs[i])
            if self.background is not None:
                self.background.reset(int(i), self._b_rngs[i])
        bx, by, bvx, bvy = P.reset_ball_batch(
            rows[:, P.C_RESET], rows[:, P.S_RESET], rows[:, P.U_SIDE]
        )
        m = mask
        self._ball[m] = np.stack([bx, by, bvx, bvy], 1)[m]
        self._oy[m] = self._ay[m] = _HALF
        self._ovy[m] = self._avy[m] = 0.0
        self._points[m] = 0
        self._episode_steps[m] = 0

    # ------------------------------------------------------------------ step
    def _directions(self, actions: Any) -> np.ndarray:
        a = np.asarray(actions)
        n = self.num_envs
        if self.template.action_type == "discrete":
            if (
                a.shape != (n,)
                or not np.issubdtype(a.dtype, np.integer)
                or (a.min() < 0 or a.max() > 2)
            ):
                raise ValueError(f"actions must be {n} ints in {{0, 1, 2}}, got {actions!r}")
            return _DIRECTIONS[a]
        a = a.astype(np.float64)
        if a.shape != (n, 1) or not np.all(np.isfinite(a)):
            raise ValueError(f"actions must be a finite array of shape ({n}, 1), got {actions!r}")
        return np.minimum(np.maximum(a[:, 0], -1.0), 1.0)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sub-env (resetting those that ended on the previous step)."""
        d = self._directions(actions)
        n = self.num_envs
        resetting = self._needs_reset.copy()
        stepping = ~resetting
        rows = self._draw(self._all)
        reg = np.maximum(self.regime, 0)
        ns = self.template.noise_scale
        n_obj = self.n_objects
        graph = self._graph_template.copy()

        noise = P.PADDLE_NOISE * ns * rows[:, P.N_AGENT]
        inv = _CONTROLS_INVERTED[reg]
        new_ay = P.clip_paddle_batch(self._ay + P.AGENT_SPEED * np.where(inv, -d, d) + noise)
        neutral = P.clip_paddle_batch(self._ay + P.AGENT_SPEED * d + noise)
        graph[:, n_obj + 1, 1] = inv & (new_ay != neutral)

        bx, by, bvx, bvy = self._ball.T
        noise = P.PADDLE_NOISE * ns * rows[:, P.N_OPPONENT]
        rand, oinv = _OPP_RANDOM[reg], _OPP_INVERTED[reg]
        no = np.zeros(n, bool)
        track = P.opponent_move_batch(no, no, by, self._oy, rows[:, P.U_WALK])
        walk = P.OPPONENT_SPEED * (2.0 * rows[:, P.U_WALK] - 1.0)
        move = np.where(rand, walk, np.where(oinv, -track, track))
        new_oy = P.clip_paddle_batch(self._oy + move + noise)
        neutral = P.clip_paddle_batch(self._oy + track + noise)
        graph[:, n_obj + 1, 0] = (rand | oinv) & (new_oy != neutral)
        graph[:, 2, 0] = ~rand

        # the actual ball and its neutral-regime counterfactual, in one 2N-wide call
        def two(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
            return np.concatenate([a, a if b is None else b])

        off = np.zeros(n, bool)
        both = P.ball_step_batch(
            two(bx), two(by), two(bvx), two(bvy), two(self._oy), two(self._ay),
            two(_GRAVITY[reg], off), two(_CURVE[reg], off), two(_FRICTION[reg], off),
            two(rows[:, P.C_NOISE]), two(rows[:, P.S_NOISE]),
        )  # fmt: skip
        out = tuple(v[:n] for v in both)
        ref = tuple(v[n:] for v in both)
        changed = _BALL_CHANGED[reg]
        event = out[4]
        scored, ref_scored = event != P.EVENT_NONE, ref[4] != P.EVENT_NONE
        moved = (out[0] != ref[0]) | (out[1] != ref[1]) | (out[2] != ref[2]) | (out[3] != ref[3])
        graph[:, n_obj + 1, 3] = changed & (event != ref[4])
        graph[:, n_obj + 1, 2] = changed & ((scored != ref_scored) | (~scored & moved))
        graph[:, 1, 2] = out[5] > 0
        graph[:, 0, 2] = out[6] > 0
        graph[:, 2, 3] = scored | out[7]

        ball = np.stack(out[:4], 1)
        if scored.any():
            restart = np.stack(
                P.reset_ball_batch(rows[:, P.C_RESET], rows[:, P.S_RESET], rows[:, P.U_SIDE]), 1
            )
            ball[scored] = restart[scored]
        agent_pt = event == P.EVENT_AGENT_POINT
        opp_pt = event == P.EVENT_OPPONENT_POINT
        ptw = self.template.points_to_win
        points = np.minimum(self._points + np.stack([opp_pt, agent_pt], 1), ptw)
        reward = agent_pt.astype(np.float64) - opp_pt.astype(np.float64)

        s = stepping
        self._ball[s] = ball[s]
        self._points[s] = points[s]
        self._avy[s], self._ay[s] = (new_ay - self._ay)[s], new_ay[s]
        self._ovy[s], self._oy[s] = (new_oy - self._oy)[s], new_oy[s]
        self._episode_steps += s
        self._total_steps += s
        if self.distractors is not None:
            self.distractors.step(s)
        if self.background is not None:
            for i in np.flatnonzero(s):
                self.background.step(int(i), self._b_rngs[i])
        acted = self.regime.copy()
        switched = s & (self._prev >= 0) & (acted != self._prev)
        self._prev = np.where(s, acted, self._prev)
        if self.schedule.step_based:  # after the step, as the single env does
            for i in np.flatnonzero(s):
                new = self.schedule.at_step(
                    int(self._total_steps[i]), int(self.regime[i]), float(rows[i, P.U_REGIME])
                )
                if new is not None:
                    self.regime[i] = new
        terminated = s & (self._points.max(axis=1) >= ptw)
        truncated = np.zeros(n, bool)
        if self.max_episode_steps is not None:
            truncated = s & (self._episode_steps >= self.max_episode_steps)
        reward = np.where(s, reward, 0.0)

        if resetting.any():
            self._reset_envs(resetting, rows, None)
        self._needs_reset = terminated | truncated
        # info reports the regime that acted in the transition (or the new episode's)
        info = self._info(switched, graph, s, np.where(s, acted, self.regime))
        return self._observation(), reward, terminated, truncated, info

    def _info(
        self, switched: np.ndarray, graph: np.ndarray | None, stepped: np.ndarray,
        regime: np.ndarray,
    ) -> dict[str, Any]:  # fmt: skip
        n = self.num_envs
        every = np.ones(n, bool)
        info: dict[str, Any] = {
            "regime": regime.astype(np.int64),
            "_regime": every,
            "regime_switched": switched,
            "_regime_switched": every,
        }
        if graph is not None:  # every step has the key; "_local_graph" marks who stepped
            info["local_graph"] = (
                graph if stepped.all() else np.where(stepped[:, None, None], graph, False)
            )
            info["_local_graph"] = stepped.copy()
        return info

    # ------------------------------------------------------------------ observations
    def _objects(self) -> np.ndarray:
        # Assigning float64 into the float32 template rounds exactly as the single env's
        # np.array(..., dtype=float32) does.
        b = self._ball
        out = self._objects_template.copy()
        out[:, 0, 1] = (self._oy - _HALF) / _HALF
        out[:, 0, 3] = self._ovy / P.MAX_SPEED
        out[:, 1, 1] = (self._ay - _HALF) / _HALF
        out[:, 1, 3] = self._avy / P.MAX_SPEED
        out[:, 2, :2] = (b[:, :2] - _HALF) / _HALF
        out[:, 2, 2:] = b[:, 2:] / P.MAX_SPEED
        out[:, 3, :2] = self._points / self.template.points_to_win
        np.clip(out, -1.0, 1.0, out=out)
        if self.distractors is not None:
            out = np.concatenate([out, self.distractors.features()], axis=1)
        return out

    def _frames(self) -> tuple[np.ndarray, np.ndarray]:
        t = self.template
        img, masks = render_pong(
            t.render_size, self._oy, self._ay, self._ball, self._points, t.points_to_win,
            t.ball_trail,
        )  # fmt: skip
        if self.distractors is not None:
            masks = np.concatenate([masks, self.distractors.draw(img)], axis=1)
        if self.background is not None:
            img = self.background.compose(img)
        return img, masks

    def _observation(self) -> Any:
        mode = self.obs_mode
        obs: dict[str, Any] = {}
        if mode == "objects":
            obs["objects"] = self._objects()
        else:
            img, masks = self._frames()
            obs["pixels"] = img
            if mode == "dict":
                obs["objects"] = self._objects()
                obs["masks"] = masks
        if self.template.observe_regime:
            obs["regime"] = np.maximum(self.regime, 0).astype(np.int64)
            return obs
        return obs if mode == "dict" else next(iter(obs.values()))

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One frame per sub-env (uint8 (S, S, 3)) when ``render_mode="rgb_array"``."""
        if self.render_mode is None:
            return None
        return tuple(self._frames()[0])

    # ------------------------------------------------------------------ interventions
    def set_regime(self, regime: int | str, index: int | None = None) -> None:
        """Do-intervention on every sub-env (or only sub-env ``index``)."""
        rid = regime_id(regime)
        if index is None:
            self.regime[:] = rid
        else:
            self.regime[index] = rid


def make_distractor_pong_vec(
    num_envs: int = 1,
    n_distractors: int = 2,
    background: str | None = "medium",
    dynamic_background: bool = True,
    **kwargs: Any,
) -> InterventionalPongVectorEnv:
    """Vector entry point of ``InterventionalPongDistractors-v0``."""
    return InterventionalPongVectorEnv(
        num_envs, n_distractors=n_distractors, background=background,
        dynamic_background=dynamic_background, **kwargs,
    )  # fmt: skip
