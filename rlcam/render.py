"""Pixels for the video: a perceptual colormap, heat blending and the annotation panel.

Pure numpy/Pillow and no file I/O. The data path of one video frame is
``frame (H, W, 3) uint8 RGB + heat (H, W) float in [0, 1] -> (H*s, W*s + panel_w, 3) uint8 RGB``.
Blending runs in Pillow's C loops on 8-bit images because it happens every env step at 630x480;
the parts of the panel that do not change between steps are drawn once and cached.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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
]


# --- colormap ---------------------------------------------------------------------------------

# D65 reference white and the XYZ -> linear sRGB matrix (IEC 61966-2-1).
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_XYZ_TO_LINEAR_SRGB = np.array(
    [
        [3.2406, -1.5372, -0.4986],
        [-0.9689, 1.8758, 0.0415],
        [0.0557, -0.2040, 1.0570],
    ]
)

# Control points (position in [0, 1], value) of the ramp in CIE LCh. Hue is in degrees and
# unwrapped, so 285 -> 460 sweeps blue-purple -> magenta -> red (~25) -> orange (~60) -> yellow
# (~100). Chroma starts low (a near-black cannot be colourful), peaks through red and orange, and
# eases off so the top end is a bright pale yellow.
_HUE_POINTS = ((0.0, 285.0), (0.25, 315.0), (0.5, 385.0), (0.75, 420.0), (1.0, 460.0))
_CHROMA_POINTS = ((0.0, 15.0), (0.25, 50.0), (0.5, 75.0), (0.75, 80.0), (1.0, 55.0))
_L_MIN, _L_MAX = 5.0, 95.0


def _lch_to_linear_srgb(lightness: np.ndarray, chroma: np.ndarray, hue_deg: np.ndarray) -> np.ndarray:
    """CIE LCh(ab) under D65 -> linear sRGB, not clipped: three (N,) arrays -> (N, 3)."""
    a = chroma * np.cos(np.radians(hue_deg))
    b = chroma * np.sin(np.radians(hue_deg))
    fy = (lightness + 16.0) / 116.0
    f = np.stack([fy + a / 500.0, fy, fy - b / 200.0], axis=-1)
    delta = 6.0 / 29.0
    xyz = np.where(f > delta, f**3, 3.0 * delta**2 * (f - 4.0 / 29.0)) * _WHITE_D65
    return xyz @ _XYZ_TO_LINEAR_SRGB.T


def _build_lut(n: int = 256) -> np.ndarray:
    """The (n, 3) uint8 ramp: L* linear in position, chroma reduced where sRGB cannot show it."""
    t = np.linspace(0.0, 1.0, n)
    lightness = _L_MIN + (_L_MAX - _L_MIN) * t
    hue = np.interp(t, *zip(*_HUE_POINTS, strict=True)) % 360.0
    chroma = np.interp(t, *zip(*_CHROMA_POINTS, strict=True))
    # Gamut clipping by bisection on a chroma factor: clipping RGB channels instead would shift
    # lightness and break the monotonic ramp, while shrinking chroma keeps L* and hue exact.
    lo, hi = np.zeros(n), np.ones(n)
    for _ in range(40):
        mid = (lo + hi) / 2.0
        rgb = _lch_to_linear_srgb(lightness, chroma * mid, hue)
        inside = np.all((rgb >= 0.0) & (rgb <= 1.0), axis=-1)
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    linear = np.clip(_lch_to_linear_srgb(lightness, chroma * lo, hue), 0.0, 1.0)
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1.0 / 2.4) - 0.055)
    return np.round(srgb * 255.0).astype(np.uint8)


LUT: np.ndarray = _build_lut()  # (256, 3) uint8 RGB, built once at import (well under 1 ms)
LUT.setflags(write=False)
_LUT_PALETTE = LUT.tobytes()  # the same table as a Pillow "P"-mode palette


def _heat_index(heat: np.ndarray) -> np.ndarray:
    """Float heat (any shape) -> nearest LUT index, uint8 of the same shape.

    ``fmax`` maps NaN to 0 (``clip`` would keep it, and casting NaN to an integer is undefined).
    """
    h = np.minimum(np.fmax(np.asarray(heat, dtype=np.float32), np.float32(0.0)), np.float32(1.0))
    return (h * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB through the 256-entry perceptual ramp :data:`LUT`.

    Args:
        values: Any shape, float; clipped to [0, 1]; NaN counts as 0.

    Returns:
        ``(*values.shape, 3)`` uint8 RGB.
    """
    return LUT[_heat_index(values)]


