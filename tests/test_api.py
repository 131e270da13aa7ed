"""The Python API: ExplainedPolicy against SB3, the env wrappers' files, the training callback's
invariants, the notebook objects, and the example script end to end."""

from __future__ import annotations

import base64
import io
import random
import re
import runpy
import sys
from pathlib import Path

import gymnasium as gym
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlcam.toyenv  # noqa: F401  (registers FindTarget-v0)
from rlcam import (
    AttentionCallback,
    ExplainedPolicy,
    Explainer,
    RecordAttention,
    RlcamError,
    VecAttentionRecorder,
    annotate_frame,
    as_agent,
    record_clip,
)
from rlcam.agents import file_sha256
from rlcam.callback import attention_metrics
from rlcam.envs import make_env
from rlcam.video import load_trace
from tests.conftest import ALGOS, build_model

TOY = "rlcam.toyenv:FindTarget-v0"
EPISODE = rlcam.toyenv.EPISODE_STEPS  # 32
ROOT = Path(__file__).resolve().parents[1]


def video_frames(path) -> int:
    return imageio_ffmpeg.count_frames_and_secs(str(path))[0]


def hooks(model) -> int:
    return sum(len(m._forward_hooks) for m in model.policy.modules())


def head(model, algo):
    policy = model.policy
    if algo in ("ppo", "a2c"):
        return policy.action_net
    if algo == "dqn":
        return policy.q_net.q_net[-1]
    return policy.quantile_net.quantile_net[-1]


def spread_actions(model, algo, obs) -> None:
    """Re-draw the action head around these observations' mean latent, so the argmax varies.

    An untrained CNN maps all inputs to nearly the same features and picks one action for all,
    which would make "same actions as SB3" a weak check.
    """
    layer, seen = head(model, algo), []
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    model.predict(obs, deterministic=True)
    handle.remove()
    latent = seen[0]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / (latent.std(0).mean() + 1e-8))
        layer.bias.copy_(-layer.weight @ latent.mean(0))


@pytest.fixture(scope="module")
def noisy_obs():
    """(8, 4, 84, 84) uint8 random observations: more varied than real frames for an untrained CNN."""
    return np.random.default_rng(0).integers(0, 256, size=(8, 4, 84, 84), dtype=np.uint8)


@pytest.fixture(scope="module")
def models(breakout_env, noisy_obs):
    """algo -> in-memory untrained Breakout model whose actions vary over ``noisy_obs``."""
    built = {}
    for algo in ALGOS:
        model = build_model(algo, breakout_env, seed=1)
        spread_actions(model, algo, noisy_obs)
        built[algo] = model
    return built


@pytest.fixture(scope="module")
def toy_venv():
    venv, _ = make_env(TOY, n_envs=2, seed=0)
    yield venv
    venv.close()


@pytest.fixture(scope="module")
def toy_model(toy_venv):
    """Untrained PPO for the toy env (policy input (3, 84, 84); the env gives (84, 84, 3))."""
    return build_model("ppo", toy_venv, seed=3)


# --- ExplainedPolicy --------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
def test_predict_returns_sb3_actions_for_batch_single_and_channel_last(models, noisy_obs, algo):
    model = models[algo]
    expected, _ = model.predict(noisy_obs, deterministic=True)
    assert len(set(expected.tolist())) > 1  # the comparison below can fail
    channel_last = noisy_obs.transpose(0, 2, 3, 1)
    with ExplainedPolicy(model) as explained:
        for obs in (noisy_obs, channel_last):
            actions, state, explanation = explained.predict(obs, deterministic=True)
            np.testing.assert_array_equal(actions, expected)
            assert actions.shape == expected.shape and state is None
            np.testing.assert_array_equal(explanation.actions, expected)
        for i in range(len(noisy_obs)):
            for obs in (noisy_obs[i], channel_last[i]):
                sb3_action, _ = model.predict(obs, deterministic=True)
                actions, _, explanation = explained.predict(obs, deterministic=True)
                assert actions.shape == sb3_action.shape == ()
                assert actions == sb3_action == explanation.actions


