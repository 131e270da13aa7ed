"""Colormap, blending, panel and frame composition: exact invariants, not "it ran"."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rlcam.render import LUT, PanelInfo, colormap, compose, default_panel_width, draw_panel, overlay


def _lightness(rgb: np.ndarray) -> np.ndarray:
    """CIE L* of sRGB uint8 colours (..., 3), computed independently of rlcam.render."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    y = linear @ np.array([0.2126, 0.7152, 0.0722])
    return np.where(y > (6 / 29) ** 3, 116.0 * np.cbrt(y) - 16.0, y * (29 / 3) ** 3)


def _info(**changes) -> PanelInfo:
    info = PanelInfo(
        step=1234,
        episode=2,
        action_names=["NOOP", "FIRE", "RIGHT", "LEFT"],
        action=2,
        bars=np.array([0.12, 0.03, 0.71, 0.14]),
        bar_kind="prob",
        value=1.482,
        reward=0.0,
        episode_return=4.0,
        target="log-prob",
        method="gradcam",
        layer="features_extractor.cnn.4",
        norm="episode",
        cam_scale=0.00873,
    )
    return dataclasses.replace(info, **changes)


def _frame(h: int = 210, w: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- colormap ---------------------------------------------------------------------------------


def test_lut_lightness_rises_linearly_from_dark_to_bright():
    assert LUT.shape == (256, 3) and LUT.dtype == np.uint8
    lightness = _lightness(LUT)
    assert np.all(np.diff(lightness) > 0), "L* must increase strictly along the ramp"
    np.testing.assert_allclose(lightness, np.linspace(5.0, 95.0, 256), atol=1.0)
    assert lightness[0] < 7 and lightness[-1] > 93


def test_lut_hue_sweeps_purple_red_orange_yellow():
    r, g, b = (LUT[[64, 128, 192, 255]].astype(int)).T
    assert r[0] > g[0] and b[0] > g[0]  # purple: red and blue over green
    assert r[1] > 1.5 * g[1] and r[1] > b[1]  # red
    assert r[2] > g[2] > b[2]  # orange
    assert min(r[3], g[3]) > b[3] + 50  # yellow


def test_colormap_shape_clipping_and_nan():
    values = np.array([[-1.0, 0.0, 0.5], [1.0, 7.0, np.nan]])
    out = colormap(values)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], LUT[0])
    np.testing.assert_array_equal(out[0, 1], LUT[0])
    np.testing.assert_array_equal(out[0, 2], LUT[128])  # 0.5 * 255 rounds to 128
    np.testing.assert_array_equal(out[1, 0], LUT[255])
    np.testing.assert_array_equal(out[1, 1], LUT[255])
    np.testing.assert_array_equal(out[1, 2], LUT[0])


# --- overlay ----------------------------------------------------------------------------------


def test_overlay_zero_heat_is_exact_and_full_heat_moves_by_alpha():
    frame = _frame(60, 80)
    heat = np.zeros((60, 80), dtype=np.float32)
    heat[:, 40:] = 1.0
    heat[30:, 40:] = 0.5
    original = frame.copy()
    out = overlay(frame, heat, alpha=0.6)
    np.testing.assert_array_equal(frame, original)  # input untouched
    np.testing.assert_array_equal(out[:, :40], frame[:, :40])  # heat 0: bit-for-bit unchanged
    f = frame[:30, 40:].astype(np.float64)
    expected = f + 0.6 * (LUT[255].astype(np.float64) - f)
    assert np.abs(out[:30, 40:] - expected).max() <= 1.0
    # Half heat: opacity 0.3 toward the middle colour of the ramp.
    f = frame[30:, 40:].astype(np.float64)
    expected = f + 0.3 * (LUT[128].astype(np.float64) - f)
    assert np.abs(out[30:, 40:] - expected).max() <= 1.0


def test_overlay_alpha_zero_is_identity_and_alpha_one_is_the_colormap():
    frame = _frame(20, 30)
    heat = np.random.default_rng(1).random((20, 30)).astype(np.float32)
    np.testing.assert_array_equal(overlay(frame, heat, alpha=0.0), frame)
    ones = np.ones((20, 30), dtype=np.float32)
    np.testing.assert_array_equal(overlay(frame, ones, alpha=1.0), np.broadcast_to(LUT[255], frame.shape))


