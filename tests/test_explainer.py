"""The maps equal the paper's formula, computed independently; the model is left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlcam.agents import load_agent
from rlcam.cam import grad_cam, hires_cam, layer_cam
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer, conv_layers, default_layer
from rlcam.families.discrete import DiscreteActorCritic, QNetwork

TARGETS = {"ppo": DiscreteActorCritic.targets, "a2c": DiscreteActorCritic.targets}
TARGETS.update(dqn=QNetwork.targets, qrdqn=QNetwork.targets)

# -- an independent Grad-CAM: hand-written gradient of the fully connected head, numpy formula ----------


def _head_parts(agent):
    """(extractor, output weight (O, 512) float64, n_quantiles) for a NatureCNN policy."""
    policy = agent.policy
    if agent.algo in ("ppo", "a2c"):
        return policy.features_extractor, None, 1
    if agent.algo == "dqn":
        return policy.q_net.features_extractor, policy.q_net.q_net[0].weight, 1
    net = policy.quantile_net
    return net.features_extractor, net.quantile_net[0].weight, net.n_quantiles


def reference_cam(agent, obs: np.ndarray, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM by hand: returns (argmax actions (N,), maps (N, 7, 7)) in float64.

    NatureCNN: A = relu(conv3(...)) (N, 64, 7, 7); h = relu(W1 vec(A) + b1); outputs are
    linear in h, so dy/dh = W_out^T c for a coefficient vector c over the outputs, and
    dy/dvec(A) = W1^T (1[W1 vec(A) + b1 > 0] * dy/dh). No autograd involved.
    """
    extractor, w_out, n_quantiles = _head_parts(agent)
    policy = agent.policy
    with torch.no_grad():
        x = torch.as_tensor(obs).float() / 255.0
        acts = extractor.cnn[:6](x).double().numpy()  # (N, 64, 7, 7)
    n = len(obs)
    flat = acts.reshape(n, -1)
    w1 = extractor.linear[0].weight.detach().double().numpy()  # (512, 3136)
    b1 = extractor.linear[0].bias.detach().double().numpy()
    z = flat @ w1.T + b1
    h = np.maximum(z, 0)
    if agent.algo in ("ppo", "a2c"):
        wa = policy.action_net.weight.detach().double().numpy()  # (A, 512)
        ba = policy.action_net.bias.detach().double().numpy()
        wv = policy.value_net.weight.detach().double().numpy()[0]  # (512,)
        logits = h @ wa.T + ba
        actions = logits.argmax(1)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        onehot = np.eye(wa.shape[0])[actions]
        dy_dh = {"logit": onehot @ wa, "logprob": (onehot - probs) @ wa, "value": np.tile(wv, (n, 1))}[target]
    else:
        w = w_out.detach().double().numpy()  # (n_quantiles * A, 512), row j * A + a
        n_actions = w.shape[0] // n_quantiles
        w_q = w.reshape(n_quantiles, n_actions, -1).mean(0)  # Q = mean over quantiles, linear in h
        b = _head_bias(agent).reshape(n_quantiles, n_actions).mean(0)
        q = h @ w_q.T + b
        actions = q.argmax(1)
        onehot = np.eye(n_actions)[actions]
        coeff = onehot if target == "q" else onehot - 1.0 / n_actions
        dy_dh = coeff @ w_q
    grads = ((z > 0) * dy_dh) @ w1  # (N, 3136)
    grads = grads.reshape(acts.shape)
    maps = np.zeros((n, 7, 7))
    for i in range(n):
        for k in range(acts.shape[1]):
            maps[i] += grads[i, k].mean() * acts[i, k]
    return actions, np.maximum(maps, 0)


def _head_bias(agent) -> np.ndarray:
    layer = agent.policy.q_net.q_net[0] if agent.algo == "dqn" else agent.policy.quantile_net.quantile_net[0]
    return layer.bias.detach().double().numpy()


@pytest.mark.parametrize(
    "algo,target", [(algo, target) for algo in ("ppo", "a2c", "dqn", "qrdqn") for target in TARGETS[algo]]
)
def test_map_equals_independent_grad_cam(agent_zips, breakout_obs, algo, target):
    agent = load_agent(agent_zips[algo])
    with Explainer(agent, target=target) as explainer:
        got = explainer.explain(breakout_obs)
    actions, expected = reference_cam(agent, breakout_obs, target)
    np.testing.assert_array_equal(got.actions, actions)
    assert expected.max() > 0, "the reference map is all zero: the test would prove nothing"
    np.testing.assert_allclose(got.cam, expected, rtol=1e-4, atol=1e-5 * expected.max())


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn", "qrdqn"])
def test_action_equals_sb3_deterministic_predict(agent_zips, breakout_obs, algo):
    agent = load_agent(agent_zips[algo])
    with Explainer(agent) as explainer:
        got = explainer.explain(breakout_obs).actions
    predicted, _ = agent.model.predict(breakout_obs, deterministic=True)
    np.testing.assert_array_equal(got, predicted)


