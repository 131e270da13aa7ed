"""Check every RAM object mapping of ``rlcam.objects`` against the frames the game renders.

    python scripts/verify_objects.py [--games Pong Boxing ...] [--steps 600] [--seed 0] [--pictures docs/img]

Each game is played through ``rlcam.envs.make_env`` (the env the recorder uses: SB3's Atari wrappers,
4 frames a step) with random or scripted actions. After each step the objects are located twice,
independently: from the RAM (``rlcam.objects.positions``) and in the rendered frame by each object's
colour (its bounding-box centre; a boxer's body centre, found from its edge away from the other
boxer). Where several objects share a colour (Seaquest's enemies and divers, MsPacman's frightened
ghosts) the frame gives blobs and each RAM object takes the nearest free blob within ``MATCH_PX``;
blobs left over are counted as ``<group> (unmatched blobs)``.

Two games get RAM writes to reach states play rarely does: Boxing swaps the boxers' sides every 100
steps (``swap_boxers``), Seaquest fills each lane that has enemies with all three every 50 steps
(``fill_lanes``; the first waves never use the middle slot).

Per object it prints: the steps where the RAM says it is on screen, the share of those where the
frame shows it (``drawn``: flicker and hiding show here) and where the frame or the one before does
(``in last 2``: SB3 gives the agent the max of these two), the steps where the frame shows it but
the RAM says it is not there, and the distance between the two centres where both have it (median,
95th percentile, max, share within 1 and 2 px). ``--pictures`` writes ``objects_<game>.png``: the
last frame among those showing the most objects, with their RAM positions marked.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlcam.envs import make_env  # noqa: E402
from rlcam.objects import MSPACMAN_GHOSTS, SEAQUEST_LANES, env_rams, positions  # noqa: E402

MATCH_PX = 8.0  # a blob farther than this from a RAM object is not that object
Found = tuple[float, float] | None


# ---------------------------------------------------------------- finding objects in a frame


def colour_mask(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """``(H, W) bool``: pixels of exactly this colour (the ALE palette has no shading)."""
    return (frame == np.array(colour, dtype=frame.dtype)).all(-1)


def box_centre(mask: np.ndarray, top: int = 0, left: int = 0) -> Found:
    """Bounding-box centre (y, x) of the set pixels, shifted by the crop's ``top, left``."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return (ys.min() + ys.max()) / 2 + top, (xs.min() + xs.max()) / 2 + left


