"""Every policy family: actions equal SB3's predict, maps equal an independent computation, the
policy is left as it was. Tiny untrained agents on a small image env, built in the test."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, VecTransposeImage

from rlcam.api import as_agent
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer
from rlcam.families import family_for

SIZE = 64  # NatureCNN needs >= 36 px; 64 gives a 4x4 last-conv map


class ImageEnv(gym.Env):
    """Random RGB frames, any action space; episodes of 12 steps."""

    def __init__(self, action_space):
        self.observation_space = spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
        self.action_space = action_space
        self.t = 0

    def _obs(self):
        return self.np_random.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, self.t >= 12, {}


def venv_for(action_space, n=2, seed=0):
    venv = VecTransposeImage(DummyVecEnv([lambda: ImageEnv(action_space) for _ in range(n)]))
    venv.seed(seed)
    return venv


BOX = spaces.Box(np.array([-1.0, 0.0, 0.0], np.float32), np.array([1.0, 1.0, 1.0], np.float32))


def build(kind: str, venv):
    import stable_baselines3 as sb3

    small = dict(net_arch=[16], features_extractor_kwargs=dict(features_dim=32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "ppo_box":
            return sb3.PPO("CnnPolicy", venv, n_steps=16, batch_size=16, policy_kwargs=small, seed=1, device="cpu")
        if kind == "ppo_sde":
            kwargs = dict(small, squash_output=True)
            return sb3.PPO("CnnPolicy", venv, use_sde=True, n_steps=16, policy_kwargs=kwargs, seed=1, device="cpu")
        if kind == "a2c_multidiscrete" or kind == "ppo_multibinary":
            cls = sb3.A2C if kind.startswith("a2c") else sb3.PPO
            return cls("CnnPolicy", venv, n_steps=16, policy_kwargs=small, seed=1, device="cpu")
        if kind in ("sac", "td3", "ddpg"):
            cls = {"sac": sb3.SAC, "td3": sb3.TD3, "ddpg": sb3.DDPG}[kind]
            return cls("CnnPolicy", venv, buffer_size=8, policy_kwargs=small, seed=1, device="cpu")
        if kind == "tqc":
            from sb3_contrib import TQC

            kwargs = dict(small, n_critics=2, n_quantiles=5)
            return TQC("CnnPolicy", venv, buffer_size=8, policy_kwargs=kwargs, seed=1, device="cpu")
        if kind == "recurrent":
            from sb3_contrib import RecurrentPPO

            kwargs = dict(small, lstm_hidden_size=24)
            return RecurrentPPO("CnnLstmPolicy", venv, n_steps=16, batch_size=16, policy_kwargs=kwargs, seed=1)
    raise ValueError(kind)


SPACES = {
    "ppo_box": BOX,
    "ppo_sde": BOX,
    "sac": BOX,
    "td3": BOX,
    "ddpg": BOX,
    "tqc": BOX,
    "a2c_multidiscrete": spaces.MultiDiscrete([3, 2, 4]),
    "ppo_multibinary": spaces.MultiBinary(3),
    "recurrent": spaces.Discrete(3),
}


@pytest.fixture(scope="module", params=sorted(SPACES))
def case(request):
    venv = venv_for(SPACES[request.param])
    model = build(request.param, venv)
    obs = np.stack([venv.reset() for _ in range(2)]).reshape(-1, *venv.observation_space.shape)[:3]
    yield request.param, model, venv, obs
    venv.close()


def _independent_gradcam(model, kind: str, layer_acts_fn, score_fn, obs) -> np.ndarray:
    """Grad-CAM written from the formula: A from the extractor's own cnn, y from a forward written
    here, dy/dA by autograd on that separate graph; alpha = mean_ij dy/dA, map = ReLU(sum alpha A)."""
    x = torch.as_tensor(obs).float() / 255.0
    acts = layer_acts_fn(x).detach().requires_grad_(True)
    y = score_fn(acts)
    (grads,) = torch.autograd.grad(y.sum(), acts)
    alpha = grads.mean(dim=(2, 3))
    return torch.relu((alpha[:, :, None, None] * acts).sum(1)).detach().numpy()


def _head_after(extractor, acts):
    return extractor.linear(extractor.cnn[6](acts))  # flatten, then linear + ReLU


def test_each_family_is_chosen_from_the_policy_class(case):
    kind, model, _, _ = case
    expected = {
        "ppo_box": "continuous actor-critic",
        "ppo_sde": "continuous actor-critic",
        "sac": "actor + critics",
        "td3": "actor + critics",
        "ddpg": "actor + critics",
        "tqc": "actor + critics",
        "a2c_multidiscrete": "structured discrete actor-critic",
        "ppo_multibinary": "structured discrete actor-critic",
        "recurrent": "recurrent discrete actor-critic",
    }[kind]
    assert family_for(as_agent(model)).name == expected


def test_deterministic_actions_equal_predict(case):
    kind, model, _, obs = case
    if kind == "recurrent":
        pytest.skip("recurrent actions are compared over a rollout with state, below")
    with Explainer(as_agent(model)) as explainer:
        explained = explainer.explain(obs)
    predicted, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(explained.actions, predicted, rtol=1e-5, atol=1e-6)
    assert explained.actions.dtype == predicted.dtype or np.issubdtype(predicted.dtype, np.floating)


def test_maps_equal_an_independent_computation(case):
    kind, model, _, obs = case
    policy = model.policy
    if kind in ("ppo_box", "ppo_sde", "a2c_multidiscrete", "ppo_multibinary"):
        ext = policy.features_extractor

        def score(acts, component=0):
            latent = policy.mlp_extractor.forward_actor(_head_after(ext, acts))
            out = policy.action_net(latent)
            if kind == "ppo_sde":
                out = torch.tanh(out)
            if kind == "a2c_multidiscrete":  # joint logit of the argmax parts
                parts = torch.split(out, [3, 2, 4], dim=1)
                return sum(p.max(dim=1).values for p in parts)
            if kind == "ppo_multibinary":  # each bit's taken choice: |l| / 2
                return (out.abs() / 2).sum(dim=1)
            return out[:, component]

        target = "logit" if kind in ("a2c_multidiscrete", "ppo_multibinary") else "mean:0"
        layer_acts = lambda x: torch.relu(ext.cnn[:5](x))  # noqa: E731
    elif kind in ("sac", "td3", "ddpg", "tqc"):
        ext = policy.actor.features_extractor

        def score(acts):
            features = _head_after(ext, acts)
            if kind in ("sac", "tqc"):
                return torch.tanh(policy.actor.mu(policy.actor.latent_pi(features)))[:, 1]
            return policy.actor.mu(features)[:, 1]

        target = "mean:1"
        layer_acts = lambda x: torch.relu(ext.cnn[:5](x))  # noqa: E731
    else:
        pytest.skip("recurrent maps are checked over a rollout, below")
    expected = _independent_gradcam(model, kind, layer_acts, score, obs)
    with Explainer(as_agent(model), target=target) as explainer:
        explained = explainer.explain(obs)
    np.testing.assert_allclose(explained.cam, expected, rtol=1e-4, atol=1e-6)
    assert expected.max() > 0  # a map with something in it, so the comparison means something


@pytest.mark.parametrize("kind", ["sac", "td3", "tqc"])
def test_critic_q_maps_go_through_the_critic_extractor(kind):
    venv = venv_for(BOX)
    model = build(kind, venv)
    obs = venv.reset()
    policy = model.policy
    agent = as_agent(model)
    with Explainer(agent, target="q") as explainer:
        assert explainer.layer_name.startswith("critic.features_extractor")
        explained = explainer.explain(obs)
    actions = torch.as_tensor(policy.scale_action(explained.actions))
    ext = policy.critic.features_extractor

    def score(acts):
        inputs = torch.cat([_head_after(ext, acts), actions], dim=1)
        qs = [net(inputs) for net in policy.critic.q_networks]
        if kind == "tqc":
            return torch.stack(qs, dim=1).mean(dim=(1, 2))
        if kind == "sac":
            return torch.cat(qs, dim=1).min(dim=1).values
        return qs[0][:, 0]

    expected = _independent_gradcam(model, kind, lambda x: torch.relu(ext.cnn[:5](x)), score, obs)
    np.testing.assert_allclose(explained.cam, expected, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # the value shown is the same Q of the taken action
        x = torch.as_tensor(obs).float() / 255.0
        np.testing.assert_allclose(explained.value, score(torch.relu(ext.cnn[:5](x))).numpy(), rtol=1e-5)
    venv.close()


@pytest.mark.parametrize("kind", ["sac", "tqc"])
def test_critic_tiles_equal_each_critic_explained_alone(kind):
    venv = venv_for(BOX)
    agent = as_agent(build(kind, venv))
    obs = venv.reset()
    with Explainer(agent, target="q") as explainer:
        explained = explainer.explain(obs, all_actions=True)
    assert explained.action_cams.shape[1] == 2  # two critics
    for k in range(2):
        with Explainer(agent, target=f"q:{k}") as explainer:
            alone = explainer.explain(obs, actions=explained.actions)
        np.testing.assert_allclose(explained.action_cams[:, k], alone.cam, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(explained.tile_scores[:, k], alone.score, rtol=1e-5)
    venv.close()


def test_signed_targets_give_the_counterfactual_map(case):
    kind, model, _, obs = case
    agent = as_agent(model)
    family = family_for(agent)
    if not any(family.signed(t) for t in family.all_targets()):
        with Explainer(agent) as explainer:
            assert explainer.explain(obs).cam_down is None
        return
    with Explainer(agent, target="mean:0") as explainer:
        explained = explainer.explain(obs)
    with Explainer(agent, target="mean:0", method="counterfactual") as explainer:
        counterfactual = explainer.explain(obs).cam
    # What pushes the component down is the paper's counterfactual map of the same score.
    np.testing.assert_allclose(explained.cam_down, counterfactual, rtol=1e-5, atol=1e-7)


def test_tiles_equal_each_target_explained_alone(case):
    kind, model, _, obs = case
    agent = as_agent(model)
    with Explainer(agent) as explainer:
        explained = explainer.explain(obs, all_actions=True)
        tiles = explainer.family.tiles(explainer.target)
    assert explained.action_cams.shape[1] == len(tiles)
    for i, (_, target, action) in enumerate(tiles):
        given = explained.actions if action is None else np.full(len(obs), action)
        with Explainer(agent, target=target) as explainer:
            alone = explainer.explain(obs, actions=given).cam
        np.testing.assert_allclose(explained.action_cams[:, i], alone, rtol=1e-4, atol=1e-7)


def test_the_policy_is_left_as_it_was(case):
    kind, model, _, obs = case
    policy = model.policy
    policy.train(True)
    modes = {name: m.training for name, m in policy.named_modules()}
    with Explainer(as_agent(model)) as explainer:
        explainer.explain(obs, all_actions=True)
    assert {name: m.training for name, m in policy.named_modules()} == modes
    assert all(p.grad is None for p in policy.parameters())
    assert all(not m._forward_hooks for m in policy.modules())
    policy.train(False)


def test_stochastic_actions_are_seeded_and_in_the_space(case):
    kind, model, venv, obs = case
    agent = as_agent(model)
    runs = []
    for _ in range(2):
        with Explainer(agent, deterministic=False, seed=5) as explainer:
            runs.append(np.stack([explainer.explain(obs).actions for _ in range(4)]))
    np.testing.assert_array_equal(runs[0], runs[1])
    for action in runs[0].reshape(-1, *np.shape(runs[0][0][0])):
        assert venv.action_space.contains(np.asarray(action, dtype=venv.action_space.dtype))


def test_recurrent_actions_equal_predict_over_a_rollout():
    venv = venv_for(spaces.Discrete(3), n=2, seed=3)
    model = build("recurrent", venv)
    agent = as_agent(model)
    obs = venv.reset()
    state, starts = None, np.ones(2, dtype=bool)
    rollout = []  # SB3's own predict first (the explainer's hooks are not registered yet)
    for _ in range(40):  # 40 steps over 12-step episodes: three resets per env
        predicted, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        rollout.append((obs, starts, predicted))
        obs, _, starts, _ = venv.step(predicted)
    mismatches = memoryless = 0
    with Explainer(agent) as explainer:
        for obs, starts, predicted in rollout:
            mismatches += int((explainer.explain(obs, episode_start=starts).actions != predicted).sum())
    with Explainer(agent) as explainer:  # the same frames, the memory wiped at every step
        for obs, _, predicted in rollout:
            memoryless += int((explainer.explain(obs, episode_start=np.ones(2, bool)).actions != predicted).sum())
    assert memoryless > 0, "the state never changed an action: this rollout cannot tell carrying it from not"
    assert mismatches == 0
    venv.close()


def test_explained_policy_carries_a_recurrent_state_as_predict_does():
    """rlcam.ExplainedPolicy.predict(obs, state, episode_start) over a rollout with resets gives
    RecurrentPPO.predict's actions and states; a state passed in (not the one returned) is taken."""
    from rlcam import ExplainedPolicy

    venv = venv_for(spaces.Discrete(3), n=2, seed=3)
    model = build("recurrent", venv)
    obs = venv.reset()
    state, starts, rollout = None, np.ones(2, dtype=bool), []
    for _ in range(40):  # three resets per env
        predicted, next_state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        rollout.append((obs, starts, predicted, next_state))
        obs, _, starts, _ = venv.step(predicted)
        state = next_state
    with ExplainedPolicy(model) as policy:
        state = None
        for obs, starts, predicted, expected in rollout:
            actions, state, explanation = policy.predict(obs, state=state, episode_start=starts, deterministic=True)
            np.testing.assert_array_equal(actions, predicted)
            np.testing.assert_allclose(state[0], expected[0], atol=1e-6)
            np.testing.assert_allclose(state[1], expected[1], atol=1e-6)
        obs, starts, predicted, _ = rollout[20]  # from SB3's own state of step 19, in a fresh policy
        given = tuple(h.copy() for h in rollout[19][3])
        with ExplainedPolicy(model) as fresh:
            actions, _, _ = fresh.predict(obs, state=given, episode_start=starts, deterministic=True)
        np.testing.assert_array_equal(actions, predicted)
    venv.close()


