"""Component tests of the world models: losses, gates and path matrix, Lagrangian, scan,
metrics, persistence, configuration, pixels mode and few-shot adaptation.

Every model here is tiny (d_model 16) and every random draw is seeded, so the file runs
in seconds on a CPU.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from mbrl_causal.config import from_mapping, parse_overrides
from mbrl_causal.world_models import WORLD_MODELS, FitConfig, SequenceBatch, WorldModelConfig
from mbrl_causal.world_models.adaptation import fit_regime_token
from mbrl_causal.world_models.config import (
    resumed_world_model_config,
    stored_world_model_config,
)
from mbrl_causal.world_models.encoders import MaskedImageVAE, masked_images
from mbrl_causal.world_models.gates import (
    LOGIT_BOUND,
    GatedAttention,
    HardGate,
    fix_structure,
    graph_from_paths,
    path_matrix,
)
from mbrl_causal.world_models.metrics import GraphStats, graph_metrics
from mbrl_causal.world_models.model import WorldModel
from mbrl_causal.world_models.sparsity import ObjectLagrangians, SparsityLagrangian
from mbrl_causal.world_models.spartan import CoreOutput
from mbrl_causal.world_models.ssm import (
    MambaLayer,
    _SelectiveScan,
    mamba_ssm_available,
    selective_scan,
)
from mbrl_causal.world_models.training import (
    DenseReference,
    NonFiniteLoss,
    clip_gradients,
    make_lagrangian,
    train,
)

N_OBJECTS = 4
M_TOKENS = N_OBJECTS + 2  # objects, action, regime
REGIME_IDS = (0, 3, 5)
SMALL = {
    "d_model": 16,
    "n_layers": 2,
    "n_heads": 2,
    "mlp_hidden": 16,
    "d_state": 4,
    "expand": 1,
    "d_conv": 3,
    "ssm_backend": "torch",
}
SPARSE_MODELS = [n for n in WORLD_MODELS if WorldModelConfig(name=n).sparse]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(name: str, seed: int = 0, **fields) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(WorldModelConfig(name=name, **{**SMALL, **fields}), REGIME_IDS)


def make_batch(b: int = 3, t: int = 5, seed: int = 0) -> SequenceBatch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(b, t + 1, N_OBJECTS, 4, generator=g) * 2 - 1
    actions = torch.randint(0, 3, (b, t), generator=g)
    rewards = torch.randn(b, t, generator=g)
    conts = (torch.rand(b, t, generator=g) > 0.2).float()
    regimes = torch.tensor(REGIME_IDS)[torch.arange(b) % len(REGIME_IDS)]
    graphs = torch.rand(b, t, M_TOKENS, N_OBJECTS, generator=g) > 0.7
    return SequenceBatch(obs, actions, rewards, conts, regimes, graphs)


def object_off_diagonal(m: int = M_TOKENS, n: int = N_OBJECTS) -> torch.Tensor:
    """Bool (m, m): the gate entries that are free (object rows, not self edges)."""
    mask = torch.zeros(m, m, dtype=torch.bool)
    mask[:n] = True
    mask.fill_diagonal_(False)
    return mask


def graph_off_diagonal(n: int = N_OBJECTS) -> torch.Tensor:
    """Bool (n + 2, n): the local-graph entries that are not object self edges."""
    mask = torch.ones(n + 2, n, dtype=torch.bool)
    mask[torch.arange(n), torch.arange(n)] = False
    return mask


def gates(model: WorldModel) -> list[HardGate]:
    return [m for m in model.core.modules() if isinstance(m, HardGate)]


# ----------------------------------------------------------------------------- 1. loss terms
@pytest.mark.parametrize("name", WORLD_MODELS)
def test_loss_terms_sparsity_weight_and_gradients(name: str) -> None:
    model = make_model(name).train()
    c = model.config
    batch = make_batch()

    terms0, out0 = model.loss(batch, 0.0, torch.Generator().manual_seed(1))
    # zero sparsity weight adds exactly nothing
    expected = c.token_weight * terms0.mse + c.reward_weight * terms0.reward
    expected = expected + c.cont_weight * terms0.cont
    assert torch.equal(terms0.total, expected)
    assert terms0.recon == 0 and terms0.kl == 0  # objects mode: no encoder terms
    assert out0.next_latent.shape == (3, 5, N_OBJECTS, 4)
    if c.sparse:
        # each object at least reaches itself: >= N paths per transition, even at weight 0
        assert terms0.sparsity >= N_OBJECTS
        paths = out0.paths[:, :, :N_OBJECTS].sum((-1, -2)).mean()
        torch.testing.assert_close(terms0.sparsity, paths)
    else:
        assert terms0.sparsity == 0

    weight = 0.25
    terms1, _ = model.loss(batch, weight, torch.Generator().manual_seed(1))
    assert torch.equal(terms1.sparsity, terms0.sparsity)  # same generator: same gates
    assert torch.equal(terms1.mse, terms0.mse)
    assert torch.equal(terms1.total, terms0.total + weight * terms0.sparsity)
    if c.sparse:
        assert terms1.total > terms0.total

    model.zero_grad()
    terms1.total.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    hard_gates = gates(model)
    if not c.sparse:
        assert hard_gates == []
        return
    assert len(hard_gates) == c.n_layers
    for i, gate in enumerate(hard_gates):  # only the straight-through path reaches them
        assert gate.q.weight.grad.abs().sum() > 0, f"gate {i}: q"
        assert gate.k.weight.grad.abs().sum() > 0, f"gate {i}: k"
        assert gate.bias.grad.abs() > 0, f"gate {i}: bias"


def test_sparsity_term_pushes_gate_bias_down() -> None:
    """The gradient of the path count alone lowers every gate's bias (fewer edges)."""
    model = make_model("spartan").train()
    terms, _ = model.loss(make_batch(), 1.0, torch.Generator().manual_seed(2))
    model.zero_grad()
    terms.sparsity.backward()
    for gate in gates(model):
        assert gate.bias.grad > 0  # gradient descent decreases the bias


@pytest.mark.parametrize("estimator", ["score", "score_reach"])
@pytest.mark.parametrize("name", SPARSE_MODELS)
def test_score_estimator_samples_hard_gates_and_trains_them_by_log_probability(
    name: str, estimator: str
) -> None:
    """``gate_estimator='score'``: training samples are exact 0/1 with no straight-through
    gradient, each gate stores the log-probability of its sample, and the loss still
    reaches every parameter (gates through the score-function term) with finite values."""
    model = make_model(name, gate_estimator=estimator).train()
    assert all(g.estimator == estimator for g in gates(model))
    x = torch.randn(3, 5, M_TOKENS, model.config.d_model)
    gate = gates(model)[0]
    a = gate(x, N_OBJECTS, torch.Generator().manual_seed(0))
    assert a.grad_fn is None and set(a.unique().tolist()) <= {0.0, 1.0}
    logit = gate.logits(x, N_OBJECTS)
    expected = torch.where(a > 0.5, F.logsigmoid(logit), F.logsigmoid(-logit))
    free = object_off_diagonal()
    torch.testing.assert_close(gate.log_prob[..., free], expected[..., free])

    terms, out = model.loss(make_batch(), 0.25, torch.Generator().manual_seed(1))
    assert all(torch.isfinite(t).all() for t in terms)
    assert out.graph.shape == (3, 5, M_TOKENS, N_OBJECTS)
    model.zero_grad()
    terms.total.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    for i, g in enumerate(gates(model)):
        assert g.q.weight.grad.abs().sum() > 0 and g.bias.grad.abs() > 0, f"gate {i}"
    model.eval()  # evaluation: thresholded logits, one pass, as with straight-through
    with torch.no_grad():
        evaluated, _ = model.loss(make_batch(), 0.25)
    assert torch.isfinite(evaluated.total)


