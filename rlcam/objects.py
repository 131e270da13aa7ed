"""Where game objects are, read from the Atari RAM, and how much of a map lies near them.

Each entry of ``OBJECTS`` maps a game to a function ``ram (128,) uint8 -> {name: (y, x) or None}``
giving object centres in raw-frame pixels (210x160), None when the object is not on screen.
Every mapping was checked against rendered frames (``scripts/verify_objects.py`` measures it,
``tests/test_objects*.py`` keep it true); docs/objects.md has the accuracy per object. The RAM
addresses come from public annotations (AtariARI's ``atari_dict``, OCAtari); the offsets from
RAM values to pixels were fitted here on ale-py 0.12 frames, so they are written as the sprite's
measured edges (``top = ram[i] + k``) and the centre follows from the sprite's size.

Positions are read after a step, from the same state as the frame ``env.render()`` shows. MsPacman
draws its sprites where the RAM put them a few frames earlier: a moving Ms. Pac-Man lies up to 3 px
behind her RAM position along her path.

Objects that flicker (the game draws them on some frames only, e.g. MsPacman's ghosts) are reported
on every frame they are in play: the agent sees them through SB3's max over the last two frames
and the frame stack even when the last frame lacks them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Position = tuple[float, float] | None


def _span_centre(lo: float, hi: float, top: float, bottom: float) -> float | None:
    """Centre of the visible part of the rows (or columns) ``lo..hi`` inside ``top..bottom``."""
    lo, hi = max(lo, top), min(hi, bottom)
    return (lo + hi) / 2 if lo <= hi else None


def breakout(ram: np.ndarray) -> dict[str, Position]:
    """Ball: x = ram[99] - 48.5, y = ram[101] + 10.5, on screen when 0 < ram[101] < 180 (at 180 and
    beyond it has passed the paddle). Paddle: spans x = ram[72] - 47 .. ram[72] - 32, cut by the
    walls at 8 and 151; y = 191."""
    ball_y = int(ram[101])
    ball = (ball_y + 10.5, int(ram[99]) - 48.5) if 0 < ball_y < 180 else None
    left = int(ram[72]) - 47  # the paddle spans 16 px, cut off by the walls at x = 8 and x = 151
    paddle = (191.0, (max(left, 8) + min(left + 15, 151)) / 2)
    return {"ball": ball, "paddle": paddle}


PONG_FIELD = (34, 193)  # rows between the walls; the walls hide whatever is drawn on them


def pong(ram: np.ndarray) -> dict[str, Position]:
    """Ball: 4x2 px, top row ram[54] - 14, left column ram[49] - 49; ram[54] = 0 between points.
    Player (right, green): 16 rows ending at ram[51] + 1 (or + 2: the game alternates), columns
    140-143. Enemy (left, orange): rows ram[50] - 15 .. ram[50], columns 16-19. The walls cut
    paddles and ball (ram[45], ram[46], AtariARI's x addresses, are constant: the paddles never
    move sideways)."""
    ball_top = int(ram[54]) - 14
    ball_y = _span_centre(ball_top, ball_top + 3, *PONG_FIELD) if ram[54] else None
    ball = (ball_y, int(ram[49]) - 48.5) if ball_y is not None else None
    player_y = _span_centre(int(ram[51]) - 13.5, int(ram[51]) + 1.5, *PONG_FIELD)
    enemy_y = _span_centre(int(ram[50]) - 15, int(ram[50]), *PONG_FIELD)
    return {
        "ball": ball,
        "player": (player_y, 141.5) if player_y is not None else None,
        "enemy": (enemy_y, 17.5) if enemy_y is not None else None,
    }


def freeway(ram: np.ndarray) -> dict[str, Position]:
    """The player's chicken (left one, columns 44-50): 8 rows from 193 - ram[14]."""
    return {"chicken": (196.5 - int(ram[14]), 46.75)}


