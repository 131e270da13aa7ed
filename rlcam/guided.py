"""Guided backpropagation (Springenberg et al.), with hooks that live only inside a ``with`` block.

Through a guided ReLU the gradient passes only where the forward input was positive (the
ordinary ReLU rule) *and* the incoming gradient is positive. ``guided_relus(module)`` swaps
every ``nn.ReLU`` inside ``module`` for that rule by forward hooks, and removes them on leaving
the block, exception or not. ReLUs called functionally (``F.relu``) are not seen; SB3's
NatureCNN and MLP heads use modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from rlcam.errors import RlcamError


class GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward ``grad.clamp(min=0) * (input > 0)``."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


def _guide(module, inputs, output):
    return GuidedReLU.apply(inputs[0])


@contextlib.contextmanager
def guided_relus(module: nn.Module) -> Iterator[int]:
    """Within the block, every ``nn.ReLU`` in ``module`` backpropagates the guided way; yields their number."""
    handles = []
    try:
        for m in module.modules():
            if isinstance(m, nn.ReLU):
                if m.inplace:
                    raise RlcamError("guided backpropagation needs out-of-place ReLUs; this policy has in-place ones.")
                handles.append(m.register_forward_hook(_guide))
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()