# --- blending ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _mask_table(alpha: float) -> tuple[int, ...]:
    """LUT index -> Pillow mask byte: opacity ``alpha * heat`` scaled to 0..255."""
    return tuple(round(alpha * i) for i in range(256))


def _check_alpha(alpha: float) -> float:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return float(alpha)


def _paint_heat(canvas: Image.Image, index: Image.Image, alpha: float) -> None:
    """Blend the colormapped ``index`` ("L" image of LUT indices) onto ``canvas`` in place.

    Pillow's masked paste computes ``dst + (src - dst) * mask / 255`` with exact rounding, so a
    mask of 0 (heat 0) leaves ``dst`` bit-for-bit unchanged.
    """
    colour = index.copy()
    colour.putpalette(_LUT_PALETTE)  # "L" -> "P": the index image now reads as colormap colours
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


# --- annotation panel -------------------------------------------------------------------------

_BG = (18, 18, 24)
_TEXT = (232, 232, 236)
_DIM = (150, 150, 162)
_RULE = (52, 52, 64)
_BAR_BG = (38, 38, 48)
_BAR = (92, 112, 150)
# The warm end of the colormap marks the chosen action, tying it visually to the heat.
_BAR_CHOSEN = tuple(int(c) for c in LUT[200])
_ACCENT = tuple(int(c) for c in LUT[235])
_MIN_LABEL_ROW = 9.0  # px: below this a bar row cannot hold legible text


@dataclass
class PanelInfo:
    """Everything the panel shows for one step of one env.

    Attributes:
        step: Global step counter.
        episode: Episode index, shown as given.
        action_names: One name per discrete action, e.g. ``["NOOP", "FIRE", ...]``.
        action: Index of the action actually taken.
        bars: ``(A,)`` float: probabilities in [0, 1] (``bar_kind="prob"``) or Q-values (``"q"``).
        bar_kind: ``"prob"`` for PPO/A2C action probabilities, ``"q"`` for DQN Q-values.
        value: State value V(s), or None when the algorithm has none.
        reward: Reward received for this step.
        episode_return: Sum of rewards so far in this episode.
        target: What the map explains, e.g. ``"log-prob"``.
        method: CAM method, e.g. ``"gradcam"``.
        layer: Name of the hooked layer.
        norm: Normalisation in use, e.g. ``"episode"``.
        cam_scale: The normaliser value: a raw map value of ``cam_scale`` shows as full heat.
        env_index: Which of the vectorised envs this frame belongs to.
        frame_shares: ``(C,)`` each stacked input frame's share of the map, oldest first, for
            methods that attribute to the input (``guided``); None or empty to leave it out.
    """

    step: int
    episode: int
    action_names: list[str]
    action: int
    bars: np.ndarray
    bar_kind: str
    value: float | None
    reward: float
    episode_return: float
    target: str
    method: str
    layer: str
    norm: str
    cam_scale: float
    env_index: int = 0
    frame_shares: np.ndarray | None = None


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font at a pixel size; cached because each load costs about a millisecond."""
    return ImageFont.load_default(size=size)


# Text drawn every step goes through a glyph cache: each character of each font is rasterised
# once, and a string is pasted glyph by glyph. FreeType layout per call was the largest cost of a
# panel (about 0.4 ms per string); a cached glyph costs a few microseconds. Pen positions advance
# by each glyph's own width, so strings are laid out without kerning (the bundled font has none
# for digits and capitals, which is most of what changes per step).


@functools.lru_cache(maxsize=64)
def _metrics(font: ImageFont.FreeTypeFont) -> tuple[int, int]:
    """(ascent, descent) in pixels."""
    return font.getmetrics()


@functools.lru_cache(maxsize=4096)
def _glyph(font: ImageFont.FreeTypeFont, char: str) -> tuple[Image.Image | None, int, float]:
    """One character: (coverage mask spanning ascender to descender or None if blank, x offset, advance)."""
    advance = font.getlength(char)
    x0, _, x1, _ = font.getbbox(char, anchor="ls")
    ascent, descent = _metrics(font)
    if x1 <= x0:
        return None, 0, advance
    mask = Image.new("L", (x1 - x0, ascent + descent), 0)
    ImageDraw.Draw(mask).text((-x0, ascent), char, font=font, fill=255, anchor="ls")
    return (mask if mask.getbbox() else None), x0, advance


def _text_width(text: str, font: ImageFont.FreeTypeFont) -> float:
    return sum(_glyph(font, char)[2] for char in text)


def _text(img: Image.Image, xy: tuple[float, float], text: str, font, fill, anchor: str = "la") -> None:
    """Draw ``text`` with cached glyphs; ``anchor`` as Pillow's: l/r then a (ascender) / m (middle)."""
    x, y = xy
    if anchor[0] == "r":
        x -= _text_width(text, font)
    if anchor[1] == "m":
        ascent, descent = _metrics(font)
        y -= (ascent + descent) / 2
    draw = ImageDraw.Draw(img)
    top = round(y)
    for char in text:
        mask, dx, advance = _glyph(font, char)
        if mask is not None:
            draw.bitmap((round(x) + dx, top), mask, fill=fill)
        x += advance


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, max_width: float) -> str:
    """Shorten ``text`` with an ellipsis so that it fits ``max_width`` pixels."""
    if _text_width(text, font) <= max_width:
        return text
    while text and _text_width(text + "…", font) > max_width:
        text = text[:-1]
    return text + "…"


