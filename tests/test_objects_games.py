"""Each game's RAM object positions agree with the frames the game renders.

``scripts/verify_objects.py`` plays the game through the recorder's env (``rlcam.envs.make_env``) and
locates every object twice, from the RAM and by its colour in the rendered frame; here a few hundred
steps per game must give the accuracy docs/objects.md reports (thresholds a little looser than the
measured figures, which come from longer runs).
"""

from __future__ import annotations

import numpy as np

from scripts.verify_objects import play


def _check(tally, name: str, *, min_on: int, drawn: float = 1.0, p95: float, max_px: float, frame_only: int = 0):
    row = tally[name].row(name)
    assert row["ram_on"] >= min_on, row
    assert row["drawn"] >= drawn, row  # share of the RAM's on-screen steps where the frame shows it
    assert tally[name].frame_only <= frame_only, row  # on the frame while the RAM says it is not there
    assert row["p95"] <= p95 and row["max"] <= max_px, row


def test_pong():
    tally = play("Pong", 300, seed=0, pooled=False)
    _check(tally, "ball", min_on=120, p95=1.0, max_px=1.5)
    _check(tally, "player", min_on=300, p95=0.5, max_px=0.5)  # the game alternates its end row
    _check(tally, "enemy", min_on=250, p95=0.0, max_px=0.5)


def test_freeway():
    tally = play("Freeway", 300, seed=0, pooled=False)
    _check(tally, "chicken", min_on=300, p95=0.5, max_px=1.5)


def test_boxing_both_sides():
    # swap_boxers puts the boxers on each other's side at steps 50 and 150: both geometries are checked
    tally = play("Boxing", 200, seed=0, pooled=False)
    for name in ("player", "enemy"):
        _check(tally, name, min_on=200, p95=2.5, max_px=3.5)
        assert np.mean(np.array(tally[name].errors) <= 1) >= 0.85


def test_space_invaders():
    # the first 130 steps hold the player's start blink (off and on, 8 frames each)
    tally = play("SpaceInvaders", 200, seed=0, pooled=False)
    _check(tally, "player", min_on=150, p95=1.0, max_px=1.0)
    assert tally["player"].ram_on < 200  # some blinked-off steps were seen, and the RAM said so
    _check(tally, "invaders", min_on=200, p95=0.5, max_px=8.0)  # an exploding invader can widen the block


def test_ms_pacman():
    # seed 4: the fruit comes in at step 490 and stays for ~150 steps; the ghosts flicker
    tally = play("MsPacman", 640, seed=4, analyse_from=440, pooled=False)
    _check(tally, "player", min_on=200, drawn=0.9, p95=3.5, max_px=4.0)  # drawn ~3 frames behind the RAM
    # the fruit bounces along its path; on the step it is eaten the frame still shows it (drawn from the
    # RAM of the frame before)
    _check(tally, "fruit", min_on=100, drawn=0.7, p95=4.5, max_px=5.0, frame_only=1)
    for ghost in ("ghost_sue", "ghost_inky", "ghost_pinky", "ghost_blinky"):
        _check(tally, ghost, min_on=200, drawn=0.3, p95=2.5, max_px=4.0)  # they lag as she does


def test_seaquest():
    # fill_lanes gives every lane with enemies all three slots at steps 10, 60, ...
    tally = play("Seaquest", 400, seed=0, pooled=False)
    _check(tally, "player", min_on=200, p95=2.5, max_px=3.5)  # at the surface the sprite's shape varies
    enemies = [f"enemy{n}_{k}" for n in range(1, 5) for k in (1, 2, 3)]
    for name in enemies:
        if tally[name].ram_on:
            _check(tally, name, min_on=1, drawn=0.95, p95=1.5, max_px=6.0)
    assert sum(tally[name].ram_on > 20 for name in enemies) >= 8
    for n in range(1, 5):
        if tally[f"diver{n}"].ram_on:
            _check(tally, f"diver{n}", min_on=1, p95=5.0, max_px=6.0)
    assert sum(tally[f"diver{n}"].ram_on for n in range(1, 5)) >= 100