def test_overlay_rejects_mismatched_shapes_and_bad_alpha():
    with pytest.raises(ValueError):
        overlay(_frame(20, 30), np.zeros((30, 20)))
    with pytest.raises(ValueError):
        overlay(_frame(20, 30), np.zeros((20, 30)), alpha=1.5)


# --- panel ------------------------------------------------------------------------------------


def test_panel_is_dark_and_depends_on_the_chosen_action():
    a = draw_panel(_info(action=2), 630, 454)
    b = draw_panel(_info(action=3), 630, 454)
    assert a.shape == (630, 454, 3) and a.dtype == np.uint8
    assert np.median(a) < 40, "the panel background must be dark"
    assert (a != b).any(axis=-1).sum() > 200
    # The cached static layer must not pick up one step's drawing: same info, same pixels.
    np.testing.assert_array_equal(draw_panel(_info(action=2), 630, 454), a)


@pytest.mark.parametrize(
    "change",
    [
        {"step": 99},
        {"bars": np.array([0.5, 0.2, 0.2, 0.1])},
        {"value": None},
        {"reward": 1.0},
        {"cam_scale": 12.5},
        {"layer": "features_extractor.cnn.2"},
    ],
)
def test_panel_shows_each_field(change):
    assert (draw_panel(_info(**change), 420, 300) != draw_panel(_info(), 420, 300)).any()


def test_panel_q_values_of_any_sign_and_many_actions():
    names = [f"A{i}" for i in range(18)]
    q = np.linspace(-3.0, -1.0, 18)
    for height in (210, 420, 630):
        out = draw_panel(_info(action_names=names, action=17, bars=q, bar_kind="q", value=None), height, 300)
        assert out.shape == (height, 300, 3)
    # Min-max scaling: the best action's bar is drawn in the chosen colour at full length, so the
    # panel differs when the worst action is chosen instead.
    best = draw_panel(_info(action_names=names, action=17, bars=q, bar_kind="q"), 630, 454)
    worst = draw_panel(_info(action_names=names, action=0, bars=q, bar_kind="q"), 630, 454)
    assert (best != worst).any()


def test_panel_rejects_inconsistent_info():
    with pytest.raises(ValueError):
        draw_panel(_info(bars=np.array([0.5, 0.5])), 630, 454)
    with pytest.raises(ValueError):
        draw_panel(_info(action=4), 630, 454)
    with pytest.raises(ValueError):
        draw_panel(_info(bar_kind="logits"), 630, 454)


# --- compose ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_compose_shape_is_even_and_game_is_nearest_upscaled(scale):
    frame = _frame()
    out = compose(frame, np.zeros((210, 160), dtype=np.float32), _info(), scale=scale)
    h, w = 210 * scale, 160 * scale
    assert out.shape == (h, w + default_panel_width(h), 3) and out.dtype == np.uint8
    assert out.shape[0] % 2 == 0 and out.shape[1] % 2 == 0
    # Zero heat: the game area is the frame with each pixel repeated scale x scale times.
    np.testing.assert_array_equal(out[:h, :w], np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1))
    np.testing.assert_array_equal(out[:h, w:], draw_panel(_info(), h, default_panel_width(h)))


def test_compose_accepts_heat_at_frame_or_video_size():
    frame = _frame(seed=1)
    heat = np.zeros((210, 160), dtype=np.float32)
    heat[100:120, 50:70] = 1.0
    big = np.repeat(np.repeat(heat, 3, axis=0), 3, axis=1)
    from_small = compose(frame, heat, _info(), scale=3, alpha=0.5)
    from_big = compose(frame, big, _info(), scale=3, alpha=0.5)
    game = np.repeat(np.repeat(frame, 3, axis=0), 3, axis=1)
    np.testing.assert_array_equal(from_big[:630, :480], overlay(game, big, alpha=0.5))
    # Bilinear upscaling agrees with the blocky version inside the hot square and far outside it.
    np.testing.assert_array_equal(from_small[320:350, 160:200], from_big[320:350, 160:200])
    np.testing.assert_array_equal(from_small[:200], from_big[:200])
    with pytest.raises(ValueError):
        compose(frame, np.zeros((84, 84)), _info())


