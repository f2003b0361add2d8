"""Replay on disk: bounded, chunked per sub-env, sequences inside one episode.

Each sub-env's stream of steps is cut into chunks of ``chunk_len`` steps. A chunk holds,
in the layout of :class:`~mbrl_causal.world_models.data.TransitionData`::

    obs[k]   observation before step k              k = 0..L   (L + 1 observations)
    action[k], reward[k], terminated[k], truncated[k], valid[k], regime[k], token[k],
    graph[k]                                        of step k  k = 0..L-1

``valid[k]`` is False for the vector env's autoreset steps (the step after an episode
ended: not a transition), so ``is_first`` of step k is ``not valid[k - 1]``. Truncation
is not termination: the continuation target is ``1 - terminated`` only. ``regime`` is the
env's regime (ground truth, for metrics); ``token`` is the codebook slot the agent used
(what the world model is trained with: the regime id under ``--regime-info oracle``, the
agent's own inference under ``none``).

A finished chunk is written at once, atomically, as ``replay/<serial>-env<i>.npz``; a
checkpoint first flushes the unfinished chunks and then records the list of files, so a
resumed run loads exactly the replay of its checkpoint (files written after it are
deleted) and reads every file once. Beyond ``capacity`` steps the oldest chunks are
dropped (file and memory).

Sequences of T transitions are sampled uniformly over the valid windows of the chunks
(all T steps valid, no episode end before the last step, one regime and one token), with
a seeded ``np.random.Generator``: they never cross an episode boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl_causal.io import write_atomic
from mbrl_causal.world_models.model import SequenceBatch

__all__ = ["Replay"]

STEP_KEYS = ("action", "reward", "terminated", "truncated", "valid", "regime", "token", "graph")


class Replay:
    """Chunked on-disk replay of a vector env's streams.

    Args:
        directory: Folder of the chunk files (created).
        num_envs: Sub-envs (one stream each).
        chunk_len: Steps per chunk.
        capacity: Steps kept (oldest chunks dropped beyond it).
        obs_keys: Observation arrays stored per step: ``("objects",)`` or
            ``("objects", "pixels", "masks")``.
    """

    def __init__(
        self,
        directory: str | Path,
        num_envs: int,
        chunk_len: int,
        capacity: int,
        obs_keys: Sequence[str] = ("objects",),
    ) -> None:
        if chunk_len < 2:
            raise ValueError(f"chunk_len must be >= 2, got {chunk_len}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.num_envs, self.chunk_len, self.capacity = num_envs, chunk_len, capacity
        self.obs_keys = tuple(obs_keys)
        self.chunks: list[dict[str, np.ndarray]] = []
        self.names: list[str] = []
        self.serial = 0
        self.added = 0  # steps ever added (including dropped ones)
        self._open: list[dict[str, list[Any]]] = [self._empty() for _ in range(num_envs)]
        self._last_obs: list[dict[str, np.ndarray] | None] = [None] * num_envs
        self._starts: list[np.ndarray] = []  # valid window starts per chunk, for seq_len
        self._seq_len: int | None = None

    # ------------------------------------------------------------------ adding
    def _empty(self) -> dict[str, list[Any]]:
        return {k: [] for k in (*self.obs_keys, *STEP_KEYS)}

    @property
    def size(self) -> int:
        """Steps held in finished chunks."""
        return sum(len(c["action"]) for c in self.chunks)

    def add(
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        valid: np.ndarray,
        regime: np.ndarray,
        token: np.ndarray,
        graph: np.ndarray,
    ) -> None:
        """Add one vector step: arrays with a leading sub-env axis (``obs`` before it)."""
        fields = {"action": action, "reward": reward, "terminated": terminated,
                  "truncated": truncated, "valid": valid, "regime": regime, "token": token,
                  "graph": graph}  # fmt: skip
        for i in range(self.num_envs):
            cur = self._open[i]
            for k in self.obs_keys:
                cur[k].append(np.asarray(obs[k][i]))
            for k, v in fields.items():
                cur[k].append(np.asarray(v[i]))
            self._last_obs[i] = {k: np.asarray(next_obs[k][i]) for k in self.obs_keys}
            if len(cur["action"]) >= self.chunk_len:
                self._finish(i)
        self.added += self.num_envs

    def _finish(self, i: int) -> None:
        cur, last = self._open[i], self._last_obs[i]
        self._open[i] = self._empty()
        if not cur["action"] or last is None:
            return
        chunk = {k: np.stack([*cur[k], last[k]]) for k in self.obs_keys}
        chunk.update({k: np.stack(cur[k]) for k in STEP_KEYS})
        name = f"{self.serial:08d}-env{i}.npz"
        self.serial += 1

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **chunk)  # type: ignore[arg-type]

        write_atomic(self.dir / name, write, ".npz")
        self._append(name, chunk)
        while self.size > self.capacity and len(self.chunks) > 1:
            self._drop_oldest()

    def _append(self, name: str, chunk: dict[str, np.ndarray]) -> None:
        self.chunks.append(chunk)
        self.names.append(name)
        if self._seq_len is not None:
            self._starts.append(self._valid_starts(chunk, self._seq_len))

    def _drop_oldest(self) -> None:
        self.chunks.pop(0)
        name = self.names.pop(0)
        if self._starts:
            self._starts.pop(0)
        (self.dir / name).unlink(missing_ok=True)

    def flush(self) -> None:
        """Write every unfinished chunk (a checkpoint calls this first)."""
        for i in range(self.num_envs):
            self._finish(i)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint records (call :meth:`flush` first)."""
        return {"names": list(self.names), "serial": self.serial, "added": self.added}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load the chunks a checkpoint lists (each file read once); delete later ones."""
        names = list(state["names"])
        missing = [n for n in names if not (self.dir / n).is_file()]
        if missing:
            raise ValueError(
                f"replay folder {str(self.dir)!r} lacks {len(missing)} chunk file(s) of the "
                f"checkpoint (first: {missing[0]}); the run directory is incomplete"
            )
        keep = set(names)
        for f in self.dir.glob("*.npz"):
            if f.name not in keep:
                f.unlink()
        self.chunks, self.names, self._starts = [], [], []
        for n in names:
            with np.load(self.dir / n) as z:
                self._append(n, {k: z[k] for k in z.files})
        self.serial, self.added = int(state["serial"]), int(state["added"])
        self._open = [self._empty() for _ in range(self.num_envs)]
        self._last_obs = [None] * self.num_envs

    # ------------------------------------------------------------------ sampling
    @staticmethod
    def _valid_starts(chunk: dict[str, np.ndarray], length: int) -> np.ndarray:
        n = len(chunk["action"])
        if n < length:
            return np.zeros(0, np.int64)
        s = np.arange(n - length + 1)
        bad = np.concatenate([[0], np.cumsum(~chunk["valid"])])
        ends = np.concatenate([[0], np.cumsum(chunk["terminated"] | chunk["truncated"])])
        change = np.concatenate(
            [[0], np.cumsum((np.diff(chunk["regime"]) != 0) | (np.diff(chunk["token"]) != 0))]
        )
        ok = (bad[s + length] - bad[s] == 0) & (ends[s + length - 1] - ends[s] == 0)
        ok &= change[s + length - 1] - change[s] == 0
        return s[ok]

    def windows(self, length: int) -> int:
        """Number of valid windows of ``length`` transitions."""
        self._index(length)
        return int(sum(len(s) for s in self._starts))

    def _index(self, length: int) -> None:
        if self._seq_len != length:
            self._seq_len = length
            self._starts = [self._valid_starts(c, length) for c in self.chunks]

    def sample(
        self, batch_size: int, length: int, rng: np.random.Generator, device: str = "cpu"
    ) -> SequenceBatch:
        """B uniformly drawn windows of ``length`` transitions as a SequenceBatch.

        ``regimes`` of the batch holds the token (codebook slot) of each window.
        """
        self._index(length)
        counts = np.array([len(s) for s in self._starts], np.int64)
        total = int(counts.sum())
        if total == 0:
            raise ValueError(
                f"replay has no window of {length} steps inside one episode yet "
                f"({self.size} steps stored); prefill more steps or lower seq_len"
            )
        flat = rng.integers(0, total, batch_size)
        which = np.searchsorted(np.cumsum(counts), flat, side="right")
        offset = flat - (np.cumsum(counts) - counts)[which]
        starts = [(int(c), int(self._starts[c][o])) for c, o in zip(which, offset, strict=True)]
        return self._batch(starts, length, device)

    def _batch(self, starts: list[tuple[int, int]], length: int, device: str) -> SequenceBatch:
        def take(key: str, extra: int) -> torch.Tensor:
            arr = np.stack([self.chunks[c][key][s : s + length + extra] for c, s in starts])
            return torch.from_numpy(arr).to(device)

        if self.obs_keys == ("objects",):
            obs: Any = take("objects", 1)
        else:
            obs = {"pixels": take("pixels", 1), "masks": take("masks", 1)}
        return SequenceBatch(
            obs,
            take("action", 0),
            take("reward", 0).float(),
            (~take("terminated", 0)).float(),
            take("token", 0)[:, 0].long(),
            take("graph", 0),
        )