def test_recurrent_map_explains_the_step_given_its_state():
    venv = venv_for(spaces.Discrete(3), n=2, seed=3)
    model = build("recurrent", venv)
    policy = model.policy
    obs0 = venv.reset()
    obs1, *_ = venv.step(np.zeros(2, dtype=np.int64))
    with Explainer(as_agent(model)) as explainer:
        explainer.explain(obs0, episode_start=np.ones(2, bool))
        second = explainer.explain(obs1)
    # Independent: the state after obs0 from SB3's own predict, then this step's graph by hand.
    _, state = model.predict(obs0, episode_start=np.ones(2, bool), deterministic=True)
    ext = policy.features_extractor
    h = tuple(torch.as_tensor(s) for s in state)

    def score(acts):
        features = _head_after(ext, acts)
        out, _ = policy.lstm_actor(features[None], h)
        logits = policy.action_net(policy.mlp_extractor.forward_actor(out[0]))
        return logits.gather(1, torch.as_tensor(second.actions)[:, None]).squeeze(1)

    expected = _independent_gradcam(model, "recurrent", lambda x: torch.relu(ext.cnn[:5](x)), score, obs1)
    np.testing.assert_allclose(second.cam, expected, rtol=1e-4, atol=1e-6)
    venv.close()


def test_recurrent_refuses_methods_with_extra_forwards():
    venv = venv_for(spaces.Discrete(3))
    with pytest.raises(RlcamError, match="LSTM"):
        Explainer(as_agent(build("recurrent", venv)), method="scorecam")
    venv.close()


