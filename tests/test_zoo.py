"""rl-zoo run folders as agents: real folders as rl-zoo writes them, the env rebuilt as training built it.

The folders are made here the way rl-zoo's ExperimentManager makes them (``yaml.dump`` of
sorted ``OrderedDict`` s, ``model.save``, ``VecNormalize.save``), with tiny untrained agents. Each
recorded observation is compared with the env built directly from SB3's and Gymnasium's classes
in rl-zoo's order, and the VecNormalize statistics with SB3's own ``VecNormalize.load``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from collections import OrderedDict
from pathlib import Path

import ale_py
import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces
from gymnasium.wrappers import GrayscaleObservation, ResizeObservation
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize, VecTransposeImage

from rlcam.agents import load_agent
from rlcam.cli import main
from rlcam.errors import RlcamError
from rlcam.toyenv import FindTarget
from rlcam.video import load_trace
from rlcam.zoo import FrameSkip, frozen_vecnormalize, load_yaml, read_vecnormalize
from tests.conftest import build_model

TOY = "FindTarget-v0"


class ZooFloat(FindTarget):
    """FindTarget with float32 channel-first frames: what a ``normalize_images=False`` agent observes."""

    def __init__(self, render_mode=None):
        super().__init__(render_mode)
        self.observation_space = spaces.Box(0.0, 255.0, (3, 84, 84), np.float32)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return np.transpose(obs, (2, 0, 1)).astype(np.float32), info

    def step(self, action):
        obs, *rest = super().step(action)
        return (np.transpose(obs, (2, 0, 1)).astype(np.float32), *rest)


gym.register_envs(ale_py)
gym.register(id="ZooFloat-v0", entry_point=ZooFloat, max_episode_steps=32)


# -- making run folders the way rl-zoo does ----------------------------------------------------------------


def dump_like_rl_zoo(path: Path, mapping: dict) -> None:
    """As rl-zoo's ``ExperimentManager._save_config``: an OrderedDict sorted by key, through ``yaml.dump``."""
    with open(path, "w") as f:
        yaml.dump(OrderedDict([(key, mapping[key]) for key in sorted(mapping)]), f)


def train_args(algo: str, env: str, **extra) -> dict:
    """The command-line arguments rl-zoo's train.py saves in args.yml (the ones that matter, and some that don't)."""
    return {
        "algo": algo,
        "env": env,
        "env_kwargs": None,
        "eval_episodes": 5,
        "eval_freq": 25000,
        "gym_packages": [],
        "hyperparams": None,
        "log_folder": "logs",
        "n_timesteps": -1,
        "seed": 2718,
        "uuid": False,
        "vec_env": "dummy",
        "verbose": 1,
        **extra,
    }


def make_run(
    logs: Path,
    env_id: str,
    config: dict,
    venv,
    algo: str = "ppo",
    exp_id: int = 1,
    stats: VecNormalize | None = None,
    seed: int = 0,
    args: dict | None = None,
    **model_kwargs,
) -> Path:
    """``logs/<algo>/<env>_<exp_id>`` with the final model, config.yml, args.yml and maybe vecnormalize.pkl."""
    name = env_id.replace("/", "-")
    run = logs / algo / f"{name}_{exp_id}"
    params = run / name
    params.mkdir(parents=True)
    model = build_model(algo, venv, seed=seed, **model_kwargs)
    model.save(run / f"{name}.zip")
    dump_like_rl_zoo(params / "config.yml", {"n_envs": 1, "n_timesteps": 1e4, "policy": "CnnPolicy", **config})
    dump_like_rl_zoo(params / "args.yml", args or train_args(algo, env_id))
    if stats is not None:
        stats.save(params / "vecnormalize.pkl")
    return run


def trained_stats(venv, steps: int = 12, **kwargs) -> VecNormalize:
    """A VecNormalize whose statistics moved away from their initial values, as after some training."""
    normalized = VecNormalize(venv, **kwargs)
    normalized.reset()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        normalized.step(rng.integers(0, venv.action_space.n, size=venv.num_envs))
    return normalized


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def record(argv, capsys, tmp_path, steps: int = 8):
    out = tmp_path / "zoo.mp4"
    code = main([str(a) for a in ["record", *argv, "--steps", steps, "--out", out, "--save-obs", "--quiet"]])
    captured = capsys.readouterr()
    return code, captured, out.with_suffix(".npz")


