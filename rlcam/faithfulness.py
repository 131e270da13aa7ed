"""Faithfulness metrics: does what a map marks move the policy more than what it does not?

Every metric takes a ``score`` callable, ``float inputs (B, C, H, W) in observation units ->
(B, A)`` per-action numbers (probabilities, logits or Q-values: the caller chooses, see
``policy_scores``), the observations ``obs (N, C, H, W)``, the maps ``(N, H, W)`` on the input grid
and the explained actions ``(N,)``. Pixels are ranked by the map, highest first, ties broken at
random (an all-zero map ranks its pixels at random); a pixel is all its channels (every stacked
frame).

    deletion          blur the top 5..50% (sigma 3 px); the action's probability relative to the
                      intact frame; normalised AUC over the fraction. Lower: the map found what the
                      decision rests on (rlcam's own, ``scripts/truthfulness.py``).
    insertion         Huber et al. 2022 (after RISE's causal metric): start from a black input and
                      reveal the map's pixels, ``step`` at a time, highest first, to the whole frame;
                      the score of the action chosen on the intact input at every step; AUC = the
                      trapezoid mean over the steps, in the score's units. Higher is better.
    aim               XRL-Bench's "accuracy on important features masked": zero the top-k pixels
                      (k a pixel count); the share of inputs whose argmax action is unchanged.
                      Lower is better (the marked pixels decided the action).
    prediction_gap    XRL-Bench's PGI (top-k pixels zeroed; higher is better) and PGU (bottom-k
                      zeroed; lower is better): mean |score(x)_a - score(x')_a|.

XRL-Bench's image code zeroes the pixels it perturbs for PGI/PGU (its noise branch is commented
out); ``prediction_gap`` does the same.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rlcam.families import family_for
from rlcam.geometry import stretch_matrix
from rlcam.perturb import gaussian_blur

Score = Callable[[torch.Tensor], torch.Tensor]  # (B, C, H, W) float -> (B, A)

FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)  # deletion: shares of the pixels blurred
INSERTION_STEP = 84  # insertion: pixels revealed per step (Huber et al.: 84 of 84x84)
TOP_K = 10  # AIM, PGI, PGU: pixels perturbed
BATCH = 256  # inputs per forward


# -- scores ----------------------------------------------------------------------------------------


def policy_scores(agent, kind: str = "auto") -> Score:
    """The agent's per-action numbers for float inputs, without a graph.

    ``kind``: ``prob`` (softmax of the logits or Q-values), ``raw`` (logits or Q-values; QR-DQN: the
    mean over quantiles), or ``auto``: probabilities for actor-critic agents, Q-values for Q-networks
    (what Huber et al. and XRL-Bench read from their DQNs).
    """
    family = family_for(agent)
    if kind == "auto":
        kind = "raw" if family.bar_kind == "q" else "prob"
    if kind not in ("prob", "raw"):
        raise ValueError(f"kind must be prob, raw or auto, not {kind!r}")

    def score(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = family.forward(x).action_scores
        return torch.softmax(out, dim=1) if kind == "prob" else out

    return score


def evaluate(score: Score, x: torch.Tensor, batch: int = BATCH) -> np.ndarray:
    """``score`` of every input, in chunks: ``(N, A)`` float64."""
    with torch.no_grad():
        return np.concatenate([score(x[i : i + batch]).double().numpy() for i in range(0, len(x), batch)])


def picked(values: np.ndarray, actions: np.ndarray) -> np.ndarray:
    return values[np.arange(len(values)), np.asarray(actions)]


# -- maps ------------------------------------------------------------------------------------------


def random_maps(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random smooth maps: uniform 7x7 noise, bilinear to ``size`` (blobs like a last-conv map's)."""
    up = stretch_matrix(size, 7)
    return np.stack([up @ rng.random((7, 7)) @ up.T for _ in range(n)])


