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
from rlcam.report import ReportRun, trace_arrays
from rlcam.video import load_trace
from tests.test_report import (  # noqa: F401
    LOUD,
    TWO,
    browser,
    console_errors,
    counter,
    decode_frames,
    decoded,
    expected_key_view,
    expected_signed_view,
    open_page,
    page_payload,
    page_scale,
    run_cli,
    shared_full,
    shows,
)

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


# -- Dict observations with two image keys -------------------------------------------------------------------

TWO_STEPS = 10


def _two_images_agent(path: Path, seed: int, bias: tuple[float, float]) -> Path:
    """An untrained Dict PPO on two image keys (tests/test_report.py's), its means near ``bias`` and its
    left extractor's output ``LOUD``, so that the left key's map, not the layer's, often sets the scale."""
    import warnings

    import stable_baselines3 as sb3
    import torch
    from stable_baselines3.common.env_util import make_vec_env

    import rlcam.toydict  # noqa: F401  (registers the ids)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        venv = make_vec_env(TWO.split(":")[1], n_envs=1, seed=0)
        model = sb3.PPO("MultiInputPolicy", venv, n_steps=16, seed=seed, device="cpu")
    with torch.no_grad():
        linear = model.policy.features_extractor.extractors["left"].linear[0]
        linear.weight.mul_(LOUD)
        linear.bias.mul_(LOUD)
        model.policy.action_net.bias.copy_(torch.tensor(bias))
    model.save(path)
    return path


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    """Two such agents that steer apart, compared in both modes with the page, and each recorded alone
    with ``save_obs`` (what each sees playing its own game from the seed): ({mode: config}, [trace a, b])."""
    root = tmp_path_factory.mktemp("compare_two_images")
    agents = [_two_images_agent(root / "a.zip", 0, (0.4, -0.7)), _two_images_agent(root / "b.zip", 1, (-0.6, 0.5))]
    configs = {}
    for mode in ("replay", "own"):
        out = root / f"{mode}.mp4"
        configs[mode] = CompareConfig(
            [Side(a) for a in agents], env=TWO, steps=TWO_STEPS, out=out, mode=mode, report=True
        )
        compare(configs[mode])
    alone = []
    for name, agent in zip("ab", agents, strict=True):
        record(RecordConfig(agent=agent, env=TWO, steps=TWO_STEPS, out=root / f"alone_{name}.mp4", save_obs=True))
        alone.append(load_trace(root / f"alone_{name}.npz"))
    return configs, alone


def _channels_last(images: np.ndarray) -> np.ndarray:
    return images.transpose(0, 2, 3, 1)  # (T, C, H, W) observations -> (T, H, W, C) frames


@pytest.mark.parametrize("mode", ["replay", "own"])
def test_each_side_maps_the_other_image_key_on_the_frames_it_saw(two_images, mode):
    configs, alone = two_images
    cfg = configs[mode]
    payload = page_payload(cfg.page)
    assert (alone[0]["action"] != alone[1]["action"]).all()  # the two agents steer apart
    for i, (run, trace) in enumerate(zip(payload["runs"], cfg.traces, strict=True)):
        arrays = load_trace(trace).arrays
        assert run["space"]["image_key"] == "right" and [k["key"] for k in run["key_maps"]] == ["left"]
        left = run["key_maps"][0]
        np.testing.assert_array_equal(decoded(left["cam"]), arrays["key_cam_left"])
        # replay: both sides are shown side a's game; own: each plays its own, as it does alone
        seen = alone[0 if mode == "replay" else i]
        if mode == "own" or i == 0:  # a side's maps on its own game are the ones 'rlcam record' writes
            np.testing.assert_array_equal(arrays["key_cam_left"], seen["key_cam_left"])
        spec = payload["frames"][left["frames"]] if isinstance(left["frames"], int) else left["frames"]
        np.testing.assert_array_equal(decode_frames(spec), _channels_last(seen["obs_left"]))
        main_frames = decode_frames(payload["frames"][run["frames"]])
        np.testing.assert_array_equal(main_frames, _channels_last(seen["obs_right"]))
    runs = payload["runs"]
    if mode == "replay":  # one game: each key's frames are sent once and both sides show them
        assert len(payload["frames"]) == 2 and runs[0]["frames"] == runs[1]["frames"]
        assert runs[0]["key_maps"][0]["frames"] == runs[1]["key_maps"][0]["frames"]
    else:  # two games, each side's pictures its own (this env's images do not follow the actions: equal here)
        assert len(payload["frames"]) == 2 and runs[0]["frames"] != runs[1]["frames"]
        assert all(isinstance(r["key_maps"][0]["frames"], dict) for r in runs)


