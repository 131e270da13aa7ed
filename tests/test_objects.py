"""The RAM object table agrees with the rendered frames; attention shares are exact."""

from __future__ import annotations

import numpy as np

from rlcam.envs import make_env
from rlcam.objects import (
    OBJECTS,
    boxing,
    game_name,
    ms_pacman,
    object_names,
    pong,
    positions,
    seaquest,
    share_near,
    space_invaders,
)

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


def test_positions_of_a_vec_env_follow_object_names():
    """The recorder's interface: one (N, 2) float32 array per name, NaN rows where not on screen."""
    venv, info = make_env("Seaquest", n_envs=2, seed=1)
    venv.reset()
    for _ in range(30):
        venv.step(np.array([5, 13]))  # DOWN, DOWNFIRE: dive
    found = positions(venv, info.env_id)
    venv.close()
    assert sorted(found) == object_names(info.env_id)
    for name, centres in found.items():
        assert centres.shape == (2, 2) and centres.dtype == np.float32, name
        assert (np.isnan(centres).all(1) | np.isfinite(centres).all(1)).all(), name
    assert np.isfinite(found["player"]).all() and (found["player"][:, 0] > 50).all()  # both subs dived (surface: 49)


def test_names():
    assert game_name("BreakoutNoFrameskip-v4") == game_name("ALE/Breakout-v5") == "Breakout"
    assert object_names("Breakout") == ["ball", "paddle"]
    assert object_names("rlcam.toyenv:FindTarget-v0") == []
    assert object_names("PongNoFrameskip-v4") == object_names("ALE/Pong-v5") == ["ball", "enemy", "player"]
    assert object_names("Freeway") == ["chicken"]
    assert object_names("Boxing") == ["enemy", "player"]
    assert object_names("SpaceInvaders") == ["invaders", "player"]
    assert object_names("MsPacman") == ["fruit", "ghost_blinky", "ghost_inky", "ghost_pinky", "ghost_sue", "player"]
    lanes = [f"enemy{n}_{k}" for n in range(1, 5) for k in (1, 2, 3)] + [f"diver{n}" for n in range(1, 5)]
    assert object_names("Seaquest") == sorted([*lanes, "player"])


def test_every_locator_takes_any_ram():
    """Names are fixed per game (the trace's obj_<name> columns), whatever the RAM holds."""
    rng = np.random.default_rng(0)
    for game, locate in OBJECTS.items():
        names = set(locate(np.zeros(128, dtype=np.uint8)))
        for _ in range(200):
            found = locate(rng.integers(0, 256, 128).astype(np.uint8))
            assert set(found) == names, game
            for centre in found.values():
                assert centre is None or (len(centre) == 2 and np.isfinite(centre).all()), (game, centre)


def _ram(**cells: int) -> np.ndarray:
    ram = np.zeros(128, dtype=np.uint8)
    for key, value in cells.items():
        ram[int(key[1:])] = value
    return ram


def test_pong_walls_cut_the_paddles_and_hide_the_ball():
    # enemy paddle rows ram[50]-15 .. ram[50]; at ram[50] = 40 the top wall (rows < 34) hides 25..33
    assert pong(_ram(r50=40, r51=100, r54=100, r49=80))["enemy"] == ((34 + 40) / 2, 17.5)
    assert pong(_ram(r50=20, r51=100))["enemy"] is None  # all of it behind the wall
    found = pong(_ram(r50=100, r51=100, r54=100, r49=80))
    assert found["ball"] == (100 - 14 + 1.5, 80 - 48.5) and found["player"] == (94.0, 141.5)
    assert pong(_ram(r54=0, r49=80))["ball"] is None  # between points


def test_space_invaders_block_from_the_alive_bits():
    # ram[23] is the top grid row, bit 0 the leftmost column: one invader, top-left
    found = space_invaders(_ram(r23=0b000001, r16=5, r26=40))
    assert found["invaders"] == (31 + 10 + 4.5, 39 + 3.5)
    # add the bottom row's rightmost (ram[18] bit 5): the block spans the whole grid
    found = space_invaders(_ram(r23=0b000001, r18=0b100000, r16=0, r26=40))
    assert found["invaders"] == ((31 + 31 + 90 + 9) / 2, (39 + 39 + 80 + 7) / 2)
    assert space_invaders(_ram(r26=40))["invaders"] is None
    # the player blinks after a restart: off while bit 3 of the frame counter is clear
    assert space_invaders(_ram(r28=50, r42=1, r74=0))["player"] is None
    assert space_invaders(_ram(r28=50, r42=1, r74=8))["player"] == (189.5, 52.0)
    assert space_invaders(_ram(r28=50, r42=0, r74=0))["player"] == (189.5, 52.0)


def test_boxing_geometry_follows_the_side():
    left, right = boxing(_ram(r32=30, r34=20, r33=70, r35=10)), boxing(_ram(r32=70, r34=20, r33=30, r35=10))
    assert left == {"player": (81.0, 41.5), "enemy": (70.0, 79.5)}
    assert right == {"player": (80.0, 79.5), "enemy": (71.0, 41.5)}


def test_ms_pacman_fruit_and_tunnels():
    found = ms_pacman(_ram(r10=60, r16=50, r6=100, r12=80, r11=0, r17=90))
    assert found["player"] == (55.5, 51.5) and found["ghost_sue"] == (85.5, 91.5) and found["fruit"] is None
    assert ms_pacman(_ram(r11=30, r17=90))["fruit"] == (95.5, 21.5)
    assert ms_pacman(_ram(r10=5, r16=50))["player"] is None  # x = -3.5: in the side tunnel


def test_seaquest_lanes_slots_and_edges():
    # lane 4 (RAM lane 0, base row 137): variation 5 = left and right slots, sharks bobbing by ram[93]
    found = seaquest(_ram(r36=5, r30=40, r93=2, r97=60, r70=70))
    assert found["enemy4_1"] == (142.0, 43.5) and found["enemy4_2"] is None and found["enemy4_3"] == (142.0, 75.5)
    assert found["player"] == (98.0, 77.5) and found["enemy1_1"] is None
    # submarines (ram[89] % 8 in 4..6) do not bob, and the diver address is then their torpedo
    found = seaquest(_ram(r36=4, r30=40, r93=2, r89=4, r71=60))
    assert found["enemy4_1"] == (145.0, 43.5) and found["diver4"] is None
    assert seaquest(_ram(r71=60))["diver4"] == (144.0, 63.5)
    # slot x wraps modulo 256 and the black bar hides columns 0-7
    found = seaquest(_ram(r36=6, r30=250))
    assert found["enemy4_1"] is None and found["enemy4_2"] == (140.0, (10 + 17) / 2)
    assert seaquest(_ram(r36=4, r30=4))["enemy4_1"] == (140.0, (8 + 11) / 2)
    assert seaquest(_ram(r105=3, r97=60))["player"] is None  # being destroyed
    assert seaquest(_ram(r97=13, r70=70))["player"] == (13 + 33 + 3.0, 77.5)  # at the surface: 7 rows show


def test_share_near_by_hand():
    heat = np.zeros((20, 20))
    heat[5, 5] = 3.0
    heat[15, 15] = 1.0
    assert share_near(heat, np.array([5.0, 6.0]), 1.0) == 0.75
    assert share_near(heat, np.array([10.0, 10.0]), 8.0) == 1.0
    assert np.isnan(share_near(heat, np.array([np.nan, np.nan]), 3.0))
    assert np.isnan(share_near(np.zeros((4, 4)), np.array([1.0, 1.0]), 3.0))