def replay(venv, actions: np.ndarray) -> np.ndarray:
    """The observations a reference env gives for the recorded actions, ``(T, ...)``."""
    seen = [venv.reset()[0]]
    for action in actions[:-1]:
        seen.append(venv.step(np.array([action]))[0][0])
    venv.close()
    return np.stack(seen)


# -- config.yml / args.yml --------------------------------------------------------------------------------


def test_rl_zoos_yaml_tags_are_read_as_plain_data(tmp_path):
    path = tmp_path / "config.yml"
    dump_like_rl_zoo(path, {"train_freq": (4, "step"), "env_kwargs": {"frameskip": 1}, "frame_stack": 4})
    text = path.read_text()
    assert text.startswith("!!python/object/apply:collections.OrderedDict") and "!!python/tuple" in text
    assert load_yaml(path) == {"env_kwargs": {"frameskip": 1}, "frame_stack": 4, "train_freq": (4, "step")}


@pytest.mark.parametrize(
    "text, tag",
    [
        ("!!python/object/apply:os.system ['touch {marker}']", "!!python/object/apply:os.system"),
        ('frame_stack: !!python/object/new:builtins.eval [\'open("{marker}", "w")\']', "python/object/new"),
        ("env_wrapper: !!python/name:builtins.print", "!!python/name:builtins.print"),
        ("policy: !custom x", "!custom"),
    ],
)
def test_other_yaml_tags_are_refused_and_nothing_runs(text, tag, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "config.yml"
    path.write_text(text.format(marker=marker))
    with pytest.raises(RlcamError) as exc:
        load_yaml(path)
    assert tag in str(exc.value) and "runs nothing from the file" in str(exc.value)
    assert not marker.exists()


# -- vecnormalize.pkl -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [None, 5])  # None: VecNormalize.save itself (pickle's default protocol)
def test_vecnormalize_statistics_equal_sb3s_own_load(protocol, tmp_path):
    stats = trained_stats(make_vec_env(TOY, n_envs=2, seed=0), clip_obs=3.0, epsilon=1e-4)
    path = tmp_path / "vecnormalize.pkl"
    if protocol is None:
        stats.save(path)
    else:
        with open(path, "wb") as f:
            pickle.dump(stats, f, protocol=protocol)
    read = read_vecnormalize(path)
    assert read.norm_obs and read.clip_obs == 3.0 and read.epsilon == 1e-4 and read.count == stats.obs_rms.count
    ours = frozen_vecnormalize(make_vec_env(TOY, n_envs=2, seed=5), read, path)
    reference = VecNormalize.load(str(path), make_vec_env(TOY, n_envs=2, seed=5))
    reference.training, reference.norm_reward = False, False  # as rl-zoo's enjoy sets them
    rng = np.random.default_rng(1)
    obs_a, obs_b = ours.reset(), reference.reset()
    for _ in range(40):  # past an episode end (32 steps): terminal observations too
        np.testing.assert_array_equal(obs_a, obs_b)
        assert obs_a.dtype == np.float32 and np.abs(obs_a).max() <= 3.0
        actions = rng.integers(0, 2, size=2)
        (obs_a, rew_a, _, info_a), (obs_b, rew_b, _, info_b) = ours.step(actions), reference.step(actions)
        np.testing.assert_array_equal(rew_a, rew_b)
        for a, b in zip(info_a, info_b, strict=True):
            if "terminal_observation" in b:
                np.testing.assert_array_equal(a["terminal_observation"], b["terminal_observation"])
    assert not np.array_equal(obs_a, ours.get_original_obs())  # the statistics did change the observations


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch ran",))


@pytest.mark.parametrize(
    "blob, message",
    [
        (pickle.dumps(_Payload()), "system instead of SB3's VecNormalize"),
        (pickle.dumps({"obs_rms": None}), "dict instead of SB3's VecNormalize"),
        (b"\x80\x04\x95", "is not a pickle rlcam reads without running it"),
    ],
)
def test_a_vecnormalize_file_that_is_not_one_is_refused_without_running_it(blob, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "vecnormalize.pkl"
    path.write_bytes(blob)
    with pytest.raises(RlcamError, match=message):
        read_vecnormalize(path)
    assert not (tmp_path / "ran").exists()


def test_frame_skip_repeats_the_action_and_sums_the_rewards():
    skipped, plain = FrameSkip(gym.make(TOY), skip=3), gym.make(TOY)
    obs_a, _ = skipped.reset(seed=4)
    obs_b, _ = plain.reset(seed=4)
    for action in (0, 1, 1, 0):
        obs_a, reward_a, *_ = skipped.step(action)
        rewards = [plain.step(action)[1] for _ in range(3)]
        obs_b = plain.unwrapped._obs()
        np.testing.assert_array_equal(obs_a, obs_b)
        assert reward_a == sum(rewards)


# -- recording run folders end to end ---------------------------------------------------------------------


def test_an_atari_run_records_in_the_env_rl_zoo_trained_it_in(tmp_path, capsys):
    env_id = "BreakoutNoFrameskip-v4"
    wrapper = {"stable_baselines3.common.atari_wrappers.AtariWrapper": {"terminal_on_life_loss": False}}
    train = VecFrameStack(
        make_vec_env(env_id, n_envs=1, wrapper_class=AtariWrapper, wrapper_kwargs={"terminal_on_life_loss": False}),
        n_stack=4,
    )
    run = make_run(tmp_path / "logs", env_id, {"env_wrapper": [wrapper], "frame_stack": 4}, train, n_steps=8)
    train.close()
    code, captured, trace_path = record(["--agent", run], capsys, tmp_path)
    assert code == 0, captured.err
    trace = load_trace(trace_path)
    meta = trace.meta
    assert meta["zoo_run"] == str(run) and meta["frame_stack"] == 4 and meta["atari_wrappers"]
    assert meta["env_id"] == env_id and meta["agent_sha256"] == sha256(run / f"{env_id}.zip")
    reference = VecTransposeImage(
        VecFrameStack(
            make_vec_env(
                env_id,
                n_envs=1,
                seed=0,
                wrapper_class=AtariWrapper,
                wrapper_kwargs={"terminal_on_life_loss": False, "clip_reward": False},
            ),  # fmt: skip
            n_stack=4,
        )
    )
    np.testing.assert_array_equal(trace["obs"], replay(reference, trace["action"]))
    predicted, _ = load_agent(run / f"{env_id}.zip").model.predict(trace["obs"], deterministic=True)
    np.testing.assert_array_equal(predicted, trace["action"])


CARRACING_STYLE = {  # rl-zoo's CarRacing-v3 config, on the toy env (no box2d here)
    "env_wrapper": [
        {"rl_zoo3.wrappers.FrameSkip": {"skip": 2}},
        {"rl_zoo3.wrappers.YAMLCompatResizeObservation": {"shape": [48, 48]}},
        {"gymnasium.wrappers.transform_observation.GrayscaleObservation": {"keep_dim": True}},
    ],
    "frame_stack": 2,
    "normalize": "{'norm_obs': False, 'norm_reward': True}",
}


def _carracing_style_env(seed: int = 0):
    def wrap(env):
        class Repeat(gym.Wrapper):  # the test's own action repeat, independent of rlcam.zoo.FrameSkip
            def step(self, action):
                obs, r1, term, trunc, info = self.env.step(action)
                if term or trunc:
                    return obs, r1, term, trunc, info
                obs, r2, term, trunc, info = self.env.step(action)
                return obs, r1 + r2, term, trunc, info

        return GrayscaleObservation(ResizeObservation(Repeat(env), (48, 48)), keep_dim=True)

    return make_vec_env(TOY, n_envs=1, seed=seed, wrapper_class=wrap, env_kwargs={"render_mode": "rgb_array"})


def test_a_run_with_carracing_style_wrappers_and_reward_normalisation(tmp_path, capsys):
    stats = trained_stats(_carracing_style_env(), norm_obs=False, norm_reward=True)
    train = VecFrameStack(stats, n_stack=2)
    run = make_run(tmp_path / "logs", TOY, CARRACING_STYLE, train, stats=stats, n_steps=8)
    code, captured, trace_path = record(["--agent", run], capsys, tmp_path)
    assert code == 0, captured.err
    trace = load_trace(trace_path)
    assert trace["obs"].shape == (8, 2, 48, 48) and trace["obs"].dtype == np.uint8
    loaded = VecNormalize.load(str(run / TOY / "vecnormalize.pkl"), _carracing_style_env())
    loaded.training, loaded.norm_reward = False, False
    reference = VecTransposeImage(VecFrameStack(loaded, n_stack=2))
    np.testing.assert_array_equal(trace["obs"], replay(reference, trace["action"]))
    assert trace.meta["frame_stack"] == 2
    # the page replays the run in the run's env (its wrappers, stack, statistics), checked step by step
    assert main(["report", str(trace_path), "--out", str(tmp_path / "zoo.html")]) == 0, capsys.readouterr().err
    run_folder = run.rename(run.with_name(run.name + "_moved"))
    assert main(["report", str(trace_path), "--out", str(tmp_path / "gone.html")]) == 2
    err = capsys.readouterr().err
    assert "was recorded in the env of the rl-zoo run folder" in err and str(run) in err, err
    assert not (tmp_path / "gone.html").exists() and run_folder.is_dir()


def test_a_run_with_observation_normalisation_records_the_normalised_observations(tmp_path, capsys):
    stats = trained_stats(make_vec_env("ZooFloat-v0", n_envs=1, seed=0), clip_obs=4.0)
    run = make_run(
        tmp_path / "logs", "ZooFloat-v0", {"normalize": True, "frame_stack": 2}, VecFrameStack(stats, n_stack=2),
        stats=stats, n_steps=8, policy_kwargs={"normalize_images": False},
    )  # fmt: skip
    code, captured, trace_path = record(["--agent", run], capsys, tmp_path)
    assert code == 0, captured.err
    trace = load_trace(trace_path)
    loaded = VecNormalize.load(
        str(run / "ZooFloat-v0" / "vecnormalize.pkl"),
        make_vec_env("ZooFloat-v0", n_envs=1, seed=0, env_kwargs={"render_mode": "rgb_array"}),
    )
    loaded.training, loaded.norm_reward = False, False
    expected = replay(VecFrameStack(loaded, n_stack=2), trace["action"])
    assert trace["obs"].dtype == np.float32 and np.abs(trace["obs"]).max() <= 4.0
    np.testing.assert_array_equal(trace["obs"], expected)
    assert not np.allclose(expected.max(), 255.0)  # normalised, not raw pixels


# -- rl-zoo's way of naming a run: -f logs --algo ppo --env ID --exp-id N ---------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """logs/ppo/FindTarget-v0_1 and _2 (different weights); _2 also has a best model and a checkpoint."""
    logs = tmp_path_factory.mktemp("zoo") / "logs"
    train = make_vec_env(TOY, n_envs=1, seed=0)
    runs = [make_run(logs, TOY, {}, train, exp_id=i, seed=i, n_steps=8) for i in (1, 2)]
    build_model("ppo", train, seed=7, n_steps=8).save(runs[1] / "best_model.zip")
    build_model("ppo", train, seed=8, n_steps=8).save(runs[1] / "rl_model_16_steps.zip")
    (logs / "ppo" / "Other-v0_3").mkdir()  # another env's run folder is not picked
    train.close()
    return logs, runs


def _info(argv, capsys):
    code = main(["info", *[str(a) for a in argv]])
    captured = capsys.readouterr()
    return code, captured


@pytest.mark.parametrize(
    "extra, model",
    [
        ([], "FindTarget-v0_2/FindTarget-v0.zip"),  # exp-id 0: the latest run, as rl-zoo does
        (["--exp-id", 1], "FindTarget-v0_1/FindTarget-v0.zip"),
        (["--load-best"], "FindTarget-v0_2/best_model.zip"),
        (["--exp-id", 2, "--load-checkpoint", 16], "FindTarget-v0_2/rl_model_16_steps.zip"),
    ],
)
def test_rl_zoo_flags_pick_the_run_and_the_model(two_runs, extra, model, capsys):
    logs, _ = two_runs
    code, captured = _info(["-f", logs, "--algo", "ppo", "--env", TOY, *extra], capsys)
    assert code == 0, captured.err
    path = logs / "ppo" / model
    assert f"agent        {path}  (sha256 {sha256(path)[:16]}...)" in captured.out
    assert f"run          {path.parent} (rl-zoo, algo ppo), model {path.name}" in captured.out


def test_a_zip_inside_a_run_folder_uses_the_runs_env(two_runs, tmp_path, capsys):
    _, runs = two_runs
    code, captured, trace_path = record(["--agent", runs[1] / "best_model.zip"], capsys, tmp_path, steps=4)
    assert code == 0, captured.err
    meta = load_trace(trace_path).meta
    assert meta["zoo_run"] == str(runs[1]) and meta["env_id"] == TOY
    assert meta["agent_sha256"] == sha256(runs[1] / "best_model.zip")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-f", "{logs}", "--algo", "ppo", "--env", TOY, "--exp-id", 5], "has no run 5 of FindTarget-v0"),
        (["-f", "{logs}", "--algo", "a2c", "--env", TOY], "a2c does not exist"),
        (["-f", "{logs}", "--algo", "ppo"], "needs --algo and --env"),
        (["-f", "{logs}", "--algo", "ppo", "--env", TOY, "--load-checkpoint", 99], "its checkpoints are at 16 steps"),
        (["--agent", "{logs}/ppo"], "holds rl-zoo runs (FindTarget-v0_1, FindTarget-v0_2), not one run"),
        (["--agent", "{logs}/ppo/Other-v0_3"], "is a directory but not an rl-zoo run folder"),
        (["--agent", "{logs}/ppo/FindTarget-v0_1", "--env", "Breakout"], "was trained on FindTarget-v0, not --env"),
        (["--agent", "{logs}/ppo/FindTarget-v0_1", "--frame-stack", 2], "leave --frame-stack out"),
        (["--agent", "{logs}/ppo/FindTarget-v0_1/FindTarget-v0.zip", "--load-best"], "is not one"),
        (["--exp-id", 1], "give -f too"),
    ],
)
def test_bad_rl_zoo_flags_are_one_sentence_and_exit_2(two_runs, argv, message, tmp_path, capsys):
    logs, _ = two_runs
    code, captured, trace_path = record(
        [a.format(logs=logs) if isinstance(a, str) else a for a in argv], capsys, tmp_path
    )
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlcam: error: ") and message in lines[0], captured.err
    assert not trace_path.exists() and not trace_path.with_suffix(".mp4").exists()


