"""Faithfulness metrics against hand computations on tiny inputs, the interventions' rebuilt
observations against the recorded ones, and the command's docs block."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlcam import faithfulness as F
from rlcam.interventions import Replayer, counterfactuals, frame_to_input, record, usable
from rlcam.objects import breakout

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import faithfulness as script  # noqa: E402

W = np.array([[1.0, 10.0], [100.0, 1000.0]])


def linear_score(x: torch.Tensor) -> torch.Tensor:
    """Action 0: 1 + sum(W * x) over the one channel; action 1: the constant 500."""
    s0 = 1.0 + (x[:, 0].double() * torch.as_tensor(W)).sum(dim=(1, 2))
    return torch.stack([s0, torch.full_like(s0, 500.0)], dim=1)


# map [[0.9, 0.1], [0.5, 0.3]]: pixel order (0,0), (1,0), (1,1), (0,1)
MAP = np.array([[[0.9, 0.1], [0.5, 0.3]]])
ORDER = [0, 2, 3, 1]  # flat indices, highest first


def test_ranked_pixels_orders_by_value_and_shuffles_ties():
    assert F.ranked_pixels(MAP, np.random.default_rng(0)).tolist() == [ORDER]
    flat = np.zeros((1, 6, 6))
    flat[0, 2, 3] = 1.0
    orders = [F.ranked_pixels(flat, np.random.default_rng(s))[0] for s in range(3)]
    assert all(o[0] == 2 * 6 + 3 and sorted(o) == list(range(36)) for o in orders)
    assert len({tuple(o) for o in orders}) == 3  # the tied zeros in a different order per seed


def test_insertion_matches_the_hand_computed_curve():
    x = np.ones((1, 1, 2, 2))
    got = F.insertion(linear_score, x, MAP, np.array([0]), np.random.default_rng(0), step=1)
    # revealed: none, (0,0), +(1,0), +(1,1), +(0,1): 1, 1+1, 1+1+100, 1+1+100+1000, 1+1111
    curve = [1.0, 2.0, 102.0, 1102.0, 1112.0]
    assert got["curve"] == curve
    assert got["auc"] == pytest.approx((1 / 2 + 2 + 102 + 1102 + 1112 / 2) / 4)  # Huber's (sum - ends/2) / (n-1)
    # 3 px a step on 4 px: two steps, the second reveals the rest
    got = F.insertion(linear_score, x, MAP, np.array([0]), np.random.default_rng(0), step=3)
    assert got["curve"] == [1.0, 1102.0, 1112.0]
    assert got["auc"] == pytest.approx((1 / 2 + 1102 + 1112 / 2) / 2)
    # the explained action's column is read: action 1 is flat
    got = F.insertion(linear_score, x, MAP, np.array([1]), np.random.default_rng(0), step=1)
    assert got["auc"] == pytest.approx(500.0)


def blurred_by_hand(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur written as a double loop: weights exp(-d^2 / 2 sigma^2) within 4 sigma,
    each axis normalised (the blur rlcam.perturb describes)."""
    h, w = img.shape
    out = np.zeros_like(img, dtype=float)

    def weight(d: int) -> float:
        return math.exp(-(d**2) / (2 * sigma**2)) if abs(d) <= 4 * sigma else 0.0

    for i in range(h):
        for j in range(w):
            wy = np.array([weight(i - a) for a in range(h)])
            wx = np.array([weight(j - b) for b in range(w)])
            out[i, j] = (wy[:, None] * wx[None, :] * img).sum() / (wy.sum() * wx.sum())
    return out


def test_deletion_matches_the_hand_computed_curve():
    img = np.array([[4.0, 0.0], [0.0, 2.0]])
    blurred = blurred_by_hand(img, 3.0)
    fractions = (0.25, 0.5, 1.0)  # 1, 2 and 4 of the 4 pixels
    p0 = 1 + (W * img).sum()
    expected = [1.0]
    for k in (1, 2, 4):
        shown = img.copy().ravel()
        shown[ORDER[:k]] = blurred.ravel()[ORDER[:k]]
        expected.append((1 + (W.ravel() * shown).sum()) / p0)
    got = F.deletion(linear_score, img[None, None], MAP, np.array([0]), np.random.default_rng(0), fractions)
    assert got["curve"] == pytest.approx([round(v, 4) for v in expected], abs=1e-4)
    xs = [0.0, 0.25, 0.5, 1.0]
    auc = sum((expected[i] + expected[i + 1]) / 2 * (xs[i + 1] - xs[i]) for i in range(3)) / 1.0
    assert got["auc"] == pytest.approx(auc, rel=1e-6)


