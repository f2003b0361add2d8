"""Finite-difference env-step Jacobians: held to mjd_transitionFD chains and closed forms."""

from __future__ import annotations

import os

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from mbrl_causal.analysis import jacobian as jacobian_module
from mbrl_causal.analysis.jacobian import JacobianConfig, StepJacobian, env_parts

_INTEGRATION = int(mujoco.mjtState.mjSTATE_INTEGRATION)


def _chain(m: mujoco.MjModel, d: mujoco.MjData, skip: int, u: np.ndarray, eps: float):
    """MuJoCo's own per-substep A, B (mjd_transitionFD, centred) multiplied over the step."""
    state = np.empty(mujoco.mj_stateSize(m, _INTEGRATION))
    mujoco.mj_getState(m, d, state, _INTEGRATION)
    d2 = mujoco.MjData(m)
    mujoco.mj_setState(m, d2, state, _INTEGRATION)
    d2.ctrl[:] = u
    nx = 2 * m.nv + m.na
    a, b = np.zeros((nx, nx)), np.zeros((nx, m.nu))
    j_s, j_a = np.eye(nx), np.zeros((nx, m.nu))
    for _ in range(skip):
        mujoco.mjd_transitionFD(m, d2, eps, True, a, b, None, None)
        j_s, j_a = a @ j_s, a @ j_a + b
        mujoco.mj_step(m, d2)
    return j_s, j_a


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Pusher-v5"])
def test_matches_mjd_transition_fd_chain_on_euler_envs(env_id: str) -> None:
    # Both are central differences with eps = 1e-6 of the same function; where it is
    # smooth they differ by round-off (~1e-16 |x'| / eps = 1e-10 relative, times the
    # conditioning of the contact solve) and O(eps^2) truncation: measured over 200
    # random-policy states, the median relative error is 2e-8 and the 99% quantile 2e-5
    # (HalfCheetah 3e-6). A contact switching inside the eps-ball makes both estimates
    # scale like 1/eps and compares nothing: such states are recognised by disagreement
    # between eps and 10 eps and skipped (at least 3 of the 4 states must remain).
    env = gym.make(env_id)
    env.reset(seed=3)
    env.action_space.seed(3)
    m, d, skip = env_parts(env)
    jac, coarse = StepJacobian(m, skip), StepJacobian(m, skip, JacobianConfig(eps=1e-5))
    checked = 0
    for t in range(24):
        u = env.action_space.sample()
        if t % 6 == 5:
            mine = jac(d, u)
            scale = max(1.0, float(np.abs(mine.J_s).max()))
            if np.abs(coarse(d, u).J_s - mine.J_s).max() < 1e-3 * scale:
                j_s, j_a = _chain(m, d, skip, u, 1e-6)
                np.testing.assert_allclose(mine.J_s, j_s, rtol=0, atol=1e-4 * scale)
                a_scale = max(1.0, float(np.abs(j_a).max()))
                np.testing.assert_allclose(mine.J_a, j_a, rtol=0, atol=1e-4 * a_scale)
                checked += 1
        env.step(u)
    assert checked >= 3


_FREE_BODY = """
<mujoco>
  <option gravity="0 0 0" timestep="0.01" integrator="{integrator}">
    <flag contact="disable"/>
  </option>
  <worldbody>
    <body><freejoint/><geom type="sphere" size="0.1" mass="2"/></body>
  </worldbody>
</mujoco>
"""


def _skew(w: np.ndarray) -> np.ndarray:
    return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])


def _exp_so3(phi: np.ndarray) -> np.ndarray:
    th = np.linalg.norm(phi)
    k = _skew(phi / th)
    return np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * k @ k


def _right_jacobian(phi: np.ndarray) -> np.ndarray:
    th, k = np.linalg.norm(phi), _skew(phi)
    return np.eye(3) - (1 - np.cos(th)) / th**2 * k + (th - np.sin(th)) / th**3 * k @ k