def boxing(ram: np.ndarray) -> dict[str, Position]:
    """Centres of the boxers' bodies (arms excluded: a punch reaches 16 px toward the other boxer).

    x = ram[32], y = ram[34] for the player (white), ram[33], ram[35] for the enemy (black). The
    boxer on the left faces right: its 47-row body starts at row y + 38 and spans columns
    x + 5 .. x + 18; the one on the right starts at y + 37 and spans x + 3 .. x + 16.
    """
    px, ex = int(ram[32]), int(ram[33])

    def body(x: int, y: int, on_left: bool) -> Position:
        return (y + 61.0, x + 11.5) if on_left else (y + 60.0, x + 9.5)

    return {"player": body(px, int(ram[34]), px <= ex), "enemy": body(ex, int(ram[35]), ex < px)}


def space_invaders(ram: np.ndarray) -> dict[str, Position]:
    """Player: 10 rows from 185, columns from ram[28] - 1 (7-8 wide); after a (re)start it blinks,
    8 frames off and 8 on, while bit 0 of ram[42] is set: off when bit 3 of the frame counter
    ram[74] is clear. Invaders: the block of those alive, a 6x6 grid (cells 8x10 px, 16 px apart
    across and 18 down) whose top-left cell starts at x = ram[26] - 1, y = 31 + 2 ram[16]; alive
    cells are bits: ram[18 + r] holds grid row 5 - r (ram[18] the bottom row), bit c column c
    (bit 0 the leftmost)."""
    blinked_off = int(ram[42]) & 1 and not int(ram[74]) & 8
    player = None if blinked_off else (189.5, int(ram[28]) + 2.0)
    alive = np.array([[(int(ram[23 - i]) >> j) & 1 for j in range(6)] for i in range(6)], dtype=bool)
    invaders = None
    if alive.any():
        rows, cols = np.nonzero(alive.any(1))[0], np.nonzero(alive.any(0))[0]
        top, left = 31 + 2 * int(ram[16]), int(ram[26]) - 1
        y0, y1 = top + 18 * rows[0], top + 18 * rows[-1] + 9
        x0, x1 = left + 16 * cols[0], left + 16 * cols[-1] + 7
        invaders = ((y0 + y1) / 2, (x0 + x1) / 2)
    return {"player": player, "invaders": invaders}


MSPACMAN_GHOSTS = {"ghost_sue": 6, "ghost_inky": 7, "ghost_pinky": 8, "ghost_blinky": 9}  # name -> x address


def ms_pacman(ram: np.ndarray) -> dict[str, Position]:
    """Ms. Pac-Man, the ghosts and the fruit share one sprite geometry: the centre is
    (ram[y] + 5.5, ram[x] - 8.5) with (x, y) = (10, 16) for Ms. Pac-Man, (6..9, 12..15) for the
    ghosts Sue (orange), Inky (cyan), Pinky (pink) and Blinky (red), and (11, 17) for the fruit,
    which is absent when ram[11] = 0. Off screen in the side tunnels (x outside 0..159)."""

    def at(x: int, y: int) -> Position:
        cx = int(ram[x]) - 8.5
        return (int(ram[y]) + 5.5, cx) if 0 <= cx <= 159 else None

    found = {"player": at(10, 16)}
    for name, x in MSPACMAN_GHOSTS.items():
        found[name] = at(x, x + 6)
    found["fruit"] = at(11, 17) if ram[11] else None
    return found


SEAQUEST_LANES = 4  # lanes numbered 1 (nearest the surface) .. 4 (the deepest)


