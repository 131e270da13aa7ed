"""Observation layouts: any Atari stack depth, channel-last or -first, grey or RGB, uint8 or float.

Each env built by ``rlcam.envs.make_env`` is compared with the same env built directly from SB3's
and Gymnasium's own classes, and tiny untrained agents of each layout record through the CLI
with actions equal to SB3's ``predict`` on the recorded observations.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

from rlcam.cli import main
from rlcam.envs import describe_observations, make_env
from rlcam.errors import RlcamError
from rlcam.toyenv import FindTarget
from rlcam.video import load_trace
from tests.conftest import build_model


class _Converted(FindTarget):
    """FindTarget whose observations go through ``convert``; the rendered frame stays the RGB one."""

    layout: tuple = (84, 84, 3)
    dtype = np.uint8

    def __init__(self, render_mode=None):
        super().__init__(render_mode)
        high = 1.0 if np.issubdtype(self.dtype, np.floating) else 255
        self.observation_space = spaces.Box(0, high, self.layout, self.dtype)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return self.convert(obs), info

    def step(self, action):
        obs, *rest = super().step(action)
        return (self.convert(obs), *rest)


class FloatFirst(_Converted):
    layout, dtype = (3, 84, 84), np.float32

    def convert(self, obs):
        return np.transpose(obs, (2, 0, 1)).astype(np.float32) / 255.0


class FloatLast(_Converted):
    layout, dtype = (84, 84, 3), np.float32

    def convert(self, obs):
        return obs.astype(np.float32) / 255.0


class GreyLast(_Converted):
    layout = (84, 84, 1)

    def convert(self, obs):
        return obs[..., 1:2].copy()  # the green channel: target and distractor both show


class RgbFirst(_Converted):
    layout = (3, 84, 84)

    def convert(self, obs):
        return np.ascontiguousarray(np.transpose(obs, (2, 0, 1)))


for _cls in (FloatFirst, FloatLast, GreyLast, RgbFirst):
    gym.register(id=f"Layout{_cls.__name__}-v0", entry_point=_cls, max_episode_steps=32)


def rollout(venv, steps: int = 6, seed: int = 0) -> list[np.ndarray]:
    """Observations over a fixed random action sequence."""
    rng = np.random.default_rng(seed)
    seen = [venv.reset()]
    for _ in range(steps):
        seen.append(venv.step(rng.integers(0, venv.action_space.n, size=venv.num_envs))[0])
    venv.close()
    return seen


def assert_same_rollout(ours, reference):
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def box(shape, dtype=np.uint8):
    return spaces.Box(0, 255 if dtype == np.uint8 else 1.0, shape, dtype)


# -- Atari stack depth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 6])
def test_atari_stack_depth_is_the_agents_and_equals_sb3s_own_stack(depth):
    venv, info = make_env("Breakout", seed=3, agent_space=box((depth, 84, 84)))
    assert info.frame_stack == depth and info.atari and info.transposed
    reference = make_atari_env(
        "BreakoutNoFrameskip-v4", n_envs=1, seed=3, env_kwargs={"render_mode": "rgb_array"},
        wrapper_kwargs={"clip_reward": False},
    )  # fmt: skip
    assert_same_rollout(rollout(venv), rollout(VecTransposeImage(VecFrameStack(reference, n_stack=depth))))


def test_atari_default_stack_is_four_and_an_explicit_stack_wins():
    venv, info = make_env("Breakout")
    assert info.frame_stack == 4 and venv.observation_space.shape == (4, 84, 84)
    venv.close()
    venv, info = make_env("Breakout", frame_stack=3)
    assert info.frame_stack == 3 and venv.observation_space.shape == (3, 84, 84)
    venv.close()


def test_a_frame_stack_that_contradicts_the_agent_is_one_sentence():
    with pytest.raises(RlcamError) as exc:
        make_env("Breakout", frame_stack=4, agent_space=box((6, 84, 84)))
    message = str(exc.value)
    assert "6 stacked 1-channel 84x84 frames" in message and "--frame-stack 4" in message
    assert "pass --frame-stack 6" in message and message.count(". ") == 0
    with pytest.raises(RlcamError, match="at least 1"):
        make_env("Breakout", frame_stack=0)


def test_a_non_atari_stack_is_asked_for_not_guessed():
    # An RGB env and an agent with 6 channels: two stacked RGB frames, or something else; rlcam asks.
    with pytest.raises(RlcamError, match="if it was trained on a stack of 2 frames, pass --frame-stack 2"):
        make_env("rlcam.toyenv:FindTarget-v0", agent_space=box((6, 84, 84)))
    venv, info = make_env("rlcam.toyenv:FindTarget-v0", seed=1, frame_stack=2, agent_space=box((6, 84, 84)))
    assert info.frame_stack == 2
    reference = make_vec_env("FindTarget-v0", n_envs=1, seed=1, env_kwargs={"render_mode": "rgb_array"})
    assert_same_rollout(rollout(venv), rollout(VecTransposeImage(VecFrameStack(reference, n_stack=2))))


# -- channel order, grey or RGB, uint8 or float -----------------------------------------------------------


@pytest.mark.parametrize(
    "env_id, agent_shape, transposed",
    [
        ("LayoutGreyLast-v0", (1, 84, 84), True),  # grey, channel-last env: SB3 transposes it
        ("LayoutRgbFirst-v0", (3, 84, 84), False),  # an env that is channel-first already
        ("LayoutFloatFirst-v0", (3, 84, 84), False),  # float: SB3 never transposes, the agent saw this
        ("LayoutFloatLast-v0", (3, 84, 84), True),  # float channel-last made channel-first for the agent
        ("FindTarget-v0", (84, 84, 3), False),  # an agent that kept the channel-last layout
    ],
)
def test_the_layout_follows_the_agent(env_id, agent_shape, transposed):
    dtype = np.float32 if "Float" in env_id else np.uint8
    venv, info = make_env(env_id, seed=2, agent_space=box(agent_shape, dtype))
    assert info.transposed == transposed and venv.observation_space.shape == agent_shape
    assert venv.observation_space.dtype == dtype
    ours = rollout(venv)
    raw = rollout(make_vec_env(env_id, n_envs=1, seed=2, env_kwargs={"render_mode": "rgb_array"}))
    expected = [np.transpose(o, (0, 3, 1, 2)) if transposed else o for o in raw]
    assert_same_rollout(ours, expected)


def test_without_the_agent_uint8_follows_sb3_and_float_is_left_alone():
    venv, info = make_env("LayoutGreyLast-v0")
    assert venv.observation_space.shape == (1, 84, 84) and info.transposed
    venv.close()
    venv, info = make_env("LayoutFloatLast-v0")
    assert venv.observation_space.shape == (84, 84, 3) and not info.transposed
    venv.close()


def test_a_vector_env_is_refused_in_one_sentence():
    with pytest.raises(RlcamError, match=r"'CartPole-v1' does not give image observations \(its space is Box"):
        make_env("CartPole-v1")


def test_describe_observations():
    assert describe_observations(box((4, 84, 84))) == (
        "channel-first 84x84, 4 channel(s), uint8, divided by 255 by the policy"
    )
    assert describe_observations(box((64, 64, 3), np.float32), normalize_images=False) == (
        "channel-last 64x64, 3 channel(s), float32, fed to the policy as they are (normalize_images=False)"
    )


# -- tiny agents of each layout, recorded through the CLI --------------------------------------------------


def _record(agent, env, tmp_path, capsys, *extra):
    out = tmp_path / "layout.mp4"
    argv = ["record", "--agent", agent, "--env", env, "--steps", 6, "--out", out, "--save-obs", "--quiet", *extra]
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured, out.with_suffix(".npz")


@pytest.mark.parametrize(
    "train_env, record_env, kwargs",
    [
        ("LayoutFloatFirst-v0", "LayoutFloatLast-v0", {"policy_kwargs": {"normalize_images": False}}),
        ("LayoutGreyLast-v0", "LayoutGreyLast-v0", {}),
    ],
)
def test_float_and_grey_agents_record_with_predicts_actions(train_env, record_env, kwargs, tmp_path, capsys):
    train = make_vec_env(train_env, n_envs=1, seed=0)
    model = build_model("ppo", train, n_steps=8, **kwargs)
    train.close()
    zip_path = tmp_path / "agent.zip"
    model.save(zip_path)
    code, captured, trace_path = _record(zip_path, record_env, tmp_path, capsys)
    assert code == 0, captured.err
    trace = load_trace(trace_path)
    assert trace["obs"].shape[1:] == model.observation_space.shape
    assert trace["obs"].dtype == model.observation_space.dtype
    predicted, _ = model.predict(trace["obs"], deterministic=True)
    np.testing.assert_array_equal(predicted, trace["action"])
    assert trace.meta["frame_stack"] == 1


def test_record_with_a_contradicting_frame_stack_exits_2(agent_zips, tmp_path, capsys):
    # The conftest agents see Breakout through a 4-frame stack.
    code, captured, trace_path = _record(agent_zips["ppo"], "Breakout", tmp_path, capsys, "--frame-stack", 2)
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "4 stacked 1-channel 84x84 frames" in lines[0] and "pass --frame-stack 4" in lines[0]
    assert not trace_path.exists() and not trace_path.with_suffix(".mp4").exists()
