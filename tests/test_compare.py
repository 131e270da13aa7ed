"""`rlcam compare`: two sides on one seed, checked against independent runs, and its page in Chromium."""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from rlcam.agents import load_agent
from rlcam.check import rank_correlation, run_new_agent, top_iou
from rlcam.compare import CompareConfig, Side, compare
from rlcam.record import RecordConfig, record
from rlcam.video import load_trace
from tests.test_report import browser, console_errors, counter, open_page, run_cli, shows  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
PPO = ROOT / "agents" / "breakout_ppo.zip"
QRDQN = ROOT / "agents" / "breakout_qrdqn.zip"
TOY = ROOT / "agents" / "toy_findtarget_ppo.zip"
STEPS = 50


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """PPO acts, QR-DQN explains the same frames: the result and its config."""
    out = tmp_path_factory.mktemp("compare") / "cmp.mp4"
    cfg = CompareConfig(sides=[Side(PPO), Side(QRDQN)], steps=STEPS, out=out, report=True)
    return compare(cfg), cfg


def test_replay_side_a_is_what_record_writes(replayed, tmp_path):
    """The acting side's trace is the trace 'rlcam record' writes for that agent and seed."""
    result, _ = replayed
    record(RecordConfig(agent=PPO, steps=STEPS, out=tmp_path / "alone.mp4"))
    alone, side_a = load_trace(tmp_path / "alone.npz"), load_trace(result.traces[0])
    for key in ("action", "cam", "reward", "done", "action_values", "obj_ball"):
        np.testing.assert_array_equal(side_a[key], alone[key], err_msg=key)


def test_replay_side_b_is_what_check_computes_on_the_same_frames(replayed):
    """rlcam check's replay (its own loop) gives the second agent's choices and maps on side a's frames."""
    result, _ = replayed
    side_a, side_b = (load_trace(p) for p in result.traces)
    independent = run_new_agent(load_agent(QRDQN), side_a, "replay")
    np.testing.assert_array_equal(side_b["action"], independent["action"][:, 0])
    np.testing.assert_allclose(side_b["cam_input"], independent["cam_input"][:, 0], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(side_b["agree"], (side_a["action"] == side_b["action"]).astype(np.float32))
    corr = [rank_correlation(a, b) for a, b in zip(side_a["cam_input"], side_b["cam_input"], strict=True)]
    iou = [top_iou(a, b, 0.1) for a, b in zip(side_a["cam_input"], side_b["cam_input"], strict=True)]
    # The traces' cam_input is rebuilt from cam (float32 rounding apart from the explainer's), which
    # moves a few near-tied ranks: agreement to 1e-3, not to the last bit.
    np.testing.assert_allclose(side_b["map_correlation"], corr, atol=1e-3)
    np.testing.assert_allclose(side_b["top_overlap"], iou, atol=0.02)
    assert result.agreement == pytest.approx(side_b["agree"].mean())
    assert 0 < result.agreement < 1  # these two agents do disagree, so the spans are real
    for span in result.spans:
        assert not side_b["agree"][span["start"] : span["end"] + 1].any()


def test_the_video_puts_both_sides_beside_each_other(replayed, tmp_path):
    result, _ = replayed
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(result.video))
    assert frames == STEPS
    record(RecordConfig(agent=PPO, steps=3, out=tmp_path / "one.mp4"))
    width, height = next(imageio_ffmpeg.read_frames(str(result.video)))["size"]
    one_w, one_h = next(imageio_ffmpeg.read_frames(str(tmp_path / "one.mp4")))["size"]
    assert width >= 2 * one_w and height > one_h  # two views and a banner


def test_one_agent_under_itself_agrees_everywhere_in_both_modes(tmp_path):
    for mode in ("replay", "own"):
        cfg = CompareConfig(sides=[Side(PPO), Side(PPO)], steps=12, out=tmp_path / f"{mode}.mp4", mode=mode)
        result = compare(cfg)
        assert result.agreement == 1.0 and result.map_correlation == pytest.approx(1.0), mode
        a, b = (load_trace(p) for p in cfg.traces)
        np.testing.assert_array_equal(a["cam"], b["cam"])


def test_own_mode_games_part_and_maps_stop_being_compared(tmp_path):
    cfg = CompareConfig(sides=[Side(PPO), Side(QRDQN)], steps=40, out=tmp_path / "own.mp4", mode="own")
    result = compare(cfg)
    a, b = (load_trace(p) for p in cfg.traces)
    parted = np.flatnonzero(a["action"] != b["action"])
    assert len(parted), "the two agents never chose differently"
    first = parted[0]
    # up to the first different action both saw the same frames, so the maps were compared; once the
    # games have parted they are not (NaN), and the parting happens after that action
    assert np.isfinite(b["map_correlation"][: first + 1]).all()
    assert np.isnan(b["map_correlation"]).any() and result.steps == 40


def test_two_methods_on_one_agent(tmp_path, capsys):
    out = tmp_path / "m.mp4"
    code, stdout, err = run_cli(
        ["compare", "--agent", PPO, "--method", "gradcam", "--method", "layercam", "--steps", 6, "--out", out], capsys
    )
    assert code == 0, err
    a, b = (load_trace(tmp_path / f"m.{s}.npz") for s in "ab")
    assert (a.meta["method"], b.meta["method"]) == ("gradcam", "layercam")
    np.testing.assert_array_equal(a["action"], b["action"])  # one agent: the same choices, other maps
    assert "agree on 100.0%" in stdout