def random_pixel_maps(n: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Uniform noise per pixel, ``(n, H, W)``: Huber et al.'s random baseline."""
    return rng.random((n, *shape))


def ranked_pixels(maps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(N, H*W)`` pixel indices of each map, highest value first, ties in random order."""
    flat = maps.reshape(len(maps), -1)
    hw = flat.shape[1]
    return np.stack([np.lexsort((rng.random(hw), -m)) for m in flat])


def _masked(x: torch.Tensor, pixels: np.ndarray) -> torch.Tensor:
    """``(N, 1, H, W)`` float mask, 1 at ``pixels (N, k)`` (flat indices)."""
    n, _, h, w = x.shape
    mask = np.zeros((n, h * w), np.float32)
    np.put_along_axis(mask, pixels, 1.0, axis=1)
    return torch.as_tensor(mask.reshape(n, 1, h, w))


# -- the metrics -----------------------------------------------------------------------------------


def trapezoid_mean(xs: np.ndarray, ys: np.ndarray) -> float:
    """Area under ``ys`` over ``xs`` divided by the span of ``xs``."""
    return float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs)) / (xs[-1] - xs[0]))


def deletion(
    probs: Score,
    obs: np.ndarray,
    maps: np.ndarray,
    actions: np.ndarray,
    rng: np.random.Generator,
    fractions: tuple[float, ...] = FRACTIONS,
) -> dict:
    """Chosen action's probability, relative to the intact frame, as the top-k% of the map is blurred.

    Returns ``{"auc": trapezoid mean over k in [0, max k], "curve": the mean relative probability at
    k = 0 and each fraction}``; ``probs`` gives probabilities (``policy_scores(agent, "prob")``).
    """
    x = torch.as_tensor(obs).float()
    blurred = gaussian_blur(x)
    p0 = picked(evaluate(probs, x), actions)
    hw = maps.shape[1] * maps.shape[2]
    order = ranked_pixels(maps, rng)
    curve = [np.ones(len(obs))]
    for fraction in fractions:
        m = _masked(x, order[:, : int(round(fraction * hw))])
        curve.append(picked(evaluate(probs, x * (1 - m) + blurred * m), actions) / np.maximum(p0, 1e-12))
    mean = np.stack(curve, axis=1).mean(0)
    xs = np.array((0.0, *fractions))
    return {"auc": trapezoid_mean(xs, mean), "curve": [round(float(v), 4) for v in mean]}


def insertion(
    score: Score,
    obs: np.ndarray,
    maps: np.ndarray,
    actions: np.ndarray,
    rng: np.random.Generator,
    step: int = INSERTION_STEP,
) -> dict:
    """Huber et al.'s insertion: reveal the map's pixels on a black input, ``step`` pixels at a time.

    Point i of the curve is the score of ``actions`` with the top ``i * step`` pixels shown (all
    channels) and the rest 0, for i = 0 .. ceil(H*W / step); the last point is the intact input.
    Returns ``{"auc": mean over inputs of the trapezoid mean of each curve, "curve": the mean curve
    at every step}``, in ``score``'s units.
    """
    x = torch.as_tensor(obs).float()
    n, hw = len(obs), maps.shape[1] * maps.shape[2]
    rank = np.empty((n, hw), np.int64)
    np.put_along_axis(rank, ranked_pixels(maps, rng), np.arange(hw)[None].repeat(n, 0), axis=1)
    steps = (hw + step - 1) // step
    curves = np.empty((n, steps + 1))
    for i in range(steps + 1):
        shown = torch.as_tensor((rank < i * step).reshape(n, 1, *maps.shape[1:]).astype(np.float32))
        curves[:, i] = picked(evaluate(score, x * shown), actions)
    xs = np.linspace(0.0, 1.0, steps + 1)
    mean = curves.mean(0)
    return {"auc": trapezoid_mean(xs, mean), "curve": [round(float(v), 4) for v in mean]}


def zeroed(obs: np.ndarray, pixels: np.ndarray) -> torch.Tensor:
    """``obs`` as float with ``pixels (N, k)`` (flat indices) set to 0 on every channel."""
    x = torch.as_tensor(obs).float()
    return x * (1 - _masked(x, pixels))


def aim(
    score: Score, obs: np.ndarray, maps: np.ndarray, actions: np.ndarray, rng: np.random.Generator, k: int = TOP_K
) -> float:
    """XRL-Bench's AIM: share of inputs whose argmax action survives zeroing the map's top ``k`` pixels."""
    order = ranked_pixels(maps, rng)
    chosen = evaluate(score, zeroed(obs, order[:, :k])).argmax(1)
    return float((chosen == np.asarray(actions)).mean())


def prediction_gap(
    score: Score,
    obs: np.ndarray,
    maps: np.ndarray,
    actions: np.ndarray,
    rng: np.random.Generator,
    k: int = TOP_K,
    important: bool = True,
) -> float:
    """XRL-Bench's PGI (``important``: the top ``k`` pixels zeroed) or PGU (the bottom ``k``):
    mean |score(x)_a - score(x')_a| over the inputs."""
    order = ranked_pixels(maps, rng)
    pixels = order[:, :k] if important else order[:, -k:]
    before = picked(evaluate(score, torch.as_tensor(obs).float()), actions)
    after = picked(evaluate(score, zeroed(obs, pixels)), actions)
    return float(np.abs(before - after).mean())


# -- docs ------------------------------------------------------------------------------------------


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_block(path: Path, name: str, text: str) -> None:
    """Put ``text`` between the ``name`` markers of ``path`` (appended with them when absent).

    Only that block changes; the file is replaced in one step (a temporary file renamed over it).
    """
    begin, end = markers(name)
    page = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text}\n{end}"
    if begin in page and end in page and page.index(begin) < page.index(end):
        page = page[: page.index(begin)] + block + page[page.index(end) + len(end) :]
    else:
        page = page + ("\n" if page and not page.endswith("\n") else "") + ("\n" if page else "") + block + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(page)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