# -- bad run folders --------------------------------------------------------------------------------------


def _break(run: Path, how: str) -> None:
    params = run / TOY
    config = load_yaml(params / "config.yml")
    if how == "no model":
        (run / f"{TOY}.zip").unlink()
    elif how == "no config":
        (params / "config.yml").unlink()
    elif how == "normalize without statistics":
        dump_like_rl_zoo(params / "config.yml", {**config, "normalize": True})
    elif how == "unknown wrapper":
        dump_like_rl_zoo(params / "config.yml", {**config, "env_wrapper": ["my_package.wrappers.Spy"]})
    elif how == "bad wrapper arguments":
        wrapper = {"stable_baselines3.common.atari_wrappers.AtariWrapper": {"frames": 4}}
        dump_like_rl_zoo(params / "config.yml", {**config, "env_wrapper": [wrapper]})
    elif how == "vec env wrapper":
        dump_like_rl_zoo(params / "config.yml", {**config, "vec_env_wrapper": "my_package.VecSpy"})
    elif how == "bad frame stack":
        dump_like_rl_zoo(params / "config.yml", {**config, "frame_stack": "four"})
    elif how == "frame stack of another agent":
        dump_like_rl_zoo(params / "config.yml", {**config, "frame_stack": 3})
    elif how == "python tag":
        (params / "config.yml").write_text(f"!!python/object/apply:os.system ['touch {run / 'ran'}']\n")
    elif how == "unregistered env":
        dump_like_rl_zoo(params / "args.yml", train_args("ppo", "Sokoban-v9", gym_packages=["gym_sokoban"]))
    elif how == "statistics of another run":
        other = trained_stats(make_vec_env("ZooFloat-v0", n_envs=1, seed=0))
        dump_like_rl_zoo(params / "config.yml", {**config, "normalize": True})
        other.save(params / "vecnormalize.pkl")
    elif how == "damaged statistics":
        dump_like_rl_zoo(params / "config.yml", {**config, "normalize": True})
        (params / "vecnormalize.pkl").write_bytes(b"\x80\x04not a pickle")