def test_explanation_fields_match_the_explainer(models, noisy_obs):
    model = models["ppo"]
    with Explainer(as_agent(model)) as explainer:
        direct = explainer.explain(noisy_obs)
    explained = ExplainedPolicy(model)
    _, _, batch = explained.predict(noisy_obs, deterministic=True)
    assert batch.cam.shape == (8, 7, 7) and batch.cam_input.shape == (8, 84, 84)
    assert batch.score.shape == batch.value.shape == (8,) and batch.action_values.shape == (8, 4)
    for name in ("actions", "cam", "cam_input", "score", "action_values", "value"):
        np.testing.assert_array_equal(getattr(batch, name), getattr(direct, name))
    _, _, single = explained.predict(noisy_obs[3], deterministic=True)
    assert single.cam.shape == (7, 7) and single.cam_input.shape == (84, 84) and single.action_values.shape == (4,)
    np.testing.assert_allclose(single.cam, direct.cam[3], rtol=1e-5, atol=1e-7)
    assert single.score.shape == single.value.shape == ()


def test_given_actions_are_the_ones_explained(models, noisy_obs):
    model = models["dqn"]
    explained = ExplainedPolicy(model)
    chosen = explained.explain(noisy_obs)
    other = (chosen.actions + 1) % 4
    forced = explained.explain(noisy_obs, actions=other)
    np.testing.assert_array_equal(forced.actions, other)
    with torch.no_grad():  # the Q-value target, from SB3's own q_net
        q = model.policy.q_net(torch.as_tensor(noisy_obs)).numpy()
    np.testing.assert_allclose(forced.score, q[np.arange(8), other], rtol=1e-5)
    assert not np.allclose(forced.cam, chosen.cam)


def test_agent_from_model_and_from_path(models, agent_zips):
    for algo, model in models.items():
        agent = as_agent(model)
        assert agent.algo == algo and agent.model is model and agent.sha256 is None
    agent = ExplainedPolicy(agent_zips["a2c"]).agent
    assert agent.algo == "a2c" and agent.sha256 == file_sha256(agent_zips["a2c"])


def test_hooks_live_only_inside_the_block_even_after_an_exception(models, noisy_obs):
    model = models["ppo"]
    model.policy.train(True)
    with pytest.raises(KeyError):
        with ExplainedPolicy(model) as explained:
            explained.predict(noisy_obs)
            assert hooks(model) == 1 and not model.policy.training
            raise KeyError("boom")
    assert hooks(model) == 0 and all(m.training for m in model.policy.modules())
    explained.predict(noisy_obs)  # outside a block: the hook lives for the call only
    assert hooks(model) == 0 and model.policy.training
    with pytest.raises(RlcamError):
        explained.predict(noisy_obs[:, :3])  # fails inside the call: still no hook left
    assert hooks(model) == 0
    model.policy.train(False)


def test_sampled_actions_are_seeded_and_leave_global_rngs(models, noisy_obs):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    runs = [ExplainedPolicy(models["ppo"], seed=5).predict(noisy_obs)[0] for _ in range(2)]
    np.testing.assert_array_equal(*runs)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p, obs: p.predict(obs[:, :, :80]), "fits neither one observation"),
        (lambda p, obs: p.explain(obs, actions=[0, 1]), "got 2 actions for 8 observations"),
        (lambda p, obs: p.explain(obs, actions=np.full(8, 4)), r"must lie in \[0, 4\)"),
        (lambda p, obs: p.explain(obs, actions=np.full(8, 0.5)), "must be integers"),
    ],
)
def test_bad_inputs_say_what_is_wrong(models, noisy_obs, call, message):
    with pytest.raises(RlcamError, match=message):
        call(ExplainedPolicy(models["ppo"]), noisy_obs)


def test_unsupported_models_are_refused(breakout_env):
    from stable_baselines3 import PPO

    with pytest.raises(RlcamError, match="rlcam explains PPO, A2C, DQN, SAC, TD3, DDPG and sb3-contrib"):
        ExplainedPolicy(object())
    with pytest.raises(RlcamError, match="no convolutional layer"):
        ExplainedPolicy(PPO("MlpPolicy", breakout_env, device="cpu", n_steps=8, batch_size=8))


# --- wrappers ---------------------------------------------------------------------------------