@pytest.mark.parametrize(
    "kind,target,message",
    [
        ("ppo_box", "mean:7", "3 components"),
        ("ppo_box", "q", "does not apply"),
        ("sac", "q:5", "critic targets are q, q:0, q:1, q:min"),
        ("a2c_multidiscrete", "logit:3", "P in 0..2"),
    ],
)
def test_targets_that_do_not_apply_are_one_sentence(kind, target, message):
    venv = venv_for(SPACES[kind])
    with pytest.raises(RlcamError, match=message):
        Explainer(as_agent(build(kind, venv)), target=target)
    venv.close()


def test_sanity_randomises_each_family_layers_down_to_the_extractor(case, tmp_path):
    from rlcam.agents import load_agent
    from rlcam.sanity import decision_layers, sanity

    kind, model, _, obs = case
    model.save(tmp_path / "agent.zip")
    agent = load_agent(tmp_path / "agent.zip")  # the safe loader: no env attached, copyable
    layers = decision_layers(agent)
    family = family_for(agent)
    root = family.extractor_paths(family.default_target())[0]
    assert layers[0].startswith(root) and not layers[-1].startswith(root)  # extractor first, head last
    if kind == "recurrent":
        assert any(name.startswith("lstm_actor") for name in layers)
    result = sanity(agent, obs[:2])
    assert [s.randomised for s in result.stages[1:]] == list(reversed(layers))
    assert result.stages[-1].correlation < 0.99  # randomising the whole network changes the map