def test_compose_pads_odd_sizes_with_black():
    frame = _frame(105, 81)
    out = compose(frame, np.zeros((105, 81), dtype=np.float32), _info(), scale=1, panel_width=161)
    assert out.shape == (106, 81 + 161 + 0, 3)  # 242 columns are even already; 105 rows are not
    np.testing.assert_array_equal(out[105], 0)
    out = compose(frame, np.zeros((105, 81), dtype=np.float32), _info(), scale=1, panel_width=160)
    assert out.shape == (106, 242, 3)
    np.testing.assert_array_equal(out[:, 241], 0)


# --- the recorder's heat ------------------------------------------------------------------------


@pytest.mark.parametrize("scale_value", [0.05, 0.0])
def test_recorded_heat_is_the_map_upsampled_then_normalised(scale_value):
    """StepWriter.heat folds the normalisation into the upsampling; compare with torch's bilinear
    resize (layer -> policy input -> upscaled frame, the two stages of the bilinear placement)."""
    import torch
    import torch.nn.functional as F

    from rlcam.geometry import make_placement
    from rlcam.record import StepWriter

    class _Explainer:
        placement = make_placement("bilinear", (7, 7), (84, 84))

    writer = StepWriter(_Explainer(), ["A", "B"], scale=3)
    cam = np.random.default_rng(1).random((7, 7)).astype(np.float32) * 0.1
    got = writer.heat(cam, (210, 160), scale_value)
    on_input = F.interpolate(torch.from_numpy(cam)[None, None].double(), (84, 84), mode="bilinear")
    on_frame = F.interpolate(on_input, (630, 480), mode="bilinear")[0, 0].numpy()
    expected = np.zeros_like(on_frame) if scale_value == 0 else np.clip(on_frame / scale_value, 0, 1)
    assert got.dtype == np.uint8 and got.shape == (630, 480)
    assert np.abs(got.astype(int) - np.round(expected * 255)).max() <= 1  # float32 vs float64 rounding
    if scale_value:
        assert (got == 255).any() and got.min() < 128  # clipped at the top, not saturated everywhere


