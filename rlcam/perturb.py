"""Perturbation saliency (Greydanus et al. 2018, "Visualizing and Understanding Atari Agents").

Blur a Gaussian patch of the input around each point of a coarse grid and measure how far the
policy's output moves:

    x' = x * (1 - M_ij) + blur(x) * M_ij,    S_ij = 1/2 ||out(x) - out(x')||^2

with ``M_ij`` a Gaussian of peak 1 and sigma ``MASK_SIGMA`` centred on probe (i, j) (the same
mask on every channel, i.e. on every stacked frame) and ``blur`` a Gaussian blur of sigma
``BLUR_SIGMA``; the paper's values (5 and 3 px, probes every 5 px). All N x P perturbed inputs
go through the network in a few large batches, not P separate forwards per frame.

    x (N, C, H, W) float -> N*P perturbed inputs (chunks of ``CHUNK``) -> shift (N, gh, gw)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from rlcam.geometry import Placement, rf_matrix

STRIDE = 5  # px between probes
MASK_SIGMA = 5.0  # px, the perturbed patch
BLUR_SIGMA = 3.0  # px, what the patch is replaced with
CHUNK = 256  # perturbed inputs per forward


def gaussian_matrix(n: int, sigma: float) -> torch.Tensor:
    """``(n, n)`` blur along one axis: row i is a Gaussian around i, truncated at the edges and renormalised."""
    pos = torch.arange(n, dtype=torch.float64)
    weights = torch.exp(-((pos[:, None] - pos[None, :]) ** 2) / (2 * sigma**2))
    weights[(pos[:, None] - pos[None, :]).abs() > 4 * sigma] = 0.0
    return weights / weights.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of ``x (..., H, W)``, per channel."""
    gy = gaussian_matrix(x.shape[-2], sigma).to(x.device, x.dtype)
    gx = gaussian_matrix(x.shape[-1], sigma).to(x.device, x.dtype)
    return gy @ x @ gx.T


def probe_centres(n: int, stride: int = STRIDE) -> np.ndarray:
    """Probe positions along an axis of ``n`` px: every ``stride`` px, centred on the axis."""
    count = (n - 1) // stride + 1
    offset = ((n - 1) - (count - 1) * stride) / 2
    return offset + stride * np.arange(count)


def probe_masks(height: int, width: int, stride: int = STRIDE, sigma: float = MASK_SIGMA) -> torch.Tensor:
    """``(gh * gw, H, W)`` Gaussian masks of peak 1, one per probe, row-major over the grid."""
    ys = torch.as_tensor(probe_centres(height, stride))
    xs = torch.as_tensor(probe_centres(width, stride))
    gy = torch.exp(-((torch.arange(height)[None, :] - ys[:, None]) ** 2) / (2 * sigma**2))  # (gh, H)
    gx = torch.exp(-((torch.arange(width)[None, :] - xs[:, None]) ** 2) / (2 * sigma**2))  # (gw, W)
    return (gy[:, None, :, None] * gx[None, :, None, :]).reshape(-1, height, width).float()


def probe_placement(height: int, width: int, stride: int = STRIDE, name: str = "probes") -> Placement:
    """Places a ``(gh, gw)`` saliency grid on the input: each value at its probe's centre."""
    ys, xs = probe_centres(height, stride), probe_centres(width, stride)
    return Placement(
        name,
        rf_matrix(height, len(ys), float(ys[0]), float(stride)),
        rf_matrix(width, len(xs), float(xs[0]), float(stride)),
    )


def perturbation_shift(
    x: torch.Tensor,
    output: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    stride: int = STRIDE,
    mask_sigma: float = MASK_SIGMA,
    blur_sigma: float = BLUR_SIGMA,
    chunk: int = CHUNK,
) -> torch.Tensor:
    """``1/2 ||out(x) - out(x')||^2`` for every sample and probe: ``(N, gh, gw)``.

    Args:
        x: ``(N, C, H, W)`` float inputs in observation units.
        output: ``output(inputs (B, C, H, W), rows (B,)) -> (B, D)``, the outputs whose movement is
            measured; ``rows`` says which sample of ``x`` each input comes from.
        stride, mask_sigma, blur_sigma: probe spacing, patch size and blur, in px.
        chunk: perturbed inputs per forward.
    """
    n, _, height, width = x.shape
    masks = probe_masks(height, width, stride, mask_sigma).to(x.device, x.dtype)  # (P, H, W)
    n_probes = len(masks)
    base = output(x, torch.arange(n, device=x.device))  # (N, D)
    blurred = gaussian_blur(x, blur_sigma)
    shift = torch.empty(n * n_probes, dtype=base.dtype, device=x.device)
    for start in range(0, n * n_probes, chunk):
        flat = torch.arange(start, min(start + chunk, n * n_probes), device=x.device)
        rows, probes = flat // n_probes, flat % n_probes
        mask = masks[probes][:, None]  # (B, 1, H, W)
        inputs = x[rows] * (1 - mask) + blurred[rows] * mask
        shift[flat] = 0.5 * ((output(inputs, rows) - base[rows]) ** 2).sum(dim=1)
    return shift.reshape(n, len(probe_centres(height, stride)), len(probe_centres(width, stride)))