def test_aim_counts_the_actions_that_survive_zeroing_the_top_k():
    # state 0: action 0 wins (1 + 1000*1 = 1001 > 500) only through pixel (1,1); state 1 through (1,0) and (1,1)
    obs = np.zeros((2, 1, 2, 2))
    obs[0, 0, 1, 1] = 1.0
    obs[1, 0, 1, 0], obs[1, 0, 1, 1] = 4.0, 1.0  # 1 + 400 + 1000
    maps = np.array([[[0.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 1.0]]])  # both point at (1,1)
    assert F.aim(linear_score, obs, maps, np.array([0, 0]), np.random.default_rng(0), k=1) == 0.0
    # zeroing (1,1) leaves state 1 at 401 < 500 and state 0 at 1: both flip; a map on (0,0) flips neither
    elsewhere = np.array([[[1.0, 0.0], [0.0, 0.0]]] * 2)
    assert F.aim(linear_score, obs, elsewhere, np.array([0, 0]), np.random.default_rng(0), k=1) == 1.0
    obs[1, 0, 1, 0] = 6.0  # 1 + 600 survives losing (1,1)
    assert F.aim(linear_score, obs, maps, np.array([0, 0]), np.random.default_rng(0), k=1) == 0.5


def test_prediction_gaps_zero_the_top_or_bottom_k():
    obs = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])  # action 0: 1 + 1 + 20 + 300 + 4000 = 4322
    a = np.array([0])
    rng = np.random.default_rng
    # top 2 of MAP: (0,0), (1,0) -> minus 1 and 300; bottom 2: (1,1), (0,1) -> minus 4000 and 20
    assert F.prediction_gap(linear_score, obs, MAP, a, rng(0), k=2, important=True) == pytest.approx(301.0)
    assert F.prediction_gap(linear_score, obs, MAP, a, rng(0), k=2, important=False) == pytest.approx(4020.0)
    two = np.concatenate([obs, 2 * obs])  # the gap is a mean over inputs: 301 and 602
    maps = np.concatenate([MAP, MAP])
    assert F.prediction_gap(linear_score, two, maps, np.array([0, 0]), rng(0), k=2) == pytest.approx(451.5)


def test_random_pixel_maps_and_smooth_maps_have_their_shapes_and_range():
    rng = np.random.default_rng(0)
    pixels = F.random_pixel_maps(3, (84, 84), rng)
    smooth = F.random_maps(3, 84, rng)
    assert pixels.shape == smooth.shape == (3, 84, 84)
    assert 0 <= pixels.min() and pixels.max() < 1 and 0 <= smooth.min() and smooth.max() <= 1
    # smooth: neighbours nearly equal; per-pixel noise: not
    assert np.abs(np.diff(smooth, axis=2)).mean() < 0.05 < np.abs(np.diff(pixels, axis=2)).mean()


def test_policy_scores_reads_probabilities_or_q_values(agent_zips, breakout_obs):
    from rlcam.agents import load_agent
    from rlcam.families import family_for

    x = torch.as_tensor(breakout_obs).float()
    for algo, kind in (("ppo", "prob"), ("qrdqn", "raw")):
        agent = load_agent(agent_zips[algo])
        raw = family_for(agent).forward(x).action_scores.detach()
        got = F.policy_scores(agent)(x)
        want = torch.softmax(raw, dim=1) if kind == "prob" else raw
        assert torch.allclose(got, want)


# -- the docs block --------------------------------------------------------------------------------


def test_write_block_replaces_only_its_block(tmp_path):
    page = tmp_path / "methods.md"
    other = "<!-- truthfulness:begin -->\nold truth\n<!-- truthfulness:end -->"
    page.write_text(f"# Title\n\n{other}\n\n<!-- faithfulness:begin -->\nold\n<!-- faithfulness:end -->\n\nTail.\n")
    F.write_block(page, "faithfulness", "new table")
    assert page.read_text() == (
        f"# Title\n\n{other}\n\n<!-- faithfulness:begin -->\nnew table\n<!-- faithfulness:end -->\n\nTail.\n"
    )
    fresh = tmp_path / "fresh.md"
    fresh.write_text("Intro.")
    F.write_block(fresh, "faithfulness", "t")
    assert fresh.read_text() == "Intro.\n\n<!-- faithfulness:begin -->\nt\n<!-- faithfulness:end -->\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.md", "methods.md"]  # no temporary left


def test_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    docs = tmp_path / "methods.md"
    docs.write_text("unchanged")
    assert script.main([str(tmp_path / "missing.zip@Breakout"), "--docs", str(docs)]) == 2
    assert script.main([str(tmp_path / "agent.zip"), "--docs", str(docs)]) == 2  # names no game
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "does not exist" in err[0] and "@Game" in err[1]
    assert docs.read_text() == "unchanged"


