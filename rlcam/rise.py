"""RISE (Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models").

Random binary grids of ``CELLS x CELLS`` cells, each cell kept with probability ``KEEP``, are
upsampled bilinearly to ``CELLS + 1`` cells' size and cropped at a random shift of less than one
cell, so the masks ``M_i`` are smooth, in [0, 1], and their cell borders fall anywhere. Each
masked input ``x * M_i`` (one mask for every channel, i.e. every stacked frame; what is masked
out goes to black, 0) is scored, and the saliency is the score-weighted average of the masks:

    S = ReLU( sum_i (y_i - mean_j y_j) * M_i / (MASKS * KEEP) ),    y_i = y(x * M_i)

    x (N, C, H, W) -> N*MASKS masked inputs (chunks of ``rlcam.perturb.CHUNK``) -> y (N, MASKS) -> S (N, H, W)

The paper weighs by y itself, a class probability (>= 0). rlcam's scores are logits and Q-values,
whose offset is arbitrary: a constant c added to y adds ``c * sum_i M_i / (MASKS * KEEP)``, a field
that is uniform but for the masks' sampling noise. Centring the scores removes it exactly, so the
map does not depend on the score's offset (with probabilities it changes the map by that
near-uniform field only). The rectification keeps the map non-negative like the other methods':
what the masks show lowers the score less than average is dropped.

The masks are drawn once per explainer from its seed and reused at every step, as the paper's
code reuses one set for every image: the same observation always gets the same map, and a batch
gets what its samples get one at a time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MASKS = 500  # masks per map: MASKS forwards per observation
CELLS = 8  # grid cells per side before upsampling
KEEP = 0.5  # probability that a cell is kept


def rise_masks(
    height: int, width: int, count: int = MASKS, cells: int = CELLS, keep: float = KEEP, seed: int = 0
) -> torch.Tensor:
    """``(count, H, W)`` float32 RISE masks, a function of the arguments alone.

    From one ``torch.Generator`` seeded with ``seed``: first the grids ``torch.rand(count, cells,
    cells) < keep``, then the row shifts, then the column shifts (``torch.randint(0, cell, (count,))``
    each, ``cell = ceil(size / cells)``). Each grid is resized bilinearly (half-pixel centres, edges
    clamped) to ``(cells + 1) * cell`` px a side and cropped to ``(H, W)`` at its shift.
    """
    if count < 1 or cells < 1 or not 0.0 < keep <= 1.0:
        raise ValueError(f"RISE needs count >= 1, cells >= 1 and 0 < keep <= 1; got {count}, {cells}, {keep}")
    generator = torch.Generator().manual_seed(seed)
    grids = (torch.rand(count, cells, cells, generator=generator) < keep).float()
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    dy = torch.randint(0, cell_h, (count,), generator=generator)
    dx = torch.randint(0, cell_w, (count,), generator=generator)
    size = ((cells + 1) * cell_h, (cells + 1) * cell_w)
    up = F.interpolate(grids[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]  # (count, *size)
    rows = dy[:, None] + torch.arange(height)  # (count, H)
    cols = dx[:, None] + torch.arange(width)  # (count, W)
    return up[torch.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]].contiguous()