def blobs(mask: np.ndarray, top: int = 0, left: int = 0) -> list[tuple[float, float]]:
    """Bounding-box centres of the 8-connected blobs of a mask."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [
        (top + y + (h - 1) / 2, left + x + (w - 1) / 2)
        for x, y, w, h, _ in stats[1:n]  # label 0 is the background
    ]


def column_blobs(mask: np.ndarray, top: int = 0, left: int = 0) -> list[tuple[float, float]]:
    """Blobs as runs of occupied columns (objects in one lane never overlap across, may break apart)."""
    cols = np.nonzero(mask.any(0))[0]
    out = []
    for run in np.split(cols, np.nonzero(np.diff(cols) > 1)[0] + 1) if len(cols) else []:
        rows = np.nonzero(mask[:, run].any(1))[0]
        out.append((top + (rows[0] + rows[-1]) / 2, left + (run[0] + run[-1]) / 2))
    return out


def find_pong(frame):
    field = frame[34:194]
    return {
        "ball": box_centre(colour_mask(field, (236, 236, 236)), 34),
        "player": box_centre(colour_mask(field[:, 140:144], (92, 186, 92)), 34, 140),
        "enemy": box_centre(colour_mask(field[:, 16:20], (213, 130, 74)), 34, 16),
    }


def find_freeway(frame):
    strip = colour_mask(frame[14:, 44:51], (252, 252, 84))  # below the score, which turns yellow at the end
    strip[[102 - 14, 104 - 14], :4] = False  # the yellow centre line's dashes at these columns
    return {"chicken": box_centre(strip, 14, 44)}


def _boxer_body(mask: np.ndarray, other: np.ndarray, top: int, left: int) -> Found:
    """A boxer's body centre: its rows' middle, and 6.5 px in from its edge away from the other boxer
    (its punching arm grows toward the other one; the body is 14 px wide)."""
    ys, xs = np.nonzero(mask)
    oys, oxs = np.nonzero(other)
    if len(ys) == 0 or len(oys) == 0:
        return None
    faces_right = xs.mean() < oxs.mean()
    x = xs.min() + 6.5 if faces_right else xs.max() - 6.5
    return (ys.min() + ys.max()) / 2 + top, x + left


def find_boxing(frame):
    ring = frame[30:186, 8:]
    white, black = colour_mask(ring, (214, 214, 214)), colour_mask(ring, (0, 0, 0))
    return {"player": _boxer_body(white, black, 30, 8), "enemy": _boxer_body(black, white, 30, 8)}


def find_space_invaders(frame):
    return {
        "player": box_centre(colour_mask(frame[175:195], (50, 132, 50)), 175),
        "invaders": box_centre(colour_mask(frame[20:195], (134, 134, 29)), 20),
    }


MSPACMAN_COLOURS = {
    "player": (210, 164, 74),
    "ghost_sue": (180, 122, 48),
    "ghost_inky": (84, 184, 153),
    "ghost_pinky": (198, 89, 179),
    "ghost_blinky": (200, 72, 72),
}
MSPACMAN_FRIGHTENED = [(66, 114, 194), (214, 214, 214)]  # every ghost, after a power pill (flashing)
MSPACMAN_SCENERY = [(0, 28, 136), (228, 111, 111), (0, 0, 0)]  # corridors, walls and pellets, black


def find_ms_pacman(frame):
    maze = frame[:172]
    found: dict = {name: box_centre(colour_mask(maze, colour)) for name, colour in MSPACMAN_COLOURS.items()}
    frightened = np.zeros(maze.shape[:2], dtype=bool)
    for colour in MSPACMAN_FRIGHTENED:
        frightened |= colour_mask(maze, colour)
    found["frightened"] = blobs(frightened)
    other = ~frightened
    for colour in [*MSPACMAN_COLOURS.values(), *MSPACMAN_SCENERY]:
        other &= ~colour_mask(maze, colour)
    found["fruit"] = box_centre(other)  # whatever else is in the maze: the fruit's colours vary
    return found


SEAQUEST_WATER = [(0, 28, 136), (0, 48, 100)]  # water and the sea bed's top rows
SEAQUEST_PLAYER = (187, 187, 53)
SEAQUEST_DIVER = (66, 72, 200)


def find_seaquest(frame):
    sea = frame[40:160, 8:]  # below the surface line; columns 0-7 are the black HMOVE bar
    sub = colour_mask(sea, SEAQUEST_PLAYER)
    sub[:, sub.sum(0) < 2] = False  # the player's torpedo: one row of the same yellow
    found: dict = {"player": box_centre(sub, 40, 8)}
    for n in range(1, SEAQUEST_LANES + 1):
        top = 137 - 24 * (SEAQUEST_LANES - n)
        lane = frame[top - 4 : top + 14, 8:]
        diver = colour_mask(lane, SEAQUEST_DIVER)
        enemy = ~(diver | colour_mask(lane, SEAQUEST_PLAYER))
        for colour in SEAQUEST_WATER:
            enemy &= ~colour_mask(lane, colour)
        found[f"enemies{n}"] = column_blobs(enemy, top - 4, 8)
        found[f"divers{n}"] = column_blobs(diver, top - 4, 8)
    return found


# ---------------------------------------------------------------- how each game is played


def random_policy(rng, ram, n_actions):
    return int(rng.integers(n_actions))


def freeway_policy(rng, ram, n_actions):
    return int(rng.choice(3, p=[0.15, 0.7, 0.15]))  # NOOP, UP, DOWN: mostly crossing the road


class MsPacmanPolicy:
    """Run along a corridor until stuck, then turn at random: eats pellets (and so brings the fruit)
    much faster than random actions."""

    def __init__(self):
        self.last, self.action = None, 1

    def __call__(self, rng, ram, n_actions):
        here = (int(ram[10]), int(ram[16]))
        if here == self.last or rng.random() < 0.05:
            self.action = int(rng.integers(1, 5))  # UP, RIGHT, LEFT, DOWN
        self.last = here
        return self.action


def swap_boxers(ale, step: int) -> None:
    """Every 100 steps, put the boxers on the other's side by writing their x into the RAM: in play the
    player almost never gets past the enemy, and the sprites' geometry differs by side."""
    if step % 100 == 50:
        x = ale.getRAM()
        ale.setRAM(32, int(x[33]))
        ale.setRAM(33, int(x[32]))