def _bar_fractions(bars: np.ndarray, kind: str) -> np.ndarray:
    """Bar lengths in [0, 1]: probabilities as they are, Q-values min-max scaled.

    The Q-values of one state are often close together and may all be negative, so their bars run
    from a short stub (worst action) to full length (best); the printed numbers carry the scale.
    """
    b = np.nan_to_num(np.asarray(bars, dtype=np.float64))
    if kind == "prob":
        return np.clip(b, 0.0, 1.0)
    lo, hi = float(b.min()), float(b.max())
    if hi - lo < 1e-12:
        return np.ones_like(b)
    return 0.08 + 0.92 * (b - lo) / (hi - lo)


def _fmt_bar(value: float, kind: str) -> str:
    return f"{100.0 * value:.1f}%" if kind == "prob" else f"{value:+.2f}"


@dataclass(frozen=True)
class _Layout:
    """Where the per-step parts of the panel go; computed with the static base image."""

    pad: int
    f_small: ImageFont.FreeTypeFont
    f_big: ImageFont.FreeTypeFont
    f_mid: ImageFont.FreeTypeFont
    f_label: ImageFont.FreeTypeFont
    f_bar: ImageFont.FreeTypeFont
    y_header: float
    y_action: float
    row_mids: tuple[float, ...]  # vertical centre of each action's bar row
    row_h: float
    bar_h: float
    marker_w: float
    x_name: float
    name_w: float
    x_bar0: float
    x_bar1: float
    labelled: bool  # False: rows too short for names and numbers, bars only
    scalar_ys: tuple[float, ...]  # value, reward, return
    y_legend_label: float
    share_cells: tuple[tuple[float, float], ...]  # (x0, x1) of each stacked frame's column
    y_share_bar: float  # top of the share bars; their numbers go below
    share_bar_h: float


