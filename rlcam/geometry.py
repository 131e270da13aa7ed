"""Where a layer's cells land on the policy input and on the raw game frame.

A map is moved between grids by separable linear interpolation, written as two small
matrices: ``out = Ry @ cam @ Rx.T``. Composing matrices (layer -> input -> frame) gives
exactly the two-stage resampling, at the cost of two tiny matmuls per map.

Placements:
- ``bilinear``: the paper's choice; cell centres spread evenly over the input
  (``align_corners=False`` convention, like ``torch.nn.functional.interpolate``).
- ``rf``: each cell sits at the centre of its receptive field, computed from the
  convolutions and poolings before the layer; pixels between centres interpolate,
  pixels beyond the outer centres take the edge value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from rlcam.errors import RlcamError

PLACEMENTS = ("bilinear", "rf")


@dataclass(frozen=True)
class Grid:
    """Per axis, cell i of a layer is centred at input pixel ``offset + i * stride``."""

    offset: tuple[float, float]  # (y, x), in input pixels
    stride: tuple[float, float]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def receptive_field_grid(modules: list[nn.Module]) -> Grid:
    """Receptive-field centres after the given spatial modules, applied in order.

    Args:
        modules: the Conv2d/MaxPool2d/AvgPool2d layers from the input up to the target layer;
            element-wise modules (activations) may be included and are skipped.
    """
    offset = [0.0, 0.0]
    jump = [1.0, 1.0]
    for module in modules:
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            kernel = _pair(module.kernel_size)
            stride = _pair(module.stride if module.stride is not None else module.kernel_size)
            padding = _pair(module.padding) if not isinstance(module.padding, str) else None
            dilation = _pair(getattr(module, "dilation", 1))
            if padding is None:
                raise RlcamError(f"receptive-field placement does not support padding={module.padding!r}.")
            for axis in range(2):
                span = dilation[axis] * (kernel[axis] - 1)
                offset[axis] += (span / 2 - padding[axis]) * jump[axis]
                jump[axis] *= stride[axis]
    return Grid(offset=(offset[0], offset[1]), stride=(jump[0], jump[1]))


def _interpolation(coords: np.ndarray, n_in: int) -> np.ndarray:
    """Linear-interpolation weights ``(len(coords), n_in)`` sampling at fractional ``coords``."""
    coords = np.clip(coords, 0.0, n_in - 1)
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    frac = coords - low
    weights = np.zeros((len(coords), n_in), dtype=np.float64)
    rows = np.arange(len(coords))
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def stretch_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Bilinear resampling of an axis of ``n_in`` cells spread over ``n_out`` pixels (align_corners=False)."""
    coords = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    return _interpolation(coords, n_in)


def rf_matrix(n_out: int, n_in: int, offset: float, stride: float) -> np.ndarray:
    """Resampling with cell i centred at pixel ``offset + i * stride``."""
    coords = (np.arange(n_out) - offset) / stride
    return _interpolation(coords, n_in)


@dataclass
class Placement:
    """Moves maps from the layer grid ``(h, w)`` to the input grid ``(H, W)`` and to frames."""

    name: str
    to_input_y: np.ndarray  # (H, h)
    to_input_x: np.ndarray  # (W, w)

    def frame_matrices(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Matrices taking a layer map straight to a ``(height, width)`` frame.

        The policy input is taken to be the whole frame resized (what Atari's WarpFrame
        and most image wrappers do), so input pixels stretch evenly over the frame.
        """
        ys = stretch_matrix(height, self.to_input_y.shape[0]) @ self.to_input_y
        xs = stretch_matrix(width, self.to_input_x.shape[0]) @ self.to_input_x
        return ys.astype(np.float32), xs.astype(np.float32)


def make_placement(
    name: str, layer_hw: tuple[int, int], input_hw: tuple[int, int], grid: Grid | None = None
) -> Placement:
    """Build a placement; ``rf`` needs the layer's receptive-field ``grid``."""
    (h, w), (H, W) = layer_hw, input_hw
    if name == "bilinear":
        return Placement(name, stretch_matrix(H, h), stretch_matrix(W, w))
    if name == "rf":
        if grid is None:
            raise RlcamError("receptive-field placement needs a layer inside a plain stack of convolutions.")
        return Placement(
            name,
            rf_matrix(H, h, grid.offset[0], grid.stride[0]),
            rf_matrix(W, w, grid.offset[1], grid.stride[1]),
        )
    raise RlcamError(f"unknown placement {name!r}; choose one of {', '.join(PLACEMENTS)}.")
