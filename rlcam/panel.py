"""The annotation panel beside each video frame: what the agent did and what the map means.

Pure Pillow/numpy, no I/O. The parts that stay fixed for a run are drawn once and cached
(``_panel_base``); per step only the changing numbers, bars and names are drawn, with text pasted
from a glyph cache. Also the small text helpers the all-actions grid shares.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rlcam.colormap import LUT, LUT_DOWN

__all__ = ["PanelInfo", "default_panel_width", "draw_panel"]


_BG = (18, 18, 24)
_TEXT = (232, 232, 236)
_DIM = (150, 150, 162)
_RULE = (52, 52, 64)
_BAR_BG = (38, 38, 48)
_BAR = (92, 112, 150)
# The warm end of the colormap marks the chosen action, tying it visually to the heat.
_BAR_CHOSEN = tuple(int(c) for c in LUT[200])
_ACCENT = tuple(int(c) for c in LUT[235])
_DOWN = tuple(int(c) for c in LUT_DOWN[200])  # the signed maps' "pushes it down" colour
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
        bar_kind: ``"prob"`` for PPO/A2C action probabilities, ``"q"`` for DQN Q-values,
            ``"component"`` for continuous action components (bars span ``bounds``), ``"parts"``
            for every part's probabilities of a structured action.
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
    # Families whose action is not one index: the big action text, the rows marked as taken
    # (default: ``action``'s), each row's (low, high) for ``bar_kind="component"``, the value's name.
    action_label: str | None = None
    chosen: tuple[int, ...] | None = None
    bounds: tuple[np.ndarray, np.ndarray] | None = None
    value_label: str = "value"
    tile_kind: str = "action"  # what the all-actions grid's tiles are: action, component, critic, part
    # Dict observations: ``frame_shares`` holds each input key's share of the score; these name them.
    share_names: tuple[str, ...] | None = None
    # Dict observations' vector keys: gradient x input per element (signed, the keys' elements one
    # after another) and the keys' names for the strip's title.
    elements: np.ndarray | None = None
    element_names: tuple[str, ...] | None = None
    element_labels: tuple[str, ...] | None = None  # one per element, ``key[i]``: written under its bar where it fits

    def chosen_rows(self) -> tuple[int, ...]:
        return (self.action,) if self.chosen is None else tuple(self.chosen)


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


def _element_label(draw: ImageDraw.ImageDraw, label: str, font, width: float) -> str:
    """``key[i]`` if it fits in ``width``, else ``i``, else nothing."""
    for text in (label, label[label.rfind("[") + 1 : -1] if label.endswith("]") else ""):
        if text and draw.textlength(text, font=font) <= width - 2:
            return text
    return ""


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, max_width: float) -> str:
    """Shorten ``text`` with an ellipsis so that it fits ``max_width`` pixels."""
    if _text_width(text, font) <= max_width:
        return text
    while text and _text_width(text + "…", font) > max_width:
        text = text[:-1]
    return text + "…"


_BAR_KINDS = ("prob", "q", "component", "parts")
_CAPTIONS = {
    "prob": "policy  P(a | s)",
    "q": "Q(s, a)   bars scaled min to max",
    "component": "action components, within their bounds",
    "parts": "P(choice | s) per part of the action",
}


def _bar_fractions(bars: np.ndarray, kind: str, bounds=None) -> np.ndarray:
    """Bar lengths in [0, 1]: probabilities as they are, Q-values min-max scaled.

    The Q-values of one state are often close together and may all be negative, so their bars run
    from a short stub (worst action) to full length (best); the printed numbers carry the scale.
    """
    b = np.nan_to_num(np.asarray(bars, dtype=np.float64))
    if kind in ("prob", "parts"):
        return np.clip(b, 0.0, 1.0)
    if kind == "component" and bounds is not None:
        lo, hi = (np.asarray(x, dtype=np.float64).reshape(-1) for x in bounds)
        finite = np.isfinite(lo) & np.isfinite(hi) & (hi > lo)
        span = np.where(finite, hi - lo, 1.0)
        return np.where(finite, np.clip((b - np.where(finite, lo, 0.0)) / span, 0.0, 1.0), 0.5 + 0.5 * np.tanh(b))
    lo, hi = float(b.min()), float(b.max())
    if hi - lo < 1e-12:
        return np.ones_like(b)
    return 0.08 + 0.92 * (b - lo) / (hi - lo)


def _fmt_bar(value: float, kind: str) -> str:
    return f"{100.0 * value:.1f}%" if kind in ("prob", "parts") else f"{value:+.2f}"


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
    element_cells: tuple[tuple[float, float], ...] = ()  # (x0, x1) of each vector element's bar
    y_element_mid: float = 0.0  # the strip's zero line: positive bars up, negative down
    element_half_h: float = 0.0
    y_element_title: float = 0.0


@functools.lru_cache(maxsize=16)
def _panel_base(
    height: int,
    width: int,
    names: tuple[str, ...],
    bar_kind: str,
    footer: tuple[tuple[str, str], ...],
    n_shares: int = 0,
    value_label: str = "value",
    share_names: tuple[str, ...] | None = None,
    n_elements: int = 0,
    element_names: tuple[str, ...] | None = None,
    element_labels: tuple[str, ...] | None = None,
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
    caption = _CAPTIONS[bar_kind]
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
    for yy, name in zip(scalar_ys, (value_label, "reward", "return"), strict=True):
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
        title = "share of the map per stacked frame, oldest first"
        if share_names:
            title = "share of the score per input (gradient x input)"
        draw.text((pad, y_share_title), _fit(draw, title, f_label, inner), font=f_label, fill=_DIM)
        y_share_bar = y_share_title + f_label.size * 1.4
        gap = max(2.0, round(8 * k))
        cell_w = (inner - gap * (n_shares - 1)) / n_shares
        share_cells = tuple((pad + i * (cell_w + gap), pad + i * (cell_w + gap) + cell_w) for i in range(n_shares))
        for x0, x1 in share_cells:
            draw.rectangle([x0, y_share_bar, x1, y_share_bar + share_bar_h], fill=_BAR_BG)
        rule(y_share_title - pad * 0.6)
        section_top = y_share_title

    # Vector keys of a Dict observation: one signed bar per element (gradient x input), up for
    # what pushes the explained score up, down for what pushes it down, on the frame's largest |value|.
    element_cells: tuple[tuple[float, float], ...] = ()
    y_element_mid = element_half_h = y_element_title = 0.0
    if n_elements:
        element_half_h = max(3.0, round(14 * k))
        labels_h = f_label.size * 1.3 if element_labels else 0.0
        y_element_title = section_top - pad * 1.2 - f_label.size * 1.4 - 2 * element_half_h - labels_h
        title = f"{', '.join(element_names or ())}: gradient x input per element"
        width_title = inner - draw.textlength(" +-0.000e+00", font=f_label)
        draw.text((pad, y_element_title), _fit(draw, title, f_label, width_title), font=f_label, fill=_DIM)
        y_element_mid = y_element_title + f_label.size * 1.4 + element_half_h
        gap = max(1.0, round(3 * k)) if n_elements < inner / 4 else 0.0
        cell_w = (inner - gap * (n_elements - 1)) / n_elements
        element_cells = tuple((pad + i * (cell_w + gap), pad + i * (cell_w + gap) + cell_w) for i in range(n_elements))
        draw.line([(pad, round(y_element_mid)), (width - pad, round(y_element_mid))], fill=_BAR_BG, width=1)
        y_labels = y_element_mid + element_half_h + f_label.size * 0.2
        for (x0, x1), label in zip(element_cells, element_labels or (), strict=False):
            shown = _element_label(draw, label, f_label, x1 - x0)
            if shown:
                x_mid = (x0 + x1) / 2 - draw.textlength(shown, font=f_label) / 2
                draw.text((x_mid, y_labels), shown, font=f_label, fill=_DIM)
        rule(y_element_title - pad * 0.6)
        section_top = y_element_title

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
        element_cells=element_cells,
        y_element_mid=y_element_mid,
        element_half_h=element_half_h,
        y_element_title=y_element_title,
        y_share_bar=y_share_bar,
        share_bar_h=share_bar_h,
    )
    return img, layout


def _panel_image(info: PanelInfo, height: int, width: int) -> Image.Image:
    """The panel as a Pillow RGB image of (width, height); see :func:`draw_panel`."""
    names = tuple(str(s) for s in info.action_names)
    bars = np.asarray(info.bars, dtype=np.float64).reshape(-1)
    if info.bar_kind not in _BAR_KINDS:
        raise ValueError(f"bar_kind must be one of {', '.join(_BAR_KINDS)}, got {info.bar_kind!r}")
    if len(names) == 0 or bars.shape != (len(names),):
        raise ValueError(f"bars must have one entry per action name ({len(names)}), got shape {bars.shape}")
    chosen_rows = info.chosen_rows()
    if not all(0 <= row < len(names) for row in chosen_rows):
        raise ValueError(f"action {info.action} is out of range for {len(names)} actions")
    if height < 32 or width < 64:
        raise ValueError(f"panel of {height}x{width} px is too small; use at least 32 px high, 64 px wide")
    footer = (("target", info.target), ("method", info.method), ("layer", info.layer), ("norm", info.norm))
    shares = np.zeros(0) if info.frame_shares is None else np.asarray(info.frame_shares, dtype=np.float64).reshape(-1)
    share_names = tuple(info.share_names) if info.share_names else None
    elements = np.zeros(0) if info.elements is None else np.asarray(info.elements, dtype=np.float64).reshape(-1)
    element_names = tuple(info.element_names) if info.element_names else None
    element_labels = tuple(info.element_labels) if info.element_labels else None
    if element_labels is not None and len(element_labels) != len(elements):
        raise ValueError(f"{len(element_labels)} element labels for {len(elements)} elements")
    base, lay = _panel_base(
        height,
        width,
        names,
        info.bar_kind,
        footer,
        len(shares),
        info.value_label,
        share_names,
        len(elements),
        element_names,
        element_labels,
    )
    img = base.copy()
    draw = ImageDraw.Draw(img)
    pad, right = lay.pad, width - lay.pad
    inner = width - 2 * pad

    header = f"step {info.step}  ·  episode {info.episode}  ·  env {info.env_index}"
    _text(img, (pad, lay.y_header), _fit(draw, header, lay.f_small, inner), lay.f_small, _DIM)
    big = names[info.action] if info.action_label is None else info.action_label
    _text(img, (pad, lay.y_action), _fit(draw, big, lay.f_big, inner), lay.f_big, _ACCENT)

    fracs = _bar_fractions(bars, info.bar_kind, info.bounds)
    bar_len = lay.x_bar1 - lay.x_bar0
    half = lay.bar_h / 2
    for i, mid in enumerate(lay.row_mids):
        chosen = i in chosen_rows
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
            label = f"{100 * share:.0f}%" if share_names is None else f"{share_names[i]} {100 * share:.0f}%"
            x_mid = (x0 + x1) / 2 - _text_width(label, lay.f_label) / 2
            y_label = lay.y_share_bar + lay.share_bar_h + lay.f_label.size * 0.3
            _text(img, (x_mid, y_label), label, lay.f_label, _TEXT if i == top else _DIM)
    if len(elements):
        elements = np.nan_to_num(elements)
        peak = float(np.abs(elements).max())
        _text(img, (right, lay.y_element_title), f"±{peak:.3g}", lay.f_label, _DIM, anchor="ra")
        for (x0, x1), value in zip(lay.element_cells, elements, strict=True):
            if peak > 0 and value != 0:
                reach = max(1.0, lay.element_half_h * abs(value) / peak)
                mid = lay.y_element_mid  # the zero line itself stays clear: + above it, - below it
                y0, y1 = (mid - reach, mid - 1) if value > 0 else (mid + 1, mid + reach)
                draw.rectangle([x0, y0, max(x0, x1 - 1), y1], fill=_BAR_CHOSEN if value > 0 else _DOWN)
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


def default_panel_width(height: int) -> int:
    """Panel width :func:`rlcam.render.compose` uses when none is given: even, about 0.72 of the height."""
    return max(160, 2 * round(0.36 * height))