def test_vec_wrapper_records_exactly_the_triggered_episodes(toy_model, tmp_path):
    explained = ExplainedPolicy(toy_model, target="logprob")
    venv = VecAttentionRecorder(
        make_env(TOY, n_envs=2, seed=0)[0],
        explained,
        tmp_path,
        episode_trigger=lambda ep: ep in (0, 2),
        env_index=1,
        scale=1,
    )
    rng = np.random.default_rng(0)
    obs = venv.reset()
    seen = []  # (obs of env 1, action given, reward) per step
    for _ in range(3 * EPISODE + 5):
        actions = rng.integers(0, 2, size=2)  # not the policy's choice: the maps must follow them
        next_obs, rewards, dones, infos = venv.step(actions)
        seen.append((obs[1], actions[1], rewards[1]))
        obs = next_obs
    venv.close()

    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["rlcam-episode-0.mp4", "rlcam-episode-0.npz", "rlcam-episode-2.mp4", "rlcam-episode-2.npz"]
    for episode in (0, 2):
        steps = seen[episode * EPISODE : (episode + 1) * EPISODE]
        assert video_frames(tmp_path / f"rlcam-episode-{episode}.mp4") == EPISODE
        trace = load_trace(tmp_path / f"rlcam-episode-{episode}.npz")
        assert trace.steps == EPISODE and trace["cam"].shape == (EPISODE, 7, 7)
        np.testing.assert_array_equal(trace["action"], [a for _, a, _ in steps])
        np.testing.assert_array_equal(trace["reward"], [r for _, _, r in steps])
        np.testing.assert_array_equal(trace["game_over"], np.arange(EPISODE) == EPISODE - 1)
        assert trace.meta["complete"] and trace.meta["env_index"] == 1 and trace.meta["first_episode"] == episode
        # Each row is the map of the action given, for the observation it was given in.
        obs_batch = np.stack([o for o, _, _ in steps])
        again = explained.explain(obs_batch, actions=trace["action"])
        np.testing.assert_allclose(trace["cam"], again.cam, rtol=1e-5, atol=1e-8)
        with torch.no_grad():
            dist = toy_model.policy.get_distribution(toy_model.policy.obs_to_tensor(obs_batch)[0])
            logprob = dist.log_prob(torch.as_tensor(trace["action"])).numpy()
        np.testing.assert_allclose(trace["score"], logprob, rtol=1e-4, atol=1e-5)


def test_vec_wrapper_step_trigger_clip_length_and_close(toy_model, tmp_path):
    explained = ExplainedPolicy(toy_model)
    venv = VecAttentionRecorder(
        make_env(TOY, n_envs=2, seed=0)[0],
        explained,
        tmp_path,
        step_trigger=lambda step: step in (10, 12, 50),
        video_length=40,
        scale=1,
    )
    obs = venv.reset()
    for _ in range(70):
        actions, _ = toy_model.predict(obs, deterministic=True)
        obs, *_ = venv.step(actions)
    venv.close()
    # The clip from step 10 crosses an episode end and covers the trigger at 12; the one from 50 is cut by close().
    assert [video.name for video, _ in venv.saved] == ["rlcam-step-10.mp4", "rlcam-step-50.mp4"]
    assert [video_frames(video) for video, _ in venv.saved] == [40, 20]
    first, second = (load_trace(trace) for _, trace in venv.saved)
    assert first.steps == 40 and first.meta["complete"] and first["game_over"].sum() == 1
    assert second.steps == 20 and not second.meta["complete"]


def test_vec_wrapper_on_the_users_own_env_without_monitor(toy_model, tmp_path):
    """Channel-last observations, no Monitor: episodes end at done, the policy transposes."""
    venv = DummyVecEnv([lambda: gym.make(TOY, render_mode="rgb_array")])
    assert venv.observation_space.shape == (84, 84, 3)
    venv = VecAttentionRecorder(venv, ExplainedPolicy(toy_model), tmp_path, episode_trigger=lambda ep: ep == 1, scale=1)
    obs = venv.reset()
    for _ in range(2 * EPISODE + 3):
        actions, _ = toy_model.predict(obs, deterministic=True)
        obs, *_ = venv.step(actions)
    venv.close()
    ((video, trace),) = venv.saved
    assert video.name == "rlcam-episode-1.mp4" and video_frames(video) == EPISODE
    assert load_trace(trace)["game_over"].nonzero()[0].tolist() == [EPISODE - 1]