def test_compose_takes_colormap_indices_like_the_float_heat():
    heat = np.random.default_rng(2).random((630, 480)).astype(np.float32)
    index = (heat * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(compose(_frame(), index, _info()), compose(_frame(), heat, _info()))


def test_action_grid_tiles_frame_the_chosen_action_and_match_the_layout():
    from rlcam.render import draw_action_grid, grid_tile_size

    frame = _frame()
    info = _info(action=2)
    cols, rows, tile_h, tile_w = grid_tile_size((210, 160), 934, 4)
    assert (cols, rows) == (4, 1) and tile_w * 4 < 934 and tile_h == round(tile_w * 210 / 160)
    heats = np.zeros((4, tile_h, tile_w), np.uint8)
    heats[1] = 255  # full heat on FIRE's tile only
    grid = draw_action_grid(frame, heats, info, 934, cam_scale=0.5)
    assert grid.shape[1] == 934 and grid.dtype == np.uint8
    with_heat = draw_action_grid(frame, np.zeros_like(heats), info, 934, cam_scale=0.5)
    changed = np.any(grid != with_heat, axis=2)
    ys, xs = np.nonzero(changed)
    gap = round(934 / 120)
    x0 = gap + tile_w + gap  # FIRE is the second tile
    assert xs.min() >= x0 - 1 and xs.max() <= x0 + tile_w  # heat only inside its tile
    assert changed.sum() > 0.9 * tile_h * tile_w
    # 18 actions wrap onto rows of six
    assert grid_tile_size((210, 160), 934, 18)[:2] == (6, 3)
    with pytest.raises(ValueError, match="heats must be"):
        draw_action_grid(frame, heats[:3], info, 934, cam_scale=0.5)


def test_compose_with_grid_keeps_the_view_and_adds_rows_below():
    from rlcam.render import grid_tile_size

    _, _, tile_h, tile_w = grid_tile_size((210, 160), 934, 4)
    heat = np.random.default_rng(3).random((630, 480)).astype(np.float32)
    plain = compose(_frame(), heat, _info())
    both = compose(_frame(), heat, _info(), action_heats=np.zeros((4, tile_h, tile_w), np.uint8), action_scale=1.0)
    assert both.shape[1] == plain.shape[1] and both.shape[0] > plain.shape[0] and both.shape[0] % 2 == 0
    np.testing.assert_array_equal(both[:630], plain[:630])


def test_panel_frame_shares_mark_the_largest():
    base = draw_panel(_info(), 630, 454)
    shares = draw_panel(_info(frame_shares=np.array([0.1, 0.2, 0.3, 0.4])), 630, 454)
    other = draw_panel(_info(frame_shares=np.array([0.4, 0.3, 0.2, 0.1])), 630, 454)
    assert shares.shape == base.shape
    assert not np.array_equal(shares, base) and not np.array_equal(shares, other)
    accent = np.array([int(c) for c in LUT[200]])
    # the largest share's bar is drawn in the chosen-action colour, in the rightmost column first
    hits = np.nonzero(np.all(shares == accent, axis=2))
    hits_other = np.nonzero(np.all(other == accent, axis=2))
    right = hits[1][hits[0] > 300].mean()
    left = hits_other[1][hits_other[0] > 300].mean()
    assert right > 300 and left < 200


def test_panel_element_strip_draws_signed_bars_on_the_frames_largest_value():
    """Dict observations' vector elements: up in the warm colour for +, down in the cool one for -,
    each bar's height in proportion to |value| over the frame's largest."""
    from rlcam.colormap import LUT_DOWN

    up, down = np.array([int(c) for c in LUT[200]]), np.array([int(c) for c in LUT_DOWN[200]])
    panel = draw_panel(_info(elements=np.array([0.4, -0.2, 0.0, 0.1]), element_names=("cue",)), 630, 454)
    assert panel.shape == draw_panel(_info(), 630, 454).shape
    zero = np.nonzero(np.all(panel == down, axis=2))[0].min()  # the only cool pixels: the negative bar
    strip = panel[zero - 20 : zero + 20]  # the chosen action's bar and the legend share the warm colour
    warm = np.all(strip == up, axis=2)
    cool = np.all(strip == down, axis=2)
    cols = np.linspace(14, 454 - 14, 5)  # the 4 cells' edges (pad 14 at 630 px)
    heights = []
    for i in range(4):
        x = int((cols[i] + cols[i + 1]) / 2)
        heights.append(int(warm[:, x].sum()) - int(cool[:, x].sum()))
    assert heights[0] > 0 and heights[1] < 0 and heights[2] == 0 and heights[3] > 0
    assert abs(heights[0] / -heights[1] - 2) < 0.3 and abs(heights[0] / heights[3] - 4) < 0.8
    warm_rows, cool_rows = np.nonzero(warm)[0], np.nonzero(cool)[0]
    assert warm_rows.max() < cool_rows.min()  # + above the zero line, - below it


def test_panel_element_labels_go_under_their_bars_or_shrink_to_the_index():
    from PIL import Image, ImageDraw

    from rlcam.panel import _element_label, _font

    values = np.array([0.4, -0.2, 0.0, 0.1])
    plain = draw_panel(_info(elements=values, element_names=("cue",)), 630, 454)
    labelled = draw_panel(
        _info(elements=values, element_names=("cue",), element_labels=("cue[0]", "cue[1]", "cue[2]", "cue[3]")),
        630,
        454,
    )
    assert plain.shape == labelled.shape
    from rlcam.colormap import LUT_DOWN
    from rlcam.panel import _DIM

    down, dim = np.array([int(c) for c in LUT_DOWN[200]]), np.array(_DIM)
    edges = np.linspace(14, 454 - 14, 5)  # the 4 cells (pad 14 at 630 px)
    for panel, shown in ((plain, False), (labelled, True)):
        below = np.nonzero(np.all(panel == down, axis=2))[0].max()  # the negative bar's bottom
        text = np.all(panel[below + 1 : below + 24] == dim, axis=2)  # the labels' colour, just under the strip
        cols = np.nonzero(text.any(axis=0))[0]
        for i in range(4):  # each cell holds its own label, centred
            inside = cols[(cols >= edges[i]) & (cols < edges[i + 1])]
            assert bool(len(inside)) == shown, (i, shown)
            if shown:
                assert abs((inside.min() + inside.max()) / 2 - (edges[i] + edges[i + 1]) / 2) < 4
    draw, font = ImageDraw.Draw(Image.new("RGB", (8, 8))), _font(13)
    assert _element_label(draw, "direction[3]", font, 400) == "direction[3]"
    assert _element_label(draw, "direction[3]", font, 14) == "3"  # too narrow for the name: its index
    assert _element_label(draw, "direction[3]", font, 3) == ""
    with pytest.raises(ValueError, match="2 element labels for 4 elements"):
        draw_panel(_info(elements=values, element_names=("cue",), element_labels=("a", "b")), 630, 454)
