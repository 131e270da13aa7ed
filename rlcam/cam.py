"""Explanation maps as pure functions of tensors the explainer hands them.

Most methods take a layer's activations ``acts (N, K, h, w)`` (A^k) and their gradients
``grads (N, K, h, w)`` (dy/dA^k for the explained score y) and return the raw map
``(N, h, w)``: rectified, not normalised (normalisation is a display choice made later).

Some methods need more than one forward and backward. Each registry entry is a ``Method``
whose ``needs`` says what the explainer must compute for it, and therefore what ``fn`` takes:

    needs            fn(...)                                   extra work per step
    "weights"        fn(acts, weights (N, K)) -> (N, h, w)     none: weights = mean_ij dy/dA^k_ij, which the
                                                               hand-written head gives without dy/dA itself
    "grads"          fn(acts, grads) -> (N, h, w)              none (the default path)
    "acts"           fn(acts) -> (N, h, w)                     none
    "masked_scores"  fn(acts, scores (N, K)) -> (N, h, w)      N*K forwards of masked inputs
    "guided"         fn(input_grads (N, C, H, W), cam_input (N, H, W)) -> (map (N, H, W), shares (N, C))
                                                               one forward+backward from the input
    "perturbation"   fn(shift (N, gh, gw)) -> (N, gh, gw)      N*gh*gw forwards of blurred inputs
    "layers"         fn([LayerCAM of the input and of each layer, on the input grid (N, H, W)]) -> (N, H, W)
                                                               one forward+backward from the input
    "random_masks"   fn(scores (N, M), masks (M, H, W)) -> (N, H, W)
                                                               N*M forwards of randomly masked inputs (RISE)
    "path_grads"     fn(mean_grads (N, C, H, W), delta (N, C, H, W)) -> (N, H, W)
                                                               N*(m+1) forwards+backwards along a path (IG)

A plain function in ``METHODS`` counts as ``needs="grads"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlcam import rise

NEEDS = ("weights", "grads", "acts", "masked_scores", "guided", "perturbation", "layers", "random_masks", "path_grads")


@dataclass(frozen=True)
class Method:
    """A registry entry: the map function and what the explainer must compute for it."""

    fn: Callable
    needs: str = "grads"
    summary: str = ""

    def __post_init__(self):
        if self.needs not in NEEDS:
            raise ValueError(f"needs must be one of {NEEDS}, not {self.needs!r}")


def as_method(entry: Method | Callable) -> Method:
    """A registry entry as a ``Method`` (plain functions take ``(acts, grads)``)."""
    return entry if isinstance(entry, Method) else Method(entry, "grads")


# -- gradient methods: (acts, grads) -> (N, h, w) --------------------------------------------------


def grad_cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.): ReLU(sum_k alpha_k A^k) with alpha_k = mean_ij dy/dA^k_ij."""
    return grad_cam_weighted(acts, grads.mean(dim=(2, 3)))