def estimated_gradient(
    model: WorldModel,
    batch: SequenceBatch,
    price: float,
    params: list[torch.Tensor],
    count: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of the loss's gradient on ``params`` (scalars) over
    ``count`` gate samples of the same batch."""
    gen = torch.Generator().manual_seed(5)
    samples = []
    for _ in range(count):
        model.zero_grad()
        terms, _ = model.loss(batch, price, gen)
        terms.total.backward()
        samples.append(torch.stack([p.grad.reshape(()) for p in params]))
    estimates = torch.stack(samples)
    return estimates.mean(0), estimates.std(0) / math.sqrt(count)


@pytest.mark.parametrize("estimator", ["score", "score_reach"])
def test_score_estimator_is_an_unbiased_gradient_of_the_expected_price(estimator: str) -> None:
    """With only the price in the objective (one layer, so the paths into object i are 1
    plus its open gates), the score-function gradient of the gate's bias, averaged over
    many samples, matches the exact gradient of lambda x E[paths] = lambda x (1 + sum of
    sigmoid(logit)) per object."""
    weights = {"token_weight": 0.0, "reward_weight": 0.0, "cont_weight": 0.0}
    model = make_model(
        "spartan", seed=3, n_layers=1, gate_estimator=estimator, gate_logit_weight=0.0, **weights
    ).train()
    batch, price = make_batch(b=2, t=3), 0.5
    gate, layer = gates(model)[0], model.core.layers[0]
    y = layer.norm1(model.tokens(batch.obs[:, :-1], batch.actions, batch.regimes))
    free = object_off_diagonal().to(y.dtype)
    expected_paths = (torch.sigmoid(gate.logits(y, N_OBJECTS)) * free).sum((-1, -2)).mean()
    (exact,) = torch.autograd.grad(price * expected_paths, gate.bias)
    mean, stderr = estimated_gradient(model, batch, price, [gate.bias], 400)
    mean, stderr = mean[0], stderr[0]
    assert exact > 0  # a higher bias means more paths: the price pushes it down
    assert abs(mean - exact) < 4 * stderr + 1e-3 * abs(exact), (mean, exact, stderr)
    assert stderr < 0.2 * exact  # the comparison can fail: the estimate is not just noise


def test_score_estimator_is_unbiased_for_the_whole_objective_through_two_layers() -> None:
    """Two layers, two objects, every term of the objective (prediction, price, reward,
    continuation): the exact gradient of the expected objective for each layer's gate
    bias, by enumerating all 2^12 gate samples of one transition, matches the mean of the
    estimator over many batches (an advantage scaled by 2 fails it)."""
    n, price = 2, 0.3
    torch.manual_seed(0)
    config = WorldModelConfig(
        name="spartan", **{**SMALL, "n_layers": 2}, gate_estimator="score",
        gate_bias_init=0.0, gate_logit_weight=0.0,
    )  # fmt: skip
    model = WorldModel(config, (0,)).train()
    g = torch.Generator().manual_seed(1)
    obs = torch.rand(1, 2, n, 4, generator=g) * 2 - 1
    one = torch.ones(1, 1)
    batch = SequenceBatch(
        obs, torch.tensor([[1]]), 0.5 * one, one, torch.zeros(1, dtype=torch.long),
        torch.zeros(1, 1, n + 2, n, dtype=torch.bool),
    )  # fmt: skip
    m = n + 2
    free = object_off_diagonal(m, n)
    entries = free.nonzero()
    layer1, layer2 = model.core.layers
    x0 = model.tokens(obs[:, :-1], batch.actions, batch.regimes)

    def configs() -> list[torch.Tensor]:
        out = []
        for bits in range(2 ** len(entries)):
            a = torch.zeros(m, m)
            for k, (i, j) in enumerate(entries.tolist()):
                a[i, j] = float(bits >> k & 1)
            out.append(fix_structure(a, n))
        return out

    def log_p(a: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
        lp = torch.where(a > 0.5, F.logsigmoid(logit), F.logsigmoid(-logit))
        return lp[free].sum()

    def block(layer, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
        out, _ = layer.attn(layer.norm1(x), a[None, None], n)
        x = x + out
        return x + layer.mlp(layer.norm2(x))

    expected = torch.zeros(())
    logit1 = layer1.gate.logits(layer1.norm1(x0), n)[0, 0]
    with torch.no_grad():
        all_configs = configs()
    for a1 in all_configs:
        x1 = block(layer1, x0, a1)
        logit2 = layer2.gate.logits(layer2.norm1(x1), n)[0, 0]
        lp1 = log_p(a1, logit1)
        for a2 in all_configs:
            with torch.no_grad():
                h = block(layer2, x1, a2)
                paths = a2 @ a1
                core = CoreOutput(h, [a1[None, None], a2[None, None]], [])
                out = model._outputs(obs[:, :-1], core)
                objective = (
                    F.mse_loss(out.next_latent, obs[:, 1:])
                    + F.mse_loss(out.reward, batch.rewards)
                    + F.binary_cross_entropy_with_logits(out.cont_logit, batch.conts)
                    + price * paths[:n].sum()
                )
            lp = lp1 + log_p(a2, logit2)
            expected = expected + lp.exp().detach() * objective * lp
    exact = torch.autograd.grad(expected, [layer1.gate.bias, layer2.gate.bias])

    biases = [layer1.gate.bias, layer2.gate.bias]
    mean, stderr = estimated_gradient(model, batch, price, biases, 1500)
    for k in range(2):
        assert abs(mean[k] - exact[k]) < 4 * stderr[k], (k, mean[k], exact[k], stderr[k])
        assert stderr[k] < 0.1 * abs(exact[k])  # precise enough to tell a bias of 2x


def test_gate_estimator_is_validated_and_old_files_keep_straight_through(tmp_path) -> None:  # type: ignore[no-untyped-def]
    allowed = "gate_estimator must be one of straight_through, score, score_reach"
    with pytest.raises(ValueError, match=allowed):
        WorldModelConfig(gate_estimator="reinforce")
    with pytest.raises(ValueError, match="needs gate_explore=0"):
        WorldModelConfig(gate_estimator="score", gate_explore=0.1)
    model = make_model("spartan", seed=1, gate_estimator="score")
    loaded = WorldModel.load(model.save(tmp_path / "m.pt"))
    assert loaded.config.gate_estimator == "score"
    assert all(g.estimator == "score" for g in gates(loaded))
    old = WorldModel.load(save_without_field(model, tmp_path / "o.pt", "gate_estimator"))
    assert old.config.gate_estimator == "straight_through"
    assert all(g.estimator == "straight_through" for g in gates(old))


# ----------------------------------------------------------------------------- 2. path matrix
ACTION, REGIME = 2, 3  # token indices with N = 2 objects


def adjacency(edges: list[tuple[int, int]], m: int = 4) -> torch.Tensor:
    """Identity plus the edges (child, parent): child reads parent."""
    a = torch.eye(m)
    for child, parent in edges:
        a[child, parent] = 1.0
    return a


def test_path_matrix_chain_through_two_layers() -> None:
    n = 2
    a1 = adjacency([(0, ACTION)])  # layer 1: object 0 reads the action
    a2 = adjacency([(1, 0)])  # layer 2: object 1 reads object 0
    paths = path_matrix([a1, a2])
    expected = torch.eye(4)
    expected[0, ACTION] = expected[1, 0] = expected[1, ACTION] = 1.0
    assert torch.equal(paths, expected)

    graph = graph_from_paths(paths, n)
    assert graph.dtype == torch.bool and graph.shape == (n + 2, n)
    want = torch.zeros(n + 2, n, dtype=torch.bool)  # G[parent, child]
    want[0, 0] = want[1, 1] = True  # self edges
    want[ACTION, 0] = True  # action -> object 0 (layer 1)
    want[0, 1] = True  # object 0 -> object 1 (layer 2)
    want[ACTION, 1] = True  # action -> object 1 through object 0
    assert torch.equal(graph, want)

    # the other order of the same layers: object 1 reads object 0 before 0 reads the action
    reverse = graph_from_paths(path_matrix([a2, a1]), n)
    assert reverse[ACTION, 0] and reverse[0, 1]
    assert not reverse[ACTION, 1]
    assert not reverse[REGIME].any()


def test_path_matrix_counts_paths_and_batches() -> None:
    a = adjacency([(0, ACTION)])
    paths = path_matrix([a, a])  # direct in layer 1 then self, or self then direct
    assert paths[0, ACTION] == 2
    assert graph_from_paths(paths, 2)[ACTION, 0]
    # three layers: one edge in layer 1, then identity twice
    assert torch.equal(path_matrix([a, torch.eye(4), torch.eye(4)]), a)

    # batched: the product is taken per sample
    b1, b2 = adjacency([(1, 0)]), adjacency([(0, REGIME), (1, 0)])
    batched = path_matrix([torch.stack([a, a]), torch.stack([b1, b2])])
    assert torch.equal(batched[0], path_matrix([a, b1]))
    assert torch.equal(batched[1], path_matrix([a, b2]))
    g = graph_from_paths(batched, 2)
    assert g.shape == (2, 4, 2)
    assert g[0, ACTION, 1] and not g[0, REGIME, 1]
    assert g[1, ACTION, 1] and g[1, REGIME, 0]
    assert not g[1, REGIME, 1]  # regime -> obj0 -> obj1 would need a third layer


def test_fix_structure() -> None:
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(3, M_TOKENS, M_TOKENS, generator=g) > 0.5).float()
    fixed = fix_structure(a, N_OBJECTS)
    eye = torch.eye(M_TOKENS)
    assert torch.equal(fixed.diagonal(dim1=-2, dim2=-1), torch.ones(3, M_TOKENS))
    assert torch.equal(fixed[:, N_OBJECTS:], eye[N_OBJECTS:].expand(3, -1, -1))
    free = object_off_diagonal()
    assert torch.equal(fixed[:, free], a[:, free])  # the free entries are untouched
    # all ones stays binary (the diagonal is not counted twice); all zeros -> identity
    ones = fix_structure(torch.ones(M_TOKENS, M_TOKENS), N_OBJECTS)
    assert ones.max() == 1 and torch.equal(ones[:N_OBJECTS], torch.ones(N_OBJECTS, M_TOKENS))
    assert torch.equal(fix_structure(torch.zeros(M_TOKENS, M_TOKENS), N_OBJECTS), eye)


# ----------------------------------------------------------------------------- 3. hard gate
def test_hard_gate_eval_is_thresholded_logit() -> None:
    torch.manual_seed(0)
    gate = HardGate(16, 8, bias_init=0.0).eval()
    x = torch.randn(8, M_TOKENS, 16)
    a = gate(x, N_OBJECTS)
    assert torch.equal(a, fix_structure((gate.logits(x, N_OBJECTS) > 0).float(), N_OBJECTS))
    assert torch.equal(gate(x, N_OBJECTS), a)  # deterministic
    on = a[:, object_off_diagonal()].mean()
    assert 0 < on < 1  # bias 0: a mix of edges, so the threshold is really exercised


def test_hard_gate_training_samples_are_binary_and_straight_through() -> None:
    torch.manual_seed(0)
    gate = HardGate(16, 8, bias_init=0.0).train()
    x = torch.randn(8, M_TOKENS, 16)
    a = gate(x, N_OBJECTS, torch.Generator().manual_seed(3))
    assert set(a.detach().unique().tolist()) == {0.0, 1.0}  # exactly binary forward
    assert torch.equal(a.detach().diagonal(dim1=-2, dim2=-1), torch.ones(8, M_TOKENS))
    assert torch.equal(a.detach()[:, N_OBJECTS:], torch.eye(M_TOKENS)[N_OBJECTS:].expand(8, -1, -1))
    again = gate(x, N_OBJECTS, torch.Generator().manual_seed(3))
    other = gate(x, N_OBJECTS, torch.Generator().manual_seed(4))
    assert torch.equal(again, a)  # the generator fixes the sample
    assert not torch.equal(other, a)
    assert a.requires_grad
    a[:, object_off_diagonal()].sum().backward()
    assert gate.bias.grad > 0  # straight-through: more bias, more (relaxed) edges


def test_hard_gate_extreme_bias() -> None:
    """Eval: a huge bias gives exactly the full graph (or only the forced structure).
    Train: logits are soft-clipped to +-LOGIT_BOUND, so a sampled gate can still flip
    (that keeps closed gates trainable), but only rarely."""
    torch.manual_seed(0)
    x = torch.randn(64, M_TOKENS, 16)
    gen = torch.Generator().manual_seed(0)
    full = fix_structure(torch.ones(M_TOKENS, M_TOKENS), N_OBJECTS).expand(64, -1, -1)
    eye = torch.eye(M_TOKENS).expand(64, -1, -1)
    opened, closed = HardGate(16, 8, bias_init=1e3), HardGate(16, 8, bias_init=-1e3)
    assert opened.logits(x, N_OBJECTS).abs().max() <= LOGIT_BOUND
    assert torch.equal(opened.eval()(x, N_OBJECTS).detach(), full)
    assert torch.equal(closed.eval()(x, N_OBJECTS).detach(), eye)
    free = object_off_diagonal()
    on = opened.train()(x, N_OBJECTS, gen).detach()[:, free]
    off = closed.train()(x, N_OBJECTS, gen).detach()[:, free]
    assert 0.97 < on.mean() <= 1.0  # P(logit + logistic noise > 0) = sigmoid(6) = 0.9975
    assert 0.0 <= off.mean() < 0.03


def test_hard_gate_explore_opens_closed_gates_in_training_only() -> None:
    """gate_explore: in training a closed gate opens with the given chance (the forced
    structure stays); evaluation never explores."""
    torch.manual_seed(0)
    x = torch.randn(64, M_TOKENS, 16)
    free = object_off_diagonal()
    eye = torch.eye(M_TOKENS).expand(64, -1, -1)
    gate = HardGate(16, 8, bias_init=-1e3, explore=0.3).train()
    a = gate(x, N_OBJECTS, torch.Generator().manual_seed(0)).detach()
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert 0.26 < a[:, free].mean() < 0.34  # closed by the logit, opened by exploration
    assert torch.equal(a.diagonal(dim1=-2, dim2=-1), torch.ones(64, M_TOKENS))
    assert torch.equal(a[:, N_OBJECTS:], eye[:, N_OBJECTS:])
    plain = HardGate(16, 8, bias_init=-1e3).train()
    assert plain(x, N_OBJECTS, torch.Generator().manual_seed(0)).detach()[:, free].mean() < 0.03
    assert torch.equal(gate.eval()(x, N_OBJECTS).detach(), eye)  # evaluation: no exploration
    with pytest.raises(ValueError, match=r"explore must be in \[0, 1\)"):
        HardGate(16, 8, explore=1.0)
    with pytest.raises(ValueError, match=r"gate_explore must be in \[0, 1\)"):
        WorldModelConfig(gate_explore=-0.1)
    for name in ("spartan", "s2ssm"):  # the config reaches every gate of both sparse models
        model = make_model(name, gate_explore=0.25)
        assert gates(model) and all(g.explore == 0.25 for g in gates(model))
        assert all(g.explore == 0.0 for g in gates(make_model(name)))  # off by default


def test_hard_gate_action_key_type_ignores_the_action_value() -> None:
    """With action_key='type' the gate of action -> object reads the child, not the
    action's value (so closing it cannot encode the action); with 'value' it does."""
    torch.manual_seed(0)
    x = torch.randn(8, M_TOKENS, 16)
    moved = x.clone()
    moved[:, N_OBJECTS] = torch.randn(8, 16)  # another action token, same objects
    action_col = (slice(None), slice(0, N_OBJECTS), N_OBJECTS)
    by_type = HardGate(16, 8, bias_init=0.0, action_key="type").eval()
    torch.testing.assert_close(
        by_type.logits(moved, N_OBJECTS)[action_col], by_type.logits(x, N_OBJECTS)[action_col]
    )
    child = x.clone()
    child[:, 0] = torch.randn(8, 16)  # the child's state still moves its gate
    assert not torch.allclose(
        by_type.logits(child, N_OBJECTS)[:, 0, N_OBJECTS],
        by_type.logits(x, N_OBJECTS)[:, 0, N_OBJECTS],
    )
    # every other column is computed as with keys from the tokens
    by_value = HardGate(16, 8, bias_init=0.0, action_key="value").eval()
    by_value.load_state_dict({k: v for k, v in by_type.state_dict().items() if k != "action_key"})
    others = [j for j in range(M_TOKENS) if j != N_OBJECTS]
    torch.testing.assert_close(
        by_type.logits(x, N_OBJECTS)[..., others], by_value.logits(x, N_OBJECTS)[..., others]
    )
    assert not torch.allclose(
        by_value.logits(moved, N_OBJECTS)[action_col], by_value.logits(x, N_OBJECTS)[action_col]
    )
    # the learned key gets gradients in training
    by_type.train()(x, N_OBJECTS, torch.Generator().manual_seed(0))[
        ..., :N_OBJECTS, N_OBJECTS
    ].sum().backward()
    assert by_type.action_key is not None and by_type.action_key.grad is not None
    assert by_type.action_key.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs n_objects"):
        by_type.logits(x)
    with pytest.raises(ValueError, match=r"gate_action_key must be one of \('value', 'type'\)"):
        HardGate(16, 8, action_key="action")
    with pytest.raises(ValueError, match="gate_action_key"):
        WorldModelConfig(gate_action_key="values")


def test_hard_gate_records_the_raw_logit_excess_in_training_only() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, M_TOKENS, 16)
    gate = HardGate(16, 8, bias_init=20.0, action_key="value").train()
    gate.logits(x)
    with torch.no_grad():
        raw = (gate.q(x) @ gate.k(x).transpose(-1, -2)) * gate.scale + gate.bias
    assert raw.min() > LOGIT_BOUND  # every entry is past the clip
    assert gate.excess is not None
    torch.testing.assert_close(gate.excess, (raw - LOGIT_BOUND).square().mean())
    gate.excess.backward()
    assert gate.bias.grad > 0  # descent pulls the raw logits back towards the clip
    assert gate.q.weight.grad.abs().sum() > 0
    inside = HardGate(16, 8, bias_init=0.0).train()
    inside.logits(x * 0.1, N_OBJECTS)
    assert inside.excess is not None and inside.excess == 0  # nothing to correct
    gate.eval().logits(x)
    assert gate.excess is None  # evaluation and imagination keep no graph
    gate.train()
    with torch.no_grad():
        gate.logits(x)
    assert gate.excess is None


