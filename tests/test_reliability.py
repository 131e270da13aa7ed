"""Long runs, signals, failing disks, and a model that stays usable after being explained."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from rlcam.cli import main
from rlcam.video import FrameWriter, load_trace
from scripts.soak import soak
from tests.conftest import build_model


def test_short_soak_keeps_one_hook_and_leaves_none(agent_zips):
    growth, most_hooks, left = soak(agent_zips["ppo"], "Breakout", steps=500, every=100, seed=0)
    assert most_hooks == 1 and left == 0
    assert np.isfinite(growth)


@pytest.mark.parametrize("sig,algo", [(signal.SIGINT, "ppo"), (signal.SIGTERM, "dqn")], ids=["SIGINT", "SIGTERM"])
def test_signal_leaves_valid_shorter_outputs(agent_zips, tmp_path, sig, algo):
    out = tmp_path / "long.mp4"
    cmd = [
        sys.executable,
        "-c",
        "import sys; from rlcam.cli import main; sys.exit(main())",
        "record",
        "--agent",
        str(agent_zips[algo]),
        "--steps",
        "100000",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(tmp_path.glob(".long.partial*")):
        time.sleep(0.2)
    time.sleep(3.0)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted after" in stdout
    trace = load_trace(tmp_path / "long.npz")
    steps = trace.meta["steps"]
    assert trace.meta["interrupted"] is True and steps > 0
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == steps
    assert not list(tmp_path.glob(".*partial*"))


def test_disk_full_mid_run_is_one_sentence_and_leaves_nothing(agent_zips, tmp_path, capsys, monkeypatch):
    real_append = FrameWriter.append
    calls = {"n": 0}

    def failing_append(self, frame):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        return real_append(self, frame)

    monkeypatch.setattr(FrameWriter, "append", failing_append)
    out = tmp_path / "full.mp4"
    code = main(["record", "--agent", str(agent_zips["ppo"]), "--steps", "20", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [], "a failed write left files behind"


def test_model_keeps_training_after_being_explained(breakout_env, breakout_obs):
    from rlcam.api import as_agent
    from rlcam.explainer import Explainer

    model = build_model("ppo", breakout_env, n_steps=16, batch_size=16, n_epochs=1)
    params = list(model.policy.parameters())
    flags = [p.requires_grad for p in params]
    with Explainer(as_agent(model)) as explainer:
        explainer.explain(breakout_obs)
    assert all(p.grad is None for p in params) and [p.requires_grad for p in params] == flags
    before = [p.detach().clone() for p in params]
    model.learn(32)
    assert any(not torch.equal(a, p) for a, p in zip(before, params, strict=True)), "training did not move weights"
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_weights_are_refused(agent_zips, tmp_path, capsys, bad):
    from rlcam.agents import load_agent

    agent = load_agent(agent_zips["ppo"])
    with torch.no_grad():
        agent.policy.action_net.weight[0, 0] = float(bad)
    path = tmp_path / "broken.zip"
    agent.model.save(path)
    code = main(["record", "--agent", str(path), "--steps", "3", "--out", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite" in err and "action_net.weight" in err
    assert not (tmp_path / "x.mp4").exists()