@pytest.mark.parametrize(
    "how, message",
    [
        ("no model", "has no model FindTarget-v0.zip"),
        ("no config", "is a directory but not an rl-zoo run folder (no <env>/config.yml in it)"),
        ("normalize without statistics", "says normalize but"),
        ("unknown wrapper", "wraps the env in my_package.wrappers.Spy, which rlcam does not build"),
        ("bad wrapper arguments", "gives stable_baselines3.common.atari_wrappers.AtariWrapper arguments it does not"),
        ("vec env wrapper", "wraps the VecEnv in 'my_package.VecSpy'"),
        ("bad frame stack", "has frame_stack 'four'"),
        ("frame stack of another agent", "the zip and the run's config.yml do not belong together"),
        ("python tag", "holds a YAML tag rlcam does not read (!!python/object/apply:os.system)"),
        ("unregistered env", "lists gym_packages ['gym_sokoban']: pass --env MODULE:Sokoban-v9"),
        ("statistics of another run", "holds statistics for observations of shape (3, 84, 84)"),
        ("damaged statistics", "is not a pickle rlcam reads without running it"),
    ],
)
def test_a_bad_run_folder_is_one_sentence_and_exit_2(two_runs, how, message, tmp_path, capsys):
    run = tmp_path / "logs" / "ppo" / f"{TOY}_1"
    shutil.copytree(two_runs[1][0], run)
    _break(run, how)
    code, captured, trace_path = record(["--agent", run], capsys, tmp_path)
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlcam: error: ") and message in lines[0], captured.err
    assert not trace_path.exists() and not trace_path.with_suffix(".mp4").exists()
    assert not (run / "ran").exists()


