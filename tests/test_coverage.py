"""rlcam.coverage: the input pixels a strided conv stack never reads, found on real SB3 policies and
checked against the policy's own output, and shown by ``rlcam info`` and ``rlcam record``."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from rlcam.agents import load_agent
from rlcam.cli import main
from rlcam.coverage import Unseen, extractor_of, sentences, unseen
from rlcam.explainer import default_layer


class Frames(gym.Env):
    """Random frames of ``shape`` (channel-first uint8), four actions."""

    def __init__(self, shape=(3, 48, 48)):
        self.observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.action_space = spaces.Discrete(4)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def ppo(shape, **kwargs) -> PPO:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PPO("CnnPolicy", Frames(shape), n_steps=16, seed=0, device="cpu", **kwargs)


@pytest.mark.parametrize("size,lost", [(48, range(44, 48)), (64, range(60, 64)), (56, range(52, 56)), (84, None)])
def test_nature_cnn_loses_the_rows_its_strides_stop_short_of(size, lost):
    model = ppo((3, size, size))
    found = unseen(model.policy, default_layer(load_agent_of(model)))
    if lost is None:
        assert found is None
        return
    assert (found.rows, found.cols, found.key) == (tuple(lost), tuple(lost), None)
    assert unseen(model.policy, default_layer(load_agent_of(model)) + "@0") == found  # a call-indexed layer
    assert found.pixels == size * size - (size - 4) ** 2
    # written from the convs' sizes: conv1 8/4, conv2 4/2, conv3 3/1; the last input pixel conv2 reads
    conv1 = (size - 8) // 4 + 1
    conv2 = (conv1 - 4) // 2 + 1
    last_read = ((conv2 - 1) * 2 + 3) * 4 + 7
    assert found.rows[0] == last_read + 1


def load_agent_of(model: PPO):
    """The rlcam agent of an in-memory model (through a saved zip, as a user has it)."""
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "agent.zip"
    model.save(path)
    return load_agent(path)


def test_what_it_reports_does_not_move_the_policy_and_the_row_before_does():
    model = ppo((3, 48, 48))
    obs = np.stack([model.observation_space.sample() for _ in range(6)])
    policy = model.policy
    with torch.no_grad():
        before = policy.get_distribution(torch.as_tensor(obs)).distribution.logits
        redrawn = obs.copy()
        redrawn[:, :, 44:, :] = 255 - redrawn[:, :, 44:, :]
        redrawn[:, :, :, 44:] = 255 - redrawn[:, :, :, 44:]
        after = policy.get_distribution(torch.as_tensor(redrawn)).distribution.logits
        row43 = obs.copy()
        row43[:, :, 43, :] = 255 - row43[:, :, 43, :]
        moved = policy.get_distribution(torch.as_tensor(row43)).distribution.logits
    assert torch.equal(before, after)
    assert not torch.allclose(before, moved)


def test_a_dict_agent_names_its_image_key():
    from rlcam.explainer import key_layers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PPO("MultiInputPolicy", "rlcam.toydict:SteerDictTwoImages-v0", n_steps=16, seed=0, device="cpu")
    agent = load_agent_of(model)
    found = {key: unseen(model.policy, layer) for key, layer in key_layers(agent).items()}
    assert {key: (u.key, u.rows) for key, u in found.items()} == {k: (k, (44, 45, 46, 47)) for k in ("left", "right")}
    assert "of image key 'left' (48x48)" in found["left"].sentence()
    (both,) = sentences(list(found.values()))  # one border, named once for both keys
    assert both.startswith(
        "input rows 44-47 and columns 44-47 of image keys 'left' and 'right' (48x48) never reach features_extractor ("
    )


def test_padded_convs_read_every_pixel():
    class Padded(BaseFeaturesExtractor):
        def __init__(self, space, features_dim=32):
            super().__init__(space, features_dim)
            self.cnn = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten()
            )
            self.linear = torch.nn.Linear(8 * 24 * 24, features_dim)

        def forward(self, x):
            return self.linear(self.cnn(x))

    model = ppo((3, 48, 48), policy_kwargs={"features_extractor_class": Padded})
    assert unseen(model.policy, "features_extractor.cnn.1") is None


def test_a_zero_gradient_the_output_still_follows_is_not_reported():
    class Stepped(BaseFeaturesExtractor):
        """Rounds its input: a zero gradient everywhere, yet every pixel moves the output."""

        def __init__(self, space, features_dim=16):
            super().__init__(space, features_dim)
            self.cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.ReLU(), torch.nn.Flatten())
            self.linear = torch.nn.Linear(4 * 6 * 6, features_dim)

        def forward(self, x):
            return self.linear(self.cnn(torch.round(x * 4)))

    model = ppo((3, 48, 48), policy_kwargs={"features_extractor_class": Stepped})
    assert extractor_of(model.policy, "features_extractor.cnn.1") is not None
    assert unseen(model.policy, "features_extractor.cnn.1") is None


def test_sentences_name_spans_and_scattered_pixels():
    assert (
        Unseen(None, "net", 48, 48, (44, 45, 46, 47), (47,), 4 * 48 + 48 - 4)
        .sentence()
        .startswith("input rows 44-47 and column 47 of the image (48x48) never reach net (its convolutions")
    )
    assert "input 3 pixels of the image" in Unseen(None, "net", 8, 8, (), (), 3).sentence()
    assert "(and 2 more pixels)" in Unseen(None, "net", 8, 8, (7,), (), 10).sentence()


def test_info_and_record_say_it(tmp_path, capsys):
    from rlcam.video import load_trace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PPO("MultiInputPolicy", "rlcam.toydict:SteerDictImage-v0", n_steps=16, seed=0, device="cpu")
    path = tmp_path / "agent.zip"
    model.save(path)
    said = (
        "input rows 44-47 and columns 44-47 of image key 'image' (48x48) never reach "
        "features_extractor.extractors.image (its convolutions stop short of them): nothing there can change its output"
    )
    assert main(["info", "--agent", str(path)]) == 0
    assert f"unseen       {said}" in capsys.readouterr().out
    out = tmp_path / "run.mp4"
    env = "rlcam.toydict:SteerDictImage-v0"
    args = ["record", "--agent", str(path), "--env", env, "--steps", "3", "--out", str(out)]
    assert main(args) == 0
    assert f"rlcam: warning: {said}" in capsys.readouterr().err
    meta = load_trace(out.with_suffix(".npz")).meta
    assert meta["unseen_input"] == [
        {
            "key": "image",
            "extractor": "features_extractor.extractors.image",
            "height": 48,
            "width": 48,
            "rows": [44, 45, 46, 47],
            "cols": [44, 45, 46, 47],
            "pixels": 368,
        }
    ]
    assert said in meta["warnings"][0]