def grad_cam_weighted(acts: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Grad-CAM from its channel weights ``alpha (N, K)``: ReLU(sum_k alpha_k A^k)."""
    return torch.relu(torch.einsum("nk,nkhw->nhw", alpha, acts))


def counterfactual_cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Counterfactual Grad-CAM (Selvaraju et al., sec. 5): Grad-CAM of -dy/dA, what would lower y."""
    return grad_cam(acts, -grads)


def counterfactual_weighted(acts: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Counterfactual Grad-CAM from Grad-CAM's channel weights: ReLU(sum_k -alpha_k A^k)."""
    return grad_cam_weighted(acts, -alpha)


def grad_cam_pp(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al.) with the paper's exponential simplification.

    For Y = exp(y) and a piecewise-linear head, the 2nd and 3rd derivatives of Y are powers of
    the first, so alpha^k_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3) with g = dy/dA^k_ij, and
    w_k = sum_ij alpha^k_ij ReLU(g_ij) (the common factor exp(y) dropped). Map: ReLU(sum_k w_k A^k).
    """
    g2 = grads.pow(2)
    denom = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * grads.pow(3)
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g2))
    weights = (alpha * torch.relu(grads)).sum(dim=(2, 3))  # (N, K)
    return torch.relu(torch.einsum("nk,nkhw->nhw", weights, acts))


def hires_cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos & Carin): ReLU(sum_k dy/dA^k * A^k), element-wise, no spatial averaging."""
    return torch.relu((grads * acts).sum(dim=1))


def xgrad_cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al.): w_k = sum_ij (A^k_ij / sum_ab A^k_ab) dy/dA^k_ij; ReLU(sum_k w_k A^k)."""
    total = acts.sum(dim=(2, 3), keepdim=True)
    share = torch.where(total != 0, acts / torch.where(total != 0, total, torch.ones_like(total)), 0.0)
    weights = (share * grads).sum(dim=(2, 3))
    return torch.relu(torch.einsum("nk,nkhw->nhw", weights, acts))


def layer_cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al.): ReLU(sum_k ReLU(dy/dA^k) * A^k)."""
    return torch.relu((torch.relu(grads) * acts).sum(dim=1))


# -- methods with other inputs ---------------------------------------------------------------------


def eigen_cam(acts: torch.Tensor) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin): the activations' first principal component, per sample.

    The cells' activation vectors ``(h*w, K)`` are centred over the cells and projected on the
    first right-singular vector. An SVD fixes that vector only up to sign; the sign is chosen so
    the projection correlates positively with the total activation ``sum_k A^k``. Rectified.
    It reads no gradient: the map does not depend on the action or the layers after it.
    """
    n, k, h, w = acts.shape
    cells = acts.reshape(n, k, h * w).transpose(1, 2).double()  # (N, hw, K)
    centred = cells - cells.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = centred @ vh[:, 0, :, None]  # (N, hw, 1)
    energy = cells.sum(dim=2, keepdim=True)
    sign = torch.where((projection * (energy - energy.mean(dim=1, keepdim=True))).sum(dim=1) < 0, -1.0, 1.0)
    return torch.relu(sign[:, :, None] * projection).reshape(n, h, w).to(acts.dtype)


def score_cam_masks(placed: torch.Tensor) -> torch.Tensor:
    """Score-CAM's masks: each channel on the input grid ``(N, K, H, W)`` min-max scaled to [0, 1]."""
    low = placed.amin(dim=(2, 3), keepdim=True)
    span = placed.amax(dim=(2, 3), keepdim=True) - low
    return torch.where(span > 0, (placed - low) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)