def test_recurrent_memory_vs_pixels():
    from rlcam.perturb import gaussian_blur

    venv = venv_for(spaces.Discrete(3), n=2, seed=3)
    model = build("recurrent", venv)
    obs0 = venv.reset()
    obs1, *_ = venv.step(np.zeros(2, dtype=np.int64))
    with Explainer(as_agent(model), extras=True) as explainer:
        first = explainer.explain(obs0, episode_start=np.ones(2, bool))
        second = explainer.explain(obs1)
    np.testing.assert_array_equal(first.memory_effect, 0.0)  # a fresh episode has no memory to zero
    # Independent: SB3's own state after obs0, then the step's logit with and without it, and blurred.
    _, state = model.predict(obs0, episode_start=np.ones(2, bool), deterministic=True)
    policy = model.policy

    def logit(obs, h):
        features = policy.extract_features(torch.as_tensor(obs).float())
        out, _ = policy.lstm_actor(features[None], h)
        logits = policy.action_net(policy.mlp_extractor.forward_actor(out[0]))
        return logits.gather(1, torch.as_tensor(second.actions)[:, None]).squeeze(1)

    with torch.no_grad():
        h = tuple(torch.as_tensor(x) for x in state)
        base = logit(obs1, h)
        zero = logit(obs1, tuple(torch.zeros_like(x) for x in h))
        blurred = logit(gaussian_blur(torch.as_tensor(obs1).float()), h)
    np.testing.assert_allclose(second.memory_effect, (base - zero).abs().numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(second.pixel_effect, (base - blurred).abs().numpy(), rtol=1e-4, atol=1e-7)
    assert (second.memory_effect > 0).all()
    venv.close()


class SharedReluCNN(torch.nn.Module):
    """An extractor that registers its convs out of order and applies one ReLU module after each
    (for 64x64 inputs: 15x15, 6x6, 4x4 maps)."""

    def __init__(self, observation_space, features_dim=32):
        super().__init__()
        self.features_dim = features_dim
        self.relu = torch.nn.ReLU()
        self.c3 = torch.nn.Conv2d(32, 32, 3)  # registered first, called last
        self.c1 = torch.nn.Conv2d(observation_space.shape[0], 16, 8, stride=4)
        self.c2 = torch.nn.Conv2d(16, 32, 4, stride=2)
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, features_dim), torch.nn.ReLU())

    def trunk(self, x):
        return self.relu(self.c3(self.relu(self.c2(self.relu(self.c1(x))))))

    def forward(self, x):
        return self.head(self.trunk(x))


