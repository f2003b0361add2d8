"""Stable-Baselines3 plug-in: SB3 algorithms learning inside a causal world model.

``import mbrl_causal`` never imports SB3; importing this module does.

- :class:`ImaginationVecEnv`: an SB3 ``VecEnv`` whose ``step_wait`` is ONE batched
  :meth:`WorldModel.step` for all envs. Its spaces equal the real env's objects mode, so a
  policy trained here steps ``InterventionalPong`` unchanged. :class:`ImaginationEnv` is
  its single-env Gymnasium view (for ``check_env``).
- :class:`WorldModelCallback`: stores the real transitions of any SB3 algorithm in the
  project's on-disk :class:`~mbrl_causal.agents.replay.Replay` and trains the world model
  every ``train_freq`` env steps for ``gradient_steps`` steps (Dyna), logging
  ``world_model/*`` and ``causal/*`` to the algorithm's own logger.
- :class:`CausalFeaturesExtractor`: the world model's object tokens and regime token as
  policy features, for objects (Box) and pixels + masks (Dict) observations.
- :func:`save_sb3` / :func:`load_sb3`: ``path.zip`` plus ``path.world_model.pt``.
- :func:`imagined_returns` / :func:`scripted_policies`: the return a world model predicts
  for each of several policies from the same start states: does the model see what the
  policy changes? :func:`real_returns` is the same figure on the real env. (A model whose
  imagined return is the same for ball tracking and for a paddle that never moves gives
  an imagination agent nothing to learn from.)

Time alignment of one imagined step (objects mode: latents are observations)::

    obs o_t, action a_t  --WorldModel.step-->  o_{t+1} (next_latent, clipped to the Box),
                                               r_{t+1} (reward head),
                                               done_{t+1} (continuation head, see below)

>>> from stable_baselines3 import PPO                                   # doctest: +SKIP
>>> env = ImaginationVecEnv(world_model, start_states, num_envs=64, horizon=32)
>>> PPO("MlpPolicy", env).learn(10_000)                                 # doctest: +SKIP
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from mbrl_causal.envs import physics as P
from mbrl_causal.sb3_callback import WorldModelCallback
from mbrl_causal.sb3_policy import CausalFeaturesExtractor, load_sb3, save_sb3
from mbrl_causal.world_models.adaptation import recall_regime
from mbrl_causal.world_models.model import SequenceBatch, WorldModel

__all__ = [
    "TERMINATIONS",
    "CausalFeaturesExtractor",
    "ImaginationEnv",
    "ImaginationVecEnv",
    "WorldModelCallback",
    "imagined_returns",
    "load_sb3",
    "real_returns",
    "save_sb3",
    "scripted_policies",
]

TERMINATIONS: tuple[str, ...] = ("threshold", "sample")
FOLLOW_START = "start"  # regime: each env takes the regime of its sampled start state
PER_ENV_ATTRS: tuple[str, ...] = ("regime", "elapsed_steps")


def _int_at_least(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _leaves(tree: Any) -> Iterator[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _leaves(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _leaves(item)


class ImaginationVecEnv(VecEnv):
    """A batch of imagined trajectories, as an SB3 ``VecEnv`` (see the module doc).

    Args:
        world_model: An objects-mode :class:`WorldModel` (its ``next_latent`` is the next
            observation). It is stepped in eval mode (deterministic gates), under no_grad.
        start_states: Real observations (S, N, 4) (any leading axes are flattened) that
            episodes start from, sampled uniformly with the env's seeded generator.
        num_envs: Imagined envs stepped together.
        horizon: Steps after which an episode is truncated (``TimeLimit.truncated``).
        regime: Regime of every env: a codebook regime id, a float token (d_model,) (an
            adapted token, :func:`~mbrl_causal.world_models.fit_regime_token`), a
            :class:`SequenceBatch` (the id is inferred by ``recall_regime``), or
            ``"start"`` (each episode takes its start state's regime; needs
            ``start_regimes``). None: ``"start"`` if ``start_regimes`` is given, else the
            first codebook id. Change it later with :meth:`set_regime`.
        seed: Seed of the start-state sampling and of the termination samples.
        start_regimes: Env regime ids (S,) of the start states (from the data's infos).
        termination: ``"threshold"``: an episode terminates when the continuation
            probability sigmoid(cont_logit) < ``cont_threshold`` (deterministic given the
            seed); ``"sample"``: it terminates with probability 1 - sigmoid(cont_logit).
        cont_threshold: Threshold of ``"threshold"`` (in (0, 1)).
        render_mode: None or ``"rgb_array"`` (frames drawn from the imagined objects).
        points_to_win: The real env's ``points_to_win`` (only to draw the score bars).
    """

    def __init__(
        self,
        world_model: WorldModel,
        start_states: np.ndarray | torch.Tensor,
        num_envs: int = 256,
        horizon: int = 32,
        regime: Any = None,
        seed: int = 0,
        start_regimes: np.ndarray | Sequence[int] | None = None,
        termination: str = "threshold",
        cont_threshold: float = 0.5,
        render_mode: str | None = None,
        points_to_win: int = 5,
    ) -> None:
        if not isinstance(world_model, WorldModel):
            raise TypeError(f"world_model must be a WorldModel, got {type(world_model).__name__}")
        if world_model.config.obs != "objects":
            raise ValueError(
                f"ImaginationVecEnv needs an objects-mode world model (obs must be one of "
                f"('objects',)), got obs={world_model.config.obs!r}"
            )
        num_envs = _int_at_least("num_envs", num_envs, 1)
        self.horizon = _int_at_least("horizon", horizon, 1)
        if termination not in TERMINATIONS:
            raise ValueError(f"termination must be one of {TERMINATIONS}, got {termination!r}")
        if not 0.0 < cont_threshold < 1.0:
            raise ValueError(f"cont_threshold must be in (0, 1), got {cont_threshold!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be one of (None, 'rgb_array'), got {render_mode!r}")
        self.model = world_model
        self.device = world_model.codebook.weight.device
        self.termination, self.cont_threshold = termination, float(cont_threshold)
        self.render_mode, self.points_to_win = render_mode, int(points_to_win)
        self._starts = torch.zeros(0)
        self._start_regimes: torch.Tensor | None = None
        self.set_start_states(start_states, start_regimes)
        n_objects = int(self._starts.shape[1])
        obs_space = gym.spaces.Box(-1.0, 1.0, (n_objects, world_model.latent_dim), np.float32)
        act_space: gym.Space[Any] = (
            gym.spaces.Discrete(world_model.action_dim)
            if world_model.discrete_actions
            else gym.spaces.Box(-1.0, 1.0, (world_model.action_dim,), np.float32)
        )
        super().__init__(num_envs, obs_space, act_space)
        self._seed_all(seed)
        self._obs = torch.zeros(num_envs, n_objects, world_model.latent_dim, device=self.device)
        self._elapsed = np.zeros(num_envs, np.int64)
        self._ep_return = np.zeros(num_envs)
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self._state: Any = None
        self._actions: torch.Tensor | None = None
        self._ids = torch.full((num_envs,), world_model.regime_ids[0], dtype=torch.long)
        self._free = torch.zeros(num_envs, world_model.config.d_model, device=self.device)
        self._follow = torch.zeros(num_envs, dtype=torch.bool)
        if regime is None:
            regime = FOLLOW_START if self._start_regimes is not None else None
        if regime is not None:
            self.set_regime(regime)
        self._needs_reset = True

    # ------------------------------------------------------------------ set-up
    def _seed_all(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._gen = torch.Generator(device=self.device).manual_seed(int(seed))

    def set_start_states(
        self, states: np.ndarray | torch.Tensor, regimes: np.ndarray | Sequence[int] | None = None
    ) -> None:
        """Replace the real start states (S, N, 4) (and their regime ids (S,)); episodes
        that start from now on sample from them."""
        x = torch.as_tensor(np.asarray(states, np.float32) if not torch.is_tensor(states)
                            else states).float()  # fmt: skip
        latent = self.model.latent_dim
        if x.ndim < 2 or x.shape[-1] != latent or x.numel() == 0:
            raise ValueError(
                f"start_states must be a non-empty array (S, N, {latent}) of objects-mode "
                f"observations, got shape {tuple(x.shape)}"
            )
        x = x.reshape(-1, x.shape[-2], latent)
        if self._starts.numel() and x.shape[1] != self._starts.shape[1]:
            raise ValueError(f"start_states must keep N = {self._starts.shape[1]} objects")
        if not torch.isfinite(x).all():
            raise ValueError("start_states must be finite")
        if regimes is not None:
            r = torch.as_tensor(np.asarray(regimes, np.int64)).reshape(-1)
            if len(r) != len(x):
                raise ValueError(f"start_regimes must have one id per start state ({len(x)})")
            self._check_ids(r)
            self._start_regimes = r
        else:
            self._start_regimes = None
        self._starts = x.clamp(-1.0, 1.0).to(self.device)

    def _check_ids(self, ids: torch.Tensor) -> None:
        known = set(self.model.regime_ids)
        bad = sorted({int(i) for i in ids.tolist()} - known)
        if bad:
            raise ValueError(f"regime id(s) {bad} are not in the world model's codebook; "
                             f"allowed: {sorted(known)}")  # fmt: skip

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        idx = (
            [int(indices)] if isinstance(indices, (int, np.integer)) else [int(i) for i in indices]
        )
        bad = [i for i in idx if not 0 <= i < self.num_envs]
        if bad:
            raise ValueError(f"env indices {bad} out of range; allowed 0..{self.num_envs - 1}")
        return idx

    def set_regime(self, regime: Any, indices: VecEnvIndices = None) -> None:
        """Set the regime token of some envs (all by default); see the class doc.

        Reachable through SB3 as ``venv.env_method("set_regime", regime, indices=...)``.
        """
        idx = torch.as_tensor(self._indices(indices), dtype=torch.long)
        if isinstance(regime, SequenceBatch):
            regime = recall_regime(self.model, regime)
        if isinstance(regime, str):
            if regime != FOLLOW_START or self._start_regimes is None:
                raise ValueError(
                    f"regime {regime!r}: the only string allowed is 'start', and it needs "
                    "start_regimes; otherwise give an id, a token or a SequenceBatch"
                )
            self._follow[idx] = True
            return
        if torch.is_tensor(regime) and regime.is_floating_point():
            token = regime.detach().to(self.device).reshape(-1, self.model.config.d_model)
            if len(token) not in (1, len(idx)):
                raise ValueError(f"a token must be (d_model,) or ({len(idx)}, d_model)")
            self._free[idx] = token.expand(len(idx), -1)
            self._ids[idx], self._follow[idx] = -1, False
            return
        try:
            ids = torch.as_tensor(np.asarray(regime, np.int64)).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(
                f"regime must be an id, ids, a float token, a SequenceBatch or 'start'; "
                f"got {regime!r}"
            ) from None
        if len(ids) not in (1, len(idx)):
            raise ValueError(f"give one regime id or {len(idx)} ids, got {len(ids)}")
        self._check_ids(ids)
        self._ids[idx], self._follow[idx] = ids.expand(len(idx)), False

    def regime_tokens(self) -> torch.Tensor:
        """The regime tokens (num_envs, d_model) the next step uses."""
        known = self._ids >= 0
        tokens = self._free.clone()
        if known.any():
            tokens[known.to(self.device)] = self.model.regime_token(
                self._ids[known].to(self.device)
            )
        return tokens

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> np.ndarray:
        """Reset every env (start states sampled; seeds and options of SB3 applied once)."""
        if self._seeds[0] is not None:
            self._seed_all(int(self._seeds[0]))
        for i, options in enumerate(self._options):
            if options:
                unknown = set(options) - {"regime"}
                if unknown:
                    raise ValueError(
                        f"unknown reset options {sorted(unknown)}; allowed: ['regime']"
                    )
                self.set_regime(options["regime"], [i])
        self._reset_seeds()
        self._reset_options()
        self._state = None
        self._reset_envs(np.ones(self.num_envs, bool))
        self._needs_reset = False
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self._obs.cpu().numpy().copy()

    def _reset_envs(self, mask: np.ndarray) -> None:
        k = int(mask.sum())
        pick = torch.as_tensor(self._rng.integers(0, len(self._starts), k))
        m = torch.as_tensor(mask)
        self._obs[m.to(self.device)] = self._starts[pick.to(self.device)]
        self._elapsed[mask], self._ep_return[mask] = 0, 0.0
        if self._start_regimes is not None:
            follow = m & self._follow
            self._ids[follow] = self._start_regimes[pick[follow[m]]]
        if self._state is not None:  # S2-SSM: the recurrent state of these envs restarts
            fresh = self.model.initial_state(self.num_envs, self._obs.shape[1])
            for t, t0 in zip(_leaves(self._state), _leaves(fresh), strict=True):
                rows = t.view(self.num_envs, -1, *t.shape[1:])
                rows[m.to(t.device)] = t0.view(self.num_envs, -1, *t0.shape[1:])[m.to(t.device)]

    def step_async(self, actions: np.ndarray) -> None:
        a = np.asarray(actions)
        if self.model.discrete_actions:
            a = a.reshape(self.num_envs)
            if not np.issubdtype(a.dtype, np.integer) and not np.all(a == np.round(a)):
                raise ValueError(f"discrete actions must be integers, got {a.dtype}")
            if (a < 0).any() or (a >= self.model.action_dim).any():
                raise ValueError(f"actions must be in 0..{self.model.action_dim - 1}")
            self._actions = torch.as_tensor(a.astype(np.int64), device=self.device)
        else:
            a = np.clip(a.reshape(self.num_envs, self.model.action_dim), -1.0, 1.0)
            self._actions = torch.as_tensor(a, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("call step_async(actions) before step_wait()")
        if self._needs_reset:
            self.reset()
        was_training = self.model.training
        self.model.eval()
        try:  # one batched forward pass for all envs
            out, self._state = self.model.step(
                self._obs, self._actions, self.regime_tokens(), self._state
            )
        finally:
            self.model.train(was_training)
        self._actions = None
        nxt = out.next_latent[:, 0].clamp(-1.0, 1.0)
        p_cont = torch.sigmoid(out.cont_logit[:, 0])
        if self.termination == "threshold":
            term_t = p_cont < self.cont_threshold
        else:
            term_t = torch.rand(p_cont.shape, generator=self._gen, device=self.device) > p_cont
        terminated = term_t.cpu().numpy()
        rewards = out.reward[:, 0].float().cpu().numpy().astype(np.float32)
        self._elapsed += 1
        truncated = (self._elapsed >= self.horizon) & ~terminated
        dones = terminated | truncated
        self._ep_return += rewards
        self._obs = nxt
        obs = nxt.cpu().numpy().astype(np.float32)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated[i])
                self.episode_returns.append(float(self._ep_return[i]))
                self.episode_lengths.append(int(self._elapsed[i]))
            self._reset_envs(dones)
            obs[dones] = self._obs[torch.as_tensor(dones).to(self.device)].cpu().numpy()
        return obs, rewards, dones, infos

    def close(self) -> None:
        self._state, self._actions = None, None

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """SB3's get_attr: per-env values of ``regime`` (codebook id, or None for a free
        token) and ``elapsed_steps``; any other attribute is shared by all envs."""
        idx = self._indices(indices)
        if attr_name == "regime":
            return [None if int(self._ids[i]) < 0 else int(self._ids[i]) for i in idx]
        if attr_name == "elapsed_steps":
            return [int(self._elapsed[i]) for i in idx]
        value = getattr(self, attr_name)  # AttributeError for unknown names, as SB3 expects
        return [value for _ in idx]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """SB3's set_attr: ``regime`` per env (as :meth:`set_regime`); other attributes are
        shared, so they can only be set for all envs (``indices=None``)."""
        if attr_name == "regime":
            self.set_regime(value, indices)
            return
        if attr_name in PER_ENV_ATTRS or (
            indices is not None and sorted(self._indices(indices)) != list(range(self.num_envs))
        ):
            raise ValueError(
                f"attribute {attr_name!r} is shared by all imagined envs (settable per env: "
                "regime); set it with indices=None"
            )
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:  # fmt: skip
        """SB3's env_method: ``set_regime`` acts on ``indices``; other methods of this
        batched env run once and their result is repeated per env."""
        idx = self._indices(indices)
        if method_name == "set_regime":
            self.set_regime(*method_args, **{**method_kwargs, "indices": idx})
            return [None for _ in idx]
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._indices(indices)]  # no Gymnasium wrappers inside

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Frames (S, S, 3) of the imagined objects, drawn by the real env's rasteriser."""
        from mbrl_causal.envs.render import render_pong

        if self.render_mode != "rgb_array":
            return [None for _ in range(self.num_envs)]
        f = self._obs.cpu().numpy().astype(np.float64)
        half = P.FIELD / 2.0
        ball = np.stack([f[:, 2, 0] * half + half, f[:, 2, 1] * half + half,
                         f[:, 2, 2] * P.MAX_SPEED, f[:, 2, 3] * P.MAX_SPEED], 1)  # fmt: skip
        points = np.clip(np.round(f[:, 3, :2] * self.points_to_win), 0, self.points_to_win)
        frames, _ = render_pong(32, f[:, 0, 1] * half + half, f[:, 1, 1] * half + half, ball,
                                points.astype(np.int64), self.points_to_win, True)  # fmt: skip
        return list(frames)

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """SB3's seed: applied at the next :meth:`reset` (one generator for the batch)."""
        return super().seed(seed)