@functools.lru_cache(maxsize=16)
def _panel_base(
    height: int,
    width: int,
    names: tuple[str, ...],
    bar_kind: str,
    footer: tuple[tuple[str, str], ...],
    n_shares: int = 0,
) -> tuple[Image.Image, _Layout]:
    """Draw the parts of the panel that stay fixed for a run, and lay out the rest.

    Cached: only the header numbers, chosen action, bars and values change per step, which keeps
    the per-step panel cost to a dozen text draws. The returned image must not be modified.
    """
    img = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(img)
    k = height / 630.0  # sizes are tuned for a 630 px panel (Atari's 210 px at scale 3)
    pad = max(4, round(14 * k))
    inner = width - 2 * pad
    f_small = _font(max(8, round(15 * k)))
    f_label = _font(max(8, round(13 * k)))
    f_big = _font(max(12, round(34 * k)))
    f_mid = _font(max(9, round(18 * k)))

    def rule(y: float) -> None:
        draw.line([(pad, round(y)), (width - pad, round(y))], fill=_RULE, width=1)

    # Top: header line (drawn per step), then "action" and the chosen name (per step).
    y_header = pad
    y = y_header + f_small.size * 1.5
    draw.text((pad, y), "action", font=f_label, fill=_DIM)
    y_action = y + f_label.size * 1.2
    y = y_action + f_big.size * 1.3
    rule(y)
    y += pad * 0.6
    caption = "policy  P(a | s)" if bar_kind == "prob" else "Q(s, a)   bars scaled min to max"
    draw.text((pad, y), _fit(draw, caption, f_label, inner), font=f_label, fill=_DIM)
    y_bars = y + f_label.size * 1.4

    # Bottom up: footer, legend, scalars; the bars get the height left in between.
    line_h = f_label.size * 1.3
    y_footer = height - pad - line_h * len(footer)
    key_w = max(draw.textlength(key, font=f_label) for key, _ in footer) + f_label.size * 0.8
    for i, (key, val) in enumerate(footer):
        yy = y_footer + i * line_h
        draw.text((pad, yy), key, font=f_label, fill=_DIM)
        draw.text((pad + key_w, yy), _fit(draw, val, f_label, inner - key_w), font=f_label, fill=_TEXT)

    strip_h = max(4, round(10 * k))
    y_legend_label = y_footer - pad * 0.8 - f_label.size * 1.2
    y_strip = y_legend_label - strip_h - max(2, round(4 * k))
    y_legend_title = y_strip - f_label.size * 1.35
    draw.text((pad, y_legend_title), "attention (raw CAM value)", font=f_label, fill=_DIM)
    ramp = LUT[np.linspace(0, 255, inner).round().astype(np.intp)]  # (inner, 3)
    img.paste(
        Image.fromarray(np.ascontiguousarray(np.broadcast_to(ramp, (strip_h, inner, 3)))),
        (pad, round(y_strip)),
    )
    draw.text((pad, y_legend_label), "0", font=f_label, fill=_DIM)
    rule(y_legend_title - pad * 0.6)

    scalar_h = f_mid.size * 1.35
    y_scalars = y_legend_title - pad * 1.2 - scalar_h * 3
    scalar_ys = tuple(y_scalars + i * scalar_h for i in range(3))
    for yy, name in zip(scalar_ys, ("value", "reward", "return"), strict=True):
        draw.text((pad, yy), name, font=f_mid, fill=_DIM)
    rule(y_scalars - pad * 0.6)
    section_top = y_scalars

    # Stacked frames (only for methods that attribute to the input): one column per frame,
    # oldest left, a bar growing up with the frame's share of the map and the share below it.
    share_cells: tuple[tuple[float, float], ...] = ()
    y_share_bar = share_bar_h = 0.0
    if n_shares:
        share_bar_h = max(4.0, round(22 * k))
        block_h = f_label.size * 1.4 + share_bar_h + f_label.size * 1.5
        y_share_title = y_scalars - pad * 1.2 - block_h
        draw.text((pad, y_share_title), "share of the map per stacked frame, oldest first", font=f_label, fill=_DIM)
        y_share_bar = y_share_title + f_label.size * 1.4
        gap = max(2.0, round(8 * k))
        cell_w = (inner - gap * (n_shares - 1)) / n_shares
        share_cells = tuple((pad + i * (cell_w + gap), pad + i * (cell_w + gap) + cell_w) for i in range(n_shares))
        for x0, x1 in share_cells:
            draw.rectangle([x0, y_share_bar, x1, y_share_bar + share_bar_h], fill=_BAR_BG)
        rule(y_share_title - pad * 0.6)
        section_top = y_share_title

    # Bar rows: marker | name | bar | number. Rows too short for readable text (many actions on a
    # small panel) become plain bars; the chosen action's name is still shown large above.
    n = max(1, len(names))
    row_h = max(1.0, min(((section_top - pad * 1.2) - y_bars) / n, 36 * k))
    labelled = row_h >= _MIN_LABEL_ROW
    f_bar = _font(max(7, min(round(row_h * 0.62), round(17 * k))))
    marker_w = max(4.0, round(min(row_h, 20 * k) * 0.4))
    x_name = pad + marker_w + max(2, round(4 * k))
    if labelled:
        name_w = min(inner * 0.36, max(draw.textlength(s, font=f_bar) for s in names) + f_bar.size * 0.6)
        x_bar1 = width - pad - draw.textlength("-000.00", font=f_bar) - f_bar.size * 0.4
    else:
        name_w, x_bar1 = 0.0, width - pad
    x_bar0 = min(x_name + name_w, x_bar1 - 1)
    bar_h = max(1.0, row_h * (0.6 if labelled else 0.7))
    row_mids = tuple(y_bars + (i + 0.5) * row_h for i in range(len(names)))
    for mid, name in zip(row_mids, names, strict=True):
        if labelled:
            draw.text((x_name, mid), _fit(draw, name, f_bar, name_w - 2), font=f_bar, fill=_DIM, anchor="lm")
        draw.rectangle([x_bar0, mid - bar_h / 2, x_bar1, mid + bar_h / 2], fill=_BAR_BG)

    layout = _Layout(
        pad=pad,
        f_small=f_small,
        f_big=f_big,
        f_mid=f_mid,
        f_label=f_label,
        f_bar=f_bar,
        y_header=y_header,
        y_action=y_action,
        row_mids=row_mids,
        row_h=row_h,
        bar_h=bar_h,
        marker_w=marker_w,
        x_name=x_name,
        name_w=name_w,
        x_bar0=x_bar0,
        x_bar1=x_bar1,
        labelled=labelled,
        scalar_ys=scalar_ys,
        y_legend_label=y_legend_label,
        share_cells=share_cells,
        y_share_bar=y_share_bar,
        share_bar_h=share_bar_h,
    )
    return img, layout


