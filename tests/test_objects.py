"""The RAM object table agrees with the rendered frames; attention shares are exact."""

from __future__ import annotations

import numpy as np

from rlcam.envs import make_env
from rlcam.objects import game_name, object_names, positions, share_near

BALL_RED = np.array([200, 72, 72])


def _red_centre(frame: np.ndarray, rows: slice) -> tuple[float, float] | None:
    region = frame[rows, 8:152].astype(int)
    ys, xs = np.nonzero(np.abs(region - BALL_RED).sum(-1) < 30)
    if len(ys) == 0:
        return None
    return ys.mean() + rows.start, xs.mean() + 8


def test_breakout_ram_positions_match_rendered_frames():
    venv, info = make_env("Breakout", n_envs=1, seed=3)
    venv.reset()
    rng = np.random.default_rng(3)
    checked_ball = checked_paddle = 0
    for _ in range(300):
        venv.step(rng.integers(0, 4, size=1))
        frame = venv.get_images()[0]
        found = positions(venv, info.env_id)
        ball, paddle = found["ball"][0], found["paddle"][0]
        # Below the bricks and above the paddle the only red thing is the ball.
        seen = _red_centre(frame, slice(94, 189))
        if np.isfinite(ball).all() and 94 <= ball[0] < 185:
            assert seen is not None, f"RAM says ball at {ball}, frame shows none"
            assert np.allclose(seen, ball, atol=0.6), (seen, ball)
            checked_ball += 1
        elif seen is not None:
            assert np.isfinite(ball).all() and ball[0] >= 185 or ball[0] < 94, (seen, ball)
        if np.isfinite(ball).all() and ball[0] < 183:  # the ball is in play and not among the paddle's rows
            paddle_seen = _red_centre(frame, slice(189, 194))
            assert paddle_seen is not None
            assert abs(paddle_seen[1] - paddle[1]) <= 0.5 and abs(paddle_seen[0] - paddle[0]) <= 0.5, (
                paddle_seen,
                paddle,
            )
            checked_paddle += 1
    venv.close()
    assert checked_ball > 100 and checked_paddle > 100


def test_names():
    assert game_name("BreakoutNoFrameskip-v4") == game_name("ALE/Breakout-v5") == "Breakout"
    assert object_names("Breakout") == ["ball", "paddle"]
    assert object_names("rlcam.toyenv:FindTarget-v0") == []


def test_share_near_by_hand():
    heat = np.zeros((20, 20))
    heat[5, 5] = 3.0
    heat[15, 15] = 1.0
    assert share_near(heat, np.array([5.0, 6.0]), 1.0) == 0.75
    assert share_near(heat, np.array([10.0, 10.0]), 8.0) == 1.0
    assert np.isnan(share_near(heat, np.array([np.nan, np.nan]), 3.0))
    assert np.isnan(share_near(np.zeros((4, 4)), np.array([1.0, 1.0]), 3.0))