@pytest.mark.parametrize("integrator", ["Euler", "RK4"])
def test_free_body_without_forces_is_closed_form(integrator: str) -> None:
    # A sphere (isotropic inertia) without gravity or contacts keeps its linear velocity
    # v (world frame) and angular velocity w (body frame): after T = n h, p' = p + T v and
    # R' = R exp(T w). In tangent coordinates (local rotation) dp'/dp = I, dp'/dv = T I,
    # dr'/dr = exp(T w)^T, dr'/dw = T J_r(T w) (the right Jacobian of SO(3)), and the
    # velocities stay: dv'/dv = dw'/dw = I. The quaternion goes through
    # mj_integratePos/mj_differentiatePos.
    m = mujoco.MjModel.from_xml_string(_FREE_BODY.format(integrator=integrator))
    d = mujoco.MjData(m)
    d.qpos[:] = [0.3, -0.2, 0.5, *(np.array([1.0, 0.2, -0.3, 0.4]) / np.sqrt(1.29))]
    d.qvel[:] = [0.5, -1.0, 2.0, 0.7, -0.4, 1.1]
    skip = 5
    jac = StepJacobian(m, skip)(d)
    t = skip * m.opt.timestep
    w = d.qvel[3:]
    expected = np.eye(12)
    expected[0:3, 6:9] = t * np.eye(3)
    expected[3:6, 3:6] = _exp_so3(t * w).T
    expected[3:6, 9:12] = t * _right_jacobian(t * w)
    np.testing.assert_allclose(jac.J_s, expected, atol=1e-7)
    assert jac.J_a.shape == (12, 0)


_PENDULUM = """
<mujoco>
  <option gravity="0 0 -9.81" timestep="0.005" integrator="{integrator}"/>
  <worldbody>
    <body>
      <joint name="hinge" type="hinge" axis="0 1 0"/>
      <geom type="sphere" size="0.05" pos="0 0 -0.5" mass="1.5"/>
    </body>
  </worldbody>
  <actuator>
    <motor joint="hinge" gear="2" ctrllimited="true" ctrlrange="-1 1"/>
  </actuator>
</mujoco>
"""


def _pendulum_linearisation(m: mujoco.MjModel, d: mujoco.MjData, integrator: str, skip: int):
    """Exact env-step Jacobian at the hanging equilibrium from the linear system.

    x = (theta, omega), x_dot = A x + b u with A = [[0, 1], [-m g l / I, 0]],
    b = [0, gear / I]. At an equilibrium every Euler/RK4 stage is evaluated at the
    equilibrium, so the step Jacobian is the integrator applied to the linear system.
    """
    mass, length = m.body_mass[1], 0.5
    inertia = mass * length**2 + 0.4 * mass * 0.05**2  # point at l plus the sphere's own
    a = np.array([[0.0, 1.0], [-mass * 9.81 * length / inertia, 0.0]])
    b = np.array([0.0, m.actuator_gear[0, 0] / inertia])
    h = m.opt.timestep
    if integrator == "Euler":  # semi-implicit: omega' = omega + h f, theta' = theta + h omega'
        step = np.array([[1.0 + h * h * a[1, 0], h], [h * a[1, 0], 1.0]])
        bu = np.array([h * h * b[1], h * b[1]])
    else:
        ha = h * a
        step = np.eye(2) + ha + ha @ ha / 2 + ha @ ha @ ha / 6 + ha @ ha @ ha @ ha / 24
        bu = h * (np.eye(2) + ha / 2 + ha @ ha / 6 + ha @ ha @ ha / 24) @ b
    j_s, j_a = np.eye(2), np.zeros(2)
    for _ in range(skip):
        j_s, j_a = step @ j_s, step @ j_a + bu
    return j_s, j_a[:, None]


@pytest.mark.parametrize("integrator", ["Euler", "RK4"])
def test_pendulum_matches_its_linearisation(integrator: str) -> None:
    m = mujoco.MjModel.from_xml_string(_PENDULUM.format(integrator=integrator))
    d = mujoco.MjData(m)
    j_s, j_a = _pendulum_linearisation(m, d, integrator, skip=4)
    jac = StepJacobian(m, 4)(d, np.zeros(1))
    np.testing.assert_allclose(jac.J_s, j_s, atol=1e-8)
    np.testing.assert_allclose(jac.J_a, j_a, atol=1e-8)
    # and, loosely, the continuous-time flow expm(A T) of the linearised pendulum (a
    # rotation at w = sqrt(m g l / I)): the integrators' error is O(h) per unit time
    mass = m.body_mass[1]
    w = np.sqrt(mass * 9.81 * 0.5 / (mass * 0.5**2 + 0.4 * mass * 0.05**2))
    t = 4 * m.opt.timestep
    flow = np.array([[np.cos(w * t), np.sin(w * t) / w], [-w * np.sin(w * t), np.cos(w * t)]])
    np.testing.assert_allclose(jac.J_s, flow, atol=5 * m.opt.timestep)