def test_batch_equals_one_at_a_time(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["ppo"])
    with Explainer(agent) as explainer:
        batch = explainer.explain(breakout_obs)
        singles = [explainer.explain(o) for o in breakout_obs]
    np.testing.assert_allclose(batch.cam, np.concatenate([s.cam for s in singles]), rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(batch.actions, np.concatenate([s.actions for s in singles]))


def test_score_is_the_explained_quantity(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["ppo"])
    with Explainer(agent, target="logprob") as explainer:
        got = explainer.explain(breakout_obs)
    dist = agent.policy.get_distribution(agent.policy.obs_to_tensor(breakout_obs)[0])
    expected = dist.log_prob(torch.as_tensor(got.actions)).detach().numpy()
    np.testing.assert_allclose(got.score, expected, rtol=1e-5)
    np.testing.assert_allclose(got.action_values.sum(1), 1.0, rtol=1e-5)


# -- the model is left untouched ---------------------------------------------------------------


def test_grads_modes_and_requires_grad_untouched(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["ppo"])
    policy = agent.policy
    policy.train(True)
    params = list(policy.parameters())
    params[0].requires_grad_(False)  # a frozen layer must stay frozen
    marker = torch.full_like(params[-1], 7.0)
    params[-1].grad = marker.clone()
    before_grads = [None if p.grad is None else p.grad.clone() for p in params]
    before_flags = [p.requires_grad for p in params]
    with Explainer(agent) as explainer:
        assert not any(m.training for m in policy.modules())
        explainer.explain(breakout_obs)
    assert all(m.training for m in policy.modules())
    assert [p.requires_grad for p in params] == before_flags
    for p, g in zip(params, before_grads, strict=True):
        if g is None:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, g)
    assert torch.is_grad_enabled()


def test_hooks_removed_even_when_an_exception_escapes(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["dqn"])
    layer = agent.policy.get_submodule(default_layer(agent))
    with pytest.raises(ZeroDivisionError):
        with Explainer(agent) as explainer:
            explainer.explain(breakout_obs)
            assert len(layer._forward_hooks) == 1
            raise ZeroDivisionError
    assert len(layer._forward_hooks) == 0
    assert not any(len(m._forward_hooks) for m in agent.policy.modules())


def test_no_hook_left_after_many_steps(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["ppo"])
    with Explainer(agent) as explainer:
        for _ in range(50):
            explainer.explain(breakout_obs[:1])
        assert sum(len(m._forward_hooks) for m in agent.policy.modules()) == 1
    assert sum(len(m._forward_hooks) for m in agent.policy.modules()) == 0


# -- sampling, layers, targets ------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_stochastic_actions_are_seeded(agent_zips, breakout_obs, algo):
    agent = load_agent(agent_zips[algo])
    agent.model.exploration_rate = 0.5  # so DQN's epsilon-greedy actually explores

    def run(seed):
        with Explainer(agent, deterministic=False, seed=seed) as explainer:
            return np.concatenate([explainer.explain(breakout_obs).actions for _ in range(10)])

    first, again, other = run(3), run(3), run(4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_sampled_ppo_actions_follow_the_policy(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["ppo"])
    obs = np.repeat(breakout_obs[:1], 256, axis=0)
    with Explainer(agent, deterministic=False, seed=0) as explainer:
        got = explainer.explain(obs)
    counts = np.bincount(got.actions, minlength=4) / len(obs)
    np.testing.assert_allclose(counts, got.action_values[0], atol=0.1)


def test_default_and_candidate_layers(agent_zips):
    agent = load_agent(agent_zips["qrdqn"])
    assert default_layer(agent) == "quantile_net.features_extractor.cnn.5"
    assert conv_layers(agent)[0] == "quantile_net.features_extractor.cnn.0"


def test_explicit_earlier_layer_gives_a_finer_map(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["ppo"])
    with Explainer(agent, layer="features_extractor.cnn.1", method="layercam") as explainer:
        got = explainer.explain(breakout_obs)
    assert got.cam.shape == (len(breakout_obs), 20, 20)
    assert got.cam_input.shape == (len(breakout_obs), 84, 84)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(layer="features_extractor.nope"), "not a module"),
        (dict(layer="features_extractor.linear.1"), "not a feature map"),
        (dict(target="q"), "does not apply"),
        (dict(method="magic"), "unknown method"),
        (dict(placement="nearest"), "unknown placement"),
    ],
)
def test_bad_settings_say_what_is_wrong(agent_zips, breakout_obs, kwargs, message):
    agent = load_agent(agent_zips["ppo"])
    with pytest.raises(RlcamError, match=message):
        with Explainer(agent, **kwargs) as explainer:
            explainer.explain(breakout_obs)
    assert not any(len(m._forward_hooks) for m in agent.policy.modules())