def seaquest(ram: np.ndarray) -> dict[str, Position]:
    """Player's submarine: 11x16 px from (ram[97] + 33, ram[70]); at the surface (ram[97] = 13) only
    its top 7 rows show; absent while it is destroyed and replaced (ram[105] > 0).

    Lane n (1 = top .. 4 = bottom) is RAM lane i = 4 - n, with base row b = 137 - 24 i. It holds up
    to three enemies 16 px apart, ``enemy<n>_<k>`` (k = 1..3 left to right): slot k is present when
    bit 4, 2, 1 (k = 1, 2, 3) of ram[36 + i] % 8 is set; its 8 columns start at
    (ram[30 + i] + 16 (k - 1)) mod 256. They are sharks (7 rows from b + ram[93]: the sharks bob
    together) or, when 3 < ram[89 + i] % 8 < 7, submarines (11 rows from b + 3). ``diver<n>``: a
    diver, 8x14 px from (b, ram[71 + i]), when 0 < ram[71 + i] < 160 and the lane's enemies are not
    submarines (then that address is their torpedo's). Columns 0-7 are a black bar: objects there
    are cut, and their centre is that of the visible part.
    """
    if ram[105]:
        player = None
    else:
        top = int(ram[97]) + 33
        player = (top + (3.0 if ram[97] <= 13 else 5.0), int(ram[70]) + 7.5)
    found: dict[str, Position] = {"player": player}
    for n in range(1, SEAQUEST_LANES + 1):
        i = SEAQUEST_LANES - n
        base = 137 - 24 * i
        submarines = 3 < int(ram[89 + i]) % 8 < 7
        enemy_y = base + 8.0 if submarines else base + int(ram[93]) + 3.0
        variation, x = int(ram[36 + i]) % 8, int(ram[30 + i])
        for k, bit in enumerate((4, 2, 1), start=1):
            left = (x + 16 * (k - 1)) % 256
            cx = _span_centre(left, left + 7, 8, 159) if variation & bit else None
            found[f"enemy{n}_{k}"] = (enemy_y, cx) if cx is not None else None
        diver = int(ram[71 + i])
        cx = _span_centre(diver, diver + 7, 8, 159) if 0 < diver < 160 and not submarines else None
        found[f"diver{n}"] = (base + 7.0, cx) if cx is not None else None
    return found


OBJECTS: dict[str, Callable[[np.ndarray], dict[str, Position]]] = {
    "Breakout": breakout,
    "Pong": pong,
    "Freeway": freeway,
    "Boxing": boxing,
    "SpaceInvaders": space_invaders,
    "MsPacman": ms_pacman,
    "Seaquest": seaquest,
}


def game_name(env_id: str) -> str:
    """``BreakoutNoFrameskip-v4`` / ``ALE/Breakout-v5`` -> ``Breakout``."""
    name = env_id.split(":")[-1].split("/")[-1]
    return name.split("NoFrameskip")[0].split("Deterministic")[0].split("-")[0]


def locator_for(env_id: str) -> Callable[[np.ndarray], dict[str, Position]] | None:
    return OBJECTS.get(game_name(env_id))


def object_names(env_id: str) -> list[str]:
    locate = locator_for(env_id)
    return sorted(locate(np.zeros(128, dtype=np.uint8))) if locate else []


def env_rams(venv) -> list[np.ndarray]:
    """The RAM of each Atari env in an SB3 VecEnv built in this process."""
    return [env.unwrapped.ale.getRAM() for env in venv.unwrapped.envs]


def positions(venv, env_id: str) -> dict[str, np.ndarray]:
    """``{name: (N, 2) float32}`` object centres (y, x) in frame pixels, NaN where not on screen."""
    locate = locator_for(env_id)
    if locate is None:
        return {}
    found = [locate(ram) for ram in env_rams(venv)]
    return {
        name: np.array([f[name] if f[name] is not None else (np.nan, np.nan) for f in found], dtype=np.float32)
        for name in found[0]
    }


def share_near(heat: np.ndarray, centre: np.ndarray, radius: float) -> float:
    """Share of a non-negative map's mass within ``radius`` px of ``centre (y, x)``; NaN if undefined.

    Args:
        heat: ``(H, W)`` map on the frame's pixel grid.
        centre: ``(2,)`` object centre in the same pixels, NaN when the object is not on screen.
    """
    total = float(heat.sum())
    if total <= 0 or not np.isfinite(centre).all():
        return float("nan")
    ys, xs = np.ogrid[: heat.shape[0], : heat.shape[1]]
    near = (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 <= radius**2
    return float(heat[near].sum() / total)
