"""The perceptual colormap of rlcam's heat maps: a 256-entry ramp built in CIE LCh.

Lightness rises linearly from near-black to pale yellow, so brighter always means more; hue sweeps
purple, red, orange, yellow. ``LUT[i]`` is the colour of heat ``i / 255``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LUT", "LUT_DOWN", "colormap"]


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


# The second ramp, for signed maps' "pushes it down" side: the same lightness ramp through cool
# hues, deep blue -> azure -> cyan -> pale mint, so the two sides never share a colour.
_HUE_POINTS_DOWN = ((0.0, 290.0), (0.3, 265.0), (0.6, 235.0), (1.0, 200.0))
_CHROMA_POINTS_DOWN = ((0.0, 20.0), (0.3, 55.0), (0.6, 50.0), (1.0, 30.0))


def _build_lut(n: int = 256, hue_points=_HUE_POINTS, chroma_points=_CHROMA_POINTS) -> np.ndarray:
    """The (n, 3) uint8 ramp: L* linear in position, chroma reduced where sRGB cannot show it."""
    t = np.linspace(0.0, 1.0, n)
    lightness = _L_MIN + (_L_MAX - _L_MIN) * t
    hue = np.interp(t, *zip(*hue_points, strict=True)) % 360.0
    chroma = np.interp(t, *zip(*chroma_points, strict=True))
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
LUT_DOWN: np.ndarray = _build_lut(hue_points=_HUE_POINTS_DOWN, chroma_points=_CHROMA_POINTS_DOWN)
LUT_DOWN.setflags(write=False)
_LUT_DOWN_PALETTE = LUT_DOWN.tobytes()


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