def test_wrong_observation_shape_names_both(agent_zips):
    agent = load_agent(agent_zips["ppo"])
    with Explainer(agent) as explainer, pytest.raises(RlcamError, match=r"\(3, 84, 84\).*\(4, 84, 84\)"):
        explainer.explain(np.zeros((2, 3, 84, 84), dtype=np.uint8))


# -- the formulas on numbers worked out by hand -------------------------------------------------

ACTS = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [1.0, 0.0]]]])  # (1, 2, 2, 2)
GRADS = torch.tensor([[[[3.0, -1.0], [1.0, -1.0]], [[-2.0, 3.0], [0.0, -5.0]]]])


def test_grad_cam_by_hand():
    # alpha = (0.5, -1): 0.5*A0 - A1 = [[-0.5, -1], [-1, 1]] -> ReLU
    assert torch.equal(grad_cam(ACTS, GRADS), torch.tensor([[[0.0, 0.0], [0.0, 1.0]]]))


def test_hires_cam_by_hand():
    # G0*A0 + G1*A1 = [[3, 0], [0, -2]] + [[-2, 3], [0, 0]]
    assert torch.equal(hires_cam(ACTS, GRADS), torch.tensor([[[1.0, 3.0], [0.0, 0.0]]]))


def test_layer_cam_by_hand():
    # ReLU(G0)*A0 + ReLU(G1)*A1 = [[3, 0], [0, 0]] + [[0, 3], [0, 0]]
    assert torch.equal(layer_cam(ACTS, GRADS), torch.tensor([[[3.0, 3.0], [0.0, 0.0]]]))


@pytest.mark.parametrize(
    "algo,target,method,fast",
    [
        ("ppo", None, "gradcam", True),
        ("ppo", "contrast:1", "gradcam", True),
        ("ppo", "logprob", "hirescam", True),
        ("qrdqn", None, "counterfactual", True),
        ("dqn", "advantage", "layercam", True),
        ("ppo", None, "gradcam", False),  # autograd: one explain per action
        ("a2c", None, "eigencam", True),  # not a gradient method: one explain per action
    ],
)
def test_action_maps_equal_explaining_each_action(agent_zips, breakout_obs, algo, target, method, fast):
    agent = load_agent(agent_zips[algo])
    with Explainer(agent, target=target, method=method, fast=fast) as explainer:
        maps = explainer.action_maps(breakout_obs)
        n_actions = agent.policy.action_space.n
        n = len(breakout_obs)
        expected = [explainer.explain(breakout_obs, actions=np.full(n, a)).cam for a in range(n_actions)]
        chosen = explainer.explain(breakout_obs)
        together = explainer.explain(breakout_obs, all_actions=True)  # the same maps from explain's own pass
    assert chosen.action_cams is None
    np.testing.assert_array_equal(together.cam, chosen.cam)
    np.testing.assert_array_equal(together.actions, chosen.actions)
    assert together.action_cams.shape == maps.shape and together.action_cams.dtype == np.float32
    assert maps.shape == (len(breakout_obs), n_actions, 7, 7) and maps.dtype == np.float32
    scale = max(float(np.abs(e).max()) for e in expected)
    assert scale > 0
    for a in range(n_actions):
        np.testing.assert_allclose(maps[:, a], expected[a], rtol=1e-4, atol=1e-6 * scale)
        np.testing.assert_allclose(together.action_cams[:, a], expected[a], rtol=1e-4, atol=1e-6 * scale)
    rows = np.arange(len(breakout_obs))
    np.testing.assert_allclose(maps[rows, chosen.actions], chosen.cam, rtol=1e-4, atol=1e-6 * scale)
    np.testing.assert_allclose(together.action_cams[rows, together.actions], together.cam, rtol=1e-4, atol=1e-6 * scale)
    if method != "eigencam" and target is None:  # different actions, different maps
        assert not np.allclose(maps[:, 0], maps[:, 1])


class _Rows:
    """A trace sink that keeps the rows."""

    def __init__(self):
        self.rows = []
        self.meta = {}

    def append(self, **row):
        self.rows.append(row)

    def set_meta(self, **fields):
        self.meta.update(fields)


