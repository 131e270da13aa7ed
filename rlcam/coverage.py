"""Which input pixels the network can see at all.

A stack of strided convolutions need not cover its input: NatureCNN (8x8 stride 4, then 4x4
stride 2, then 3x3) on a 48x48 image makes 11 rows of the first layer's cells, of which the
second layer reads only 10, so input rows and columns 44-47 reach nothing; on 64x64 rows and
columns 60-63 are lost the same way, on 84x84 none. Whatever lies there cannot change the
action, a dot at the edge is half invisible, and a map spread over the whole input (the
bilinear placement) paints cells over pixels they never read.

``unseen(policy, layer)`` finds such pixels for the extractor that holds ``layer``: those where
the gradient of a random projection of the extractor's output is zero for every one of a few
random inputs, then confirmed by redrawing them at random and getting the same output to the
bit. A pixel is reported only when the output does not depend on it, for any input we tried.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gymnasium import spaces

PROBES = 4  # random inputs tried


@dataclass(frozen=True)
class Unseen:
    """The input pixels an image extractor never reads: whole rows and columns, or scattered ones."""

    key: str | None  # the Dict observation's image key; None for an image-only agent
    extractor: str  # its module path in the policy, e.g. ``features_extractor``
    height: int
    width: int
    rows: tuple[int, ...]  # rows none of whose pixels is read
    cols: tuple[int, ...]
    pixels: int  # every unread pixel, those rows' and columns' included

    def sentence(self, keys: list[str] | None = None) -> str:
        """One sentence; ``keys``: every image key this same border is lost on (default: this one's)."""
        keys = keys or ([self.key] if self.key else [])
        named_keys = " and ".join(repr(k) for k in keys)
        where = f"of image key{'s' if len(keys) > 1 else ''} {named_keys}" if keys else "of the image"
        parts = [_span(self.rows, "row") if self.rows else "", _span(self.cols, "column") if self.cols else ""]
        named = " and ".join(p for p in parts if p)
        covered = len(self.rows) * self.width + len(self.cols) * self.height - len(self.rows) * len(self.cols)
        if not named:
            named = f"{self.pixels} pixels"
        elif self.pixels > covered:
            named += f" (and {self.pixels - covered} more pixels)"
        network = _network(self) if len(keys) > 1 else self.extractor
        return (
            f"input {named} {where} ({self.height}x{self.width}) never reach {network} (its convolutions "
            "stop short of them): nothing there can change its output or the map."
        )


def unseen_in(policy: torch.nn.Module, layers: list[str]) -> list[Unseen]:
    """``unseen`` of each layer's extractor, those with pixels it never reads."""
    return [u for u in (unseen(policy, layer) for layer in layers) if u is not None]


def sentences(found: list[Unseen]) -> list[str]:
    """A sentence per distinct border, naming every image key that loses it."""
    groups: dict[tuple, list[Unseen]] = {}
    for u in found:
        groups.setdefault((u.height, u.width, u.rows, u.cols, u.pixels, _network(u)), []).append(u)
    return [same[0].sentence([u.key for u in same if u.key]) for same in groups.values()]


def _network(u: Unseen) -> str:
    """The extractor's path without the Dict key's own part: one network for every key's sentence."""
    return u.extractor.rsplit(f".extractors.{u.key}", 1)[0] if u.key else u.extractor


def _span(indices: tuple[int, ...], noun: str) -> str:
    if len(indices) == 1:
        return f"{noun} {indices[0]}"
    if indices == tuple(range(indices[0], indices[-1] + 1)):
        return f"{noun}s {indices[0]}-{indices[-1]}"
    return f"{noun}s " + ", ".join(map(str, indices))


def extractor_of(policy: torch.nn.Module, layer: str) -> tuple[torch.nn.Module, str | None, str] | None:
    """The features extractor holding ``layer`` (for a Dict observation, that key's own), the key and
    the extractor's module path."""
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    found, key, path, module = None, None, "", policy
    parts = layer.split("@")[0].split(".")  # ``path@k``: the k-th call of one module, same extractor
    for i, part in enumerate(parts):
        module = getattr(module, part, None) if not part.isdigit() else module[int(part)]
        if module is None:
            return None
        if isinstance(module, BaseFeaturesExtractor):
            found, path = module, ".".join(parts[: i + 1])
            key = parts[i] if i > 0 and parts[i - 1] == "extractors" else None
    return None if found is None else (found, key, path)


def unseen(policy: torch.nn.Module, layer: str, seed: int = 0) -> Unseen | None:
    """The pixels of the image that ``layer``'s extractor never reads, or None (all read, or not known)."""
    held = extractor_of(policy, layer)
    if held is None:
        return None
    extractor, key, path = held
    space = policy.observation_space
    if isinstance(space, spaces.Dict):
        if key is None:
            return None
        space = space.spaces[key]
    if not isinstance(space, spaces.Box) or len(space.shape) != 3:
        return None
    generator = torch.Generator().manual_seed(seed)
    device = next(extractor.parameters(), torch.empty(0)).device
    x = torch.rand((PROBES, *space.shape), generator=generator).to(device).requires_grad_()
    was_training = extractor.training
    extractor.eval()
    try:
        with torch.enable_grad():
            out = extractor(x)
            projection = torch.randn(out.shape, generator=generator).to(device)
            (grad,) = torch.autograd.grad((out * projection).sum(), x)
        blind = (grad.abs().sum(dim=(0, 1)) == 0).cpu()  # (H, W): no probe's output moved with it
        if not blind.any():
            return None
        redrawn = x.detach().clone()
        noise = torch.rand(redrawn.shape, generator=generator).to(device)
        where = blind.to(device)
        redrawn[..., where] = noise[..., where]
        with torch.no_grad():
            if not torch.equal(extractor(redrawn), out.detach()):
                return None  # a zero gradient there, but the output moves: not a pixel it cannot see
    except Exception:  # an extractor that cannot take a random float image of its space's shape
        return None
    finally:
        extractor.train(was_training)
    height, width = blind.shape
    rows = tuple(int(r) for r in torch.nonzero(blind.all(dim=1)).flatten())
    cols = tuple(int(c) for c in torch.nonzero(blind.all(dim=0)).flatten())
    return Unseen(key, path, height, width, rows, cols, int(blind.sum()))