def test_gym_wrapper_records_the_triggered_episode(toy_model, tmp_path):
    env = RecordAttention(
        gym.make(TOY, render_mode="rgb_array"),
        ExplainedPolicy(toy_model),
        tmp_path,
        episode_trigger=lambda ep: ep in (1, 3),
        scale=1,
    )
    given = []
    for episode in range(4):
        obs, _ = env.reset(seed=episode)
        for t in range(EPISODE if episode < 3 else 10):  # episode 3 is cut short by a reset
            action, _ = toy_model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            given.append((episode, int(action)))
            assert truncated == (t == EPISODE - 1)
    env.reset()
    env.close()
    assert [video.name for video, _ in env.saved] == ["rlcam-episode-1.mp4", "rlcam-episode-3.mp4"]
    assert [video_frames(video) for video, _ in env.saved] == [EPISODE, 10]
    first, cut = (load_trace(trace) for _, trace in env.saved)
    np.testing.assert_array_equal(first["action"], [a for ep, a in given if ep == 1])
    assert first.meta["complete"] and not cut.meta["complete"] and cut.steps == 10
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".mp4") == [
        "rlcam-episode-1.mp4",
        "rlcam-episode-3.mp4",
    ]


def test_wrappers_check_their_settings(toy_venv, toy_model, tmp_path):
    explained = ExplainedPolicy(toy_model)
    with pytest.raises(RlcamError, match="env_index"):
        VecAttentionRecorder(toy_venv, explained, tmp_path, env_index=2)
    with pytest.raises(RlcamError, match="video_length"):
        VecAttentionRecorder(toy_venv, explained, tmp_path, video_length=-1)
    with pytest.raises(RlcamError, match="ExplainedPolicy"):
        VecAttentionRecorder(toy_venv, toy_model, tmp_path)
    with pytest.raises(RlcamError, match="render_mode='rgb_array'"):
        RecordAttention(gym.make(TOY), explained, tmp_path)


# --- callback ---------------------------------------------------------------------------------


def toy_ppo(tensorboard_log=None):
    venv, _ = make_env(TOY, n_envs=1, seed=0)
    return build_model("ppo", venv, seed=0, n_steps=32, batch_size=32, n_epochs=1, tensorboard_log=tensorboard_log)


def gif_summaries(log_dir: Path) -> list:
    (events,) = log_dir.rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_callback_logs_a_gif_summary_and_metrics(tmp_path):
    model = toy_ppo(str(tmp_path))
    model.learn(64, callback=AttentionCallback(TOY, every=32, clip_steps=5, scale=2))
    accumulator = gif_summaries(tmp_path)
    images = accumulator.Images("rlcam/attention")
    assert [image.step for image in images] == [32, 64]
    for image in images:
        gif = Image.open(io.BytesIO(image.encoded_image_string))
        assert gif.format == "GIF" and gif.n_frames == 5 and gif.size == (image.width, image.height)
        assert image.height == 2 * 168  # the toy env renders 168 px, upscaled 2x
    scalars = set(accumulator.Tags()["scalars"])
    assert {"rlcam/map_entropy", "rlcam/peak_share", "rlcam/map_peak", "rlcam/zero_maps"} <= scalars


def test_callback_leaves_training_exactly_as_without_it():
    plain = toy_ppo()
    plain.learn(64)
    watched = toy_ppo()
    callback = AttentionCallback(TOY, every=16, clip_steps=3)
    with pytest.warns(UserWarning, match="no TensorBoard directory"):
        watched.learn(64, callback=callback)
    assert callback.clips_logged == 4
    pairs = zip(plain.policy.parameters(), watched.policy.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_log_clip_keeps_grads_modes_and_global_rngs(tmp_path):
    def greedy_factory():  # an env factory that draws from every global RNG
        random.random(), np.random.rand(), torch.rand(1)
        return make_env(TOY, n_envs=1, seed=0)[0]

    model = toy_ppo()
    model.set_logger(configure(str(tmp_path), ["tensorboard"]))
    callback = AttentionCallback(greedy_factory, every=1, clip_steps=4)
    callback.init_callback(model)
    params = list(model.policy.parameters())
    params[0].grad = torch.ones_like(params[0])  # a stale grad must stay as it is; the rest stay None
    model.policy.train(True)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())

    clip = callback.log_clip()

    assert len(clip) == 4 and hooks(model) == 0
    assert torch.equal(params[0].grad, torch.ones_like(params[0])) and all(p.grad is None for p in params[1:])
    assert all(m.training for m in model.policy.modules())
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    model.logger.close()


def test_attention_metrics_by_hand():
    cam = np.zeros((3, 2, 2), dtype=np.float32)
    cam[0] = 1.0  # uniform: entropy 1, peak share 1/4
    cam[1, 0, 0] = 2.0  # one cell: entropy 0, peak share 1
    metrics = attention_metrics(cam)  # cam[2] is all zero
    assert metrics["map_entropy"] == pytest.approx(0.5)
    assert metrics["peak_share"] == pytest.approx(0.625)
    assert metrics["map_peak"] == pytest.approx(1.0)
    assert metrics["zero_maps"] == pytest.approx(1 / 3)
    assert set(attention_metrics(np.zeros((2, 3, 3)))) == {"map_peak", "zero_maps"}