def _panel_image(info: PanelInfo, height: int, width: int) -> Image.Image:
    """The panel as a Pillow RGB image of (width, height); see :func:`draw_panel`."""
    names = tuple(str(s) for s in info.action_names)
    bars = np.asarray(info.bars, dtype=np.float64).reshape(-1)
    if info.bar_kind not in ("prob", "q"):
        raise ValueError(f"bar_kind must be 'prob' or 'q', got {info.bar_kind!r}")
    if len(names) == 0 or bars.shape != (len(names),):
        raise ValueError(f"bars must have one entry per action name ({len(names)}), got shape {bars.shape}")
    if not 0 <= info.action < len(names):
        raise ValueError(f"action {info.action} is out of range for {len(names)} actions")
    if height < 32 or width < 64:
        raise ValueError(f"panel of {height}x{width} px is too small; use at least 32 px high, 64 px wide")
    footer = (("target", info.target), ("method", info.method), ("layer", info.layer), ("norm", info.norm))
    shares = np.zeros(0) if info.frame_shares is None else np.asarray(info.frame_shares, dtype=np.float64).reshape(-1)
    base, lay = _panel_base(height, width, names, info.bar_kind, footer, len(shares))
    img = base.copy()
    draw = ImageDraw.Draw(img)
    pad, right = lay.pad, width - lay.pad
    inner = width - 2 * pad

    header = f"step {info.step}  ·  episode {info.episode}  ·  env {info.env_index}"
    _text(img, (pad, lay.y_header), _fit(draw, header, lay.f_small, inner), lay.f_small, _DIM)
    _text(img, (pad, lay.y_action), _fit(draw, names[info.action], lay.f_big, inner), lay.f_big, _ACCENT)

    fracs = _bar_fractions(bars, info.bar_kind)
    bar_len = lay.x_bar1 - lay.x_bar0
    half = lay.bar_h / 2
    for i, mid in enumerate(lay.row_mids):
        chosen = i == info.action
        if fracs[i] > 0:
            x1 = lay.x_bar0 + bar_len * fracs[i]
            draw.rectangle([lay.x_bar0, mid - half, x1, mid + half], fill=_BAR_CHOSEN if chosen else _BAR)
        if chosen:
            # A marker plus (below) the name in bright text: visible even when all bars are equal.
            m = lay.marker_w / 2
            draw.polygon([(pad, mid - m), (pad, mid + m), (pad + lay.marker_w, mid)], fill=_ACCENT)
        if lay.labelled:
            number = _fmt_bar(bars[i], info.bar_kind)
            _text(img, (right, mid), number, lay.f_bar, _TEXT if chosen else _DIM, anchor="rm")
            if chosen:
                draw.rectangle([lay.x_name, mid - lay.row_h / 2, lay.x_bar0 - 1, mid + lay.row_h / 2], fill=_BG)
                name = _fit(draw, names[i], lay.f_bar, lay.name_w - 2)
                _text(img, (lay.x_name, mid), name, lay.f_bar, _TEXT, anchor="lm")

    values = (
        "n/a" if info.value is None or not np.isfinite(info.value) else f"{info.value:+.3f}",
        f"{info.reward:+.2f}",
        f"{info.episode_return:+.2f}",
    )
    if len(shares):
        top = int(np.argmax(shares))
        for i, ((x0, x1), share) in enumerate(zip(lay.share_cells, shares, strict=True)):
            share = float(np.clip(np.nan_to_num(share), 0.0, 1.0))
            if share > 0:
                y1 = lay.y_share_bar + lay.share_bar_h
                colour = _BAR_CHOSEN if i == top else _BAR
                draw.rectangle([x0, y1 - lay.share_bar_h * share, x1, y1], fill=colour)
            label = f"{100 * share:.0f}%"
            x_mid = (x0 + x1) / 2 - _text_width(label, lay.f_label) / 2
            y_label = lay.y_share_bar + lay.share_bar_h + lay.f_label.size * 0.3
            _text(img, (x_mid, y_label), label, lay.f_label, _TEXT if i == top else _DIM)
    for yy, val in zip(lay.scalar_ys, values, strict=True):
        _text(img, (right, yy), val, lay.f_mid, _TEXT, anchor="ra")
    _text(img, (right, lay.y_legend_label), f"{info.cam_scale:.3g}", lay.f_label, _DIM, anchor="ra")
    return img