BAD = {
    "spaces differ": (["--agent", PPO, "--agent", TOY], "spaces differ"),
    "one side": (["--agent", PPO], "compare needs two sides"),
    "three sides": (["--agent", PPO, "--agent", PPO, "--agent", QRDQN], "compare needs two sides"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_sentence_exit_2_and_nothing_written(case, tmp_path, capsys):
    argv, words = BAD[case]
    out = tmp_path / "bad.mp4"
    code, _, err = run_cli(["compare", *argv, "--steps", 5, "--out", out, "--report"], capsys)
    assert code == 2 and words in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_existing_outputs_need_overwrite(tmp_path, capsys):
    (tmp_path / "cmp.b.npz").write_bytes(b"mine")
    code, _, err = run_cli(
        ["compare", "--agent", PPO, "--agent", QRDQN, "--steps", 5, "--out", tmp_path / "cmp.mp4"], capsys
    )
    assert code == 2 and "cmp.b.npz already exists" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.b.npz"]


def test_compare_report_shows_both_agents(browser, replayed):  # noqa: F811
    result, _ = replayed
    open_page(browser, result.page, "#step=20")
    assert console_errors(browser) == []
    views = browser.find_elements("css selector", ".run")
    assert len(views) == 2
    heads = [v.find_element("css selector", ".who").text for v in views]
    assert "breakout_ppo.zip" in heads[0] and "breakout_qrdqn.zip" in heads[1]
    a, b = shows(browser, 20), shows(browser, 20, ".run[data-run='1'] canvas.frame")
    assert a.shape == b.shape and (a != b).any()  # the same frame under two different maps
    side_a, side_b = (load_trace(p) for p in result.traces)
    badge = views[1].find_element("css selector", ".agree").text
    assert badge == ("agree" if side_a["action"][20] == side_b["action"][20] else "disagree")
    card = next(c for c in browser.find_elements("css selector", ".moment-card") if "disagreement" in c.text)
    button = card.find_element("css selector", "button")
    button.click()
    assert counter(browser) == result.spans[0]["start"] == int(button.get_attribute("data-step"))


# -- other policy families ---------------------------------------------------------------------------------

STEER = "rlcam.toyenv:SteerToDot-v0"


def _steer_agent(path: Path, bias: tuple[float, float]) -> Path:
    """An untrained continuous PPO on the steering toy env whose means sit near ``bias``."""
    import torch
    from stable_baselines3 import PPO

    from tests.test_families_cli import _save

    _save("ppo", STEER, path)
    model = PPO.load(path, device="cpu")
    with torch.no_grad():
        model.policy.action_net.bias.copy_(torch.tensor(bias))
    model.save(path)
    return path


def test_continuous_agreement_is_within_5_percent_of_each_range():
    from gymnasium import spaces

    from rlcam.compare import actions_agree

    box = spaces.Box(np.array([-1, 0], np.float32), np.array([1, 10], np.float32), dtype=np.float32)
    assert actions_agree([0.0, 5.0], [0.1, 5.5], box)  # 5% of 2 and 5% of 10: just within
    assert not actions_agree([0.0, 5.0], [0.11, 5.0], box)  # 5.5% of the first range
    assert not actions_agree([0.0, 5.0], [0.0, 5.6], box)  # 6% of the second
    unbounded = spaces.Box(-np.inf, np.inf, (1,), np.float32)  # measured against a range of 2
    assert actions_agree([0.3], [0.39], unbounded) and not actions_agree([0.3], [0.41], unbounded)
    parts = spaces.MultiDiscrete([3, 3])
    assert actions_agree([1, 2], [1, 2], parts) and not actions_agree([1, 2], [1, 0], parts)
    assert actions_agree(3, 3, spaces.Discrete(4)) and not actions_agree(3, 2, spaces.Discrete(4))


def test_two_continuous_agents_agree_by_the_rule(tmp_path):
    a = _steer_agent(tmp_path / "a.zip", (0.4, -0.7))
    results = {}
    for name, bias in (("near", (0.42, -0.7)), ("far", (0.7, -0.7))):
        b = _steer_agent(tmp_path / f"{name}.zip", bias)
        cfg = CompareConfig(sides=[Side(a), Side(b)], env=STEER, steps=8, out=tmp_path / f"{name}.mp4", report=True)
        results[name] = compare(cfg)
        side_a, side_b = (load_trace(p) for p in cfg.traces)
        independent = (np.abs(side_a["action"] - side_b["action"]).max(axis=1) / 2.0 <= 0.05).astype(np.float32)
        np.testing.assert_array_equal(side_b["agree"], independent)
        assert "0.05" in side_b.meta["agreement_rule"]
    assert results["near"].agreement == 1.0 and results["far"].agreement == 0.0
    assert results["far"].page.is_file()


def test_continuous_compare_page_shows_both_agents(browser, tmp_path):  # noqa: F811
    a = _steer_agent(tmp_path / "a.zip", (0.4, -0.7))
    b = _steer_agent(tmp_path / "b.zip", (-0.2, 0.3))
    cfg = CompareConfig(sides=[Side(a), Side(b)], env=STEER, steps=6, out=tmp_path / "c.mp4", report=True)
    result = compare(cfg)
    open_page(browser, result.page, "#step=2")
    assert console_errors(browser) == []
    views = browser.find_elements("css selector", ".run")
    assert len(views) == 2 and views[1].find_element("css selector", ".agree").text == "disagree"
    side_b = load_trace(cfg.traces[1])
    nums = [e.text for e in views[1].find_elements("css selector", ".bars.components .num")]
    assert [float(n.replace("\u2212", "-")) for n in nums] == pytest.approx(side_b["action"][2], abs=5e-4)