def test_the_default_layer_is_traced_through_the_forward():
    import stable_baselines3 as sb3

    from rlcam.explainer import conv_layers, default_layer

    venv = venv_for(spaces.Discrete(3))
    kwargs = dict(features_extractor_class=SharedReluCNN, net_arch=[])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sb3.PPO("CnnPolicy", venv, n_steps=16, policy_kwargs=kwargs, seed=1, device="cpu")
    agent = as_agent(model)
    assert conv_layers(agent) == [
        "features_extractor.c1",
        "features_extractor.relu@1",
        "features_extractor.c2",
        "features_extractor.relu@2",
        "features_extractor.c3",
        "features_extractor.relu@3",
    ]
    assert default_layer(agent) == "features_extractor.relu@3"  # the rectified output of the last conv
    obs = venv.reset()
    with Explainer(agent) as explainer:
        explained = explainer.explain(obs)
    ext = model.policy.features_extractor

    def score(acts):
        logits = model.policy.action_net(model.policy.mlp_extractor.forward_actor(ext.head(acts)))
        return logits.gather(1, torch.as_tensor(explained.actions)[:, None]).squeeze(1)

    expected = _independent_gradcam(model, "custom", lambda x: ext.trunk(x), score, obs)
    np.testing.assert_allclose(explained.cam, expected, rtol=1e-4, atol=1e-7)
    assert expected.max() > 0
    with Explainer(agent, layer="features_extractor.relu@2") as explainer:  # a middle call: 6x6 for 64 px
        assert explainer.explain(obs).cam.shape == (2, 6, 6)
    venv.close()


