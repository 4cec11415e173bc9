"""Helpers shared by the ``test_explain*`` modules (plain functions, no fixtures)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

__all__ = [
    "assert_per_image_corr",
    "assert_same_snapshot",
    "calibrate_bn",
    "has_hooks",
    "oracle_maps",
    "pearson",
    "snapshot",
]


def calibrate_bn(
    model: nn.Module, shape: tuple[int, ...], *, steps: int = 3, seed: int = 0
) -> None:
    """Give a random-init network's BatchNorm layers real running statistics, then eval()."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(8, *shape, generator=gen))
    model.eval()


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two maps (flattened), in float64."""
    x = a.double().reshape(-1)
    y = b.double().reshape(-1)
    x = x - x.mean()
    y = y - y.mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else float("nan")


def assert_per_image_corr(
    ours: torch.Tensor, theirs: torch.Tensor, *, threshold: float = 0.999, label: str = ""
) -> None:
    """Per-image Pearson correlation >= threshold; constant maps must be constant on both sides."""
    assert ours.shape == theirs.shape, (label, ours.shape, theirs.shape)
    for i in range(ours.shape[0]):
        spread_ours = float(ours[i].max() - ours[i].min())
        spread_theirs = float(theirs[i].max() - theirs[i].min())
        if spread_theirs < 1e-6 or spread_ours < 1e-6:
            assert spread_theirs < 1e-3 and spread_ours < 1e-3, (label, i)
            continue
        corr = pearson(ours[i], theirs[i])
        assert corr >= threshold, f"{label} image {i}: correlation {corr:.6f}"


def oracle_maps(
    cam_class: type,
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run a pytorch-grad-cam class on a copy of ``model`` (it calls eval() and backward())."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    clone = copy.deepcopy(model)
    module = dict(clone.named_modules())[layer]
    with cam_class(model=clone, target_layers=[module], reshape_transform=reshape_transform) as cam:
        out = cam(
            input_tensor=images.clone(),
            targets=[ClassifierOutputTarget(int(t)) for t in targets],
        )
    return torch.from_numpy(np.asarray(out, dtype=np.float32))


def has_hooks(model: nn.Module) -> bool:
    """True when any module still carries a forward/backward hook."""
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in model.modules()
    )


def snapshot(model: nn.Module) -> dict[str, object]:
    """Training flags, requires_grad flags, state dict and .grad of a model, for comparisons."""
    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {n: p.grad for n, p in model.named_parameters()},
    }


def assert_same_snapshot(before: dict[str, object], model: nn.Module) -> None:
    """The model's flags, parameters and buffers are as in ``before`` and no .grad appeared."""
    after = snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    state_before = before["state"]
    state_after = after["state"]
    assert isinstance(state_before, dict) and isinstance(state_after, dict)
    assert state_before.keys() == state_after.keys()
    for key, value in state_before.items():
        assert torch.equal(value, state_after[key]), key
    assert all(g is None for g in after["grads"].values())  # type: ignore[union-attr]