def score_cam(acts: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Score-CAM (Wang et al.): ReLU(sum_k softmax_k(s) A^k).

    ``scores (N, K)``: the explained score y of the input multiplied by channel k's mask (as
    pytorch-grad-cam, the raw score; the paper's baseline term is constant over k and cancels).
    """
    weights = torch.softmax(scores, dim=1).to(acts.dtype)
    return torch.relu(torch.einsum("nk,nkhw->nhw", weights, acts))


def guided_grad_cam(input_grads: torch.Tensor, cam_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided Grad-CAM (Selvaraju et al.): guided backprop times Grad-CAM, at input resolution.

    Args:
        input_grads: ``(N, C, H, W)`` dy/dx through guided ReLUs (``rlcam.guided``).
        cam_input: ``(N, H, W)`` the Grad-CAM map placed on the input grid.

    Returns:
        ``map (N, H, W)`` = sum_c |guided_c| * cam, and ``shares (N, C)``: each input channel's part
        of that sum (for a frame stack: which frame mattered; zeros where the map is all zero).
    """
    per_channel = input_grads.abs() * cam_input[:, None]
    totals = per_channel.sum(dim=(2, 3))  # (N, C)
    whole = totals.sum(dim=1, keepdim=True)
    shares = torch.where(whole > 0, totals / torch.where(whole > 0, whole, torch.ones_like(whole)), 0.0)
    return per_channel.sum(dim=1), shares


def perturbation_map(shift: torch.Tensor) -> torch.Tensor:
    """Perturbation saliency (Greydanus et al.): ``1/2 ||out(x) - out(x')||^2`` per probe, already computed."""
    return shift


def fuse_layers(maps: list[torch.Tensor]) -> torch.Tensor:
    """Geometric mean of per-layer maps on the same grid, ``L x (N, H, W) -> (N, H, W)``.

    An AND across depths: a pixel is hot only where every layer's LayerCAM is, so the input and
    the early layers give the position (LayerCAM of the input, ReLU(dy/dx) * x, is exact to the
    pixel) and the late ones veto what the decision does not use. The units stay those of the
    score (no per-frame normalisation).
    """
    stacked = torch.stack([torch.relu(m) for m in maps])  # (L, N, H, W)
    return stacked.clamp_min(0).log().mean(dim=0).exp()


def rise_map(scores: torch.Tensor, masks: torch.Tensor, keep: float | None = None) -> torch.Tensor:
    """RISE (Petsiuk et al.): ReLU(sum_i (y_i - mean_j y_j) M_i / (M * keep)), ``(N, H, W)``.

    Args:
        scores: ``(N, M)`` the explained score of each input times each mask.
        masks: ``(M, H, W)`` the masks (``rlcam.rise.rise_masks``).
        keep: the cells' keep probability (default ``rlcam.rise.KEEP``).

    The scores are centred (``rlcam.rise`` says why); the paper's 1/(M * keep) keeps its units.
    """
    keep = rise.KEEP if keep is None else keep
    centred = (scores - scores.mean(dim=1, keepdim=True)).to(masks.dtype)
    return torch.relu(torch.einsum("nm,mhw->nhw", centred, masks) / (masks.shape[0] * keep))


def integrated_gradients(mean_grads: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al.) summed over channels and rectified, ``(N, H, W)``.

    Args:
        mean_grads: ``(N, C, H, W)`` the gradient averaged along the path (``rlcam.ig.path_gradient``).
        delta: ``(N, C, H, W)`` input minus baseline, in the gradient's units.

    The map is ReLU(sum_c delta_c * mean_grads_c): a pixel's stacked frames (or colours) add up
    before the positive part is kept, as Grad-CAM sums its channels before its ReLU; what lowers
    the score is dropped (the signed attribution is not kept).
    """
    return torch.relu((delta * mean_grads).sum(dim=1))


METHODS: dict[str, Method | Callable] = {
    "gradcam": Method(grad_cam_weighted, "weights", "Grad-CAM: channel weights = mean gradient"),
    "gradcam++": Method(grad_cam_pp, "grads", "Grad-CAM++: weights from 2nd/3rd-order terms (exp trick)"),
    "hirescam": Method(hires_cam, "grads", "HiResCAM: gradient x activation, summed over channels"),
    "xgradcam": Method(xgrad_cam, "grads", "XGrad-CAM: activation-weighted gradient sums"),
    "layercam": Method(layer_cam, "grads", "LayerCAM: positive gradient x activation"),
    "counterfactual": Method(counterfactual_weighted, "weights", "Grad-CAM of the negated gradient: what lowers y"),
    "eigencam": Method(eigen_cam, "acts", "Eigen-CAM: first principal component of the activations"),
    "scorecam": Method(score_cam, "masked_scores", "Score-CAM: channel weights from forwards of masked inputs"),
    "guided": Method(guided_grad_cam, "guided", "Guided Grad-CAM at input resolution, with per-frame shares"),
    "perturbation": Method(perturbation_map, "perturbation", "Greydanus et al.: output shift under local blur"),
    "fine": Method(fuse_layers, "layers", "LayerCAM of the input and every conv block up to the layer, fused"),
    "rise": Method(rise_map, "random_masks", "RISE: score-weighted average of random smooth masks"),
    "ig": Method(integrated_gradients, "path_grads", "Integrated Gradients from a black input, channels summed"),
}