def test_extras_cost_nothing_unless_asked_for():
    """Without ``extras`` an actor's map computes no critic: the value is NaN; with it, Q(s, a)."""
    venv = venv_for(BOX)
    model = build("sac", venv)
    obs = venv.reset()
    with Explainer(as_agent(model)) as explainer:
        plain = explainer.explain(obs)
    with Explainer(as_agent(model), extras=True) as explainer:
        full = explainer.explain(obs)
    assert np.isnan(plain.value).all() and np.isfinite(full.value).all()
    np.testing.assert_array_equal(plain.cam, full.cam)
    actions = torch.as_tensor(model.policy.scale_action(full.actions))
    with torch.no_grad():
        q = torch.cat(model.policy.critic(torch.as_tensor(obs).float(), actions), dim=1).min(dim=1).values
    np.testing.assert_allclose(full.value, q.numpy(), rtol=1e-5)
    venv.close()


@pytest.mark.parametrize("target", ["mean:0", "mean:2", "value"])
def test_continuous_hand_written_head_equals_autograd(target):
    venv = venv_for(BOX)
    import stable_baselines3 as sb3

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sb3.PPO("CnnPolicy", venv, n_steps=16, seed=4, device="cpu")  # NatureCNN, no net_arch: the fast head
    obs = venv.reset()
    agent = as_agent(model)
    runs = {}
    for fast in (True, False):
        with Explainer(agent, target=target, fast=fast) as explainer:
            assert (explainer._head is not None) == fast
            runs[fast] = explainer.explain(obs, all_actions=True)
    for field in ("cam", "action_cams", "actions", "score", "value"):
        np.testing.assert_allclose(getattr(runs[True], field), getattr(runs[False], field), rtol=1e-4, atol=1e-7)
    if target.startswith("mean"):
        np.testing.assert_allclose(runs[True].cam_down, runs[False].cam_down, rtol=1e-4, atol=1e-7)
    with Explainer(agent, target=target, deterministic=False, seed=1) as explainer:  # sampling: autograd
        assert np.isfinite(explainer.explain(obs).actions).all()
    venv.close()


def test_explained_policy_serves_a_continuous_agent():
    from rlcam.api import ExplainedPolicy

    venv = venv_for(BOX)
    model = build("sac", venv)
    obs = venv.reset()
    with ExplainedPolicy(model) as policy:
        actions, _, explanation = policy.predict(obs, deterministic=True)
        again = policy.explain(obs, actions=actions)
    predicted, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, predicted, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.cam, explanation.cam, rtol=1e-5, atol=1e-8)
    venv.close()