def test_command_writes_its_block_and_nothing_else(agent_zips, tmp_path):
    docs = tmp_path / "methods.md"
    before = "# Methods\n\n<!-- truthfulness:begin -->\nkept\n<!-- truthfulness:end -->\n\nAfter.\n"
    docs.write_text(before + "\n<!-- faithfulness:begin -->\nstale\n<!-- faithfulness:end -->\n")
    argv = [f"{agent_zips['ppo']}@Breakout", "--states", "3", "--draws", "1", "--sanity-states", "0"]
    assert script.main([*argv, "--docs", str(docs), "--json", str(tmp_path / "f.json")]) == 0
    text = docs.read_text()
    assert text.startswith(before) and "stale" not in text
    block = text[text.index("<!-- faithfulness:begin -->") : text.index("<!-- faithfulness:end -->")]
    for label in (
        "| gradcam |",
        "| rise |",
        "| ig |",
        script.SMOOTH,
        script.PIXELS,
        script.LIT,
        "Huber et al.",
        "XRL-Bench",
    ):
        assert label in block


# -- interventions ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recording():
    from rlcam.agents import load_agent

    agent = load_agent(ROOT / "agents" / "breakout_ppo.zip")
    return record(agent, "Breakout", 60, seed=0)


def test_replay_rebuilds_the_recorded_observations(recording):
    replayer = Replayer(recording.env_id, 4)
    ts = [t for t in range(len(recording.obs)) if usable(recording, t, 4)]
    assert len(ts) > 30
    for t in ts:
        rebuilt, ram = replayer.replay(recording.states[t - 4], recording.actions[t - 4 : t])
        assert np.array_equal(rebuilt, recording.obs[t])
        assert np.array_equal(ram, recording.rams[t])


def test_a_ball_counterfactual_moves_the_ball_and_nothing_else(recording):
    replayer = Replayer(recording.env_id, 4)
    t = next(t for t in range(20, 60) if usable(recording, t, 4) and breakout(recording.rams[t])["ball"])
    before = breakout(recording.rams[t])
    address, dx = 99, 9
    value = int(recording.rams[t - 4][address]) + dx
    moved, ram = replayer.replay(recording.states[t - 4], recording.actions[t - 4 : t], write=(address, value))
    after = breakout(ram)
    assert after["paddle"] == before["paddle"] and after["ball"] != before["ball"]
    changed = np.argwhere(moved[-1] != recording.obs[t][-1])  # newest frame: pixels near the two ball places
    assert len(changed) > 0
    near = [frame_to_input(c, (84, 84)) for c in (before["ball"], after["ball"])]
    assert all(min(np.hypot(*(p - c)) for c in near) < 4 for p in changed)
    ok, found = counterfactuals(recording, t, replayer, np.random.default_rng(0))
    assert ok and {c.obj for c in found} <= {"ball", "paddle"} and all(c.shift >= 2 for c in found)


def test_the_paddle_ram_byte_does_not_stick_so_the_controls_move_it(recording):
    replayer = Replayer(recording.env_id, 4)
    t = next(t for t in range(20, 60) if usable(recording, t, 4))
    window = recording.actions[t - 4 : t]
    _, ram = replayer.replay(recording.states[t - 4], window, write=(72, int(recording.rams[t - 4][72]) + 20))
    assert abs(int(ram[72]) - int(recording.rams[t][72])) < 5  # the write was overwritten
    ok, found = counterfactuals(recording, t, replayer, np.random.default_rng(0))
    paddle = [c for c in found if c.obj == "paddle"]
    assert ok and paddle and all("action" in c.how for c in paddle)


def test_frame_to_input_follows_warpframe_resize():
    import cv2

    frame = np.zeros((210, 160), np.uint8)
    frame[100:110, 70:80] = 255  # centre (104.5, 74.5)
    small = cv2.resize(frame, (84, 84), interpolation=cv2.INTER_AREA).astype(float)
    ys, xs = np.indices(small.shape)
    centroid = np.array([(ys * small).sum(), (xs * small).sum()]) / small.sum()
    assert np.allclose(frame_to_input((104.5, 74.5), (84, 84)), centroid, atol=0.05)


def test_pong_moves_its_ball_by_ram_and_its_paddle_by_the_controls(tmp_path):
    import warnings

    from stable_baselines3 import PPO

    from rlcam.agents import load_agent
    from rlcam.envs import make_env

    venv, _ = make_env("Pong", n_envs=1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PPO("CnnPolicy", venv, seed=0, device="cpu", n_steps=16, batch_size=16).save(tmp_path / "pong.zip")
    venv.close()
    rec = record(load_agent(tmp_path / "pong.zip"), "Pong", 90, seed=0)
    replayer = Replayer(rec.env_id, 4)
    found = []
    for t in range(5, 90, 3):
        if usable(rec, t, 4):
            ok, got = counterfactuals(rec, t, replayer, np.random.default_rng(t))
            assert ok  # the replay gives back every recorded observation
            found += got
    kinds = {(c.obj, c.how.split()[0]) for c in found}
    assert ("ball", "ram") in kinds and ("player", "action") in kinds
    assert all(not np.array_equal(c.obs, rec.obs[c.t]) for c in found)
