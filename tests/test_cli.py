"""`rlcam record` and `rlcam info` end to end: real Breakout rollouts, real files, every bad input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import imageio.v2 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from rlcam.agents import load_agent
from rlcam.cli import main
from rlcam.explainer import Explainer
from rlcam.video import load_trace
from tests.conftest import build_model


def video_frames(path: Path) -> int:
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    return frames


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_record_breakout_writes_video_and_trace(agent_zips, tmp_path, capsys):
    out = tmp_path / "breakout.mp4"
    code, stdout, err = run(
        [
            "record",
            "--env",
            "Breakout",
            "--agent",
            agent_zips["ppo"],
            "--steps",
            30,
            "--out",
            out,
            "--save-obs",
        ],
        capsys,
    )
    assert code == 0, err
    assert "30 steps" in stdout and str(out) in stdout
    assert video_frames(out) == 30
    trace = load_trace(tmp_path / "breakout.npz")
    expected = {
        "cam": ((30, 7, 7), np.float32),
        "cam_input": ((30, 84, 84), np.float32),
        "action": ((30,), np.int64),
        "score": ((30,), np.float32),
        "reward": ((30,), np.float32),
        "done": ((30,), np.bool_),
        "obs": ((30, 4, 84, 84), np.uint8),
    }
    for key, (shape, dtype) in expected.items():
        assert trace[key].shape == shape, key
        assert trace[key].dtype == dtype, key
    assert (trace["cam"] >= 0).all() and trace["cam"].max() > 0
    # cam_input is the 7x7 map resized bilinearly to 84x84, at full precision (tiny values kept)
    import torch.nn.functional as F

    resized = F.interpolate(torch.from_numpy(trace["cam"])[:, None].double(), (84, 84), mode="bilinear")[:, 0]
    np.testing.assert_allclose(trace["cam_input"], resized.numpy(), rtol=1e-5, atol=1e-7 * trace["cam"].max())
    with np.load(tmp_path / "breakout.npz") as npz:  # stored as cam + placement, rebuilt on load
        assert "cam_input" not in npz.files and "cam" in npz.files
    meta = trace.meta
    for key in (
        "rlcam_version",
        "env_id",
        "algo",
        "agent_sha256",
        "target",
        "layer",
        "method",
        "seed",
        "steps",
        "deterministic",
        "normalisation",
        "placement",
    ):
        assert key in meta, key
    assert meta["env_id"] == "BreakoutNoFrameskip-v4" and meta["algo"] == "ppo" and meta["steps"] == 30
    assert meta["layer"] == "features_extractor.cnn.5" and meta["target"] == "logit"
    assert not list(tmp_path.glob(".*partial*")), "temporary files left behind"


def test_trace_obs_is_what_the_policy_saw(agent_zips, tmp_path, capsys):
    out = tmp_path / "a.mp4"
    assert run(["record", "--agent", agent_zips["dqn"], "--steps", 12, "--out", out, "--save-obs"], capsys)[0] == 0
    trace = load_trace(tmp_path / "a.npz")
    from rlcam.agents import load_agent

    predicted, _ = load_agent(agent_zips["dqn"]).model.predict(trace["obs"], deterministic=True)
    np.testing.assert_array_equal(trace["action"], predicted)


def test_same_seed_gives_identical_traces(agent_zips, tmp_path, capsys):
    traces = []
    for name in ("one", "two"):
        out = tmp_path / f"{name}.mp4"
        args = [
            "record",
            "--agent",
            agent_zips["ppo"],
            "--steps",
            25,
            "--stochastic",
            "--seed",
            7,
            "--out",
            out,
        ]
        assert run(args, capsys)[0] == 0
        traces.append(load_trace(tmp_path / f"{name}.npz"))
    for key in ("cam", "cam_input", "action", "score", "reward", "done"):
        np.testing.assert_array_equal(traces[0][key], traces[1][key])


def test_all_actions_grid_and_trace(agent_zips, tmp_path, capsys):
    out = tmp_path / "grid.mp4"
    code, _, err = run(
        ["record", "--env", "Breakout", "--agent", agent_zips["ppo"], "--steps", 12, "--out", out, "--all-actions"],
        capsys,
    )
    assert code == 0, err
    trace = load_trace(tmp_path / "grid.npz")
    cams = trace["action_cams"]
    assert cams.shape == (12, 4, 7, 7) and cams.dtype == np.float32
    np.testing.assert_allclose(cams[np.arange(12), trace["action"]], trace["cam"], rtol=1e-5, atol=1e-8)
    assert trace.meta["all_actions"] is True
    with iio.get_reader(out, format="FFMPEG") as reader:
        frame = reader.get_data(5)
    assert frame.shape[0] > 630 and frame.shape[1] == 934  # the grid is under the 630-px view
    assert video_frames(out) == 12


@pytest.mark.parametrize("algo,target", [("a2c", "value"), ("dqn", "advantage"), ("qrdqn", "q")])
def test_every_algorithm_records(agent_zips, tmp_path, capsys, algo, target):
    out = tmp_path / f"{algo}.mp4"
    code, _, err = run(["record", "--agent", agent_zips[algo], "--steps", 8, "--target", target, "--out", out], capsys)
    assert code == 0, err
    meta = load_trace(out.with_suffix(".npz")).meta
    assert (meta["algo"], meta["target"]) == (algo, target)
    assert video_frames(out) == 8


def test_several_envs_add_an_env_axis(agent_zips, tmp_path, capsys):
    out = tmp_path / "multi.gif"
    code, _, err = run(
        [
            "record",
            "--agent",
            agent_zips["ppo"],
            "--steps",
            6,
            "--n-envs",
            3,
            "--out",
            out,
            "--scale",
            1,
            "--method",
            "layercam",
            "--placement",
            "rf",
        ],
        capsys,
    )
    assert code == 0, err
    trace = load_trace(tmp_path / "multi.npz")
    assert trace["cam"].shape == (6, 3, 7, 7)
    assert trace["action"].shape == (6, 3)
    assert trace.meta["placement"] == "rf" and trace.meta["method"] == "layercam"
    import imageio.v2 as iio

    assert len(iio.mimread(out)) == 6


def test_any_gymnasium_image_env(tmp_path, capsys):
    from rlcam.envs import make_env

    venv, _ = make_env("rlcam.toyenv:FindTarget-v0")
    agent = tmp_path / "toy.zip"
    build_model("ppo", venv).save(agent)
    venv.close()
    out = tmp_path / "toy.mp4"
    code, _, err = run(
        ["record", "--env", "rlcam.toyenv:FindTarget-v0", "--agent", agent, "--episodes", 1, "--out", out],
        capsys,
    )
    assert code == 0, err
    trace = load_trace(out.with_suffix(".npz"))
    assert trace["cam"].shape[0] == 32 and trace["game_over"][-1] and trace.meta["atari_wrappers"] is False
    assert trace["cam_input"].shape[1:] == (84, 84)


@pytest.mark.parametrize("extra", [["--method", "guided"], ["--placement", "rf"], ["--method", "perturbation"]])
def test_rebuilt_cam_input_equals_the_explainers(agent_zips, tmp_path, capsys, extra):
    """The trace keeps cam and the placement; the cam_input load_trace rebuilds is the explainer's own,
    for maps placed from the layer (rf), from perturbation probes and already on the input (guided)."""
    out = tmp_path / "run.mp4"
    args = ["record", "--agent", agent_zips["ppo"], "--steps", 3, "--out", out, "--save-obs", *extra]
    code, _, err = run(args, capsys)
    assert code == 0, err
    trace = load_trace(out.with_suffix(".npz"))
    with Explainer(load_agent(agent_zips["ppo"]), method=trace.meta["method"], placement=trace.meta["placement"]) as ex:
        expected = ex.explain(trace["obs"], actions=trace["action"])  # a batch of 3: not bit-equal to 3 of 1
    scale = float(expected.cam_input.max())
    assert scale > 0 and trace["cam_input"].shape == expected.cam_input.shape == (3, 84, 84)
    np.testing.assert_allclose(trace["cam_input"], expected.cam_input, rtol=1e-3, atol=1e-4 * scale)
    # and exactly what the explainer's placement makes of the stored maps, as explain does it (torch float32)
    ry, rx = (torch.as_tensor(m, dtype=torch.float32) for m in (ex.placement.to_input_y, ex.placement.to_input_x))
    placed = (ry @ torch.from_numpy(trace["cam"]) @ rx.T).numpy()
    np.testing.assert_allclose(trace["cam_input"], placed, rtol=1e-6, atol=1e-9 * scale)


def test_info_lists_layers(agent_zips, capsys):
    code, out, _ = run(["info", "--agent", agent_zips["qrdqn"]], capsys)
    assert code == 0
    assert "QRDQN" in out and "quantile_net.features_extractor.cnn.5 (default)" in out


def test_help_is_useful(capsys):
    assert main(["record", "--help"]) == 0
    assert "--target" in capsys.readouterr().out


# -- bad input: one sentence, exit 2, nothing written -------------------------------------------


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _mlp_agent(tmp_path, breakout_env) -> Path:
    path = tmp_path / "mlp.zip"
    build_model("ppo", breakout_env, policy="MlpPolicy").save(path)
    return path


BAD_INPUTS = {
    "missing agent": (lambda p, z, e: ["--agent", p / "nope.zip"], "does not exist"),
    "not a zip": (lambda p, z, e: ["--agent", _write(p / "a.zip", b"hello")], "not a zip"),
    "truncated zip": (lambda p, z, e: ["--agent", _truncated(z["ppo"], p / "t.zip")], "zip"),
    "directory": (lambda p, z, e: ["--agent", p], "directory"),
    "zip but not sb3": (lambda p, z, e: ["--agent", _zip(p / "o.zip")], "not an SB3 agent"),
    "mlp policy": (lambda p, z, e: ["--agent", _mlp_agent(p, e)], "no convolutional layer"),
    "unknown env": (lambda p, z, e: ["--agent", z["ppo"], "--env", "Breakot"], "Did you mean 'Breakout'"),
    "obs shape": (
        lambda p, z, e: ["--agent", z["ppo"], "--env", "rlcam.toyenv:FindTarget-v0"],
        r"\(4, 84, 84\).*\(3, 84, 84\)",
    ),
    "action space": (lambda p, z, e: ["--agent", z["ppo"], "--env", "Pong"], "4 actions"),
    "zero steps": (lambda p, z, e: ["--agent", z["ppo"], "--steps", 0], "positive"),
    "negative steps": (lambda p, z, e: ["--agent", z["ppo"], "--steps", -3], "positive"),
    "unwritable": (lambda p, z, e: ["--agent", z["ppo"], "--out", "/proc/rlcam.mp4"], "/proc"),
    "no such dir": (lambda p, z, e: ["--agent", z["ppo"], "--out", p / "nodir" / "x.mp4"], "does not exist"),
    "bad suffix": (lambda p, z, e: ["--agent", z["ppo"], "--out", p / "x.avi"], ".mp4 or .gif"),
    "both lengths": (lambda p, z, e: ["--agent", z["ppo"], "--steps", 3, "--episodes", 1], "not allowed"),
    "bad target": (lambda p, z, e: ["--agent", z["dqn"], "--target", "logit"], "does not apply"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not an agent")
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_sentence_and_exit_2(case, agent_zips, breakout_env, tmp_path, capsys):
    make_args, message = BAD_INPUTS[case]
    work = tmp_path / "work"
    work.mkdir()
    args = make_args(work, agent_zips, breakout_env)
    if "--out" not in args:
        args += ["--out", work / "out.mp4"]
    before = set(work.rglob("*"))
    code, stdout, err = run(
        ["record", "--steps", 5, *args] if "--steps" not in args and "--episodes" not in args else ["record", *args],
        capsys,
    )
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlcam: error: "), err
    assert "Traceback" not in err
    import re

    assert re.search(message, lines[0]), lines[0]
    assert set(work.rglob("*")) == before, "bad input left files behind"


def test_existing_output_needs_overwrite(agent_zips, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    out.write_bytes(b"precious")
    code, _, err = run(["record", "--agent", agent_zips["ppo"], "--steps", 3, "--out", out], capsys)
    assert code == 2 and "--overwrite" in err
    assert out.read_bytes() == b"precious"
    code, _, err = run(["record", "--agent", agent_zips["ppo"], "--steps", 3, "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert video_frames(out) == 3


def test_env_failure_mid_episode_keeps_valid_outputs(tmp_path, capsys):
    from rlcam.envs import make_env

    venv, _ = make_env("rlcam.toyenv:FindTarget-v0")
    agent = tmp_path / "toy.zip"
    build_model("ppo", venv).save(agent)
    venv.close()
    out = tmp_path / "crash.mp4"
    code, _, err = run(
        ["record", "--env", "tests.failing_env:FailingFindTarget-v0", "--agent", agent, "--steps", 50, "--out", out],
        capsys,
    )
    assert code == 2
    assert err.strip() == (
        "rlcam: error: the env raised RuntimeError (simulated emulator crash) at step 9; "
        "the video and trace hold the 9 steps before it."
    )
    assert video_frames(out) == 9
    trace = load_trace(out.with_suffix(".npz"))
    assert trace["cam"].shape[0] == 9 and "simulated emulator crash" in trace.meta["env_failure"]
