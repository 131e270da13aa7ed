"""The explainer's fast paths against autograd from the layer (``fast=False``) and SB3's predict.

Each family's hand-written head (``Family.hand_forward`` / ``hand_gradient``, ``rlcam.fasthead.Tape``)
and the autograd graph rooted at z after the layer must give the maps, tiles, scores, values and
actions that autograd from the layer gives, for every target they serve; tiny untrained agents
built here, on the small image env of ``test_families``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from rlcam.api import as_agent
from rlcam.explainer import Explainer
from rlcam.fasthead import Tape
from tests.test_families import BOX, build, venv_for
from tests.test_multi_input import DictEnv

FIELDS = ("cam", "cam_input", "score", "value", "action_cams", "tile_scores", "cam_down")


def _small(**extra):
    return dict(net_arch=[16, 8], features_extractor_kwargs=dict(features_dim=32), **extra)


def _model(kind: str, venv):
    """Agents whose heads have MLPs (the hand-written head's chains), beside ``test_families.build``'s."""
    import stable_baselines3 as sb3
    from sb3_contrib import QRDQN, RecurrentPPO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "ppo_discrete_mlp":
            return sb3.PPO("CnnPolicy", venv, n_steps=16, policy_kwargs=_small(), seed=3, device="cpu")
        if kind == "ppo_box_tanh":  # PPO's default Tanh MLP, unshared extractors
            kwargs = _small(activation_fn=nn.Tanh, share_features_extractor=False)
            return sb3.PPO("CnnPolicy", venv, n_steps=16, policy_kwargs=kwargs, seed=3, device="cpu")
        if kind == "ppo_sde_plain":  # gSDE, not squashed, no MLP
            kwargs = dict(net_arch=[], features_extractor_kwargs=dict(features_dim=32))
            return sb3.PPO("CnnPolicy", venv, use_sde=True, n_steps=16, policy_kwargs=kwargs, seed=3, device="cpu")
        if kind == "dqn_mlp":
            return sb3.DQN("CnnPolicy", venv, buffer_size=8, policy_kwargs=_small(), seed=3, device="cpu")
        if kind == "qrdqn_mlp":
            kwargs = _small(n_quantiles=5)
            return QRDQN("CnnPolicy", venv, buffer_size=8, policy_kwargs=kwargs, seed=3, device="cpu")
        if kind == "recurrent_box":
            kwargs = _small(lstm_hidden_size=12)
            return RecurrentPPO("CnnLstmPolicy", venv, n_steps=16, batch_size=16, policy_kwargs=kwargs, seed=3)
    return build(kind, venv)


CASES = {  # kind -> (action space, targets to check)
    "ppo_discrete_mlp": (spaces.Discrete(3), ["logit", "logprob", "value", "contrast:2"]),
    "ppo_box_tanh": (BOX, ["mean:0", "mean:2", "value"]),
    "ppo_sde": (BOX, ["mean:1", "value"]),  # squashed gSDE, MLP
    "ppo_sde_plain": (BOX, ["mean:0"]),
    "sac": (BOX, ["mean:0", "q", "q:1", "q:min"]),
    "td3": (BOX, ["mean:2", "q", "q:1"]),
    "ddpg": (BOX, ["mean:0", "q"]),
    "tqc": (BOX, ["mean:1", "q", "q:0", "q:mean"]),
    "a2c_multidiscrete": (spaces.MultiDiscrete([3, 2, 4]), ["logit", "logit:1", "logprob", "logprob:2", "value"]),
    "ppo_multibinary": (spaces.MultiBinary(3), ["logit", "logit:0", "logprob", "logprob:1"]),
    "dqn_mlp": (spaces.Discrete(3), ["q", "advantage", "contrast:0"]),
    "qrdqn_mlp": (spaces.Discrete(3), ["q", "advantage"]),
    "recurrent": (spaces.Discrete(3), ["logit", "logprob", "contrast:1"]),
    "recurrent_box": (BOX, ["mean:0", "mean:2"]),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    space, targets = CASES[request.param]
    venv = venv_for(space, n=3, seed=4)
    model = _model(request.param, venv)
    obs = venv.reset()
    yield request.param, model, venv, obs, targets
    venv.close()


def _explain_twice(agent, obs, target, fast, steps=1, **kwargs):
    """``steps`` explained steps (a recurrent policy's memory moving on), with the tiles; the last one's
    explanation. (A continuous agent's tiles are its components: with separate actor and critic
    extractors, the critic's layer cannot explain them, so ``value`` is then asked without tiles.)"""
    policy = agent.policy
    tiles = not (target == "value" and not getattr(policy, "share_features_extractor", True))
    with Explainer(agent, target=target, fast=fast, **kwargs) as explainer:
        for _ in range(steps):
            explained = explainer.explain(obs, all_actions=tiles)
        return explained, explainer.gradient_path  # the path the pass took


def _assert_same(fast, slow):
    if np.issubdtype(np.asarray(fast.actions).dtype, np.floating):
        # Continuous actions come out of the step's own LSTM forward on either path; the hand-written one
        # sums in another order (CI saw a 6e-10 gap, 1.7e-6 relative, on a recurrent mean of -1e-3).
        np.testing.assert_allclose(fast.actions, slow.actions, rtol=1e-5, atol=1e-8)
    else:
        np.testing.assert_array_equal(fast.actions, slow.actions)
    for name in FIELDS:
        a, b = getattr(fast, name), getattr(slow, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)


def test_the_hand_written_head_equals_autograd_from_the_layer(case):
    kind, model, _, obs, targets = case
    agent = as_agent(model)
    steps = 3 if kind.startswith("recurrent") else 1
    nonzero = 0
    for target in targets:
        fast, path = _explain_twice(agent, obs, target, True, steps)
        slow, slow_path = _explain_twice(agent, obs, target, False, steps)
        assert (path, slow_path) == ("by hand", "autograd"), (kind, target)
        _assert_same(fast, slow)
        nonzero += int(fast.cam.max() > 0) + int(fast.cam_down is not None and fast.cam_down.max() > 0)
    assert nonzero > 0  # maps with something in them, so the comparison means something


def test_the_hand_written_head_acts_as_predict(case):
    kind, model, _, obs, targets = case
    if kind.startswith("recurrent"):
        pytest.skip("recurrent actions are compared over a rollout in test_families")
    with Explainer(as_agent(model)) as explainer:
        explained = explainer.explain(obs)
        assert explainer.gradient_path == "by hand"
    predicted, _ = model.predict(obs, deterministic=True)
    if np.issubdtype(predicted.dtype, np.floating):
        np.testing.assert_array_equal(explained.actions, predicted.astype(np.float32))
    else:
        np.testing.assert_array_equal(explained.actions, predicted)


@pytest.mark.parametrize("kind", ["ppo_discrete_mlp", "a2c_multidiscrete", "dqn_mlp"])
def test_sampled_actions_are_the_same_by_hand(kind):
    """Sampling needs only the scores: the hand-written head draws what autograd's pass draws."""
    space, _ = CASES[kind]
    venv = venv_for(space, n=3, seed=4)
    agent = as_agent(_model(kind, venv))
    obs = venv.reset()
    runs = {}
    for fast in (True, False):
        with Explainer(agent, fast=fast, deterministic=False, seed=9) as explainer:
            runs[fast] = [explainer.explain(obs) for _ in range(5)]
    for a, b in zip(runs[True], runs[False], strict=True):
        _assert_same(a, b)
    venv.close()


@pytest.mark.parametrize(
    "kind,target,kwargs",
    [
        ("sac", "mean:0", dict(deterministic=False)),  # the squashed Gaussian's samples: the distribution
        ("ppo_box_tanh", "logprob", {}),
        ("recurrent", "value", {}),  # the critic's LSTM
        ("ppo_sde", "logprob", {}),
    ],
)
def test_autograd_rooted_after_the_layer_equals_autograd_from_it(kind, target, kwargs):
    """Where no hand-written head serves, autograd starts at z = W1 flatten(A) + b1, not at A."""
    space, _ = CASES[kind]
    venv = venv_for(space, n=3, seed=4)
    agent = as_agent(_model(kind, venv))
    obs = venv.reset()
    with Explainer(agent, target=target, seed=2, **kwargs) as explainer:  # actions to explain, given to both
        actions = explainer.explain(obs).actions
    runs, paths = {}, {}
    for fast in (True, False):
        with Explainer(agent, target=target, fast=fast, seed=2, **kwargs) as explainer:
            runs[fast] = explainer.explain(obs, actions=actions, all_actions=True)
            paths[fast] = explainer.gradient_path
    assert paths == {True: "autograd from z", False: "autograd"}
    _assert_same(runs[True], runs[False])
    venv.close()


@pytest.mark.parametrize("method", ["gradcam++", "hirescam", "layercam", "counterfactual"])
def test_every_gradient_method_by_hand(method):
    venv = venv_for(BOX, n=3, seed=4)
    agent = as_agent(_model("sac", venv))
    obs = venv.reset()
    for target in ("mean:1", "q"):
        runs = {}
        for fast in (True, False):
            with Explainer(agent, target=target, method=method, fast=fast) as explainer:
                runs[fast] = explainer.explain(obs, all_actions=True)
                assert explainer.gradient_path == ("by hand" if fast else "autograd")
        _assert_same(runs[True], runs[False])
    venv.close()


def test_dict_observations_by_hand_with_the_vector_key_first():
    """CombinedExtractor puts the vector key ('cue') before the image: the image's columns of dy/d(features)."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.vec_env import DummyVecEnv, VecTransposeImage

    venv = VecTransposeImage(DummyVecEnv([DictEnv, DictEnv, DictEnv]))
    venv.seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sb3.PPO("MultiInputPolicy", venv, n_steps=16, seed=6, device="cpu")
    obs = venv.reset()
    agent = as_agent(model)
    for target in ("logit", "logprob", "value"):
        runs, paths = {}, {}
        for fast in (True, False):
            with Explainer(agent, target=target, fast=fast) as explainer:
                runs[fast] = explainer.explain(obs, all_actions=True)
                paths[fast] = explainer.gradient_path
        assert paths[True] == "by hand"
        _assert_same(runs[True], runs[False])
    np.testing.assert_array_equal(runs[True].actions, model.predict(obs, deterministic=True)[0])
    venv.close()


def test_recurrent_value_is_an_extra_and_equals_the_policys_own():
    """Without extras a recurrent agent's critic LSTM does not run (value NaN); with them the value
    is the policy's own forward's, its critic state carried and reset at episode starts."""
    venv = venv_for(spaces.Discrete(3), n=2, seed=3)
    model = build("recurrent", venv)
    policy = model.policy
    agent = as_agent(model)
    frames, starts = [], []
    obs, start = venv.reset(), np.ones(2, bool)
    for _ in range(15):  # past an episode end (12 steps)
        frames.append(obs)
        starts.append(start)
        obs, _, start, _ = venv.step(np.zeros(2, np.int64))
    with Explainer(agent) as explainer:
        plain = [explainer.explain(o, episode_start=s) for o, s in zip(frames, starts, strict=True)]
    with Explainer(agent, extras=True) as explainer:
        full = [explainer.explain(o, episode_start=s) for o, s in zip(frames, starts, strict=True)]
    assert all(np.isnan(p.value).all() for p in plain)
    from sb3_contrib.common.recurrent.type_aliases import RNNStates

    layers, _, size = policy.lstm_hidden_state_shape
    zeros = [torch.zeros(layers, 2, size) for _ in range(4)]
    state = RNNStates((zeros[0], zeros[1]), (zeros[2], zeros[3]))
    with torch.no_grad():
        for o, s, p, f in zip(frames, starts, plain, full, strict=True):
            starts_t = torch.as_tensor(s, dtype=torch.float32)
            actions, values, _, state = policy(torch.as_tensor(o), state, starts_t, deterministic=True)
            np.testing.assert_array_equal(f.actions, actions.numpy())
            np.testing.assert_array_equal(p.actions, f.actions)
            np.testing.assert_array_equal(p.cam, f.cam)
            np.testing.assert_allclose(f.value, values.squeeze(-1).numpy(), rtol=1e-5, atol=1e-7)
    venv.close()


def _chain():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Identity(), nn.Linear(5, 3))


def test_tape_backward_equals_autograd():
    net = _chain()
    x = torch.randn(4, 7, requires_grad=True)
    g = torch.randn(4, 3)
    (expected,) = torch.autograd.grad(net(x), x, g)
    tape = Tape()
    with torch.no_grad():
        out = tape.run(net, x)
        got = tape.backward(g)
    np.testing.assert_array_equal(out.numpy(), net(x).detach().numpy())  # the same forward, child by child
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)


def test_tape_lstm_step_equals_autograd_through_the_lstm():
    torch.manual_seed(1)
    lstm = nn.LSTM(6, 4)
    x = torch.randn(3, 6, requires_grad=True)
    h, c = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    g = torch.randn(3, 4)
    out, _ = lstm(x[None], (h, c))
    (expected,) = torch.autograd.grad(out[0], x, g)
    tape = Tape()
    with torch.no_grad():
        tape.lstm_step(lstm, x, h[0], c[0])
        got = tape.backward(g)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)


def test_modules_the_tape_does_not_know_go_to_autograd():
    assert Tape.supports(_chain())
    assert not Tape.supports(nn.Sequential(nn.Linear(3, 3), nn.LeakyReLU()))
    import stable_baselines3 as sb3

    venv = venv_for(spaces.Discrete(3), n=3, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sb3.PPO(
            "CnnPolicy", venv, n_steps=16, policy_kwargs=_small(activation_fn=nn.LeakyReLU), seed=3, device="cpu"
        )
    obs = venv.reset()
    agent = as_agent(model)
    runs = {}
    for fast in (True, False):
        with Explainer(agent, fast=fast) as explainer:
            runs[fast] = explainer.explain(obs, all_actions=True)
            if fast:
                assert explainer.gradient_path == "autograd from z"
    _assert_same(runs[True], runs[False])
    venv.close()


def test_paused_lets_sb3_predict_run_beside_an_open_explainer():
    venv = venv_for(BOX, n=3, seed=4)
    model = _model("sac", venv)
    obs = venv.reset()
    alone, _ = model.predict(obs, deterministic=True)
    with Explainer(as_agent(model)) as explainer:
        before = explainer.explain(obs)
        with explainer.paused():
            with explainer.paused():  # nested: the outer pause still holds after the inner one
                pass
            inside, _ = model.predict(obs, deterministic=True)
        after = explainer.explain(obs)  # the hooks work again
    np.testing.assert_array_equal(inside, alone)
    np.testing.assert_array_equal(after.cam, before.cam)
    assert after.cam.max() > 0
    venv.close()
