"""Ground-truth Jacobians of one MuJoCo env step by central finite differences.

One env step of a Gymnasium MuJoCo env is ``frame_skip`` calls of ``mj_step`` with the
control held. :class:`StepJacobian` differentiates that whole step (not one substep) with
respect to the state in MuJoCo's tangent space and to the control::

    x = (dq, qvel, act)        tangent state, 2 * nv + na numbers (dq: mj_integratePos)
    x' = step(x, u)            frame_skip physics steps, ctrl = u held
    J_s = dx'/dx  (nx, nx)     J_a = dx'/du  (nx, nu)

How it is computed (and why):

- every perturbed start state is a copy of the full physics state (``mj_getState`` with
  ``mjSTATE_FULLPHYSICS``) plus the env's warm start (``qacc_warmstart``) and all user
  inputs (``mjSTATE_USER``: ctrl, applied forces, mocap, ...), so each replay starts where
  the env would; the env's own ``MjData`` is only read, never written;
- positions are perturbed on the manifold with ``mj_integratePos`` (quaternions of free
  and ball joints stay unit) and differences of next positions are taken with
  ``mj_differentiatePos``; velocities and activations are perturbed additively;
- the ``2 * (nx + nu) + 1`` replays (one nominal, two per column) of a whole batch of
  states (:meth:`StepJacobian.batch`) run in one C call, optionally multithreaded, which
  is what makes it fast from Python: ``mujoco.batch.Batch.step`` where MuJoCo has it
  (4.0 and later; 1.05-1.09x the rate of the alternative idle and more with a core
  busy, see the README's speed table), else ``mujoco.rollout``;
  ``JacobianConfig.backend`` picks one, and both give the same numbers bit for bit (a
  test checks), except where a replay diverges: MuJoCo warns and resets it, then
  ``mujoco.rollout`` stops that replay and ``mujoco.batch`` steps on as the env would
  (either way the Jacobian there is meaningless);
  ``mjd_transitionFD`` is not used: it refuses the RK4 integrator (Hopper, Walker2d,
  Ant, Reacher, Swimmer) and gives one substep only (the tests chain it over
  the substeps on Euler envs as the cross-check);
- controls are perturbed inside ``ctrlrange`` (MuJoCo clamps ctrl, so a step past a bound
  would see a flat function): u+ = min(u + eps, hi), u- = max(u - eps, lo) and the column
  is (x'(u+) - x'(u-)) / (u+ - u-). Inside the range this is the central difference; at
  a bound it is one-sided (first-order accurate); within eps of a bound it is an
  asymmetric difference. Activations are perturbed additively without regard to actrange.

Finite differences give round-off noise rather than exact zeros (about
``1e-16 * |x'| / eps``), so the metrics threshold the entries (:mod:`.metrics`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import gymnasium as gym
import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

__all__ = [
    "JacobianConfig",
    "JacobianSamples",
    "StepJacobian",
    "StepJacobians",
    "collect_mujoco",
    "env_parts",
    "state_labels",
    "tangent_size",
]

_FULL = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
_USER = int(mujoco.mjtState.mjSTATE_USER)
_TIME = int(mujoco.mjtState.mjSTATE_TIME)
_INTEGRATION = int(mujoco.mjtState.mjSTATE_INTEGRATION)
_WARMSTART = int(mujoco.mjtState.mjSTATE_WARMSTART)
_HINGE_SLIDE = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
BACKENDS = ("auto", "batch", "rollout")
"""Allowed values of ``JacobianConfig.backend``."""

try:  # MuJoCo >= 4.0
    from mujoco.batch import Batch as _Batch
except ImportError:  # pragma: no cover - older MuJoCo: mujoco.rollout only
    _Batch = None


def _integration_order(model: mujoco.MjModel) -> np.ndarray:
    """Index into a :meth:`StepJacobian.snapshot` row of each ``mjSTATE_INTEGRATION`` entry.

    A snapshot is (full physics, user inputs, warm start); an integration state holds the
    same components in the order of their ``mjtState`` bits.
    """
    where: dict[int, np.ndarray] = {}
    at = 0
    for spec in (_FULL, _USER, _WARMSTART):
        for bit in (1 << k for k in range(_INTEGRATION.bit_length())):
            if spec & bit:
                size = mujoco.mj_stateSize(model, bit)
                where[bit] = np.arange(at, at + size)
                at += size
    return np.concatenate([where[b] for b in sorted(where)]).astype(np.intp)


@dataclass(frozen=True)
class JacobianConfig:
    """Finite-difference settings of :class:`StepJacobian`."""

    eps: float = 1e-6
    """Perturbation of each tangent coordinate (rad or m, rad/s or m/s) and control unit."""
    threads: int = 1
    """Threads of the C call that runs the replays (1: run in the calling thread)."""
    batch: int = 64
    """States differentiated per C call by :func:`collect_mujoco`."""
    backend: str = "auto"
    """Which MuJoCo routine runs the replays: ``"batch"`` (``mujoco.batch.Batch``, MuJoCo
    >= 4.0), ``"rollout"`` (``mujoco.rollout``) or ``"auto"``: batch where available and
    the model allows it (not with sleep or IPC enabled, nor with a Python ``mjcb_*``
    callback installed, which ``mujoco.batch`` refuses), else rollout."""

    def __post_init__(self) -> None:
        if not (isinstance(self.eps, (int, float)) and 0.0 < self.eps < 1.0):
            raise ValueError(f"eps must be a number in (0, 1), got {self.eps!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {self.threads!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {self.batch!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "batch" and _Batch is None:
            raise ValueError(
                f"backend 'batch' needs mujoco >= 4.0 (mujoco.batch), this is mujoco "
                f"{mujoco.__version__}; use 'rollout' or 'auto'"
            )

    @property
    def resolved_backend(self) -> str:
        """``backend`` with ``"auto"`` resolved for the installed MuJoCo."""
        if self.backend != "auto":
            return self.backend
        return "batch" if _Batch is not None else "rollout"


class StepJacobians(NamedTuple):
    """Jacobians of one env step at one state and control.

    Attributes:
        J_s: d x' / d x, (2 nv + na, 2 nv + na), tangent coordinates.
        J_a: d x' / d u, (2 nv + na, nu).
        next_state: The nominal next full-physics state (``mjSTATE_FULLPHYSICS`` layout),
            equal to what the env's own step gives.
    """

    J_s: np.ndarray
    J_a: np.ndarray
    next_state: np.ndarray


def tangent_size(model: mujoco.MjModel) -> int:
    """Size of the tangent state ``2 * nv + na``."""
    return 2 * model.nv + model.na


def env_parts(env: Any) -> tuple[mujoco.MjModel, mujoco.MjData, int]:
    """``(model, data, frame_skip)`` of a Gymnasium MuJoCo env (wrappers allowed).

    Raises:
        ValueError: if ``env`` is not a MuJoCo env.
    """
    base = getattr(env, "unwrapped", env)
    model, data = getattr(base, "model", None), getattr(base, "data", None)
    if not isinstance(model, mujoco.MjModel) or not isinstance(data, mujoco.MjData):
        raise ValueError(f"{base!r} is not a Gymnasium MuJoCo env (no MjModel/MjData)")
    return model, data, int(getattr(base, "frame_skip", 1))


class StepJacobian:
    """Central finite-difference Jacobians of ``frame_skip`` MuJoCo steps.

    Call it on one ``MjData`` (``jac(data, ctrl)``), or take :meth:`snapshot` of many
    states and differentiate them together with :meth:`batch`: one ``mujoco.rollout``
    call then replays the perturbed states of every snapshot, which removes the per-call
    overhead and gives ``threads`` worker threads enough work each. Both give the same
    numbers bit for bit, whatever the batch size and thread count (each replay is an
    independent deterministic simulation). One instance is not thread-safe (its buffers
    and rollout pool are shared): use one per Python thread.

    Args:
        model: The compiled model.
        frame_skip: Physics steps per env step (the control is held over them).
        config: Perturbation size, rollout threads and batch size.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.make("InvertedPendulum-v5")
        >>> _ = env.reset(seed=0)
        >>> model, data, skip = env_parts(env)
        >>> jac = StepJacobian(model, skip)(data, np.zeros(model.nu))
        >>> jac.J_s.shape, jac.J_a.shape
        ((4, 4), (4, 1))
    """

    def __init__(
        self, model: mujoco.MjModel, frame_skip: int, config: JacobianConfig | None = None
    ) -> None:
        if isinstance(frame_skip, bool) or not isinstance(frame_skip, int) or frame_skip < 1:
            raise ValueError(f"frame_skip must be an int >= 1, got {frame_skip!r}")
        self.model, self.frame_skip = model, frame_skip
        self.config = config or JacobianConfig()
        nv, na, nu = model.nv, model.na, model.nu
        self.nx, self.nu = 2 * nv + na, nu
        self.n_rollouts = 1 + 2 * (self.nx + nu)
        self._qpos = mujoco.mj_stateSize(model, _TIME)
        self._qvel = self._qpos + model.nq
        self._end = self._qvel + nv + na  # qvel and act are contiguous in the state
        self._linear = bool(np.isin(model.jnt_type, _HINGE_SLIDE).all())
        self._nstate = mujoco.mj_stateSize(model, _FULL)
        self._nuser = mujoco.mj_stateSize(model, _USER)
        self.snapshot_size = self._nstate + self._nuser + nv
        """Length of one :meth:`snapshot` row (full physics, user inputs, warm start)."""
        self._buffers: dict[int, tuple[np.ndarray, ...]] = {}
        self.backend = self.config.resolved_backend
        """The routine in use: ``"batch"`` or ``"rollout"``."""
        unbatchable = int(mujoco.mjtEnableBit.mjENBL_SLEEP) | int(mujoco.mjtEnableBit.mjENBL_IPC)
        if self.config.backend == "auto" and model.opt.enableflags & unbatchable:
            self.backend = "rollout"  # a non-persistent mujoco.batch refuses these
        self._batch: Any = None  # mujoco.batch.Batch, made at the first call
        self._order = _integration_order(model)
        self._datas: list[mujoco.MjData] = []
        self._pool: Any = None
        if self.backend == "rollout":
            self._start_rollout()
        lo, hi = model.actuator_ctrlrange.T.copy()
        limited = model.actuator_ctrllimited.astype(bool)
        self._lo = np.where(limited, lo, -np.inf)
        self._hi = np.where(limited, hi, np.inf)
        if (self._hi <= self._lo).any():
            bad = np.flatnonzero(self._hi <= self._lo).tolist()
            raise ValueError(f"actuators {bad} have an empty ctrlrange; cannot differentiate")

    def _start_rollout(self) -> None:
        threads = self.config.threads
        self.backend, self._batch, self._buffers = "rollout", None, {}
        self._datas = [mujoco.MjData(self.model) for _ in range(threads)]
        self._pool = mj_rollout.Rollout(nthread=threads if threads > 1 else 0)

    def close(self) -> None:
        """Free the thread pool (also done when the object is collected)."""
        if self._pool is not None:
            self._pool.close()
        self._batch = None

    def snapshot(self, data: mujoco.MjData, ctrl: np.ndarray | None = None) -> np.ndarray:
        """Everything a replay of ``data``'s next step needs, as one row for :meth:`batch`.

        The row holds the full physics state, the user inputs with ``ctrl`` (default
        ``data.ctrl``) in place of the control, and the warm start. ``data`` is only read.
        """
        u = np.array(data.ctrl if ctrl is None else ctrl, dtype=np.float64).reshape(-1)
        if u.shape != (self.nu,) or not np.isfinite(u).all():
            raise ValueError(f"ctrl must be {self.nu} finite numbers, got shape {u.shape}")
        outside = np.flatnonzero((u < self._lo) | (u > self._hi))
        if outside.size:  # MuJoCo would clamp it: the derivative there is not the env's
            j = int(outside[0])
            raise ValueError(
                f"ctrl[{j}] = {u[j]:g} is outside actuator {j}'s ctrlrange "
                f"[{self._lo[j]:g}, {self._hi[j]:g}]; give controls inside the ranges"
            )
        row = np.empty(self.snapshot_size)
        state, user = row[: self._nstate], row[self._nstate : self._nstate + self._nuser]
        mujoco.mj_getState(self.model, data, state, _FULL)
        mujoco.mj_getState(self.model, data, user, _USER)
        user[: self.nu] = u
        row[self._nstate + self._nuser :] = data.qacc_warmstart
        return row

    def _buffers_for(self, n: int) -> tuple[np.ndarray, ...]:
        if n not in self._buffers:
            b, m = n * self.n_rollouts, self.model
            t = self.frame_skip if self.backend == "rollout" else 1  # batch: ctrl is held
            self._buffers = {  # keep one size only: batches are usually all alike
                n: (np.empty((b, self._nstate)), np.empty((b, t, self._nuser)),
                    np.empty((b, m.nv)), np.empty((b, t, self._nstate)),
                    np.empty((b, t, m.nsensordata)))
            }  # fmt: skip
        return self._buffers[n]

    def _fill_starts(
        self, snaps: np.ndarray, start: np.ndarray, control: np.ndarray, warm: np.ndarray
    ) -> np.ndarray:
        """Write the perturbed start states and controls; return the control steps du."""
        m, eps, nv = self.model, self.config.eps, self.model.nv
        n, b = len(snaps), self.n_rollouts
        start, control = start.reshape(n, b, -1), control.reshape(n, b, control.shape[1], -1)
        state = snaps[:, : self._nstate]
        user = snaps[:, self._nstate : self._nstate + self._nuser]
        start[:] = state[:, None]
        control[:] = user[:, None, None]
        warm.reshape(n, b, nv)[:] = snaps[:, None, self._nstate + self._nuser :]
        rows = start[:, 1 : 1 + 2 * nv, self._qpos : self._qvel]
        if self._linear:  # hinge/slide only: the tangent step is a plain addition
            rows[:, 0::2] += eps * np.eye(nv)
            rows[:, 1::2] -= eps * np.eye(nv)
        else:
            dv = np.zeros(nv)
            for s in range(n):
                q0 = state[s, self._qpos : self._qvel]
                for i in range(nv):
                    for k, sign in enumerate((eps, -eps)):
                        rows[s, 2 * i + k] = q0
                        dv[i] = sign
                        mujoco.mj_integratePos(m, rows[s, 2 * i + k], dv, 1.0)
                    dv[i] = 0.0
        n_vel = self.nx - nv  # qvel and act
        vel = start[:, 1 + 2 * nv : 1 + 2 * self.nx, self._qvel : self._end]
        vel[:, 0::2] += eps * np.eye(n_vel)
        vel[:, 1::2] -= eps * np.eye(n_vel)
        ctrl = user[:, : self.nu]
        up = np.minimum(ctrl + eps, self._hi)
        down = np.maximum(ctrl - eps, self._lo)
        ctl = control[:, 1 + 2 * self.nx :, :, : self.nu]
        for j in range(self.nu):
            ctl[:, 2 * j, :, j] = up[:, j, None]
            ctl[:, 2 * j + 1, :, j] = down[:, j, None]
        return up - down

    def _differences(self, final: np.ndarray) -> np.ndarray:
        """Tangent differences x'(plus) - x'(minus), (n, nx + nu, nx)."""
        nv = self.model.nv
        plus, minus = final[:, 1::2], final[:, 2::2]
        diff = np.empty((*plus.shape[:2], self.nx))
        diff[..., nv:] = plus[..., self._qvel : self._end] - minus[..., self._qvel : self._end]
        pos = slice(self._qpos, self._qvel)
        if self._linear:
            diff[..., :nv] = plus[..., pos] - minus[..., pos]
        else:
            for s in range(plus.shape[0]):
                for k in range(plus.shape[1]):
                    mujoco.mj_differentiatePos(
                        self.model,
                        diff[s, k, :nv],
                        1.0,
                        minus[s, k, pos],
                        plus[s, k, pos],
                    )
        return diff

    def batch(self, snapshots: np.ndarray) -> StepJacobians:
        """Jacobians at many states at once: ``snapshots`` is (n, snapshot_size).

        Returns :class:`StepJacobians` whose fields have a leading batch axis: ``J_s``
        (n, nx, nx), ``J_a`` (n, nx, nu), ``next_state`` (n, full-physics size).
        """
        snaps = np.asarray(snapshots, dtype=np.float64)
        if snaps.ndim != 2 or snaps.shape[1] != self.snapshot_size or len(snaps) == 0:
            raise ValueError(
                f"snapshots must be (n >= 1, {self.snapshot_size}) rows of "
                f"StepJacobian.snapshot, got shape {snaps.shape}"
            )
        if not np.isfinite(snaps).all():
            rows = np.flatnonzero(~np.isfinite(snaps).all(1)).tolist()
            raise ValueError(f"snapshots {rows} hold NaN or inf; cannot differentiate there")
        if self.backend == "batch" and self.config.backend == "auto":
            try:
                return self._batch_jacobians(snaps)
            except ValueError as e:  # mujoco.batch refuses the model: Python callbacks
                if "callback" not in str(e) and "persistent" not in str(e):
                    raise
                self._start_rollout()
        return self._batch_jacobians(snaps)

    def _batch_jacobians(self, snaps: np.ndarray) -> StepJacobians:
        n = len(snaps)
        start, control, warm, out, sensors = self._buffers_for(n)
        du = self._fill_starts(snaps, start, control, warm)
        if self.backend == "batch":
            final = self._run_batch(start, control[:, 0], warm)
        else:
            self._pool.rollout(
                [self.model] * len(start), self._datas, start, control, control_spec=_USER,
                skip_checks=True, nstep=self.frame_skip, initial_warmstart=warm,
                state=out, sensordata=sensors,
            )  # fmt: skip
            final = out[:, -1]
        final = final.reshape(n, self.n_rollouts, self._nstate)
        diff = self._differences(final)
        nx = self.nx
        j_s = np.swapaxes(diff[:, :nx] / (2.0 * self.config.eps), 1, 2)
        j_a = np.swapaxes(diff[:, nx:] / du[:, :, None], 1, 2)
        return StepJacobians(
            np.ascontiguousarray(j_s), np.ascontiguousarray(j_a), final[:, 0].copy()
        )

    def _run_batch(self, start: np.ndarray, user: np.ndarray, warm: np.ndarray) -> np.ndarray:
        """``frame_skip`` steps of every start row through ``mujoco.batch``: final states."""
        b = len(start)
        if self._batch is None or self._batch.nsim < b:
            self._batch = _Batch(self.model, b, nthread=self.config.threads)
        # run on self.model itself, not the batch's copy of it, so that edits of the model
        # between calls take effect as with mujoco.rollout (MuJoCo asks for set_models again
        # after an edit)
        self._batch.set_models(self.model)
        rows = np.concatenate([start, user, warm], axis=1)[:, self._order]
        ids = None if b == self._batch.nsim else np.arange(b)
        self._batch.state[:b] = rows
        self._batch.step(ids, nstep=self.frame_skip)
        final = np.empty_like(start)
        final[:, self._order[self._order < self._nstate]] = self._batch.state[:b][
            :, self._order < self._nstate
        ]
        return final

    def __call__(self, data: mujoco.MjData, ctrl: np.ndarray | None = None) -> StepJacobians:
        """Jacobians at ``data``'s current state with control ``ctrl`` (default data.ctrl).

        ``data`` is not modified.
        """
        j = self.batch(self.snapshot(data, ctrl)[None])
        return StepJacobians(j.J_s[0], j.J_a[0], j.next_state[0])


@dataclass
class JacobianSamples:
    """Jacobians along trajectories, with the transitions they were taken at.

    Attributes:
        J_s: (S, nx, nx) state Jacobians, one per env step.
        J_a: (S, nx, nu) action Jacobians (None where the action is not differentiable).
        episodes: (S,) episode id of each sample (consecutive, in time order).
        states: (S, nx) state before each step (MuJoCo: qpos, qvel, act).
        actions: (S, nu) actions ((S,) integers for a discrete-action policy on Pong).
        next_states: (S, nx) state after each step.
        state_labels: One name per state coordinate (tangent coordinates for MuJoCo).
        action_labels: One name per action coordinate.
        extra: Env-specific arrays (Interventional Pong: ``blocks``, ``graphs``).
    """

    J_s: np.ndarray
    J_a: np.ndarray | None
    episodes: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    next_states: np.ndarray
    state_labels: list[str]
    action_labels: list[str]
    extra: dict[str, np.ndarray] = field(default_factory=dict)


_DOF_NAMES = {
    int(mujoco.mjtJoint.mjJNT_FREE): ("x", "y", "z", "rx", "ry", "rz"),
    int(mujoco.mjtJoint.mjJNT_BALL): ("rx", "ry", "rz"),
}


def check_counts(steps: int, episodes: int) -> None:
    """ValueError unless ``steps >= episodes >= 1`` (integers)."""
    for name, v in (("steps", steps), ("episodes", episodes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if steps < episodes:
        raise ValueError(f"steps ({steps}) must be >= episodes ({episodes})")


THREADS_PER_CPU_BATCH = 4
"""Threads per CPU that :func:`default_threads` gives the ``mujoco.batch`` backend."""


def default_threads(backend: str = "auto") -> int:
    """Threads for the replays: the CPUs this process may run on (its affinity mask:
    taskset, cpusets), times :data:`THREADS_PER_CPU_BATCH` (at most 64) on the
    ``mujoco.batch`` backend.

    Why more threads than CPUs there: measured on 2 cores, a batch with one thread per CPU
    is held up by whichever core another process takes (0.85-0.88x the ``mjd_transitionFD``
    chain with one core busy, against 1.27-1.35x idle); with 4 per CPU it kept 1.02-1.06x
    busy and the same rate idle (README, "Speed"). ``mujoco.rollout`` gets one per CPU.
    """
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    if JacobianConfig(backend=backend).resolved_backend == "batch":
        return min(THREADS_PER_CPU_BATCH * cpus, 64)
    return cpus


def state_labels(model: mujoco.MjModel) -> list[str]:
    """Names of the tangent coordinates: ``q:<joint>[.<dof>]``, ``v:...``, ``act:<i>``."""
    dofs: list[str] = []
    for j in range(model.njnt):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or f"joint{j}"
        parts = _DOF_NAMES.get(int(model.jnt_type[j]))
        dofs += [f"{name}.{p}" for p in parts] if parts else [name]
    return (
        [f"q:{d}" for d in dofs] + [f"v:{d}" for d in dofs] + [f"act:{i}" for i in range(model.na)]
    )


def _actuator_labels(model: mujoco.MjModel) -> list[str]:
    return [
        mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, i) or f"ctrl{i}"
        for i in range(model.nu)
    ]


def _physics_state(data: mujoco.MjData) -> np.ndarray:
    return np.concatenate([data.qpos, data.qvel, data.act])


def collect_mujoco(
    env_id: str,
    steps: int,
    episodes: int = 1,
    seed: int = 0,
    config: JacobianConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> JacobianSamples:
    """Env-step Jacobians along random-policy trajectories of a Gymnasium MuJoCo env.

    ``steps`` and ``episodes`` must be >= 1. Each episode runs at most
    ``ceil(steps / episodes)`` steps; an episode that ends
    earlier (terminated or truncated) is followed by a new one, until ``steps`` samples.
    Actions are uniform in the action space (seeded by ``seed``), i.e. inside ctrlrange.

    ``states`` are ``(qpos, qvel, act)``: tangent coordinates exactly when every joint is a
    hinge or a slide (no quaternion). The env is stepped first and its states are
    differentiated ``config.batch`` at a time (:meth:`StepJacobian.batch`), so
    ``progress(k)`` is called after every batch of ``k`` samples.
    """
    check_counts(steps, episodes)
    env = gym.make(env_id)
    model, data, skip = env_parts(env)
    jac = StepJacobian(model, skip, config)
    per_episode = math.ceil(steps / episodes)
    rng_seed = np.random.default_rng(seed).integers(2**31)
    env.action_space.seed(int(rng_seed))
    rows: dict[str, list[Any]] = {k: [] for k in ("ep", "s", "a", "s2")}
    jacobians: list[StepJacobians] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            jacobians.append(jac.batch(np.array(pending)))
            if progress is not None:
                progress(len(pending))
            pending.clear()

    episode, t = 0, 0
    env.reset(seed=seed)
    try:
        for _ in range(steps):
            u = np.asarray(env.action_space.sample(), np.float64)
            pending.append(jac.snapshot(data, u))
            before = _physics_state(data)
            _, _, terminated, truncated, _ = env.step(u)
            for key, value in zip(rows, (episode, before, u, _physics_state(data)), strict=True):
                rows[key].append(value)
            t += 1
            if terminated or truncated or t >= per_episode:
                episode, t = episode + 1, 0
                env.reset()
            if len(pending) >= jac.config.batch:
                flush()
        flush()
    finally:
        jac.close()
        env.close()
    return JacobianSamples(
        np.concatenate([j.J_s for j in jacobians]), np.concatenate([j.J_a for j in jacobians]),
        np.array(rows["ep"]), np.array(rows["s"]), np.array(rows["a"]), np.array(rows["s2"]),
        state_labels(model), _actuator_labels(model),
    )  # fmt: skip
