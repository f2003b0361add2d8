"""Transition data for the world models: collection with a behaviour policy, and windows.

:func:`collect` steps the native vector env of an id once per regime (each sub-env fixed
to that regime) with a behaviour policy that mixes uniform random actions and ball
tracking, and keeps every step's observation, action, reward, flags, regime and
ground-truth local graph. :class:`TransitionData` cuts it into windows of T transitions
that never cross an episode boundary and batches them as
:class:`~mbrl_causal.world_models.model.SequenceBatch` (see its time alignment).

Storage per regime and sub-env row, with S steps::

    obs[k]    observation before step k         k = 0..S
    action[k], reward[k], terminated[k], truncated[k], graph[k]   of step k
    valid[k]  False for the autoreset steps of the vector env (not a transition)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from mbrl_causal.envs.regimes import REGIMES, regime_id
from mbrl_causal.world_models.model import SequenceBatch

__all__ = ["TransitionData", "collect", "parse_regimes"]

_DEAD_ZONE = 0.75 / 16.0  # the tracking policy's dead zone in observation units


def parse_regimes(spec: str) -> list[int]:
    """``simple`` (0-6), ``composite`` (7-10), ``all`` (0-10) or ``"1,gravity,..."``."""
    if spec == "simple":
        return [r.id for r in REGIMES if r.simple]
    if spec == "composite":
        return [r.id for r in REGIMES if not r.simple]
    if spec == "all":
        return [r.id for r in REGIMES]
    ids = [regime_id(p.strip()) for p in spec.split(",") if p.strip()]
    if not ids:
        raise ValueError(
            f"--regimes must be simple, composite, all or comma-separated ids/names, got {spec!r}"
        )
    return sorted(set(ids))


def behaviour_actions(
    objects: np.ndarray, random_prob: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Per sub-env: a uniform action with probability ``random_prob``, else ball tracking."""
    dy = objects[:, 2, 1] - objects[:, 1, 1]
    track = np.where(np.abs(dy) < _DEAD_ZONE, 0, np.where(dy > 0, 2, 1))
    rand = rng.integers(0, 3, len(dy))
    return np.where(rng.random(len(dy)) < random_prob, rand, track).astype(np.int64)


@dataclass
class TransitionData:
    """Rows of consecutive env steps (one row per regime and sub-env).

    Attributes:
        objects: float32 (R, S + 1, N, 4) object features (all modes: also the policy's).
        pixels: uint8 (R, S + 1, H, W, 3) or None (objects mode).
        masks: bool (R, S + 1, N, H, W) or None.
        actions: int64 (R, S).
        rewards: float32 (R, S).
        terminated, truncated, valid: bool (R, S).
        graphs: bool (R, S, N + 2, N) ground-truth local graphs.
        regimes: int64 (R,) the row's regime.
    """

    objects: np.ndarray
    pixels: np.ndarray | None
    masks: np.ndarray | None
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    valid: np.ndarray
    graphs: np.ndarray
    regimes: np.ndarray

    @property
    def n_objects(self) -> int:
        return int(self.objects.shape[2])

    def window_starts(self, length: int) -> np.ndarray:
        """(row, start) pairs (K, 2) of windows of ``length`` transitions inside episodes."""
        ok = self.valid.copy()
        ends = self.terminated | self.truncated
        out = []
        for r in range(ok.shape[0]):
            bad = np.concatenate([[0], np.cumsum(~ok[r])])
            end = np.concatenate([[0], np.cumsum(ends[r])])
            s = np.arange(0, ok.shape[1] - length + 1)
            good = (bad[s + length] - bad[s] == 0) & (end[s + length - 1] - end[s] == 0)
            out.append(np.stack([np.full(good.sum(), r), s[good]], 1))
        return np.concatenate(out) if out else np.zeros((0, 2), np.int64)

    def select_rows(self, rows: np.ndarray | Sequence[int]) -> TransitionData:
        rows = np.asarray(rows)
        return TransitionData(
            **{k: (None if v is None else v[rows]) for k, v in self.__dict__.items()}  # type: ignore[arg-type]
        )

    def batch(
        self,
        starts: np.ndarray,
        length: int,
        obs: str = "objects",
        device: torch.device | str = "cpu",
    ) -> SequenceBatch:
        """A :class:`SequenceBatch` of the windows at ``starts`` (K, 2)."""
        r = starts[:, 0:1]
        t = starts[:, 1:2] + np.arange(length)[None]
        to = np.concatenate([t, t[:, -1:] + 1], 1)  # T + 1 observations
        if obs == "objects":
            o: object = torch.from_numpy(self.objects[r, to]).to(device)
        else:
            if self.pixels is None or self.masks is None:
                raise ValueError("this data was collected without pixels; collect obs='pixels'")
            o = {
                "pixels": torch.from_numpy(self.pixels[r, to]).to(device),
                "masks": torch.from_numpy(self.masks[r, to]).to(device),
            }
        return SequenceBatch(
            o,
            torch.from_numpy(self.actions[r, t]).to(device),
            torch.from_numpy(self.rewards[r, t]).to(device),
            torch.from_numpy(~self.terminated[r, t]).float().to(device),
            torch.from_numpy(self.regimes[starts[:, 0]]).to(device),
            torch.from_numpy(self.graphs[r, t]).to(device),
        )

    def sampler(
        self, length: int, batch_size: int, rng: np.random.Generator, obs: str = "objects"
    ) -> Callable[[], SequenceBatch]:
        """A function returning random batches of windows (seeded by ``rng``)."""
        starts = self.window_starts(length)
        if len(starts) == 0:
            raise ValueError(f"no window of {length} steps fits inside one episode of the data")

        def sample() -> SequenceBatch:
            return self.batch(starts[rng.integers(0, len(starts), batch_size)], length, obs)

        return sample