def test_gate_logit_weight_adds_the_penalty_and_unfreezes_saturated_gates() -> None:
    """A gate pushed far past the soft clip gets almost no gradient from the model's
    terms (the tanh is flat); the penalty gives it one back, and training the gates
    brings the raw logits back inside the clip, where without it they run further out.
    Weight 0 adds exactly nothing."""
    batch, gen = make_batch(), 5

    def saturated(weight: float) -> WorldModel:
        model = make_model("spartan", gate_logit_weight=weight).train()
        with torch.no_grad():
            for g in gates(model):
                g.bias.fill_(15.0)
        return model

    off, on = saturated(0.0), saturated(1.0)
    t_off, _ = off.loss(batch, 0.0, torch.Generator().manual_seed(gen))
    t_on, _ = on.loss(batch, 0.0, torch.Generator().manual_seed(gen))
    assert t_off.gate_excess > 10 and torch.equal(t_on.gate_excess, t_off.gate_excess)
    base = t_off.mse + t_off.reward + t_off.cont
    assert torch.equal(t_off.total, base)
    torch.testing.assert_close(t_on.total, base + t_on.gate_excess)
    for model, terms in ((off, t_off), (on, t_on)):
        model.zero_grad()
        terms.total.backward()
    for g_off, g_on in zip(gates(off), gates(on), strict=True):
        assert g_on.bias.grad > 100 * g_off.bias.grad.abs()

    def excess_after_steps(model: WorldModel) -> float:
        opt = torch.optim.Adam([p for g in gates(model) for p in g.parameters()], lr=0.05)
        for i in range(80):
            terms, _ = model.loss(batch, 0.0, torch.Generator().manual_seed(i))
            opt.zero_grad()
            terms.total.backward()
            opt.step()
        return float(
            model.loss(batch, 0.0, torch.Generator().manual_seed(0))[0].gate_excess.detach()
        )

    start = float(t_off.gate_excess.detach())
    assert excess_after_steps(on) < 0.01 * start
    assert excess_after_steps(off) > start  # unchecked, q.k runs further away


def _identity_attention(d: int) -> GatedAttention:
    """One head with q = k = v = x and an identity output: scores are x_i . x_j / sqrt(d)."""
    attn = GatedAttention(d, 1)
    with torch.no_grad():
        attn.qkv.weight.copy_(torch.cat([torch.eye(d)] * 3))
        attn.qkv.bias.zero_()
        attn.out.weight.copy_(torch.eye(d))
        attn.out.bias.zero_()
    return attn


def test_gated_attention_survives_a_closed_edge_scoring_far_above_the_kept_ones() -> None:
    """Token 0 keeps only itself (score 50) while its closed edge to token 1 scores 500.
    Shifting by the row's largest score (kept or not) underflowed every kept exponential
    (exp(-450) = 0 in float32): NaN weights, or with a near-zero normaliser an inf
    gradient behind a finite loss, which the agent hit after 28k env steps."""
    attn = _identity_attention(4)
    x = torch.zeros(1, 4, 4)
    x[0, 0, 0], x[0, 1, 0] = 10.0, 100.0  # s_00 = 50, s_01 = s_10 = 500, s_11 = 5000
    x[0, 2, 1] = x[0, 3, 2] = 1.0
    soft = torch.full((1, 4, 4), 0.3, requires_grad=True)
    hard = fix_structure(torch.zeros(1, 4, 4), n_objects=2)  # only self edges
    hard[0, 1, 0] = 1.0  # token 1 reads token 0
    adjacency = hard + (soft - soft.detach())  # straight-through, as HardGate makes it
    x.requires_grad_(True)
    y, w = attn(x, adjacency, n_objects=2)
    assert torch.isfinite(y).all() and torch.isfinite(w).all()
    assert w[0, 0].tolist() == [1.0, 0.0, 0.0, 0.0]  # token 0 reads itself at full weight
    # token 1 reads tokens 1 and 0 as the softmax over the kept scores says (float64)
    s = torch.tensor([500.0, 5000.0], dtype=torch.float64)  # s_10, s_11
    torch.testing.assert_close(w[0, 1, :2].double(), torch.softmax(s, 0))
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(soft.grad).all()
    assert soft.grad[0, 0, 1] != 0  # the closed gate still gets a straight-through gradient