def fill_lanes(ale, step: int) -> None:
    """Every 50 steps, give each lane that has enemies all three (RAM variation 7): the first waves
    never use the middle slot, which the game draws once the RAM asks for it."""
    if step % 50 == 10:
        ram = ale.getRAM()
        for i in range(SEAQUEST_LANES):
            if ram[36 + i] % 8:
                ale.setRAM(36 + i, int(ram[36 + i]) | 7)


class SeaquestPolicy:
    """Swim to a random depth, drift sideways, fire: visits every lane."""

    MOVES = {(0, 0): 1, (-1, 0): 10, (1, 0): 13, (0, 1): 11, (0, -1): 12, (-1, 1): 14, (-1, -1): 15, (1, 1): 16}
    MOVES[(1, -1)] = 17

    def __init__(self):
        self.steps, self.depth, self.side = 0, 60, 0

    def __call__(self, rng, ram, n_actions):
        if self.steps % 20 == 0:
            self.depth, self.side = int(rng.integers(13, 109)), int(rng.integers(-1, 2))
        self.steps += 1
        y = int(ram[97])
        down = 0 if abs(y - self.depth) < 3 else (1 if y < self.depth else -1)
        return self.MOVES[(down, self.side)]


@dataclass
class Game:
    env: str
    find: Callable[[np.ndarray], dict]
    policy: Callable[[], Callable] = lambda: random_policy
    groups: dict[str, list[str]] = field(default_factory=dict)  # blob list in find's output -> objects
    intervene: Callable | None = None  # (ale, step) -> None, before the step: RAM writes to reach rare states


GAMES = {
    "Pong": Game("Pong", find_pong),
    "Freeway": Game("Freeway", find_freeway, lambda: freeway_policy),
    "Boxing": Game("Boxing", find_boxing, intervene=swap_boxers),
    "SpaceInvaders": Game("SpaceInvaders", find_space_invaders),
    "MsPacman": Game("MsPacman", find_ms_pacman, MsPacmanPolicy, {"frightened": list(MSPACMAN_GHOSTS)}),
    "Seaquest": Game(
        "Seaquest",
        find_seaquest,
        SeaquestPolicy,
        {
            **{f"enemies{n}": [f"enemy{n}_{k}" for k in (1, 2, 3)] for n in range(1, SEAQUEST_LANES + 1)},
            **{f"divers{n}": [f"diver{n}"] for n in range(1, SEAQUEST_LANES + 1)},
        },
        intervene=fill_lanes,
    ),
}


# ---------------------------------------------------------------- comparing