def test_step_writer_maps_every_action_when_the_explanation_lacks_them(agent_zips, breakout_obs):
    """The recorder takes every action's maps from ``explain``'s own pass; a caller that explained
    without them gets the same rows from ``StepWriter``'s extra pass."""
    from rlcam.record import StepWriter

    agent = load_agent(agent_zips["ppo"])
    n = len(breakout_obs)
    rewards, dones, infos = np.zeros(n), np.zeros(n, bool), [{} for _ in range(n)]
    with Explainer(agent) as explainer:
        sinks = []
        for all_actions in (True, False):
            sink = _Rows()
            writer = StepWriter(explainer, ["A", "B", "C", "D"], trace=sink, n_envs=n, all_actions=True)
            explained = explainer.explain(breakout_obs, all_actions=all_actions)
            writer.write(breakout_obs, None, explained, rewards, dones, infos)
            sinks.append(sink)
    (together,), (apart,) = sinks[0].rows, sinks[1].rows
    assert together["action_cams"].shape == (n, 4, 7, 7)
    np.testing.assert_allclose(together["action_cams"], apart["action_cams"], rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(together["cam"], apart["cam"])


def test_given_actions_are_explained(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["dqn"])
    with Explainer(agent) as explainer:
        chosen = explainer.explain(breakout_obs)
        other = (chosen.actions + 1) % 4
        forced = explainer.explain(breakout_obs, actions=other)
    np.testing.assert_array_equal(forced.actions, other)
    np.testing.assert_allclose(forced.score, chosen.action_values[np.arange(len(other)), other], rtol=1e-6)
    assert not np.allclose(forced.cam, chosen.cam)


# -- the hand-written head gradient equals autograd's -------------------------------------------


@pytest.mark.parametrize(
    "algo,target",
    [(algo, target) for algo in ("ppo", "a2c", "dqn", "qrdqn") for target in (*TARGETS[algo], "contrast:1")],
)
@pytest.mark.parametrize("method", ["hirescam", "gradcam", "counterfactual"])  # full dy/dA, and channel weights only
def test_hand_written_head_equals_autograd(agent_zips, breakout_obs, algo, target, method):
    agent = load_agent(agent_zips[algo])
    with (
        Explainer(agent, target=target, method=method) as fast,
        Explainer(agent, target=target, method=method, fast=False) as slow,
    ):
        assert fast._head is not None and slow._head is None
        got, expected = fast.explain(breakout_obs), slow.explain(breakout_obs)
    np.testing.assert_array_equal(got.actions, expected.actions)
    np.testing.assert_allclose(got.cam, expected.cam, rtol=1e-4, atol=1e-6 * expected.cam.max())
    np.testing.assert_allclose(got.score, expected.score, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.action_values, expected.action_values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.value, expected.value, rtol=1e-5, atol=1e-7)


def test_channel_weights_follow_weight_updates_while_open(agent_zips, breakout_obs):
    """Grad-CAM's pooled head weights are cached; an optimizer step or a loaded state refreshes them."""
    agent = load_agent(agent_zips["ppo"])
    original = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    with Explainer(agent) as explainer:
        before = explainer.explain(breakout_obs).cam
        w1 = agent.policy.features_extractor.linear[0].weight
        optimizer = torch.optim.SGD([w1], lr=1.0)
        w1.grad = torch.randn_like(w1) * w1.abs().mean()
        optimizer.step()
        w1.grad = None
        after_step = explainer.explain(breakout_obs).cam
        stepped = {k: v.clone() for k, v in agent.policy.state_dict().items()}
        agent.policy.load_state_dict(original)
        restored = explainer.explain(breakout_obs).cam
    np.testing.assert_allclose(restored, before, rtol=1e-5, atol=1e-7)
    agent.policy.load_state_dict(stepped)
    _, expected = reference_cam(agent, breakout_obs, "logit")  # with the hooks gone
    np.testing.assert_allclose(after_step, expected, rtol=1e-4, atol=1e-5 * expected.max())
    assert not np.allclose(after_step, before)


def test_other_layers_and_heads_use_autograd(agent_zips, breakout_env, tmp_path):
    from tests.conftest import build_model

    agent = load_agent(agent_zips["ppo"])
    with Explainer(agent, layer="features_extractor.cnn.3") as explainer:
        assert explainer._head is None
    path = tmp_path / "wide.zip"
    build_model("ppo", breakout_env, policy_kwargs=dict(net_arch=[32])).save(path)
    with Explainer(load_agent(path)) as explainer:
        assert explainer._head is None  # an MLP between features and logits: not the standard head


def test_out_of_range_actions_are_refused(agent_zips, breakout_obs):
    with Explainer(load_agent(agent_zips["ppo"])) as explainer, pytest.raises(RlcamError, match="integers in"):
        explainer.explain(breakout_obs[:2], actions=[0, 7])