@pytest.mark.parametrize("cap", [0.0, 5.0, 20.0])
def test_score_cap_bounds_a_closed_edges_straight_through_gradient(cap: float) -> None:
    """Token 0 keeps only itself and its closed edge to token 1 scores 10 above that: the
    forward pass ignores token 1 whatever the cap, and the gate of the closed edge gets
    d y_0 / d a_01 = e^min(10, cap) (v_1 - y_0), the normaliser being e^0 = 1."""
    d = 4
    attn = _identity_attention(d)
    attn.score_cap = cap
    x = torch.zeros(1, 3, d)
    x[0, 0, 0] = 1.0  # s_00 = 1 / sqrt(4) = 0.5
    x[0, 1, 0], x[0, 1, 2] = 21.0, 5.0  # s_01 = 21 / 2 = 10.5: 10 above the kept score
    kept_gap = 10.0
    soft = torch.zeros(1, 3, 3, requires_grad=True)
    hard = fix_structure(torch.zeros(1, 3, 3), n_objects=2)  # self edges only
    y, w = attn(x, hard + (soft - soft.detach()), n_objects=2)
    assert w[0, 0].tolist() == [1.0, 0.0, 0.0]
    torch.testing.assert_close(y[0, 0], x[0, 0])  # token 0 reads only itself
    y[0, 0].sum().backward()
    expected = math.exp(min(kept_gap, cap)) * float((x[0, 1] - x[0, 0]).sum())
    assert soft.grad is not None
    torch.testing.assert_close(soft.grad[0, 0, 1].item(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1.0, "must be >= 0"),
        (math.inf, "must be a finite number"),
        (math.nan, "must be a finite number"),
    ],
)
def test_gate_score_cap_refuses_negative_and_non_finite_values(value: float, message: str) -> None:
    with pytest.raises(ValueError, match=f"gate_score_cap {message}"):
        WorldModelConfig(gate_score_cap=value)


@pytest.mark.parametrize("name", SPARSE_MODELS)
def test_gate_score_cap_reaches_every_attention_and_old_files_keep_20(name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = make_model(name, seed=2, gate_score_cap=5.0)
    attns = [m for m in model.modules() if isinstance(m, GatedAttention)]
    assert len(attns) == model.config.n_layers and all(a.score_cap == 5.0 for a in attns)
    assert WorldModel.load(model.save(tmp_path / "m.pt")).config.gate_score_cap == 5.0
    old = WorldModel.load(save_without_field(model, tmp_path / "o.pt", "gate_score_cap"))
    assert old.config.gate_score_cap == 20.0  # the behaviour before the field
    assert all(m.score_cap == 20.0 for m in old.modules() if isinstance(m, GatedAttention))


def test_gated_attention_weights_are_the_masked_softmax() -> None:
    torch.manual_seed(0)
    attn = GatedAttention(8, 2)
    x = torch.randn(3, 5, 8)
    a = fix_structure((torch.rand(3, 5, 5) > 0.5).float(), n_objects=3)
    _, w = attn(x, a, n_objects=3)
    qkv = attn.qkv(x).view(3, 5, 3, 2, 4)
    q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
    s = (q @ k.transpose(-1, -2)) / 2.0
    ref = torch.softmax(s.masked_fill(a.unsqueeze(1) < 0.5, -math.inf), -1).mean(1)
    torch.testing.assert_close(w, ref)


def test_clip_gradients_refuses_a_non_finite_gradient_and_names_it() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    net(torch.ones(2, 3)).sum().backward()
    ref = [p.grad.clone() for p in net.parameters()]
    norm = clip_gradients(net, 1e-3, "test")
    assert norm == pytest.approx(float(torch.cat([g.flatten() for g in ref]).norm()))
    clipped = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert float(clipped.norm()) == pytest.approx(1e-3, rel=1e-4)
    net.zero_grad()
    net[1].weight.register_hook(lambda g: torch.full_like(g, math.inf))
    net(torch.ones(2, 3)).sum().backward()
    with pytest.raises(NonFiniteLoss, match=r"test gradient is (inf|nan) \(first in '1.weight'\)"):
        clip_gradients(net, 1.0, "test")
    assert all(p.grad is None for p in net.parameters())  # nothing left for an optimiser


# ----------------------------------------------------------------------------- 4. Lagrangian
def test_lagrangian_is_zero_during_warmup() -> None:
    lag = SparsityLagrangian(tau=1.0, warmup=5, lambda_init=0.01, lr=0.1)
    assert lag.value == 0.0 and not lag.active
    for _ in range(4):
        assert lag.update(0.1) == 0.0
        assert lag.value == 0.0
    assert lag.update(0.1) > 0.0  # the fifth update ends the warm-up
    assert lag.active


def test_lagrangian_grows_below_tau_and_shrinks_above() -> None:
    lr, init = 0.1, 1e-3
    lag = SparsityLagrangian(tau=1.0, warmup=0, lambda_init=init, lr=lr, ema=0.0)
    first = lag.update(0.5)
    assert math.isclose(first, init * math.exp(lr * 0.5), rel_tol=1e-12)  # step (tau-mse)/tau
    values = [first] + [lag.update(0.5) for _ in range(200)]
    assert all(b >= a for a, b in pairwise(values))
    assert all(b > a for a, b in pairwise(values) if b < lag.lambda_max)
    assert math.isclose(values[-1], lag.lambda_max)  # clipped at the upper bound

    lag = SparsityLagrangian(tau=1.0, warmup=0, lambda_init=0.1, lr=lr, ema=0.0)
    first = lag.update(1.5)  # above tau, below collapse_factor * tau
    assert math.isclose(first, 0.1 * math.exp(-lr * 0.5), rel_tol=1e-12)
    values = [first] + [lag.update(1.5) for _ in range(300)]
    assert all(b <= a for a, b in pairwise(values))
    assert math.isclose(values[-1], lag.lambda_min)  # clipped at the lower bound


@pytest.mark.parametrize("tau", [0.0, 1e-9])
def test_lagrangian_impossible_tau_never_raises_lambda(tau: float) -> None:
    init = 1e-2
    lag = SparsityLagrangian(tau=tau, warmup=3, lambda_init=init, lambda_min=1e-7)
    values = [lag.update(0.3) for _ in range(60)]
    assert max(values) <= init
    active = values[2:]
    assert all(b <= a for a, b in pairwise(active))
    assert math.isclose(values[-1], 1e-7)


def test_lagrangian_automatic_tau_from_warmup_average() -> None:
    lag = SparsityLagrangian(tau=None, tau_factor=1.1, warmup=4, ema=0.5, lr=0.1)
    for mse in (1.0, 0.5, 0.25):
        lag.update(mse)
        assert lag.tau is None
    lag.update(0.125)
    avg = 0.3125  # 1.0 -> 0.75 -> 0.5 -> 0.3125 with ema 0.5
    assert math.isclose(lag.mse_avg, avg)
    assert math.isclose(lag.tau, 1.1 * avg)
    step = (1.1 * avg - avg) / (1.1 * avg)
    assert math.isclose(lag.value, lag.lambda_init * math.exp(0.1 * step))
    lag.update(100.0)
    assert math.isclose(lag.tau, 1.1 * avg)  # set once, not moved by later updates

    no_warmup = SparsityLagrangian(tau=None, tau_factor=2.0, warmup=0)
    no_warmup.update(0.4)
    assert math.isclose(no_warmup.tau, 0.8)


def test_lagrangian_state_dict_round_trip() -> None:
    kwargs = {"tau": None, "warmup": 3, "lambda_init": 1e-3, "lr": 0.2, "ema": 0.9}
    rng = np.random.default_rng(0)
    lag = SparsityLagrangian(**kwargs)
    for mse in rng.uniform(0.1, 1.0, 10):
        lag.update(float(mse))
    copy = SparsityLagrangian(**kwargs)
    copy.load_state_dict(lag.state_dict())
    assert copy.state_dict() == lag.state_dict()
    assert copy.value == lag.value and copy.value > 0
    for mse in rng.uniform(0.1, 1.0, 5):
        assert copy.update(float(mse)) == lag.update(float(mse))


def test_lagrangian_rejects_bad_input() -> None:
    lag = SparsityLagrangian(tau=1.0, warmup=0)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="MSE"):
            lag.update(bad)
    assert lag.updates == 0 and lag.mse_avg is None  # a rejected value leaves no trace
    with pytest.raises(ValueError, match="lambda_min"):
        SparsityLagrangian(lambda_init=1e-9, lambda_min=1e-7)