def draw_panel(info: PanelInfo, height: int, width: int) -> np.ndarray:
    """Draw the dark annotation panel for one step.

    Top to bottom: step/episode/env, the chosen action in large type, one bar per action (the
    chosen one marked and highlighted), each stacked frame's share of the map when
    ``info.frame_shares`` is given, value/reward/return, a colour-bar legend from 0 to
    ``info.cam_scale``, and a footer naming target, method, layer and normalisation. Font sizes
    scale with ``height``.

    Args:
        info: What to show.
        height: Panel height in pixels (usually the upscaled frame height), at least 32.
        width: Panel width in pixels, at least 64.

    Returns:
        ``(height, width, 3)`` uint8 RGB.
    """
    return np.asarray(_panel_image(info, height, width)).copy()


# --- the video frame --------------------------------------------------------------------------


def default_panel_width(height: int) -> int:
    """Panel width :func:`compose` uses when none is given: even, about 0.72 of the height."""
    return max(160, 2 * round(0.36 * height))


# --- the all-actions grid -----------------------------------------------------------------------

_GRID_MAX_COLS = 6


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
    _text(img, (gap, round(font.size * 0.4)), f"every action's map, one scale: 0 .. {cam_scale:.3g}", font, _DIM)
    game = Image.fromarray(np.ascontiguousarray(frame)).resize((tile_w, tile_h), Image.Resampling.NEAREST)
    bars = np.asarray(info.bars, dtype=np.float64).reshape(-1)
    as_index = _heat_index if heats.dtype != np.uint8 else np.ascontiguousarray
    for a, name in enumerate(names):
        row, col = divmod(a, cols)
        x = gap + col * (tile_w + gap)
        y = title_h + row * (caption_h + tile_h + gap)
        tile = game.copy()
        _paint_heat(tile, Image.fromarray(as_index(heats[a])), _check_alpha(alpha))
        img.paste(tile, (x, y + caption_h))
        chosen = a == info.action
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
    as_index = _heat_index if heat.dtype != np.uint8 else np.ascontiguousarray
    if heat.shape == (h, w):
        # Quantise before resizing: Pillow upsamples 8-bit images far faster than float ones.
        index = Image.fromarray(as_index(heat))
        if scale > 1:
            index = index.resize((big_w, big_h), Image.Resampling.BILINEAR)
    elif heat.shape == (big_h, big_w):
        index = Image.fromarray(as_index(heat))
    else:
        raise ValueError(f"heat must be {(h, w)} or {(big_h, big_w)} for frame {frame.shape}, got {heat.shape}")
    pw = default_panel_width(big_h) if panel_width is None else int(panel_width)

    game = Image.fromarray(np.ascontiguousarray(frame))
    if scale > 1:
        game = game.resize((big_w, big_h), Image.Resampling.NEAREST)
    else:
        game = game.copy()  # painted in place below; the caller's frame must stay as it is
    _paint_heat(game, index, _check_alpha(alpha))
    # Assemble in numpy rather than on a Pillow canvas: one big allocation fewer, and the result
    # is writable (arrays exported from Pillow images are read-only).
    grid = None
    if action_heats is not None:
        grid = draw_action_grid(frame, action_heats, info, big_w + pw, action_scale, alpha)
    total_h = big_h + (0 if grid is None else len(grid))
    out = np.zeros((total_h + total_h % 2, big_w + pw + (big_w + pw) % 2, 3), dtype=np.uint8)  # black padding
    out[:big_h, :big_w] = np.asarray(game)
    out[:big_h, big_w : big_w + pw] = np.asarray(_panel_image(info, big_h, pw))
    if grid is not None:
        out[big_h:total_h, : big_w + pw] = grid
    return out
