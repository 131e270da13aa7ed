"""rlcam.fastroad draws CarRacing's road with the same pixels as gymnasium's own code:
frame by frame against an unpatched env, through the opening zoom, tiles changing colour as the car
drives over them, a second reset (a new track) and domain randomisation (other colours)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("Box2D", reason="CarRacing needs gymnasium[box2d] (in the dev extra)")


def drive_both(stock, fast, seed: int, steps: int) -> int:
    """Step both envs with the same actions; the number of steps whose frame or reward differ."""
    a, _ = stock.reset(seed=seed)
    b, _ = fast.reset(seed=seed)
    differing = int(not np.array_equal(a, b))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        action = rng.uniform([-1, 0.3, 0], [1, 1, 0.2]).astype(np.float32)
        a, ra, done_a, cut_a, _ = stock.step(action)
        b, rb, done_b, cut_b, _ = fast.step(action)
        differing += int(not np.array_equal(a, b) or ra != rb)
        assert (done_a, cut_a) == (done_b, cut_b)
        if done_a or cut_a:
            break
    return differing


@pytest.mark.parametrize("randomize", [False, True], ids=["plain", "domain-randomized"])
def test_frames_are_bit_identical_to_gymnasiums(randomize):
    import gymnasium as gym

    from rlcam.fastroad import speed_up

    stock = gym.make("CarRacing-v3", domain_randomize=randomize)
    fast = gym.make("CarRacing-v3", domain_randomize=randomize)
    speed_up(fast)
    assert drive_both(stock, fast, seed=3, steps=120) == 0
    visited = fast.unwrapped.tile_visited_count
    assert visited > 5  # the car drove over tiles, so their colours changed while we compared
    assert drive_both(stock, fast, seed=4, steps=60) == 0  # a new track: the vertex cache must follow
    assert "_render_road" in vars(fast.unwrapped)  # past its checked frames, still the fast drawing


def test_a_drawing_that_differs_goes_back_to_gymnasiums(monkeypatch):
    import gymnasium as gym

    from rlcam import fastroad

    stock, fast = gym.make("CarRacing-v3"), gym.make("CarRacing-v3")
    fastroad.speed_up(fast)
    monkeypatch.setattr(fastroad, "rotate", lambda xy, angle: np.stack([xy[..., 1], xy[..., 0]], axis=-1))
    with pytest.warns(UserWarning, match="differs"):
        assert drive_both(stock, fast, seed=3, steps=20) == 0  # every frame the original's
    assert "_render_road" not in vars(fast.unwrapped)


def test_rlcam_s_carracing_envs_get_the_fast_drawing():
    from rlcam.envs import make_env

    venv, _ = make_env("CarRacing-v3", n_envs=2, seed=0)
    assert all("_render_road" in vars(env.unwrapped) for env in venv.unwrapped.envs)
    venv.close()


def test_rotation_is_pygames_to_the_bit():
    import pygame

    from rlcam.fastroad import rotate

    rng = np.random.default_rng(0)
    angles = [0.0, math.pi / 2, -math.pi, 1.5 * math.pi, 2 * math.pi, -1e-8, 3e-7, *rng.uniform(-20, 20, 300)]
    for angle in angles:
        points = rng.uniform(-400, 400, (4, 2))
        expected = [tuple(pygame.math.Vector2(tuple(p)).rotate_rad(angle)) for p in points]
        assert rotate(points, angle).tolist() == [list(p) for p in expected], angle


def test_refuses_another_env():
    import gymnasium as gym

    from rlcam.fastroad import speed_up

    with pytest.raises(TypeError, match="CarRacing"):
        speed_up(gym.make("CartPole-v1"))
