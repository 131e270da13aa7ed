"""CarRacing's road drawn with the same pixels in a fraction of the time (``rlcam record`` uses it).

Gymnasium's ``CarRacing._render_road`` rotates and culls about 700 polygons (background, 400
grass patches, ~300 road tiles) one ``pygame.math.Vector2`` at a time in Python, every frame, to
draw the ~90 that are on screen: 80% of a step's time here (26 ms of 33 on this machine).
``speed_up(env)`` swaps in a version that does the same arithmetic on all vertices at once with
numpy (the same IEEE operations in the same order, and the rotation computed as pygame-ce's
``_vector2_rotate_helper`` does, special cases included) and then draws exactly the polygons the
original would, in its order, with the same ``gfxdraw`` calls. Observations are bit-identical to
the stock env's: ``tests/test_fast_carracing.py`` checks that frame by frame against an unpatched
env, and each patched env checks its own first ``CHECKED_FRAMES`` frames against the original
drawing, going back to it for good (with a warning) on any difference, so a pygame or gymnasium
release that draws otherwise cannot change what an agent sees.
"""

from __future__ import annotations

import math
import types
import warnings

import numpy as np

EPSILON = 1e-6  # pygame-ce's VECTOR_EPSILON, the default epsilon of every Vector2
TWO_PI = 2.0 * math.pi
HALF_PI = math.pi / 2.0
CHECKED_FRAMES = 3  # each env's first frames drawn both ways and compared


def rotate(xy: np.ndarray, angle: float) -> np.ndarray:
    """``Vector2(x, y).rotate_rad(angle)`` for every row of ``xy`` (float64, shape (..., 2))."""
    angle = math.fmod(angle, TWO_PI)
    if angle < 0:
        angle += TWO_PI
    x, y = xy[..., 0], xy[..., 1]
    if math.fmod(angle + EPSILON, HALF_PI) < 2 * EPSILON:  # pygame's exact quarter turns
        quarter = int((angle + EPSILON) / HALF_PI) % 4
        turned = [(x, y), (-y, x), (-x, -y), (y, -x)][quarter]
        return np.stack(turned, axis=-1)
    s, c = math.sin(angle), math.cos(angle)
    return np.stack([c * x - s * y, s * x + c * y], axis=-1)


def _grass(module) -> np.ndarray:
    dim = module.GRASS_DIM
    patches = [
        [
            (dim * x + dim, dim * y + 0),
            (dim * x + 0, dim * y + 0),
            (dim * x + 0, dim * y + dim),
            (dim * x + dim, dim * y + dim),
        ]
        for x in range(-20, 20, 2)
        for y in range(-20, 20, 2)
    ]
    return np.asarray(patches, dtype=np.float64)


def speed_up(env) -> None:
    """Give ``env`` (a CarRacing, wrapped or not) the vectorised road renderer, in place."""
    from gymnasium.envs.box2d import car_racing
    from pygame import gfxdraw

    racing = env.unwrapped
    if not isinstance(racing, car_racing.CarRacing):
        raise TypeError(f"speed_up wants a CarRacing env, got {type(racing).__name__}")
    bounds = car_racing.PLAYFIELD
    field = np.asarray([(bounds, bounds), (bounds, -bounds), (-bounds, -bounds), (-bounds, bounds)], dtype=np.float64)
    grass = _grass(car_racing)
    low = -car_racing.MAX_SHAPE_DIM
    high_x = car_racing.WINDOW_W + car_racing.MAX_SHAPE_DIM
    high_y = car_racing.WINDOW_H + car_racing.MAX_SHAPE_DIM
    cache: dict = {}

    def road_vertices(road_poly) -> np.ndarray:
        # road_poly is rebuilt on every reset (a new list); its vertices never move after that.
        if cache.get("road") is not road_poly:
            cache["road"] = road_poly
            cache["vertices"] = np.asarray([[(p[0], p[1]) for p in poly] for poly, _ in road_poly], dtype=np.float64)
        return cache["vertices"]

    def to_screen(polys: np.ndarray, zoom, translation, angle) -> np.ndarray:
        turned = rotate(polys, angle)
        return np.stack([turned[..., 0] * zoom + translation[0], turned[..., 1] * zoom + translation[1]], axis=-1)

    def visible(screen: np.ndarray) -> np.ndarray:
        x, y = screen[..., 0], screen[..., 1]
        return ((low <= x) & (x <= high_x) & (low <= y) & (y <= high_y)).any(axis=-1)

    def draw(surface, points: list, color) -> None:
        points = [tuple(p) for p in points]
        gfxdraw.aapolygon(surface, points, color)
        gfxdraw.filled_polygon(surface, points, color)

    def fast_road(self, zoom, translation, angle):
        draw(self.surf, to_screen(field, zoom, translation, angle).tolist(), self.bg_color)  # never culled
        screen = to_screen(grass, zoom, translation, angle)
        for i in np.flatnonzero(visible(screen)):
            draw(self.surf, screen[i].tolist(), self.grass_color)
        if not self.road_poly:
            return
        screen = to_screen(road_vertices(self.road_poly), zoom, translation, angle)
        for i in np.flatnonzero(visible(screen)):
            color = [int(c) for c in self.road_poly[i][1]]  # read each frame: a visited tile changes colour
            draw(self.surf, screen[i].tolist(), color)

    checked = 0  # frames drawn both ways so far

    def render_road(self, zoom, translation, angle):
        nonlocal checked
        if checked >= CHECKED_FRAMES:
            fast_road(self, zoom, translation, angle)
            return
        import pygame

        blank = self.surf.copy()
        stock(self, zoom, translation, angle)
        drawn, self.surf = self.surf, blank
        fast_road(self, zoom, translation, angle)
        same = np.array_equal(pygame.surfarray.array3d(drawn), pygame.surfarray.array3d(self.surf))
        self.surf = drawn  # the original's drawing, either way
        checked += 1
        if not same:
            warnings.warn(
                "rlcam's fast CarRacing road drawing differs from this gymnasium/pygame's; using the original.",
                stacklevel=2,
            )
            del self._render_road  # the class's method again

    stock = car_racing.CarRacing._render_road
    racing._render_road = types.MethodType(render_road, racing)