# --- notebook ---------------------------------------------------------------------------------


def test_clip_plays_inline_as_mp4_and_gif(toy_venv, toy_model, tmp_path):
    clip = record_clip(toy_model, toy_venv, steps=6, seed=0, scale=1)
    assert len(clip) == 6 and clip.cam.shape == (6, 2, 7, 7) and clip.rewards.shape == (6, 2)
    html = clip._repr_html_()
    match = re.search(r'<video [^>]*src="data:video/mp4;base64,([A-Za-z0-9+/=]+)"', html)
    (tmp_path / "inline.mp4").write_bytes(base64.b64decode(match.group(1)))
    assert video_frames(tmp_path / "inline.mp4") == 6
    gif = re.search(r'src="data:image/gif;base64,([A-Za-z0-9+/=]+)"', clip.to_html("gif")).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(gif))).n_frames == 6
    # Seeded: the same start and the same maps again.
    np.testing.assert_array_equal(record_clip(toy_model, toy_venv, steps=6, seed=0, scale=1).cam, clip.cam)


def test_annotated_frame_is_a_png_of_the_composed_frame(toy_venv, toy_model):
    obs = toy_venv.reset()
    frame = toy_venv.get_images()[0]
    shown = annotate_frame(toy_model, obs[0], frame, names=["LEFT", "RIGHT"], scale=2)
    assert shown.image.shape[:2] == (2 * 168, 2 * 168 + 242)  # game upscaled, panel to its right
    png = Image.open(io.BytesIO(shown._repr_png_()))
    assert png.format == "PNG" and np.array_equal(np.asarray(png), shown.image)
    # With the map's opacity at 0 the game part is the raw frame upscaled, pixel for pixel; at 0.6 it is not.
    game = np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)
    clear = annotate_frame(toy_model, obs[0], frame, scale=2, alpha=0.0).image
    np.testing.assert_array_equal(clear[: 2 * 168, : 2 * 168], game)
    assert not np.array_equal(shown.image[: 2 * 168, : 2 * 168], game)
    with pytest.raises(ValueError, match="one observation"):
        annotate_frame(toy_model, obs, frame)


# --- the example script -------------------------------------------------------------------------


def test_api_example_runs_and_logs_video_summaries(breakout_env, tmp_path, monkeypatch, capsys):
    agent_zip = tmp_path / "untrained_ppo.zip"
    build_model("ppo", breakout_env, seed=1).save(agent_zip)
    out = tmp_path / "out"
    argv = ["--agent", str(agent_zip), "--record-steps", "20", "--train-steps", "256", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["api_example.py", *argv])
    runpy.run_path(str(ROOT / "scripts" / "api_example.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "logged 2 attention clips" in printed
    assert video_frames(out / "videos" / "rlcam-step-0.mp4") == 20
    trace = load_trace(out / "videos" / "rlcam-step-0.npz")
    assert trace.steps == 20 and trace.meta["agent_sha256"] == file_sha256(agent_zip) and trace.meta["complete"]
    images = gif_summaries(out / "tb").Images("rlcam/attention")
    assert [image.step for image in images] == [128, 256]
    assert all(Image.open(io.BytesIO(i.encoded_image_string)).n_frames == 32 for i in images)


def test_a_continuous_policy_annotates_frames_and_the_recorders_say_what_they_take(tmp_path):
    from tests.test_families_cli import _save

    path = _save("ppo", "rlcam.toyenv:SteerToDot-v0", tmp_path / "box.zip")
    explained = ExplainedPolicy(path)
    assert explained.n_actions is None
    obs = explained.model.observation_space.sample()
    frame = np.asarray(annotate_frame(explained, obs, np.zeros((84, 84, 3), np.uint8)).image)
    assert frame.ndim == 3 and frame.shape[0] >= 84 and frame.std() > 0  # the view and its panel
    with pytest.raises(RlcamError, match=r"record discrete-action policies, not this one's Box\(.*use 'rlcam record'"):
        RecordAttention(gym.make("rlcam.toyenv:SteerToDot-v0", render_mode="rgb_array"), explained, tmp_path)