def match(ram_found: dict[str, np.ndarray], frame_found: dict, groups: dict[str, list[str]]) -> dict[str, Found]:
    """Frame position per object: its own entry, or the nearest free blob of its group within MATCH_PX."""
    out = {name: frame_found[name] for name in ram_found if frame_found.get(name) is not None}
    for group, names in groups.items():
        free = list(frame_found.get(group, []))
        pairs = sorted(
            (float(np.hypot(*(np.subtract(blob, ram_found[name])))), name, b)
            for name in names
            if np.isfinite(ram_found[name]).all()
            for b, blob in enumerate(free)
        )
        taken: set = set()
        for dist, name, b in pairs:
            if dist <= MATCH_PX and name not in out and b not in taken:
                out[name], _ = free[b], taken.add(b)
        for name in names:
            out.setdefault(name, None)
        unmatched = [blob for b, blob in enumerate(free) if b not in taken]
        out[f"{group} (unmatched blobs)"] = unmatched
    return out


@dataclass
class Tally:
    """Per object over a run: where the RAM and the frame put it."""

    ram_on: int = 0  # steps the RAM says it is on screen
    drawn: int = 0  # ... and the frame shows it
    pooled: int = 0  # ... and the frame or the one before shows it (SB3 max-pools these two for the agent)
    frame_only: int = 0  # the frame shows it, the RAM says it is not there
    errors: list = field(default_factory=list)  # px between the two centres, steps with both

    def row(self, name: str) -> dict:
        e = np.array(self.errors, dtype=float)
        stats = (
            dict(
                median=float(np.median(e)),
                p95=float(np.percentile(e, 95)),
                max=float(e.max()),
                within1=float((e <= 1).mean()),
                within2=float((e <= 2).mean()),
            )
            if len(e)
            else dict(median=np.nan, p95=np.nan, max=np.nan, within1=np.nan, within2=np.nan)
        )
        return dict(
            object=name,
            ram_on=self.ram_on,
            drawn=self.drawn / self.ram_on if self.ram_on else np.nan,
            pooled=self.pooled / self.ram_on if self.ram_on else np.nan,
            frame_only=self.frame_only,
            **stats,
        )


def previous_frame(venv):
    """A callable giving the frame before the last one of a step, from SB3's ``MaxAndSkipEnv`` (whose
    max over its two buffered frames is what the agent sees)."""
    from stable_baselines3.common.atari_wrappers import MaxAndSkipEnv

    env = venv.unwrapped.envs[0]
    while not isinstance(env, MaxAndSkipEnv):
        env = env.env
    return lambda: env._obs_buffer[0]  # its own buffer: [frame before the last, last frame]


def play(
    game: str,
    steps: int,
    seed: int = 0,
    on_step: Callable | None = None,
    analyse_from: int = 0,
    pooled: bool = True,
) -> dict[str, Tally]:
    """Play ``steps`` steps of ``game`` and tally, per object, the RAM against the frame.

    Args:
        analyse_from: steps before this one are only played (to reach, e.g., MsPacman's fruit).
        pooled: also look for each object in the frame before the last (the ``in last 2`` column).
        on_step: called as ``(step, frame, {name: (y, x)}, [names drawn])`` for each analysed step.
    """
    spec = GAMES[game]
    venv, info = make_env(spec.env, n_envs=1, seed=seed)
    before_last = previous_frame(venv)
    rng = np.random.default_rng(seed)
    policy = spec.policy()
    n_actions = venv.action_space.n
    tallies: dict[str, Tally] = {}
    try:
        venv.reset()
        for step in range(steps):
            if spec.intervene is not None:
                spec.intervene(venv.unwrapped.envs[0].unwrapped.ale, step)
            venv.step(np.array([policy(rng, env_rams(venv)[0], n_actions)]))
            if step < analyse_from:
                continue
            frame = venv.get_images()[0]
            ram_found = {name: centres[0] for name, centres in positions(venv, info.env_id).items()}
            frame_found = match(ram_found, spec.find(frame), spec.groups)
            earlier = match(ram_found, spec.find(before_last()), spec.groups) if pooled else {}
            for name, centre in ram_found.items():
                tally = tallies.setdefault(name, Tally())
                seen, on = frame_found.get(name), bool(np.isfinite(centre).all())
                tally.ram_on += on
                tally.drawn += on and seen is not None
                tally.pooled += on and (seen is not None or earlier.get(name) is not None)
                tally.frame_only += (not on) and seen is not None
                if on and seen is not None:
                    tally.errors.append(float(np.hypot(*np.subtract(seen, centre))))
            for group in spec.groups:
                tally = tallies.setdefault(f"{group} (unmatched blobs)", Tally())
                tally.frame_only += len(frame_found[f"{group} (unmatched blobs)"])
            if on_step is not None:
                drawn = [name for name in ram_found if frame_found.get(name) is not None]
                on_step(step, frame, ram_found, drawn)
    finally:
        venv.close()
    return tallies


