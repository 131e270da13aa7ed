"""Dict observations (image + vector keys): maps on the image key, gradient x input on every key."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, VecTransposeImage

from rlcam.api import as_agent
from rlcam.cli import main
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer


class DictEnv(gym.Env):
    """Random 64x64 RGB frames and a random 5-vector; episodes of 10 steps."""

    def __init__(self):
        self.observation_space = spaces.Dict(
            {"image": spaces.Box(0, 255, (64, 64, 3), np.uint8), "cue": spaces.Box(-1.0, 1.0, (5,), np.float32)}
        )
        self.action_space = spaces.Discrete(3)
        self.t = 0

    def _obs(self):
        rng = self.np_random
        return {"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "cue": rng.uniform(-1, 1, 5).astype("f")}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, self.t >= 10, {}


@pytest.fixture(scope="module")
def setup():
    import stable_baselines3 as sb3

    venv = VecTransposeImage(DummyVecEnv([DictEnv, DictEnv]))
    venv.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sb3.PPO("MultiInputPolicy", venv, n_steps=16, batch_size=16, seed=2, device="cpu")
    obs = venv.reset()
    yield model, venv, obs
    venv.close()


def test_actions_equal_predict_and_the_map_is_on_the_image_key(setup):
    model, _, obs = setup
    with Explainer(as_agent(model)) as explainer:
        assert explainer.layer_name == "features_extractor.extractors.image.cnn.5"
        explained = explainer.explain(obs)
    predicted, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(explained.actions, predicted)
    assert explained.cam_input.shape == (2, 64, 64)


def test_map_equals_an_independent_computation(setup):
    model, _, obs = setup
    policy = model.policy
    ext = policy.features_extractor.extractors
    with Explainer(as_agent(model)) as explainer:
        explained = explainer.explain(obs)
    image = torch.as_tensor(obs["image"]).float() / 255.0
    acts = torch.relu(ext["image"].cnn[:5](image)).detach().requires_grad_(True)
    # CombinedExtractor concatenates in the Dict space's key order: cue, then image
    features = torch.cat([torch.as_tensor(obs["cue"]), ext["image"].linear(ext["image"].cnn[6](acts))], dim=1)
    logits = policy.action_net(policy.mlp_extractor.forward_actor(features))
    y = logits.gather(1, torch.as_tensor(explained.actions)[:, None]).sum()
    (grads,) = torch.autograd.grad(y, acts)
    expected = torch.relu((grads.mean(dim=(2, 3))[:, :, None, None] * acts).sum(1)).detach().numpy()
    np.testing.assert_allclose(explained.cam, expected, rtol=1e-4, atol=1e-7)
    assert expected.max() > 0


def test_vector_attribution_is_gradient_times_input(setup):
    model, _, obs = setup
    policy = model.policy
    with Explainer(as_agent(model), extras=True) as explainer:
        explained = explainer.explain(obs)
    cue = torch.as_tensor(obs["cue"]).requires_grad_(True)
    image_features = policy.features_extractor.extractors["image"](torch.as_tensor(obs["image"]).float() / 255.0)
    logits = policy.action_net(policy.mlp_extractor.forward_actor(torch.cat([cue, image_features], dim=1)))
    (g,) = torch.autograd.grad(logits.gather(1, torch.as_tensor(explained.actions)[:, None]).sum(), cue)
    np.testing.assert_allclose(explained.input_attributions["cue"], (g * cue).detach().numpy(), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(explained.input_shares.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("silenced,deciding", [("image", "cue"), ("cue", "image")])
def test_shares_name_the_key_that_decides(setup, silenced, deciding):
    """With one key's input cut off from the head, the other key holds the whole share."""
    import copy

    model, _, obs = setup
    policy = copy.deepcopy(model.policy)
    agent = as_agent(model)
    agent = type(agent)(model=agent.model, algo=agent.algo, path=None, sha256=None)
    agent.model = type("Model", (), {"policy": policy})()
    first = policy.mlp_extractor.policy_net[0]  # features = [cue (5) | image (256)], the space's key order
    with torch.no_grad():
        if silenced == "image":
            first.weight[:, 5:] = 0.0
        else:
            first.weight[:, :5] = 0.0
    keys = list(policy.observation_space.spaces)
    with Explainer(agent, extras=True) as explainer:
        shares = explainer.explain(obs).input_shares
    np.testing.assert_allclose(shares[:, keys.index(deciding)], 1.0, atol=1e-6)
    np.testing.assert_allclose(shares[:, keys.index(silenced)], 0.0, atol=1e-6)


def test_methods_that_perturb_one_image_are_refused(setup):
    model, _, _ = setup
    with pytest.raises(RlcamError, match="Dict observations"):
        Explainer(as_agent(model), method="scorecam")


def test_a_minigrid_agent_records_through_the_cli(tmp_path, capsys):
    pytest.importorskip("minigrid", reason="MiniGrid envs need the minigrid package (in the dev extra)")
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env

    import rlcam.gridenvs  # noqa: F401  (registers the ids)
    from rlcam.video import load_trace

    env_id = "RlcamMiniGrid-Empty-5x5-v0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sb3.PPO("MultiInputPolicy", make_vec_env(env_id, n_envs=1, seed=0), n_steps=16, seed=0, device="cpu")
    model.save(tmp_path / "grid.zip")
    out = tmp_path / "grid.mp4"
    code = main(
        ["record", "--env", f"rlcam.gridenvs:{env_id}", "--agent", str(tmp_path / "grid.zip")]
        + ["--steps", "12", "--out", str(out), "--save-obs"]
    )
    assert code == 0, capsys.readouterr().err
    trace = load_trace(tmp_path / "grid.npz")
    assert trace["input_shares"].shape == (12, 2) and trace["attr_direction"].shape == (12, 4)
    assert trace["obs_image"].shape == (12, 3, 56, 56) and trace.meta["family"] == "discrete actor-critic"
    np.testing.assert_allclose(trace["input_shares"].sum(axis=1), 1.0, rtol=1e-5)


def test_the_shipped_minigrid_agent_solves_its_env_and_its_card_names_it():
    pytest.importorskip("minigrid", reason="MiniGrid envs need the minigrid package (in the dev extra)")
    import hashlib
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "scripts"))
    from train_minigrid import evaluate

    from rlcam.agents import load_agent

    zip_path = repo / "agents" / "minigrid_empty6_ppo.zip"
    card = (repo / "agents" / "minigrid_empty6_ppo.md").read_text()
    assert hashlib.sha256(zip_path.read_bytes()).hexdigest() in card
    agent = load_agent(zip_path)  # the safe loader: SB3's MultiInputActorCriticPolicy, no --trust
    result = evaluate(agent.model, "RlcamMiniGrid-Empty-Random-6x6-v0", episodes=20, seed=10_000)
    assert result["success"] == 1.0  # the card: 100% of 100 from the same seeds