def test_ctrl_at_a_bound_uses_a_one_sided_difference() -> None:
    # The dynamics are linear in u, so the one-sided column equals the interior one. A
    # central difference across the bound would see MuJoCo's clamp and give half of it.
    m = mujoco.MjModel.from_xml_string(_PENDULUM.format(integrator="Euler"))
    d = mujoco.MjData(m)
    jac = StepJacobian(m, 4)
    inside = jac(d, np.array([0.5])).J_a
    at_top, at_bottom = jac(d, np.array([1.0])).J_a, jac(d, np.array([-1.0])).J_a
    np.testing.assert_allclose(at_top, inside, rtol=1e-6)
    np.testing.assert_allclose(at_bottom, inside, rtol=1e-6)
    near = jac(d, np.array([1.0 - 1e-7])).J_a  # within eps: an asymmetric difference
    np.testing.assert_allclose(near, inside, rtol=1e-5)


@pytest.mark.parametrize("env_id", ["Ant-v5", "Hopper-v5"])
def test_state_is_restored_exactly(env_id: str) -> None:
    # Stepping after a Jacobian gives bit-for-bit what stepping without one gives, and the
    # nominal replay is the env's own next state (warm start and user inputs included).
    runs = []
    for with_jacobian in (False, True):
        env = gym.make(env_id)
        env.reset(seed=5)
        env.action_space.seed(5)
        m, d, skip = env_parts(env)
        jac = StepJacobian(m, skip)
        obs = []
        for _ in range(15):
            u = env.action_space.sample()
            nominal = jac(d, u).next_state if with_jacobian else None
            obs.append(env.step(u)[0])
            if nominal is not None:
                state = np.empty_like(nominal)
                mujoco.mj_getState(m, d, state, int(mujoco.mjtState.mjSTATE_FULLPHYSICS))
                np.testing.assert_array_equal(state, nominal)
        runs.append(np.array(obs))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_rk4_envs_and_bad_input() -> None:
    env = gym.make("Walker2d-v5")
    env.reset(seed=0)
    m, d, skip = env_parts(env)
    jac = StepJacobian(m, skip)(d, np.zeros(m.nu))
    assert jac.J_s.shape == (18, 18) and np.isfinite(jac.J_s).all()
    with pytest.raises(ValueError, match="ctrl must be 6 finite numbers"):
        StepJacobian(m, skip)(d, np.zeros(2))
    with pytest.raises(ValueError, match="eps must be"):
        JacobianConfig(eps=0.0)
    with pytest.raises(ValueError, match="frame_skip"):
        StepJacobian(m, 0)
    with pytest.raises(ValueError, match="not a Gymnasium MuJoCo env"):
        env_parts(object())


_NO_BATCH = "mujoco.batch needs MuJoCo >= 4.0; this MuJoCo has mujoco.rollout only"


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(
            "batch", marks=pytest.mark.skipif(jacobian_module._Batch is None, reason=_NO_BATCH)
        ),
        "rollout",
    ],
)
@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Ant-v5"])
def test_batches_threads_and_backends_give_the_single_state_numbers_bit_for_bit(
    env_id: str, backend: str
) -> None:
    # Ant has a free joint (the mj_integratePos / mj_differentiatePos path), HalfCheetah
    # only hinges and slides (plain additions); contacts make both non-trivial. The
    # reference is one state at a time on the *other* backend where there is one, so the
    # two backends are held to each other too; chunks of 4 then 2 reuse a larger batch.
    env = gym.make(env_id)
    env.reset(seed=3)
    env.action_space.seed(3)
    m, d, skip = env_parts(env)
    other = "rollout" if backend == "batch" else JacobianConfig().resolved_backend
    single = StepJacobian(m, skip, JacobianConfig(backend=other))
    assert single.backend == other
    snaps, expected = [], []
    for _ in range(6):
        u = env.action_space.sample()
        snaps.append(single.snapshot(d, u))
        expected.append(single(d, u))
        env.step(u)
    snaps_arr = np.array(snaps)
    for threads in (1, 2):
        jac = StepJacobian(m, skip, JacobianConfig(threads=threads, backend=backend))
        assert jac.backend == backend
        for chunk in (1, 4, 6):
            got = [jac.batch(snaps_arr[i : i + chunk]) for i in range(0, 6, chunk)]
            for field in ("J_s", "J_a", "next_state"):
                batched = np.concatenate([getattr(g, field) for g in got])
                single_rows = np.array([getattr(e, field) for e in expected])
                np.testing.assert_array_equal(batched, single_rows)
        jac.close()
    with pytest.raises(ValueError, match=r"snapshots must be \(n >= 1, "):
        single.batch(snaps_arr[:, :-1])
    with pytest.raises(ValueError, match="batch must be an int >= 1"):
        JacobianConfig(batch=0)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert jacobian_module.default_threads("rollout") == cpus
    if jacobian_module._Batch is not None:  # more threads than CPUs: see default_threads
        assert jacobian_module.default_threads("batch") == min(4 * cpus, 64)
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'batch', 'rollout'\)"):
        JacobianConfig(backend="threads")