# ---------------------------------------------------------------- pictures


def _overlaps(box, boxes) -> bool:
    return any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes)


def picture(frame: np.ndarray, found: dict[str, np.ndarray], scale: int = 3):
    """The frame, upscaled, with each given RAM position ``(y, x)`` marked by a ring and its name.

    A name goes right of its ring, else above, below or left: the first place that covers no ring
    and no other name and stays inside the picture.
    """
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    centres = [((y + 0.5) * scale, (x + 0.5) * scale) for y, x in found.values()]
    taken = [(cx - 10, cy - 10, cx + 10, cy + 10) for cy, cx in centres]
    for (cy, cx), name in zip(centres, found, strict=True):
        for colour, width in (((0, 0, 0), 4), ((255, 255, 255), 2)):  # a white ring edged in black
            draw.ellipse([cx - 9, cy - 9, cx + 9, cy + 9], outline=colour, width=width)
        draw.line([cx - 3, cy, cx + 3, cy], fill=(255, 255, 255))
        draw.line([cx, cy - 3, cx, cy + 3], fill=(255, 255, 255))
        width, height = draw.textlength(name, font=font), 12
        places = [
            (cx + 12, cy - height / 2),
            (cx - width / 2, cy - 12 - height),
            (cx - width / 2, cy + 12),
            (cx - 12 - width, cy - height / 2),
        ]
        boxes = [(x, y, x + width, y + height) for x, y in places]
        inside = [b for b in boxes if b[0] >= 0 and b[1] >= 0 and b[2] <= image.width and b[3] <= image.height]
        box = next((b for b in inside if not _overlaps(b, taken)), inside[0] if inside else boxes[0])
        taken.append(box)
        draw.text(box[:2], name, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=list(GAMES), choices=list(GAMES))
    parser.add_argument("--steps", type=int, default=600, help="agent steps per game (4 frames each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pictures", type=Path, help="folder for objects_<game>.png")
    args = parser.parse_args(argv)
    print(
        "| game | object | RAM on screen | drawn | in last 2 | frame only | median px | p95 px | max px | <= 1 px | <= 2 px |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for game in args.games:
        shot = {"drawn": -1}

        def keep(step, frame, found, drawn, shot=shot):
            if len(drawn) >= shot["drawn"]:  # the picture: the last frame among those showing the most objects
                shot.update(frame=frame.copy(), found={name: found[name] for name in drawn}, drawn=len(drawn))

        tallies = play(game, args.steps, args.seed, keep)
        for name, tally in sorted(tallies.items()):
            r = tally.row(name)
            drawn = f"{r['drawn']:.0%} | {r['pooled']:.0%}" if r["ram_on"] else "- | -"
            stats = (
                f"{r['median']:.1f} | {r['p95']:.1f} | {r['max']:.1f} | {r['within1']:.0%} | {r['within2']:.0%}"
                if tally.errors
                else "- | - | - | - | -"
            )
            print(f"| {game} | {name} | {r['ram_on']} | {drawn} | {r['frame_only']} | {stats} |")
        if args.pictures and shot:
            args.pictures.mkdir(parents=True, exist_ok=True)
            picture(shot["frame"], shot["found"]).save(args.pictures / f"objects_{game.lower()}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