def test_lagrangian_schedule_replaces_the_bounds_from_its_update_on() -> None:
    # lambda grows every update (mse below tau) and is held by the bounds of the moment
    lag = SparsityLagrangian(tau=1.0, warmup=2, lambda_init=1e-4, lambda_min=1e-4,
                             lambda_max=2e-4, lr=0.5, ema=0.0,
                             schedule=[[6, 5e-3, 1e-2], [12, 1e-7, 1e-3]])  # fmt: skip
    values = [lag.update(0.5) for _ in range(16)]
    assert values[:1] == [0.0]  # warm-up
    tol = 1e-12  # lambda is clamped in log space
    assert all(1e-4 - tol <= v <= 2e-4 + tol for v in values[1:5])
    assert math.isclose(values[4], 2e-4)
    assert math.isclose(values[5], 5e-3)  # update 6: the raised floor lifts lambda at once
    assert all(5e-3 - tol <= v <= 1e-2 + tol for v in values[5:11])
    assert math.isclose(values[10], 1e-2)
    assert math.isclose(values[11], 1e-3)  # update 12: the lowered cap brings it down
    assert lag.bounds == (1e-7, 1e-3)
    # a resumed Lagrangian (saved before an entry) follows the same schedule
    kwargs = {"tau": 1.0, "warmup": 2, "lambda_init": 1e-4, "lambda_min": 1e-4,
              "lambda_max": 2e-4, "lr": 0.5, "ema": 0.0,
              "schedule": [[6, 5e-3, 1e-2]]}  # fmt: skip
    first, copy = SparsityLagrangian(**kwargs), SparsityLagrangian(**kwargs)
    for _ in range(4):
        first.update(0.5)
    copy.load_state_dict(first.state_dict())
    assert [copy.update(0.5) for _ in range(4)] == [first.update(0.5) for _ in range(4)]
    assert copy.bounds == (5e-3, 1e-2)
    # an entry within the warm-up sets the bounds lambda starts with
    early = SparsityLagrangian(tau=1.0, warmup=5, lambda_init=1e-4, lambda_min=1e-4,
                               lambda_max=2e-4, schedule=[[2, 5e-3, 1e-2]])  # fmt: skip
    values = [early.update(0.5) for _ in range(6)]
    assert values[:4] == [0.0] * 4 and math.isclose(values[4], 5e-3)
    # per-object Lagrangians pass it to each object
    per = ObjectLagrangians(tau=1.0, warmup=0, lambda_init=1e-4, lambda_min=1e-4,
                            lambda_max=2e-4, schedule=[[3, 5e-3, 1e-2]])  # fmt: skip
    assert per.update([0.5, 0.5]) == [pytest.approx(1e-4 * math.exp(0.02 * 0.5))] * 2
    per.update([0.5, 0.5])
    assert per.update([0.5, 0.5]) == [pytest.approx(5e-3)] * 2


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ([[0, 1e-3, 1e-2]], "whole numbers >= 1, increasing"),
        ([[5, 1e-3, 1e-2], [5, 1e-2, 1e-2]], "whole numbers >= 1, increasing"),
        ([[2.5, 1e-3, 1e-2]], "whole numbers >= 1, increasing"),
        ([[5, 1e-2, 1e-3]], "0 < lambda_min <= lambda_max"),
        ([[5, 0.0, 1e-3]], "0 < lambda_min <= lambda_max"),
        ([[5, 1e-3]], r"a list of \[update, lambda_min, lambda_max\] entries"),
        (["5, 1e-3, 1e-2"], r"a list of \[update, lambda_min, lambda_max\] entries"),
        ([[5, "low", 1e-2]], r"a list of \[update, lambda_min, lambda_max\] entries"),
        ([21000, 0.005, 0.01], r"e\.g\. \[\[21000, 0\.005, 0\.01\]\]"),
        (None, "a list of"),
        ("[[21000, 0.005, 0.01]]", "a list of"),
    ],
)
def test_lambda_schedule_is_validated_with_the_config(schedule: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorldModelConfig(name="spartan", lambda_schedule=schedule)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        SparsityLagrangian(schedule=schedule)  # type: ignore[arg-type]


def test_lambda_schedule_from_the_command_line() -> None:
    # YAML 1.1 reads 5e-3 as text; the schedule takes it as the number it spells
    sets = parse_overrides(["lambda_schedule=[[21000, 5e-3, 1e-2]]", "name=spartan"])
    config = from_mapping(WorldModelConfig, sets, "world-model config")
    assert config.lambda_schedule == [[21000, 5e-3, 1e-2]]
    again = stored_world_model_config(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again.lambda_schedule == config.lambda_schedule


def test_lambda_schedule_reaches_the_lagrangian_and_old_files_have_none() -> None:
    for constraint in ("per_object", "total"):
        model = make_model("spartan", sparsity_constraint=constraint, tau=1.0,
                           sparsity_warmup=0, lambda_schedule=[[3, 5e-3, 1e-2]])  # fmt: skip
        lag = make_lagrangian(model)
        mse = [0.5, 0.5] if constraint == "per_object" else 0.5
        values = [np.max(lag.update(mse)) for _ in range(3)]
        assert values[1] < 1e-3 and math.isclose(values[2], 5e-3), constraint
    saved = make_model("spartan").config.to_dict()
    del saved["lambda_schedule"]  # a file written before the option
    assert stored_world_model_config(saved).lambda_schedule == []


def test_resumed_world_model_config_checks_and_normalises_the_changes() -> None:
    saved = WorldModelConfig(name="spartan").to_dict()
    new, changed = resumed_world_model_config(saved, {"lambda_min": "5e-2", "gate_explore": 0.0})
    # YAML's text is the number; an unchanged value is no change; lambda_init follows
    assert changed == {"lambda_min": 0.05} and isinstance(changed["lambda_min"], float)
    assert new.lambda_min == new.lambda_init == 0.05 and new.lambda_max == saved["lambda_max"]
    _, changed = resumed_world_model_config(
        saved, {"lambda_schedule": [[10, "5e-3", "1e-2"]], "mse_ema": 0.9}
    )
    assert changed == {"lambda_schedule": [[10, 5e-3, 1e-2]], "mse_ema": 0.9}
    with pytest.raises(ValueError, match=r"lambda_min \(0\.5\) must be <= lambda_max \(0\.1\)"):
        resumed_world_model_config(saved, {"lambda_min": 0.5})
    with pytest.raises(ValueError, match="world-model fields allowed on resume: lambda_min"):
        resumed_world_model_config(saved, {"d_model": 32})
    with pytest.raises(ValueError, match="gate_explore must be in"):
        resumed_world_model_config(saved, {"gate_explore": 1.0})
    # with a schedule, new bounds alone would be overridden by its entries: refused
    scheduled = {**saved, "lambda_schedule": [[10, 1e-3, 2e-3]]}
    with pytest.raises(ValueError, match=r"give --set lambda_schedule=\.\.\. with the new bounds"):
        resumed_world_model_config(scheduled, {"lambda_max": 0.05})
    new, changed = resumed_world_model_config(
        scheduled, {"lambda_max": 0.05, "lambda_schedule": []}
    )
    assert new.lambda_schedule == [] and changed == {"lambda_max": 0.05, "lambda_schedule": []}


def test_a_lagrangian_loaded_under_new_bounds_is_clamped_at_once() -> None:
    """Loading into a Lagrangian with other bounds (a resume with new ``lambda_min``)
    clamps lambda at once when it is active, and changes nothing in the warm-up or when
    the bounds are the saved ones (so a resumed run repeats an uninterrupted one)."""
    lag = SparsityLagrangian(tau=1.0, warmup=2, lambda_init=1e-4, lambda_max=0.1)
    for _ in range(5):
        lag.update(0.5)
    state = lag.state_dict()
    same = SparsityLagrangian(tau=1.0, warmup=2, lambda_init=1e-4, lambda_max=0.1)
    same.load_state_dict(state)
    assert same.state_dict() == state
    raised = SparsityLagrangian(tau=1.0, warmup=2, lambda_init=0.05, lambda_min=0.05)
    raised.load_state_dict(state)
    assert state["log_lambda"] < math.log(0.05) and math.isclose(raised.value, 0.05)
    early = SparsityLagrangian(tau=1.0, warmup=10, lambda_init=1e-4)
    early.update(0.5)
    warm = SparsityLagrangian(tau=1.0, warmup=10, lambda_init=0.05, lambda_min=0.05)
    warm.load_state_dict(early.state_dict())
    assert warm.state_dict() == early.state_dict()  # in the warm-up: untouched


def _train_edges(
    tau: float, per_object: bool = False
) -> tuple[float, list[float], SparsityLagrangian]:
    """Train a tiny SPARTAN 40 steps; return eval edges per transition and lambdas (with
    per-object constraints: the largest lambda of each step, and object 0's Lagrangian)."""
    model = make_model("spartan")
    kwargs = {"tau": tau, "warmup": 5, "lambda_init": 1e-2, "lambda_max": 1.0, "lr": 0.5}
    lag: SparsityLagrangian | ObjectLagrangians = (
        ObjectLagrangians(**kwargs) if per_object else SparsityLagrangian(**kwargs)
    )
    data_gen = torch.Generator().manual_seed(0)
    lambdas: list[float] = []

    def sample() -> SequenceBatch:
        return make_batch(4, 6, seed=int(torch.randint(0, 10_000, (1,), generator=data_gen)))

    train(model, sample, 40, lr=3e-2, seed=0, lagrangian=lag, log_every=100,
          on_step=lambda step, figures: lambdas.append(_largest(lag.value)))  # fmt: skip
    model.eval()
    batch = make_batch(4, 6, seed=123)
    with torch.no_grad():
        out = model(batch.obs[:, :-1], batch.actions, batch.regimes)
    edges = float(out.graph[..., graph_off_diagonal()].float().sum(-1).mean())
    return edges, lambdas, lag.parts[0] if isinstance(lag, ObjectLagrangians) else lag


def _largest(value: float | list[float]) -> float:
    return max(value) if isinstance(value, list) else value


@pytest.mark.parametrize("per_object", [False, True])
def test_training_with_unreachable_tau_keeps_the_graph(per_object: bool) -> None:
    edges, lambdas, lag = _train_edges(tau=1e-12, per_object=per_object)
    assert max(lambdas) <= lag.lambda_init
    assert math.isclose(lambdas[-1], lag.lambda_min)
    assert edges > 0.75 * graph_off_diagonal().sum()  # no collapse: the graph stays open
    # the same run with a reachable constraint prices paths up and empties most of it,
    # so the check above can fail
    reachable, lambdas_up, _ = _train_edges(tau=1e3, per_object=per_object)
    assert lambdas_up[-1] == 1.0
    assert reachable < edges / 2


def test_per_object_weights_price_the_paths_into_each_object() -> None:
    model = make_model("spartan").train()
    batch = make_batch()
    terms0, out = model.loss(batch, 0.0, torch.Generator().manual_seed(1))
    into = out.paths[:, :, :N_OBJECTS].sum(-1).mean((0, 1))
    torch.testing.assert_close(terms0.sparsity, into.sum())
    torch.testing.assert_close(terms0.mse_objects.mean(), terms0.mse)
    assert terms0.mse_objects.shape == (N_OBJECTS,) and not terms0.mse_objects.requires_grad
    weights = [0.0] * N_OBJECTS
    weights[1] = 0.5  # only the paths into object 1 cost
    terms1, _ = model.loss(batch, weights, torch.Generator().manual_seed(1))
    torch.testing.assert_close(terms1.total, terms0.total + 0.5 * into[1])
    model.zero_grad()
    terms1.total.backward()
    assert all(g.bias.grad.abs() > 0 for g in gates(model))
    # all-zero per-object weights add exactly nothing, as the scalar 0 does
    terms2, _ = model.loss(batch, [0.0] * N_OBJECTS, torch.Generator().manual_seed(1))
    assert torch.equal(terms2.total, terms0.total)
    with pytest.raises(ValueError, match="a scalar or 4 values"):
        model.loss(batch, [0.1] * (N_OBJECTS + 1))


def test_object_lagrangians_move_each_lambda_on_its_own_mse() -> None:
    lag = ObjectLagrangians(tau=1.0, warmup=0, lambda_init=0.01, lambda_min=1e-4, lr=0.5, ema=0.0)
    assert lag.value == pytest.approx(0.01) and lag.tau is None  # unsized until updated
    for _ in range(20):
        up, down = lag.update([0.5, 1.5])  # object 0 meets its tau, object 1 does not
    assert up > 0.01 and math.isclose(down, 1e-4)
    assert lag.summary()["causal/lambda"] == pytest.approx((up + down) / 2)
    with pytest.raises(ValueError, match="2 objects, got 3"):
        lag.update([0.1, 0.1, 0.1])
    copy = ObjectLagrangians(tau=1.0, warmup=0, lambda_init=0.01, lambda_min=1e-4, lr=0.5, ema=0.0)
    copy.load_state_dict(lag.state_dict())
    assert copy.value == lag.value
    for mse in ([0.9, 0.2], [2.5, 0.7], [0.1, 0.1]):  # inputs that move both lambdas
        assert copy.update(mse) == lag.update(mse)
    before = lag.state_dict()
    with pytest.raises(ValueError, match="per-object MSEs"):
        lag.update([0.5, float("nan")])
    assert lag.state_dict() == before  # a refused update leaves no trace
    # a checkpoint of the other kind is refused by name, both ways
    with pytest.raises(ValueError, match="sparsity_constraint='total'"):
        copy.load_state_dict(SparsityLagrangian(tau=1.0).state_dict())
    with pytest.raises(ValueError, match="sparsity_constraint='per_object'"):
        SparsityLagrangian(tau=1.0).load_state_dict(lag.state_dict())


def test_object_lagrangians_automatic_tau_per_object() -> None:
    lag = ObjectLagrangians(tau=None, tau_factor=2.0, warmup=2, ema=0.0)
    lag.update([1.0, 10.0])
    assert lag.value == [0.0, 0.0]  # warm-up: no price yet
    lag.update([1.0, 10.0])
    assert lag.tau == [2.0, 20.0]  # each object's own warm-up MSE, times tau_factor
    with pytest.raises(ValueError, match="tau has 3 entries for 2 objects"):
        ObjectLagrangians(tau=[1.0, 1.0, 1.0], warmup=0).update([0.1, 0.1])


def test_lagrangian_tau_follows_a_dense_reference() -> None:
    lag = SparsityLagrangian(tau=None, tau_factor=1.5, warmup=2, ema=0.5, lr=0.1)
    lag.update(1.0, reference=0.4)
    assert lag.tau is None and lag.value == 0.0  # warm-up: nothing set yet
    lag.update(1.0, reference=0.2)  # reference average 0.4 -> 0.3
    assert math.isclose(lag.reference_avg, 0.3) and math.isclose(lag.tau, 1.5 * 0.3)
    lag.update(1.0, reference=0.1)  # the reference keeps learning: tau follows it down
    assert math.isclose(lag.tau, 1.5 * 0.2)
    # the rule without a reference would have frozen tau at 1.5 x the model's own average
    frozen = SparsityLagrangian(tau=None, tau_factor=1.5, warmup=2, ema=0.5, lr=0.1)
    for _ in range(3):
        frozen.update(1.0)
    assert math.isclose(frozen.tau, 1.5)
    # a fixed tau is kept whatever the reference
    fixed = SparsityLagrangian(tau=0.7, warmup=0, ema=0.5)
    fixed.update(1.0, reference=0.01)
    assert fixed.tau == 0.7 and math.isclose(fixed.reference_avg, 0.01)
    # the reference average is part of the state, and a state without it still loads
    copy = SparsityLagrangian(tau=None, tau_factor=1.5, warmup=2, ema=0.5, lr=0.1)
    copy.load_state_dict(lag.state_dict())
    assert copy.update(0.3, reference=0.05) == lag.update(0.3, reference=0.05)
    assert copy.tau == lag.tau
    old = {k: v for k, v in lag.state_dict().items() if k != "reference_avg"}
    copy.load_state_dict(old)
    assert copy.reference_avg is None
    before = lag.state_dict()
    with pytest.raises(ValueError, match="reference MSE"):
        lag.update(0.3, reference=math.nan)
    assert lag.state_dict() == before


def test_object_lagrangians_take_one_reference_per_object() -> None:
    lag = ObjectLagrangians(tau=None, tau_factor=2.0, warmup=1, ema=0.0)
    lag.update([1.0, 10.0], reference=[0.5, 3.0])
    assert lag.tau == [1.0, 6.0]  # each object's own reference, times tau_factor
    with pytest.raises(ValueError, match="2 MSEs but 3 reference MSEs"):
        lag.update([1.0, 1.0], reference=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="reference"):
        lag.update([1.0, 1.0], reference=[1.0, math.inf])
    assert lag.tau == [1.0, 6.0]


def test_training_with_a_dense_reference_sets_tau_from_the_twin() -> None:
    model = make_model("spartan", sparsity_warmup=3)
    lag = make_lagrangian(model)
    logged: dict[str, list[float]] = {}
    data_gen = torch.Generator().manual_seed(0)

    def sample() -> SequenceBatch:
        return make_batch(4, 6, seed=int(torch.randint(0, 10_000, (1,), generator=data_gen)))

    def log(key: str, value: float, step: int) -> None:
        logged.setdefault(key, []).append(value)

    train(model, sample, 12, lr=1e-2, seed=0, lagrangian=lag, log=log, log_every=4,
          reference=True)  # fmt: skip
    assert isinstance(lag, ObjectLagrangians)
    for part in lag.parts:  # tau is tau_factor x the twin's average, not the model's
        assert part.reference_avg is not None and part.reference_avg > 0
        assert math.isclose(part.tau, model.config.tau_factor * part.reference_avg)
        assert not math.isclose(part.reference_avg, part.mse_avg)
    assert len(logged["reference/mse"]) == 3 and all(v > 0 for v in logged["reference/mse"])
    with pytest.raises(ValueError, match="needs a sparse world model"):
        DenseReference(make_model("dense-transformer"), 10, 1e-3, 1.0, 0)
    with pytest.raises(ValueError, match="obs='pixels'"):
        DenseReference(make_model("spartan", obs="pixels", image_size=32), 10, 1e-3, 1.0, 0)
    twin = DenseReference(make_model("s2ssm"), 10, 1e-3, 1.0, 0)
    assert twin.model.config.name == "dense-ssm" and not twin.model.config.sparse
    before = [p.detach().clone() for p in twin.model.parameters()]
    for i in range(3):
        twin.step(make_batch(seed=i))
    assert any(not torch.equal(a, p) for a, p in zip(before, twin.model.parameters(), strict=True))
    assert twin.opt.param_groups[0]["lr"] < 1e-3  # the same cosine decay as the model


def test_a_dense_reference_leaves_the_model_training_unchanged() -> None:
    """During the warm-up (lambda 0) the twin changes nothing of the sparse model's
    training: same weights with and without it (it draws from no shared random stream)."""

    def run(reference: bool) -> list[torch.Tensor]:
        model = make_model("spartan", sparsity_warmup=10)
        data_gen = torch.Generator().manual_seed(0)

        def sample() -> SequenceBatch:
            return make_batch(4, 6, seed=int(torch.randint(0, 99, (1,), generator=data_gen)))

        torch.manual_seed(3)
        train(model, sample, 6, lr=1e-2, seed=0, log_every=100, reference=reference)
        return [p.detach() for p in model.parameters()]

    for a, b in zip(run(False), run(True), strict=True):
        assert torch.equal(a, b)


def test_make_lagrangian_follows_the_config() -> None:
    assert isinstance(make_lagrangian(make_model("spartan")), ObjectLagrangians)
    total = make_model("spartan", sparsity_constraint="total")
    assert isinstance(make_lagrangian(total), SparsityLagrangian)
    with pytest.raises(ValueError, match="sparsity_constraint must be one of per_object, total"):
        make_model("spartan", sparsity_constraint="each")


# ----------------------------------------------------------------------------- 5. scan
def scan_inputs(dtype: torch.dtype, b: int = 2, length: int = 6, d: int = 3, n: int = 4):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(b, length, d, generator=g, dtype=dtype)
    delta = torch.rand(b, length, d, generator=g, dtype=dtype) + 0.1
    a = -torch.rand(d, n, generator=g, dtype=dtype) - 0.1
    bm = torch.randn(b, length, n, generator=g, dtype=dtype)
    cm = torch.randn(b, length, n, generator=g, dtype=dtype)
    dm = torch.randn(d, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (u, delta, a, bm, cm, dm)]


def reference_scan(u, delta, a, bm, cm, dm):  # type: ignore[no-untyped-def]
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t;  y_t = <C_t, h_t> + D u_t."""
    b, length, d = u.shape
    h = u.new_zeros(b, d, a.shape[1])
    ys = []
    for t in range(length):
        h = (
            torch.exp(delta[:, t, :, None] * a) * h
            + (delta[:, t] * u[:, t])[..., None] * bm[:, t, None, :]
        )
        ys.append((h * cm[:, t, None, :]).sum(-1) + dm * u[:, t])
    return torch.stack(ys, 1)


def test_selective_scan_gradcheck() -> None:
    inputs = scan_inputs(torch.float64, b=2, length=4, d=2, n=3)
    assert torch.autograd.gradcheck(_SelectiveScan.apply, tuple(inputs))


def test_selective_scan_matches_reference_loop() -> None:
    inputs = scan_inputs(torch.float64)
    y = selective_scan(*inputs, backend="torch")
    ref = reference_scan(*inputs)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = torch.autograd.grad(y, inputs, gy)
    ref_grads = torch.autograd.grad(ref, inputs, gy)
    for name, g, r in zip("u delta A B C D".split(), grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9, msg=f"gradient of {name}")

    inputs32 = scan_inputs(torch.float32)
    torch.testing.assert_close(
        selective_scan(*inputs32), reference_scan(*inputs32), rtol=1e-5, atol=1e-5
    )


def test_selective_scan_backward_twice_with_retained_graph() -> None:
    """The backward must not consume its saved tensors (retain_graph, gradcheck)."""
    inputs = scan_inputs(torch.float64)
    y = selective_scan(*inputs)
    first = torch.autograd.grad(y.sum(), inputs, retain_graph=True)
    second = torch.autograd.grad(y.sum(), inputs)
    for g1, g2 in zip(first, second, strict=True):
        assert torch.equal(g1, g2)


def test_mamba_layer_step_matches_forward() -> None:
    torch.manual_seed(0)
    layer = MambaLayer(16, d_state=4, expand=2, d_conv=3, backend="torch")
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        y = layer(x)
        state = layer.initial_state(2)
        steps = []
        for t in range(x.shape[1]):
            out, state = layer.step(x[:, t], state)
            steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), y, rtol=1e-5, atol=1e-5)
    assert state.conv.shape == (2, 32, 2) and state.ssm.shape == (2, 32, 4)
    # causal: changing the last input changes only the last output
    x2 = x.clone()
    x2[:, -1] += 1.0
    with torch.no_grad():
        y2 = layer(x2)
    torch.testing.assert_close(y2[:, :-1], y[:, :-1])
    assert not torch.allclose(y2[:, -1], y[:, -1])


@pytest.mark.parametrize("name", WORLD_MODELS)
def test_world_model_step_matches_forward(name: str) -> None:
    model = make_model(name).eval()
    batch = make_batch(b=3, t=6, seed=5)
    z = batch.obs[:, :-1]
    with torch.no_grad():
        seq = model(z, batch.actions, batch.regimes)
        state = model.initial_state(3, N_OBJECTS)
        outs = []
        for t in range(z.shape[1]):
            out, state = model.step(z[:, t], batch.actions[:, t], batch.regimes, state)
            outs.append(out)
    cat = {k: torch.cat([getattr(o, k) for o in outs], 1) for k in seq._fields[:4]}
    for key in ("next_latent", "reward", "cont_logit"):
        torch.testing.assert_close(cat[key], getattr(seq, key), rtol=1e-5, atol=1e-5, msg=key)
    assert torch.equal(cat["graph"], seq.graph)
    if model.config.family == "ssm":
        # the recurrent state matters: a fresh state at every step gives other predictions
        fresh = [model.step(z[:, t], batch.actions[:, t], batch.regimes)[0] for t in range(6)]
        stateless = torch.cat([o.next_latent for o in fresh], 1)
        assert not torch.allclose(stateless, seq.next_latent, atol=1e-4)


def test_invalid_backend_names() -> None:
    inputs = scan_inputs(torch.float32)
    with pytest.raises(ValueError, match="backend"):
        selective_scan(*inputs, backend="cuda")
    with pytest.raises(ValueError, match="ssm_backend"):
        MambaLayer(16, backend="cuda")
    with pytest.raises(ValueError, match="ssm_backend"):
        WorldModelConfig(ssm_backend="triton")
    layer = MambaLayer(16, backend="auto")
    assert layer.resolved_backend(torch.zeros(1, 2, 16)) == "torch"  # CPU tensors: ours


@pytest.mark.skipif(mamba_ssm_available(), reason="mamba-ssm is installed here")
def test_mamba_ssm_backend_unavailable_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"pip install"):
        MambaLayer(16, backend="mamba_ssm")


@pytest.mark.skipif(
    not mamba_ssm_available(),
    reason="needs the optional mamba-ssm package and a CUDA GPU (pip install '.[cuda]'); "
    "the torch scan is tested against a reference loop above",
)
def test_torch_and_mamba_ssm_backends_agree() -> None:
    inputs = [t.detach().cuda().requires_grad_() for t in scan_inputs(torch.float32, d=8)]
    y_torch = selective_scan(*inputs, backend="torch")
    y_cuda = selective_scan(*inputs, backend="mamba_ssm")
    torch.testing.assert_close(y_cuda, y_torch, rtol=1e-4, atol=1e-4)
    gy = torch.randn_like(y_torch)
    g_torch = torch.autograd.grad(y_torch, inputs, gy)
    g_cuda = torch.autograd.grad(y_cuda, inputs, gy)
    for g1, g2 in zip(g_torch, g_cuda, strict=True):
        torch.testing.assert_close(g2, g1, rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- 6. metrics
def hand_graphs() -> tuple[np.ndarray, np.ndarray]:
    """N = 2: true action -> obj0, obj0 -> obj1; predicted action -> obj0, regime -> obj1."""
    true = np.zeros((4, 2), bool)
    true[0, 0] = true[1, 1] = True
    true[ACTION, 0] = True
    true[0, 1] = True
    pred = np.zeros((4, 2), bool)  # no self edges predicted: they do not count
    pred[ACTION, 0] = True  # true positive
    pred[REGIME, 1] = True  # false positive; obj0 -> obj1 missed: false negative
    return pred, true


def test_graph_metrics_exact_values() -> None:
    pred, true = hand_graphs()
    m = graph_metrics(pred[None], true[None])
    assert m == {"shd": 2.0, "precision": 0.5, "recall": 0.5, "edges": 2.0, "true_edges": 2.0}

    # object self edges are ignored: flipping them changes nothing
    perfect = true.copy()
    perfect[0, 0] = perfect[1, 1] = False
    assert graph_metrics(perfect[None], true[None])["shd"] == 0.0
    assert graph_metrics(true[None], perfect[None])["shd"] == 0.0

    two = graph_metrics(np.stack([pred, perfect]), np.stack([true, true]))
    assert two == {"shd": 1.0, "precision": 0.75, "recall": 0.75, "edges": 2.0, "true_edges": 2.0}

    empty = np.zeros((1, 4, 2), bool)
    assert graph_metrics(empty, true[None])["precision"] == 0.0
    assert graph_metrics(pred[None], empty)["recall"] == 1.0


def test_graph_stats_streaming_equals_one_batch_and_takes_tensors() -> None:
    rng = np.random.default_rng(0)
    pred = rng.random((5, 3, M_TOKENS, N_OBJECTS)) > 0.5
    true = rng.random((5, 3, M_TOKENS, N_OBJECTS)) > 0.6
    stats = GraphStats()
    for i in range(5):
        stats.add(torch.from_numpy(pred[i]), torch.from_numpy(true[i]))
    assert stats.transitions == 15
    whole = graph_metrics(pred, true)
    for k, v in stats.result().items():
        assert math.isclose(v, whole[k]), k
    mask = np.ones((M_TOKENS, N_OBJECTS), bool)
    mask[range(N_OBJECTS), range(N_OBJECTS)] = False
    assert math.isclose(whole["shd"], float((pred != true)[..., mask].sum()) / 15)


def test_graph_stats_per_edge_breaks_the_shd_down() -> None:
    true = np.zeros((2, 4, 2), bool)  # 2 transitions, 2 objects: parents a, b, action, regime
    true[:, 2, 0] = True  # action -> a in both
    true[0, 1, 0] = True  # b -> a in the first only
    pred = true.copy()
    pred[0, 1, 0] = False  # one false negative
    pred[:, 3, 1] = True  # regime -> b: two false positives
    pred[:, 1, 1] = True  # a self edge: never counted
    stats = GraphStats()
    stats.add(pred, true)
    edges = stats.per_edge(["a", "b", "action", "regime"], ["a", "b"])
    assert "b->b" not in edges and len(edges) == 6
    assert edges["b->a"] == {"true": 0.5, "predicted": 0.0, "fp": 0.0, "fn": 0.5}
    assert edges["regime->b"] == {"true": 0.0, "predicted": 1.0, "fp": 1.0, "fn": 0.0}
    assert edges["action->a"] == {"true": 1.0, "predicted": 1.0, "fp": 0.0, "fn": 0.0}
    assert sum(e["fp"] + e["fn"] for e in edges.values()) == stats.result()["shd"] == 1.5
    with pytest.raises(ValueError, match="3 parent and 2 child names"):
        stats.per_edge(["a", "b", "action"], ["a", "b"])


def test_graph_metrics_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        graph_metrics(np.zeros((2, 6, 4), bool), np.zeros((2, 5, 4), bool))


# ----------------------------------------------------------------------------- 7. save/load
@pytest.mark.parametrize(
    ("name", "fields"),
    [(n, {}) for n in WORLD_MODELS] + [(n, {"gate_action_key": "type"}) for n in SPARSE_MODELS],
)
def test_save_load_round_trip(name: str, fields: dict, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = make_model(name, seed=3, **fields).eval()
    if not model.config.sparse:
        model.graph_threshold.fill_(0.3)
    path = model.save(tmp_path / "m.pt", extra={"mse": 0.5})
    loaded = WorldModel.load(path)
    assert not loaded.training
    assert loaded.config == model.config and loaded.regime_ids == REGIME_IDS
    assert loaded.extra == {"mse": 0.5}
    if not model.config.sparse:
        assert float(loaded.graph_threshold) == pytest.approx(0.3)
    batch = make_batch(seed=7)
    with torch.no_grad():
        a = model(batch.obs[:, :-1], batch.actions, batch.regimes)
        b = loaded(batch.obs[:, :-1], batch.actions, batch.regimes)
    for key in ("next_latent", "reward", "cont_logit", "graph"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert list(tmp_path.iterdir()) == [tmp_path / "m.pt"]  # no temporary file left


def save_without_field(model: WorldModel, path, field: str):  # type: ignore[no-untyped-def]
    """Save ``model`` as a file written before the config ``field`` existed."""
    path = model.save(path)
    payload = torch.load(path, weights_only=True)
    del payload["config"][field]
    torch.save(payload, path)
    return path


def test_files_from_before_per_object_constraints_load_with_the_total_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = make_model("spartan", seed=4)
    assert model.config.sparsity_constraint == "per_object"  # today's default
    loaded = WorldModel.load(save_without_field(model, tmp_path / "old.pt", "sparsity_constraint"))
    assert loaded.config.sparsity_constraint == "total"
    assert isinstance(make_lagrangian(loaded), SparsityLagrangian)


@pytest.mark.parametrize("name", ["spartan", "s2ssm"])
def test_detached_gates_send_no_gradient_into_the_tokens(name: str) -> None:
    """``gate_detach``: the path count (a function of the gates only) trains the gates'
    q, k and bias but not the tokeniser; without it the tokeniser gets a gradient."""
    grads = {}
    for detach in (False, True):
        only_paths = {"token_weight": 0.0, "reward_weight": 0.0, "cont_weight": 0.0,
                      "gate_logit_weight": 0.0}  # fmt: skip
        model = make_model(name, seed=1, gate_detach=detach, **only_paths).train()
        terms, _ = model.loss(make_batch(), 0.5, torch.Generator().manual_seed(0))
        model.zero_grad()
        terms.total.backward()
        tok = model.in_proj[0].weight.grad
        grads[detach] = 0.0 if tok is None else float(tok.abs().sum())
        assert all(float(g.q.weight.grad.abs().sum()) > 0 for g in gates(model))
    assert grads[False] > 0 and grads[True] == 0.0


def test_files_from_before_the_logit_penalty_default_train_without_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = make_model("spartan", seed=4, gate_logit_weight=0.0)
    assert WorldModelConfig().gate_logit_weight == 1.0  # today's default
    loaded = WorldModel.load(save_without_field(model, tmp_path / "old.pt", "gate_logit_weight"))
    assert loaded.config.gate_logit_weight == 0.0  # a resumed run keeps its objective
    assert loaded.config.gate_detach is False


@pytest.mark.parametrize("name", SPARSE_MODELS)
def test_files_from_before_the_action_key_load_with_value_keys(name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = make_model(name, seed=4, gate_action_key="value").eval()
    assert WorldModelConfig().gate_action_key == "type"  # today's default
    loaded = WorldModel.load(save_without_field(model, tmp_path / "old.pt", "gate_action_key"))
    assert loaded.config.gate_action_key == "value"
    batch = make_batch(seed=2)
    with torch.no_grad():
        a = model(batch.obs[:, :-1], batch.actions, batch.regimes)
        b = loaded(batch.obs[:, :-1], batch.actions, batch.regimes)
    assert torch.equal(a.next_latent, b.next_latent) and torch.equal(a.graph, b.graph)


def test_dense_graph_threshold_changes_the_graph_and_survives(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = make_model("dense-transformer").eval()
    batch = make_batch(seed=1)
    with torch.no_grad():
        low = model(batch.obs[:, :-1], batch.actions, batch.regimes).graph
        model.graph_threshold.fill_(0.9)
        high = model(batch.obs[:, :-1], batch.actions, batch.regimes).graph
        loaded = WorldModel.load(model.save(tmp_path / "dense.pt"))
        again = loaded(batch.obs[:, :-1], batch.actions, batch.regimes).graph
    assert high.sum() < low.sum()
    assert torch.equal(again, high)


def test_load_rejects_other_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="does not exist"):
        WorldModel.load(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"x": 1}, other)
    with pytest.raises(ValueError, match="not an mbrl-causal world model file"):
        WorldModel.load(other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable world model file"):
        WorldModel.load(garbage)
    with pytest.raises(ValueError, match="does not exist"):
        WorldModel.load(tmp_path)  # a folder
    newer = tmp_path / "newer.pt"
    payload = torch.load(make_model("spartan").save(tmp_path / "ok.pt"), weights_only=True)
    payload["version"] = 99
    torch.save(payload, newer)
    with pytest.raises(ValueError, match="format version 99"):
        WorldModel.load(newer)


# ----------------------------------------------------------------------------- 8. config
def test_config_validation() -> None:
    with pytest.raises(ValueError) as info:
        WorldModelConfig(name="bogus")
    for name in WORLD_MODELS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="divisible"):
        WorldModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="obs"):
        WorldModelConfig(obs="rgb")
    with pytest.raises(ValueError, match="d_model"):
        WorldModelConfig(d_model=0)
    with pytest.raises(ValueError, match="mse_ema"):
        WorldModelConfig(mse_ema=1.0)
    with pytest.raises(ValueError, match="gate_logit_weight"):
        WorldModelConfig(gate_logit_weight=-1.0)
    with pytest.raises(ValueError, match="random_fraction"):
        FitConfig(random_fraction=2)
    with pytest.raises(ValueError, match="few_shot_ks"):
        FitConfig(few_shot_ks=[0])
    assert [WorldModelConfig(name=n).sparse for n in WORLD_MODELS] == [True, True, False, False]
    assert [WorldModelConfig(name=n).family for n in WORLD_MODELS] == [
        "transformer",
        "ssm",
        "transformer",
        "ssm",
    ]


@pytest.mark.parametrize("bad", [7, 1, 63, 64, -1])
def test_regime_token_unknown_id(bad: int) -> None:
    model = make_model("spartan")
    torch.testing.assert_close(model.regime_token(torch.tensor([3])), model.codebook.weight[1:2])
    with pytest.raises(ValueError) as info:
        model.regime_token(torch.tensor([0, bad]))
    message = str(info.value)
    assert "[0, 3, 5]" in message  # names the known ids
    assert f"[{bad}]" in message  # and the offending one


# ----------------------------------------------------------------------------- 9. pixels
def test_pixels_mode_encode_and_loss() -> None:
    model = make_model("spartan", obs="pixels", latent_dim=8).train()
    g = torch.Generator().manual_seed(0)
    b, t = 2, 3
    pixels = torch.randint(0, 256, (b, t + 1, 32, 32, 3), generator=g, dtype=torch.uint8)
    masks = torch.zeros(b, t + 1, N_OBJECTS, 32, 32, dtype=torch.bool)
    masks[:, :, 0, :8] = True
    masks[:, :, 1, :8] = True  # same mask as object 0
    masks[:, :, 2, 8:20, 4:28] = True
    masks[:, :, 3, 20:, :] = True
    obs = {"pixels": pixels, "masks": masks}

    with torch.no_grad():
        z = model.encode({"pixels": pixels[:, :t], "masks": masks[:, :t]})
    assert z.shape == (b, t, N_OBJECTS, 8)
    torch.testing.assert_close(z[:, :, 0], z[:, :, 1])  # shared encoder, same masked image
    assert not torch.allclose(z[:, :, 0], z[:, :, 2])

    batch = make_batch(b, t, seed=2)._replace(obs=obs)
    torch.manual_seed(1)  # the VAE's reparameterisation noise
    terms, out = model.loss(batch, 0.1, torch.Generator().manual_seed(0))
    assert out.next_latent.shape == (b, t, N_OBJECTS, 8)
    assert terms.recon > 0 and terms.kl >= 0
    with torch.no_grad():  # KL(N(mean, var) || N(0, 1)) in nats per object
        mean, logvar = model.encoder._stats(masked_images(pixels, masks))
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(-1).mean()
    torch.testing.assert_close(terms.kl.detach(), kl)
    assert torch.isfinite(terms.total)
    c = model.config
    expected = c.token_weight * terms.mse + c.reward_weight * terms.reward
    expected = expected + c.cont_weight * terms.cont + 0.1 * terms.sparsity
    expected = expected + c.recon_weight * terms.recon + c.kl_weight * terms.kl
    torch.testing.assert_close(terms.total, expected)
    terms.total.backward()
    first_conv = model.encoder.enc[0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("recon_loss", ["bce", "squared"])
def test_vae_reconstruction_term_is_the_chosen_loss_summed_per_image(recon_loss: str) -> None:
    """``recon_loss``: binary cross-entropy of the decoder's logits (default) or the squared
    error of its sigmoid image, summed over each masked image and averaged over objects."""
    torch.manual_seed(0)
    vae = MaskedImageVAE(latent_dim=4, image_size=32, recon_loss=recon_loss)
    pixels = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8)
    masks = torch.zeros(2, 3, 2, 32, 32, dtype=torch.bool)
    masks[..., 0, 4:10, 3:5] = True  # a paddle-sized object
    masks[..., 1, 14:17, 14:17] = True  # a ball-sized one
    obs = {"pixels": pixels, "masks": masks}
    torch.manual_seed(1)
    mean, terms = vae.loss(obs)
    images = masked_images(pixels, masks)
    torch.manual_seed(1)  # the same reparameterisation noise
    m, logvar = vae._stats(images)
    z = m + torch.randn_like(m) * torch.exp(0.5 * logvar)
    logits = vae.decode_logits(z)
    if recon_loss == "bce":
        p = torch.sigmoid(logits)
        per_value = -(images * torch.log(p) + (1 - images) * torch.log1p(-p))
    else:
        per_value = (torch.sigmoid(logits) - images).square()
    torch.testing.assert_close(terms.recon, per_value.sum((-3, -2, -1)).mean())
    torch.testing.assert_close(mean, m)
    torch.testing.assert_close(vae.decode(z), torch.sigmoid(logits))
    terms.recon.backward()
    assert vae.dec[-1].weight.grad is not None and vae.dec[-1].weight.grad.abs().sum() > 0


def test_recon_loss_is_validated_saved_and_old_files_get_bce(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="recon_loss must be one of bce, squared"):
        WorldModelConfig(obs="pixels", recon_loss="l1")
    with pytest.raises(ValueError, match="recon_loss must be one of bce, squared"):
        MaskedImageVAE(recon_loss="mse")
    model = make_model("spartan", obs="pixels", latent_dim=4, recon_loss="squared")
    loaded = WorldModel.load(model.save(tmp_path / "m.pt"))
    assert loaded.config.recon_loss == "squared" and loaded.encoder.recon_loss == "squared"
    old = WorldModel.load(save_without_field(model, tmp_path / "o.pt", "recon_loss"))
    assert old.config.recon_loss == "bce" and old.encoder.recon_loss == "bce"


# ----------------------------------------------------------------------------- 10. adaptation
@pytest.mark.parametrize("name", ["spartan", "s2ssm"])
def test_fit_regime_token_changes_only_the_token(name: str) -> None:
    model = make_model(name, seed=4).train()
    model.reward_head[0].weight.requires_grad_(False)  # flags must come back as they were
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = make_batch(b=2, t=6, seed=11)

    def mse(token: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            z = model.encode(batch.obs)
            out = model(z[:, :-1], batch.actions, token.expand(len(z), -1))
        return float(F.mse_loss(out.next_latent, z[:, 1:]))

    start = model.codebook.weight.detach().mean(0)
    initial = mse(start)
    model.train()
    token = fit_regime_token(model, batch, steps=25, lr=0.05)
    assert model.training  # mode restored
    assert [p.requires_grad for p in model.parameters()] == flags
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed"
    assert token.shape == (model.config.d_model,)
    assert not token.requires_grad
    assert not torch.equal(token, start)
    assert mse(token) < 0.99 * initial


def test_fit_regime_token_does_not_explore_and_old_files_load_without_exploration(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    """A regime-token fit uses the model's own gates: with the same weights, a model
    with gate_explore gives the same token as one without, and keeps its setting. A
    file written before the field loads with exploration off (the behaviour then)."""
    plain = make_model("spartan", seed=4)
    exploring = make_model("spartan", seed=4, gate_explore=0.5)
    exploring.load_state_dict(plain.state_dict())
    batch = make_batch(b=2, t=6, seed=11)
    token = fit_regime_token(plain, batch, steps=10, lr=0.05)
    torch.testing.assert_close(fit_regime_token(exploring, batch, steps=10, lr=0.05), token)
    assert all(g.explore == 0.5 for g in gates(exploring))  # restored after the fit
    old = WorldModel.load(save_without_field(exploring, tmp_path / "o.pt", "gate_explore"))
    assert old.config.gate_explore == 0.0
    assert all(g.explore == 0.0 for g in gates(old))


def test_fit_regime_token_uses_straight_through_gates_under_the_score_estimator() -> None:
    """A score-estimator model's token fit is the straight-through one (a ``score`` gate
    passes no gradient to the token), and the model keeps its estimator."""
    plain = make_model("spartan", seed=4)
    scored = make_model("spartan", seed=4, gate_estimator="score")
    scored.load_state_dict(plain.state_dict())
    batch = make_batch(b=2, t=6, seed=11)
    token = fit_regime_token(plain, batch, steps=10, lr=0.05)
    torch.testing.assert_close(fit_regime_token(scored, batch, steps=10, lr=0.05), token)
    assert all(g.estimator == "score" for g in gates(scored))


def test_fit_regime_token_rejects_zero_steps() -> None:
    with pytest.raises(ValueError, match="steps"):
        fit_regime_token(make_model("spartan"), make_batch(), steps=0)