class ImaginationEnv(gym.Env):
    """Single-env Gymnasium view of an :class:`ImaginationVecEnv` (``num_envs=1``).

    ``reset(seed=...)`` reseeds the start-state sampler; ``step`` reports the vector env's
    done as ``terminated`` / ``truncated`` and returns the terminal observation.
    Arguments as for :class:`ImaginationVecEnv`.
    """

    metadata = {"render_modes": ["rgb_array"]}  # noqa: RUF012

    def __init__(self, world_model: WorldModel, start_states: Any, horizon: int = 32,
                 **kwargs: Any) -> None:  # fmt: skip
        self.venv = ImaginationVecEnv(world_model, start_states, 1, horizon, **kwargs)
        self.observation_space = self.venv.observation_space
        self.action_space = self.venv.action_space
        self.render_mode = self.venv.render_mode

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.venv.seed(seed)
        if options:
            self.venv.set_options(options)
        return self.venv.reset()[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        batch, rewards, dones, infos = self.venv.step(np.asarray(action)[None])
        obs, info = np.asarray(batch), infos[0]
        if not dones[0]:
            return obs[0], float(rewards[0]), False, False, info
        truncated = bool(info.pop("TimeLimit.truncated"))
        final = info.pop("terminal_observation")
        return final, float(rewards[0]), not truncated, truncated, info

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        return self.venv.get_images()[0]


# ---------------------------------------------------------------------- policy contrast
def scripted_policies(
    action_space: gym.Space[Any], seed: int = 0, dead_zone: float = 0.75
) -> dict[str, Any]:
    """Scripted Pong policies on objects observations (..., N, 4), for :func:`imagined_returns`.

    - ``tracking``: moves the agent paddle towards the ball's height (the env's
      :class:`~mbrl_causal.envs.policies.TrackingPolicy`, read from the observation:
      row 1 is the agent, row 2 the ball, column 1 their y; no move within ``dead_zone``
      field units);
    - ``random``: uniform random actions (seeded);
    - ``stay``: the paddle never moves (action 0, or 0.0 for continuous Pong).

    Each maps a batch of observations (B, N, 4) to B actions of ``action_space``.
    """
    rng = np.random.default_rng(seed)
    half = P.FIELD / 2.0  # features are (y - half) / half
    if isinstance(action_space, gym.spaces.Discrete):
        if action_space.n != 3:
            raise ValueError(f"scripted_policies needs Pong's 3 actions, got {action_space}")

        def tracking(obs: np.ndarray) -> np.ndarray:
            dy = (obs[:, 2, 1] - obs[:, 1, 1]) * half
            return np.where(np.abs(dy) < dead_zone, 0, np.where(dy > 0, 2, 1))

        def random(obs: np.ndarray) -> np.ndarray:
            return rng.integers(0, 3, len(obs))

        def stay(obs: np.ndarray) -> np.ndarray:
            return np.zeros(len(obs), np.int64)

    elif isinstance(action_space, gym.spaces.Box) and action_space.shape == (1,):

        def tracking(obs: np.ndarray) -> np.ndarray:
            dy = (obs[:, 2, 1] - obs[:, 1, 1]) * half
            return np.clip(dy / 1.5, -1.0, 1.0)[:, None].astype(np.float32)

        def random(obs: np.ndarray) -> np.ndarray:
            return rng.uniform(-1.0, 1.0, (len(obs), 1)).astype(np.float32)

        def stay(obs: np.ndarray) -> np.ndarray:
            return np.zeros((len(obs), 1), np.float32)

    else:
        raise ValueError(
            f"scripted_policies needs Discrete(3) or Box of shape (1,), got {action_space}"
        )
    return {"tracking": tracking, "random": random, "stay": stay}


def imagined_returns(
    world_model: WorldModel,
    start_states: np.ndarray | torch.Tensor,
    policies: dict[str, Any] | None = None,
    num_envs: int = 256,
    horizon: int = 32,
    rounds: int = 4,
    regime: Any = None,
    start_regimes: np.ndarray | Sequence[int] | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """The return the world model predicts for each policy, from the same start states.

    For each of ``rounds`` rounds every policy plays ``num_envs`` imagined episodes in an
    :class:`ImaginationVecEnv` (``horizon`` steps at most, ended early by the
    continuation head) from the same ``num_envs`` start states (drawn with seed
    ``seed + round``); only each env's first episode counts.

    Args:
        world_model: An objects-mode world model.
        start_states: Real observations (S, N, 4) to start from.
        policies: ``{name: callable(obs (B, N, 4)) -> actions (B, ...)}``, or an SB3
            model's ``predict`` wrapped as such; None: :func:`scripted_policies` for the
            model's action space (``tracking``, ``random``, ``stay``).
        num_envs, horizon, regime, start_regimes: As :class:`ImaginationVecEnv`.
        rounds: Rounds of ``num_envs`` episodes.
        seed: Seed of the start states (and of the random policy when ``policies`` is None).

    Returns:
        ``{name: {"return_mean", "return_std", "episodes", "length_mean"}}``: the mean and
        standard deviation over the episodes of the summed reward-head output (reward
        units: points won minus points lost on Pong) and the mean length in imagined
        steps. A model that sees the agent's paddle gives ``tracking`` a higher return
        than ``stay``; equal figures mean the imagined return does not depend on the
        policy (README "Stable-Baselines3 integration").
    """
    rounds = _int_at_least("rounds", rounds, 1)
    env = ImaginationVecEnv(world_model, start_states, num_envs, horizon, regime=regime,
                            seed=seed, start_regimes=start_regimes)  # fmt: skip
    if policies is None:
        policies = scripted_policies(env.action_space, seed)
    if not policies:
        raise ValueError("policies is empty: give at least one {name: callable}")
    out: dict[str, dict[str, float]] = {}
    try:
        for name, policy in policies.items():
            returns, lengths = [], []
            for r in range(rounds):
                env.seed(seed + r)
                obs = env.reset()
                total = np.zeros(num_envs)
                length = np.zeros(num_envs, np.int64)
                live = np.ones(num_envs, bool)
                while live.any():
                    env.step_async(np.asarray(policy(obs)))
                    step_obs, rewards, dones, _ = env.step_wait()
                    obs = np.asarray(step_obs)
                    total[live] += rewards[live]
                    length[live] += 1
                    live &= ~dones
                returns.append(total)
                lengths.append(length)
            ret = np.concatenate(returns)
            out[name] = {
                "return_mean": float(ret.mean()),
                "return_std": float(ret.std()),
                "episodes": int(ret.size),
                "length_mean": float(np.concatenate(lengths).mean()),
            }
    finally:
        env.close()
    return out


def real_returns(
    env: gym.Env,
    policies: dict[str, Any] | None = None,
    windows: int = 512,
    horizon: int = 32,
    seed: int = 0,
    max_gap: int = 20,
) -> dict[str, dict[str, float]]:
    """:func:`imagined_returns`' figure on the real env: each policy plays ``horizon``
    steps (or to the episode's end) from the same ``windows`` states.

    The states come from uniform random play (1 to ``max_gap`` steps between two), and
    every policy starts from the env's full snapshot (``get_state`` / ``set_state``, the
    random stream included), so the policies differ only in their actions; the windows
    step the unwrapped env (no time limit within a window). ``env`` is an objects-mode
    Interventional Pong env (its state is changed); ``policies`` as in
    :func:`imagined_returns` (called on a batch of one observation).

    Returns ``{name: {"return_mean", "return_std", "episodes", "length_mean"}}`` (reward
    units per window, steps).
    """
    windows = _int_at_least("windows", windows, 1)
    horizon = _int_at_least("horizon", horizon, 1)
    max_gap = _int_at_least("max_gap", max_gap, 1)
    if policies is None:
        policies = scripted_policies(env.action_space, seed)
    if not policies:
        raise ValueError("policies is empty: give at least one {name: callable}")
    base = env.unwrapped  # windows step the bare env: no wrapper's step counter carries over
    get_state, set_state = base.get_state, base.set_state  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    totals: dict[str, list[float]] = {k: [] for k in policies}
    lengths: dict[str, list[int]] = {k: [] for k in policies}
    for _ in range(windows):
        for _ in range(int(rng.integers(1, max_gap + 1))):
            obs, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                obs, _ = env.reset()
        snap, start = get_state(), obs
        for name, policy in policies.items():
            set_state(snap)
            o, total, n = start, 0.0, 0
            for n in range(1, horizon + 1):  # noqa: B007
                action = np.asarray(policy(np.asarray(o)[None]))[0]
                o, r, term, trunc, _ = base.step(action)
                total += float(r)
                if term or trunc:
                    break
            totals[name].append(total)
            lengths[name].append(n)
        set_state(snap)
    return {
        name: {
            "return_mean": float(np.mean(totals[name])),
            "return_std": float(np.std(totals[name])),
            "episodes": windows,
            "length_mean": float(np.mean(lengths[name])),
        }
        for name in policies
    }