def _side_run(cfg, i: int, seen) -> ReportRun:
    """Side i of a comparison as the page's tests read a run: its trace, and the observations it was shown."""
    meta, arrays, _ = trace_arrays(cfg.traces[i])
    arrays["obs_left"] = seen["obs_left"]
    frames = {key: _channels_last(seen[f"obs_{key}"]) for key in ("left", "right")}
    return ReportRun(str(i), meta, arrays, frames["right"], key_frames={"left": frames["left"]})


def test_compare_page_draws_each_sides_other_image_key_on_its_own_scale(browser, two_images):  # noqa: F811
    configs, alone = two_images
    cfg = configs["replay"]
    for i in range(2):
        run = _side_run(cfg, i, alone[0])
        peaks = run.arrays["key_cam_left"].reshape(TWO_STEPS, -1).max(axis=1)
        own = np.maximum(run.arrays["cam"], run.arrays["cam_down"]).reshape(TWO_STEPS, -1).max(axis=1)
        k = int(np.argmax(peaks[1:] / np.maximum(own[1:], 1e-12))) + 1
        assert peaks[k] > 2 * own[k]  # the other key's map, not the layer's, sets this side's scale at step k
        open_page(browser, cfg.page, f"#step={k}")
        assert console_errors(browser) == []
        side = f".run[data-run='{i}']"
        panes = browser.find_elements("css selector", f"{side} .pane")
        assert [p.get_attribute("data-key") for p in panes] == ["left", "right"]
        got = shows(browser, k, f"{side} canvas.keyframe[data-key='left']").astype(int)
        want = expected_key_view(run, "left", k, "running").astype(int)
        assert np.abs(got - want).max() <= 3 and (got != want).mean() < 0.01, i
        main_got = shows(browser, k, f"{side} canvas.frame").astype(int)  # the layer's key, on the same scale
        main_want = expected_signed_view(run, k).astype(int)
        assert np.abs(main_got - main_want).max() <= 3 and (main_got != main_want).mean() < 0.01, i
        label = browser.find_element("css selector", f"{side} .colorbar .full").text
        assert float(label.split()[0]) == pytest.approx(shared_full(run, k, "running"), rel=1e-3)
    browser.find_element("id", "overlay").click()  # no maps: each side's pane is exactly the observation
    s = page_scale(run)
    frame = _channels_last(alone[0]["obs_left"])[k].repeat(s, axis=0).repeat(s, axis=1)
    for i in range(2):
        np.testing.assert_array_equal(
            shows(browser, k, f".run[data-run='{i}'] canvas.keyframe[data-key='left']"), frame
        )
    assert console_errors(browser) == []


def test_maps_on_different_image_keys_are_not_compared(two_images, tmp_path):
    configs, _ = two_images
    a, b = (side.agent for side in configs["replay"].sides)
    left = "features_extractor.extractors.left.cnn.5"
    cfg = CompareConfig([Side(a), Side(b, layer=left)], env=TWO, steps=4, out=tmp_path / "keys.mp4")
    result = compare(cfg)
    assert np.isnan(result.map_correlation) and np.isnan(load_trace(cfg.traces[1])["map_correlation"]).all()
    assert "maps not compared (on no step did both map the same frame, or the same image key)" in result.text()
    same = compare(CompareConfig([Side(a), Side(b)], env=TWO, steps=4, out=tmp_path / "same.mp4"))
    assert np.isfinite(same.map_correlation) and "map rank correlation" in same.text()
