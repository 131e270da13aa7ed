"""Integrated Gradients (Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks").

The attribution of input element x_j is the path integral of the gradient along the straight line
from a baseline x0 to the input:

    IG_j = (x_j - x0_j) * int_0^1 dy/dx_j (x0 + a (x - x0)) da

approximated by the trapezoid rule over ``STEPS`` equal intervals (``STEPS + 1`` points, the
end points at half weight). All N x (STEPS + 1) points of a batch go through the network in chunks
of ``rlcam.perturb.CHUNK``, each chunk one forward and one backward with a gradient for the
points alone.

    x (N, C, H, W) -> N*(STEPS+1) path points -> mean gradient (N, C, H, W) -> IG (N, C, H, W)

Units: x and the baseline are in observation units (0..255 for images) and the gradient is per
observation unit, so ``IG`` is in the score's units whatever SB3 divides the input by first, and
it sums to about ``y(x) - y(x0)`` (completeness). The baseline is black, ``BASELINE`` = 0 on every
channel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

STEPS = 32  # trapezoid intervals: STEPS + 1 forwards and backwards per observation
BASELINE = 0.0  # the baseline input, in observation units: black


def trapezoid(steps: int = STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``a_k = k / steps`` (k = 0..steps) and their trapezoid weights (1/steps, halved at the ends)."""
    if steps < 1:
        raise ValueError(f"integrated gradients needs steps >= 1, not {steps}")
    alphas = torch.arange(steps + 1, dtype=torch.float64) / steps
    weights = torch.full((steps + 1,), 1.0 / steps, dtype=torch.float64)
    weights[[0, -1]] /= 2
    return alphas, weights


def path_gradient(
    x: torch.Tensor,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    baseline: float = BASELINE,
    steps: int = STEPS,
    chunk: int = 256,
) -> torch.Tensor:
    """The trapezoid mean of dy/dx along the path from ``baseline`` to ``x``, ``(N, C, H, W)``.

    Args:
        x: ``(N, C, H, W)`` float inputs in observation units.
        score: ``score(points (B, C, H, W), rows (B,)) -> (B,)``, differentiable in ``points``;
            ``rows`` says which sample of ``x`` each point belongs to. Called with grad enabled.
        baseline: the path's start, one level for every element.
        steps: trapezoid intervals.
        chunk: path points per forward and backward.
    """
    n = len(x)
    alphas, weights = (t.to(x.device, x.dtype) for t in trapezoid(steps))
    points = steps + 1
    start_at = torch.full_like(x, baseline)
    mean = torch.zeros_like(x)
    for start in range(0, n * points, chunk):
        flat = torch.arange(start, min(start + chunk, n * points), device=x.device)
        rows, k = flat // points, flat % points
        a = alphas[k][:, None, None, None]
        inputs = (start_at[rows] + a * (x[rows] - start_at[rows])).detach().requires_grad_(True)
        with torch.enable_grad():
            (grads,) = torch.autograd.grad(score(inputs, rows).sum(), inputs)
        mean.index_add_(0, rows, grads * weights[k][:, None, None, None])
    return mean