def test_compare_plays_two_run_folders_in_their_env_and_its_page_replays_it(two_runs, tmp_path, capsys):
    from rlcam.compare import CompareConfig, Side, compare

    _, runs = two_runs
    out = tmp_path / "cmp.mp4"
    code = main(["compare", "--agent", str(runs[0]), "--agent", str(runs[1]), "--steps", "6", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    for trace in (out.with_suffix(".a.npz"), out.with_suffix(".b.npz")):
        meta = load_trace(trace).meta
        assert meta["env_id"] == TOY and meta["zoo_run"] == str(runs[0])  # the first run's env for both
    cfg = CompareConfig([Side(runs[0] / f"{TOY}.zip"), Side(runs[1])], steps=4, out=tmp_path / "p.mp4", report=True)
    assert compare(cfg).page.is_file()  # its replay, in the run's env, matched the recorded run step by step
    floats = make_vec_env("ZooFloat-v0", n_envs=1, seed=0)
    other = make_run(tmp_path / "logs", "ZooFloat-v0", {}, floats, n_steps=8, policy_kwargs={"normalize_images": False})
    argv = ["compare", "--agent", str(runs[0]), "--agent", str(other), "--steps", "4", "--out", str(tmp_path / "x.mp4")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "were trained on different envs (" in err and "FindTarget-v0" in err and "ZooFloat-v0" in err, err


def test_check_and_sanity_take_a_run_folder_and_use_its_env(tmp_path, capsys):
    stats = trained_stats(_carracing_style_env(), norm_obs=False, norm_reward=True)
    run = make_run(tmp_path / "logs", TOY, CARRACING_STYLE, VecFrameStack(stats, n_stack=2), stats=stats, n_steps=8)
    code, captured, trace_path = record(["--agent", run], capsys, tmp_path)
    assert code == 0, captured.err
    # the baseline's env is the run's (frame skip, 48 px grey, 2 frames): the replay must reproduce it
    assert main(["check", "--agent", str(run), "--baseline", str(trace_path)]) == 0, capsys.readouterr().err
    assert "action agreement             1.000" in capsys.readouterr().out
    code = main(["sanity", "--agent", str(run), "--steps", "3"])
    captured = capsys.readouterr()
    assert code in (0, 1) and "rlcam: error" not in captured.err, captured.err  # not refused: the run's env fits
    assert "features_extractor.cnn.0" in captured.out


def test_a_run_named_by_a_relative_path_replays_from_elsewhere(two_runs, tmp_path, monkeypatch, capsys):
    _, runs = two_runs
    monkeypatch.chdir(runs[0].parent)
    out = tmp_path / "rel.mp4"
    argv = ["record", "--agent", runs[0].name, "--steps", "4", "--out", str(out), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    meta = load_trace(out.with_suffix(".npz")).meta
    assert meta["zoo_run"] == runs[0].name and meta["zoo_run_resolved"] == str(runs[0].resolve())
    monkeypatch.chdir(tmp_path)  # the typed path means nothing here; where it was still holds the run
    assert main(["report", str(out.with_suffix(".npz")), "--out", str(tmp_path / "rel.html")]) == 0