def test_collect_mujoco_does_not_depend_on_the_batch_size() -> None:
    from mbrl_causal.analysis.jacobian import collect_mujoco

    calls: list[int] = []
    a = collect_mujoco("Hopper-v5", 11, episodes=2, seed=1, config=JacobianConfig(batch=4),
                       progress=calls.append)  # fmt: skip
    b = collect_mujoco("Hopper-v5", 11, episodes=2, seed=1, config=JacobianConfig(batch=64))
    assert calls == [4, 4, 3]
    for field in ("J_s", "J_a", "episodes", "states", "actions", "next_states"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.J_s.shape == (11, 12, 12) and set(a.episodes.tolist()) == {0, 1}
    # each sample is the Jacobian at the state *before* its step, as one state at a time
    env = gym.make("Hopper-v5")
    env.reset(seed=1)
    m, d, skip = env_parts(env)
    jac = StepJacobian(m, skip)
    for i in range(5):
        np.testing.assert_array_equal(jac(d, a.actions[i]).J_s, a.J_s[i])
        env.step(a.actions[i])
    for bad, message in ((0, "steps must be an int >= 1"), (1.5, "steps must be an int")):
        with pytest.raises(ValueError, match=message):
            collect_mujoco("Hopper-v5", bad)  # type: ignore[arg-type]


def test_out_of_range_controls_and_non_finite_snapshots_are_refused() -> None:
    env = gym.make("HalfCheetah-v5")
    env.reset(seed=0)
    m, d, skip = env_parts(env)
    jac = StepJacobian(m, skip)
    u = np.zeros(6)
    u[2] = 1.5
    with pytest.raises(
        ValueError, match=r"ctrl\[2\] = 1.5 is outside actuator 2's ctrlrange \[-1, 1\]"
    ):
        jac(d, u)
    snaps = np.array([jac.snapshot(d, np.zeros(6))] * 3)
    snaps[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"snapshots \[1\] hold NaN or inf"):
        jac.batch(snaps)


_PENDULUM_XML = """<mujoco><option timestep="0.01">{flags}</option><worldbody>
<body><joint name="h" type="hinge" axis="0 1 0"/><geom type="capsule" fromto="0 0 0 0 0 -1"
 size=".05"/></body></worldbody><actuator><motor joint="h" ctrlrange="-1 1"/></actuator>
</mujoco>"""


def _pendulum(flags: str = "") -> tuple[mujoco.MjModel, mujoco.MjData]:
    m = mujoco.MjModel.from_xml_string(_PENDULUM_XML.format(flags=flags))
    d = mujoco.MjData(m)
    d.qpos[0] = 0.3
    return m, d


@pytest.mark.skipif(jacobian_module._Batch is None, reason=_NO_BATCH)
def test_batch_backend_follows_model_edits_and_auto_falls_back_where_batch_refuses() -> None:
    # mujoco.batch works on a copy of the model unless told otherwise: an edit between
    # calls must count, as it does for mujoco.rollout and for the env's own mj_step
    m, d = _pendulum()
    u = np.array([0.2])
    jac = StepJacobian(m, 3, JacobianConfig(backend="batch"))
    ref = StepJacobian(m, 3, JacobianConfig(backend="rollout"))
    jac(d, u)
    m.opt.gravity[:] = (0.0, 0.0, -30.0)
    m.actuator_gear[0, 0] = 5.0
    got, want = jac(d, u), ref(d, u)
    for field in ("J_s", "J_a", "next_state"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    # sleep: a non-persistent mujoco.batch refuses it, "auto" takes mujoco.rollout
    ms, ds = _pendulum('<flag sleep="enable"/>')
    assert StepJacobian(ms, 3).backend == "rollout"
    assert np.isfinite(StepJacobian(ms, 3)(ds, u).J_s).all()
    # a Python physics callback: mujoco.batch refuses it at the call, "auto" switches
    calls: list[int] = []
    mujoco.set_mjcb_passive(lambda model, data: calls.append(1))
    try:
        auto = StepJacobian(m, 3)
        assert auto.backend == "batch"
        got = auto(d, u)
        assert auto.backend == "rollout" and calls
        with pytest.raises(ValueError, match="callback"):
            StepJacobian(m, 3, JacobianConfig(backend="batch"))(d, u)
    finally:
        mujoco.set_mjcb_passive(None)
    np.testing.assert_array_equal(got.J_s, want.J_s)
