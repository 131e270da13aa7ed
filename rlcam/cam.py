"""Class-activation maps as pure functions of a layer's activations and gradients.

Every method takes ``acts (N, K, h, w)`` (the layer's output A^k) and ``grads (N, K, h, w)``
(dy/dA^k for the explained score y) and returns the raw map ``(N, h, w)``: rectified,
not normalised. Normalisation is a display choice made later.
"""

from __future__ import annotations

import torch


def grad_cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.): ReLU(sum_k alpha_k A^k) with alpha_k = mean_ij dy/dA^k_ij."""
    alpha = grads.mean(dim=(2, 3))  # (N, K)
    return torch.relu(torch.einsum("nk,nkhw->nhw", alpha, acts))


def hires_cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos & Carin): ReLU(sum_k dy/dA^k * A^k), element-wise, no spatial averaging."""
    return torch.relu((grads * acts).sum(dim=1))


def layer_cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al.): ReLU(sum_k ReLU(dy/dA^k) * A^k)."""
    return torch.relu((torch.relu(grads) * acts).sum(dim=1))


METHODS = {
    "gradcam": grad_cam,
    "hirescam": hires_cam,
    "layercam": layer_cam,
}