def collect(
    env_id: str,
    regimes: Sequence[int],
    steps: int,
    seed: int,
    num_envs: int = 8,
    obs: str = "objects",
    random_fraction: float = 0.5,
    progress: Callable[[int], None] | None = None,
) -> TransitionData:
    """Collect about ``steps`` env steps, split evenly over ``regimes``.

    Each regime gets its own native vector env of ``env_id`` with the regime fixed (the
    id's schedule is replaced), ``num_envs`` sub-envs seeded ``seed + 1000 * k + i``.
    Sub-env i's random-action probability is spread over [random_fraction / 2,
    min(1, 1.5 * random_fraction)] so the data holds both careful and careless play.
    """
    import mbrl_causal.envs  # noqa: F401  (registers the ids)

    if env_id not in gym.registry:
        raise ValueError(f"unknown env id {env_id!r}; `mbrl-causal envs` lists them")
    if obs not in ("objects", "pixels"):
        raise ValueError(f"obs must be objects or pixels, got {obs!r}")
    per_env = max(2, -(-steps // (len(regimes) * num_envs)))
    lo, hi = random_fraction / 2, min(1.0, 1.5 * random_fraction)
    random_prob = np.linspace(lo, hi, num_envs) if num_envs > 1 else np.array([random_fraction])
    parts = []
    for k, regime in enumerate(regimes):
        env = gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            regime_schedule=int(regime),
            obs_mode="objects" if obs == "objects" else "dict",
        )
        rng = np.random.default_rng([seed, k])
        parts.append(_rollout(env, per_env, seed + 1000 * k, random_prob, rng, obs, progress))
        env.close()
    return TransitionData(
        **{  # type: ignore[arg-type]
            key: (None if parts[0][key] is None else np.concatenate([p[key] for p in parts]))
            for key in parts[0]
        }
    )


def _rollout(
    env: gym.vector.VectorEnv,
    steps: int,
    seed: int,
    random_prob: np.ndarray,
    rng: np.random.Generator,
    obs_mode: str,
    progress: Callable[[int], None] | None,
) -> dict[str, np.ndarray | None]:
    n = env.num_envs
    o, info = env.reset(seed=seed)
    pix = obs_mode == "pixels"

    def split(o: dict | np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        if isinstance(o, dict):
            return o["objects"], o["pixels"], o["masks"]
        return o, None, None

    objs, pixels, masks = split(o)
    out_obj = np.empty((steps + 1, *objs.shape), np.float32)
    out_pix = np.empty((steps + 1, *pixels.shape), np.uint8) if pix and pixels is not None else None
    out_mask = np.empty((steps + 1, *masks.shape), bool) if pix and masks is not None else None
    acts = np.empty((steps, n), np.int64)
    rew = np.empty((steps, n), np.float32)
    term, trunc, valid = (np.empty((steps, n), bool) for _ in range(3))
    graphs: np.ndarray | None = None  # allocated at the first step (shape from the info)
    regime = info["regime"].copy()
    for k in range(steps + 1):
        out_obj[k] = objs
        if out_pix is not None and out_mask is not None:
            out_pix[k], out_mask[k] = pixels, masks
        if k == steps:
            break
        a = behaviour_actions(objs, random_prob, rng)
        o, r, te, tr, info = env.step(a)
        objs, pixels, masks = split(o)
        if graphs is None:
            graphs = np.empty((steps, *info["local_graph"].shape), bool)
        acts[k], rew[k], term[k], trunc[k] = a, r, te, tr
        valid[k] = info["_local_graph"]
        graphs[k] = info["local_graph"]
        if progress is not None:
            progress(n)
    if graphs is None:
        raise ValueError("collect needs at least one step")
    t = lambda x: None if x is None else np.swapaxes(x, 0, 1)  # noqa: E731  (time, env) -> rows
    return {
        "objects": t(out_obj),
        "pixels": t(out_pix),
        "masks": t(out_mask),
        "actions": t(acts),
        "rewards": t(rew),
        "terminated": t(term),
        "truncated": t(trunc),
        "valid": t(valid),
        "graphs": t(graphs),
        "regimes": regime.astype(np.int64),
    }
