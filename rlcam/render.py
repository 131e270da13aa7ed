"""Pixels for the video: heat blended over the game frame, the panel beside it, the all-actions grid.

Pure numpy/Pillow and no file I/O. The data path of one video frame is
``frame (H, W, 3) uint8 RGB + heat (H, W) float in [0, 1] -> (H*s, W*s + panel_w, 3) uint8 RGB``.
Blending runs in Pillow's C loops on 8-bit images because it happens every env step at 630x480.
The colormap lives in ``rlcam.colormap``, the panel in ``rlcam.panel``; both are re-exported here.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw

from rlcam.colormap import _LUT_DOWN_PALETTE, _LUT_PALETTE, LUT, _heat_index, colormap
from rlcam.panel import (
    _ACCENT,
    _BG,
    _DIM,
    PanelInfo,
    _fit,
    _fmt_bar,
    _font,
    _panel_image,
    _text,
    default_panel_width,
    draw_panel,
)

__all__ = [
    "LUT",
    "PanelInfo",
    "colormap",
    "compose",
    "default_panel_width",
    "draw_action_grid",
    "draw_panel",
    "grid_tile_size",
    "overlay",
    "view_width",
]


# --- blending ---------------------------------------------------------------------------------


def _as_index(heat: np.ndarray) -> np.ndarray:
    """Colormap indices: uint8 heat is taken as indices already, float heat in [0, 1] is quantised."""
    return np.ascontiguousarray(heat) if heat.dtype == np.uint8 else _heat_index(heat)


@functools.lru_cache(maxsize=8)
def _mask_table(alpha: float) -> tuple[int, ...]:
    """LUT index -> Pillow mask byte: opacity ``alpha * heat`` scaled to 0..255."""
    return tuple(round(alpha * i) for i in range(256))


def _check_alpha(alpha: float) -> float:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return float(alpha)


def _paint_heat(canvas: Image.Image, index: Image.Image, alpha: float, palette: bytes = _LUT_PALETTE) -> None:
    """Blend the colormapped ``index`` ("L" image of LUT indices) onto ``canvas`` in place.

    Pillow's masked paste computes ``dst + (src - dst) * mask / 255`` with exact rounding, so a
    mask of 0 (heat 0) leaves ``dst`` bit-for-bit unchanged.
    """
    colour = index.copy()
    colour.putpalette(palette)  # "L" -> "P": the index image now reads as colormap colours
    canvas.paste(colour.convert("RGB"), (0, 0), index.point(_mask_table(alpha)))


def overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Paint the colormapped heat over a frame with per-pixel opacity ``alpha * heat``.

    Low attention leaves the game visible: pixels where ``heat == 0`` come back unchanged.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        heat: ``(H, W)`` float in [0, 1], already normalised by the caller (clipped; NaN -> 0).
        alpha: Opacity of the colour where ``heat == 1``, in [0, 1].

    Returns:
        ``(H, W, 3)`` uint8 RGB, a new writable array.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or heat.shape != frame.shape[:2]:
        raise ValueError(
            f"overlay needs frame (H, W, 3) uint8 and heat (H, W); got {frame.shape} {frame.dtype} and {heat.shape}"
        )
    canvas = Image.fromarray(np.ascontiguousarray(frame))
    _paint_heat(canvas, Image.fromarray(_heat_index(heat)), _check_alpha(alpha))
    return np.asarray(canvas).copy()  # np.array(image) takes a much slower path


# --- the all-actions grid -----------------------------------------------------------------------

_GRID_MAX_COLS = 6


def view_width(frame_hw: tuple[int, int], scale: int, panel_width: int | None = None) -> int:
    """Width of :func:`compose`'s view (upscaled game + panel) before even-size padding: the width
    the all-actions grid under it is laid out for."""
    panel = default_panel_width(frame_hw[0] * scale) if panel_width is None else int(panel_width)
    return frame_hw[1] * scale + panel


def grid_tile_size(frame_hw: tuple[int, int], width: int, n_actions: int) -> tuple[int, int, int, int]:
    """Layout of the all-actions grid under a ``width``-px video: ``(cols, rows, tile_h, tile_w)``.

    Up to six tiles per row, as wide as the row allows but never more than twice the frame.
    """
    h, w = frame_hw
    cols = max(1, min(n_actions, _GRID_MAX_COLS))
    rows = -(-n_actions // cols)
    gap = _grid_gap(width)
    tile_w = min(2 * w, int((width - gap * (cols + 1)) / cols))
    tile_h = max(1, round(tile_w * h / w))
    return cols, rows, tile_h, tile_w


def _grid_gap(width: int) -> int:
    return max(2, round(width / 120))


def draw_action_grid(
    frame: np.ndarray, heats: np.ndarray, info: PanelInfo, width: int, cam_scale: float, alpha: float = 0.6
) -> np.ndarray:
    """One small map per action under the main view, all on one colour scale.

    Each tile is the game frame with that action's map over it, captioned with the action's
    name and its probability or Q-value; the action taken is framed in the accent colour.

    Args:
        frame: Raw game frame ``(H, W, 3)`` uint8 RGB.
        heats: ``(A, tile_h, tile_w)`` colormap indices (uint8) or floats in [0, 1], one per
            action in ``info.action_names`` order, at the size :func:`grid_tile_size` gives.
        info: The step's panel info (names, bars, chosen action).
        width: Width of the video frame in pixels.
        cam_scale: The raw map value shown as full heat in every tile.
        alpha: Heat opacity at full attention.

    Returns:
        ``(grid_h, width, 3)`` uint8 RGB.
    """
    names = [str(n) for n in info.action_names]
    cols, rows, tile_h, tile_w = grid_tile_size(frame.shape[:2], width, len(names))
    if heats.shape != (len(names), tile_h, tile_w):
        raise ValueError(f"heats must be {(len(names), tile_h, tile_w)} for this layout, got {heats.shape}")
    gap = _grid_gap(width)
    font = _font(max(9, min(16, round(tile_w / 11))))
    caption_h = round(font.size * 1.5)
    title_h = round(font.size * 1.8)
    grid_h = title_h + rows * (caption_h + tile_h + gap) + gap
    img = Image.new("RGB", (width, grid_h), _BG)
    draw = ImageDraw.Draw(img)
    title = f"every {info.tile_kind}'s map, one scale: 0 .. {cam_scale:.3g}"
    _text(img, (gap, round(font.size * 0.4)), title, font, _DIM)
    game = Image.fromarray(np.ascontiguousarray(frame)).resize((tile_w, tile_h), Image.Resampling.NEAREST)
    bars = np.asarray(info.bars, dtype=np.float64).reshape(-1)
    for a, name in enumerate(names):
        row, col = divmod(a, cols)
        x = gap + col * (tile_w + gap)
        y = title_h + row * (caption_h + tile_h + gap)
        tile = game.copy()
        _paint_heat(tile, Image.fromarray(_as_index(heats[a])), _check_alpha(alpha))
        img.paste(tile, (x, y + caption_h))
        chosen = a in info.chosen_rows()
        label = _fit(draw, f"{name}  {_fmt_bar(bars[a], info.bar_kind)}", font, tile_w)
        _text(img, (x, y + caption_h / 2), label, font, _ACCENT if chosen else _DIM, anchor="lm")
        if chosen:
            draw.rectangle([x - 1, y + caption_h - 1, x + tile_w, y + caption_h + tile_h], outline=_ACCENT, width=2)
    return np.asarray(img)


def compose(
    frame: np.ndarray,
    heat: np.ndarray,
    info: PanelInfo,
    scale: int = 3,
    alpha: float = 0.6,
    panel_width: int | None = None,
    action_heats: np.ndarray | None = None,
    action_scale: float = 0.0,
    heat_down: np.ndarray | None = None,
    grid_info: PanelInfo | None = None,
) -> np.ndarray:
    """Build one video frame: the upscaled game with the heat over it, the panel to its right.

    Args:
        frame: Raw game frame ``(H, W, 3)`` uint8 RGB, e.g. 210x160 for Atari.
        heat: Normalised map in [0, 1], either ``(H, W)`` (upscaled bilinearly here) or already
            ``(H*scale, W*scale)``; or, as uint8, the colormap indices ``round(255 * heat)``
            (what the recorder computes in one pass).
        info: What the panel shows.
        scale: Integer upscale factor of the game frame, nearest neighbour so pixels stay crisp.
        alpha: Heat opacity at full attention, in [0, 1].
        panel_width: Panel width in pixels; :func:`default_panel_width` of the height if None.
        action_heats: Optional ``(A, tile_h, tile_w)`` maps of every action for the grid drawn
            under the view (:func:`draw_action_grid`; sizes from :func:`grid_tile_size`).
        action_scale: The raw map value shown as full heat in the grid's tiles.
        heat_down: For signed targets, the counterfactual map (what pushes the score down), like
            ``heat`` and on the same scale, painted over it in the cool ramp ``LUT_DOWN``.
        grid_info: What the grid's captions show (tile names, values, the taken tile), when the
            tiles are not the panel's bars (action components, action parts); default ``info``.

    Returns:
        ``(H*scale + grid_h, W*scale + panel_width, 3)`` uint8 RGB (``grid_h`` 0 without a grid),
        plus one black row and/or column where needed to make both sides even (H.264 in yuv420p
        requires it).
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    if not (isinstance(scale, int | np.integer) and scale >= 1):
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    h, w = frame.shape[:2]
    big_h, big_w = h * scale, w * scale
    if heat.shape == (h, w):
        # Quantise before resizing: Pillow upsamples 8-bit images far faster than float ones.
        index = Image.fromarray(_as_index(heat))
        if scale > 1:
            index = index.resize((big_w, big_h), Image.Resampling.BILINEAR)
    elif heat.shape == (big_h, big_w):
        index = Image.fromarray(_as_index(heat))
    else:
        raise ValueError(f"heat must be {(h, w)} or {(big_h, big_w)} for frame {frame.shape}, got {heat.shape}")
    pw = view_width((h, w), scale, panel_width) - big_w

    game = Image.fromarray(np.ascontiguousarray(frame))
    if scale > 1:
        game = game.resize((big_w, big_h), Image.Resampling.NEAREST)
    else:
        game = game.copy()  # painted in place below; the caller's frame must stay as it is
    _paint_heat(game, index, _check_alpha(alpha))
    if heat_down is not None:
        if heat_down.shape != heat.shape:
            raise ValueError(f"heat_down must be shaped like heat {heat.shape}, got {heat_down.shape}")
        down = Image.fromarray(_as_index(heat_down))
        if down.size != (big_w, big_h):
            down = down.resize((big_w, big_h), Image.Resampling.BILINEAR)
        _paint_heat(game, down, alpha, _LUT_DOWN_PALETTE)
    # Assemble in numpy rather than on a Pillow canvas: one big allocation fewer, and the result
    # is writable (arrays exported from Pillow images are read-only).
    grid = None
    if action_heats is not None:
        grid = draw_action_grid(frame, action_heats, grid_info or info, big_w + pw, action_scale, alpha)
    total_h = big_h + (0 if grid is None else len(grid))
    out = np.zeros((total_h + total_h % 2, big_w + pw + (big_w + pw) % 2, 3), dtype=np.uint8)  # black padding
    out[:big_h, :big_w] = np.asarray(game)
    out[:big_h, big_w : big_w + pw] = np.asarray(_panel_image(info, big_h, pw))
    if grid is not None:
        out[big_h:total_h, : big_w + pw] = grid
    return out
