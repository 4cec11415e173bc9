"""Faithfulness: does removing what the map calls important change the model's score?

- Deletion and insertion curves (Petsiuk et al., "RISE", 2018). Pixels are ordered by saliency
  (most salient first). Deletion replaces the top ``k/steps`` fraction of pixels by a baseline and
  records the target's softmax probability for ``k = 0 .. steps``; a faithful map makes it fall
  fast (low area under the curve). Insertion starts from the baseline and puts the top pixels back;
  a faithful map makes it rise fast (high area).
- Average drop and increase in confidence (Chattopadhay et al., "Grad-CAM++", 2018): the model
  sees ``image * saliency``; drop is ``mean(max(0, y - o) / y)`` and increase the fraction of
  images with ``o > y``, where ``y`` and ``o`` are the target's softmax probability on the image
  and on the explanation map.

Images are given as the model takes them (normalised). Blur and mean baselines commute with the
per-channel affine normalisation, so they mean the same thing in either space.

Ties and references: :func:`deletion_insertion` orders equal saliency values row-major by default
(kept for compatibility) or at random, averaged over several orders (``ties="random"``).
:func:`faithfulness_with_references` is what the report uses: random tie orders, every AUC
labelled with its baseline (``"blur"`` and RISE's ``"zero"`` by default), and the AUCs of random
maps under the same baseline and steps as the reference.

Speed: every perturbed image of every step of every image is one row of a single flat stream,
built on the fly and evaluated in forward batches of exactly ``batch_size`` under
``torch.no_grad()``; deletion and insertion share the stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from reporter.metrics.trust._common import as_maps, resize_maps, wilson_interval
from reporter.nn.hooks import eval_mode

__all__ = [
    "ConfidenceChange",
    "DeletionInsertion",
    "DeletionInsertionSummary",
    "average_drop_increase",
    "baseline_images",
    "deletion_insertion",
    "faithfulness_with_references",
    "fully_removed",
    "random_map_reference",
]

ModelFn = Callable[[torch.Tensor], torch.Tensor]


class DeletionInsertionSummary(TypedDict):
    """:meth:`DeletionInsertion.summary`: batch-mean areas and curves as plain floats."""

    deletion_auc: float
    insertion_auc: float
    deletion_curve: list[float]
    insertion_curve: list[float]


@dataclass
class DeletionInsertion:
    """Deletion and insertion curves for a batch of images.

    Attributes:
        deletion: ``[B, steps + 1]`` target probability after deleting ``k / steps`` of the pixels.
        insertion: ``[B, steps + 1]`` target probability after inserting ``k / steps`` of them.
        deletion_auc: ``[B]`` trapezoidal area under the deletion curve (x in ``[0, 1]``); lower
            is better.
        insertion_auc: ``[B]`` area under the insertion curve; higher is better.
    """

    deletion: torch.Tensor
    insertion: torch.Tensor
    deletion_auc: torch.Tensor
    insertion_auc: torch.Tensor

    def summary(self) -> DeletionInsertionSummary:
        """Mean AUCs and mean curves as plain floats and lists (JSON-ready)."""
        return {
            "deletion_auc": float(self.deletion_auc.mean()),
            "insertion_auc": float(self.insertion_auc.mean()),
            "deletion_curve": [float(v) for v in self.deletion.mean(0)],
            "insertion_curve": [float(v) for v in self.insertion.mean(0)],
        }


@dataclass
class ConfidenceChange:
    """Average drop / increase in confidence.

    Attributes:
        drop: ``[B]`` ``max(0, y - o) / y`` per image.
        increase: ``[B]`` bool, ``o > y``.
        score: ``[B]`` ``y``, the target probability on the image.
        explanation_score: ``[B]`` ``o``, the target probability on ``image * saliency``.
    """

    drop: torch.Tensor
    increase: torch.Tensor
    score: torch.Tensor
    explanation_score: torch.Tensor

    @property
    def average_drop(self) -> float:
        """Mean relative drop, a fraction in ``[0, 1]`` (the paper reports it in percent)."""
        return float(self.drop.mean())

    @property
    def increase_rate(self) -> float:
        """Fraction of images whose score increased."""
        return float(self.increase.float().mean())

    def summary(self) -> dict[str, float]:
        """JSON-ready averages."""
        return {"average_drop": self.average_drop, "increase_rate": self.increase_rate}


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)
    coords = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def baseline_images(
    images: torch.Tensor, baseline: str | torch.Tensor = "blur", *, blur_sigma: float | None = None
) -> torch.Tensor:
    """The image that deleted pixels take (and insertion starts from).

    Args:
        images: ``[B, C, H, W]`` model inputs.
        baseline: ``"blur"`` (Gaussian blur, RISE's insertion baseline), ``"mean"`` (each image's
            mean colour), ``"zero"`` (all zeros: the dataset mean colour for normalised inputs),
            or a tensor broadcastable to ``images``.
        blur_sigma: Blur standard deviation in pixels; default ``max(1, min(H, W) / 20)``.

    Returns:
        ``[B, C, H, W]`` baseline images.
    """
    if isinstance(baseline, torch.Tensor):
        return baseline.to(images).expand_as(images)
    if baseline == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(1.0, min(images.shape[-2:]) / 20)
        return _blur(images.float(), float(sigma)).to(images.dtype)
    if baseline == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if baseline == "zero":
        return torch.zeros_like(images)
    raise ValueError(f"baseline must be 'blur', 'mean', 'zero' or a tensor, got {baseline!r}")


def _targets(target: int | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long, device=device)
    target = target.to(device=device, dtype=torch.long).reshape(-1)
    if target.numel() == 1:
        return target.expand(n)
    if target.numel() != n:
        raise ValueError(f"target must be an int or have {n} entries, got {target.numel()}")
    return target


def _inference(model_fn: ModelFn):
    """No grad, and eval mode (restored afterwards) when ``model_fn`` is a module."""
    mode = eval_mode(model_fn) if isinstance(model_fn, nn.Module) else nullcontext()
    return mode


def _probabilities(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=1).gather(1, target[:, None])[:, 0]


def deletion_insertion(
    model_fn: ModelFn,
    images: torch.Tensor,
    saliency: torch.Tensor,
    target: int | torch.Tensor,
    *,
    steps: int = 20,
    baseline: str | torch.Tensor = "blur",
    batch_size: int = 128,
    blur_sigma: float | None = None,
    ties: str = "row-major",
    tie_orders: int = 4,
    seed: int = 0,
) -> DeletionInsertion:
    """Deletion and insertion curves and their areas (Petsiuk et al. 2018).

    Args:
        model_fn: A model or callable mapping ``[N, C, H, W]`` to logits ``[N, classes]``. A module
            is run in eval mode and its training flags are restored afterwards.
        images: ``[B, C, H, W]`` model inputs.
        saliency: ``[B, h, w]`` maps (resized bilinearly to ``H x W``); higher is more important.
            Pixels are ordered by descending saliency; equal values are ordered by ``ties``.
        target: Class per image (``[B]``) or one class for all.
        steps: Number of steps; step ``k`` perturbs ``round(k * H * W / steps)`` pixels.
        baseline: See :func:`baseline_images`; the same baseline serves deletion (what removed
            pixels become) and insertion (the starting image).
        batch_size: Images per forward pass.
        blur_sigma: Blur sigma for ``baseline="blur"``.
        ties: ``"row-major"`` (equal values keep row-major order: the historical behaviour, which
            biases maps with plateaus, e.g. EigenCAM's zeros) or ``"random"``: equal values are
            ordered at random, ``tie_orders`` times with seeds derived from ``seed``, and the
            curves averaged over the orders. Values that differ are never reordered.
        tie_orders: Number of random tie orders averaged (``ties="random"`` only).
        seed: Seed of the tie orders (a private generator; the global RNG is untouched).

    Returns:
        A :class:`DeletionInsertion` on the images' device.
    """
    if ties not in ("row-major", "random"):
        raise ValueError(f"ties must be 'row-major' or 'random', got {ties!r}")
    if tie_orders < 1:
        raise ValueError("tie_orders must be >= 1")
    if images.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got {tuple(images.shape)}")
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    b, _, h, w = images.shape
    device = images.device
    sal = resize_maps(as_maps(saliency).to(device), (h, w))
    if sal.shape[0] != b:
        raise ValueError(f"saliency has {sal.shape[0]} maps for {b} images")
    tgt = _targets(target, b, device)
    base = baseline_images(images, baseline, blur_sigma=blur_sigma)
    t = tie_orders if ties == "random" else 1
    flat_sal = sal.reshape(b, -1)
    if t == 1 and ties == "row-major":
        order = torch.argsort(flat_sal, dim=1, descending=True, stable=True)
    else:
        # a random permutation first, then a stable sort: equal values end up in random order
        gen = torch.Generator().manual_seed(int(seed))
        perm = torch.argsort(torch.rand(b * t, h * w, generator=gen), dim=1).to(device)
        permuted = flat_sal.repeat_interleave(t, dim=0).gather(1, perm)
        order = perm.gather(1, torch.argsort(permuted, dim=1, descending=True, stable=True))
    # rank[r, p] = position of pixel p in row r's descending saliency order (row = image x order)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=device).expand(b * t, -1))
    rank = rank.view(b * t, 1, h, w)
    counts = torch.round(torch.arange(steps + 1, device=device) * (h * w / steps)).long()

    per_image = 2 * (steps + 1)  # deletion steps, then insertion steps
    total = b * t * per_image
    # Identical inputs are evaluated once: insertion's last step is the intact image (deletion's
    # first), its first the baseline (deletion's last), and a tie order whose chosen pixels at a
    # step equal the first order's (no tie straddles that step) gives the same image.
    source = _unique_rows(rank.view(b, t, h * w), counts, steps)  # [total] -> evaluated row
    needed = torch.unique(source)
    scores = torch.empty(total, device=device)
    with _inference(model_fn), torch.no_grad():
        for start in range(0, len(needed), batch_size):
            flat = needed[start : start + batch_size]
            row = flat // per_image
            img_idx = row // t
            within = flat % per_image
            insert = within > steps
            step = torch.where(insert, within - (steps + 1), within)
            chosen = rank[row] < counts[step].view(-1, 1, 1, 1)  # [n, 1, H, W] top pixels
            # deletion: chosen pixels from the baseline; insertion: chosen pixels from the image
            take_base = chosen ^ insert.view(-1, 1, 1, 1)
            batch = torch.where(take_base, base[img_idx], images[img_idx])
            scores[flat] = _probabilities(model_fn(batch), tgt[img_idx])
    scores = scores[source]
    scores = scores.view(b, t, 2, steps + 1).mean(dim=1)
    deletion, insertion = scores[:, 0], scores[:, 1]

    def auc(curve: torch.Tensor) -> torch.Tensor:
        return (curve[:, :-1] + curve[:, 1:]).sum(dim=1) / (2 * steps)

    return DeletionInsertion(deletion, insertion, auc(deletion), auc(insertion))


def _unique_rows(rank: torch.Tensor, counts: torch.Tensor, steps: int) -> torch.Tensor:
    """For every (image, order, curve, step) row of :func:`deletion_insertion`, the row whose
    input image is the same and is evaluated instead (itself when it is the first such row).

    ``rank``: ``[B, T, P]`` position of each pixel in each order; ``counts``: pixels chosen at
    each step. Row index: ``((image * T + order) * 2 + curve) * (steps + 1) + step``.
    """
    b, t, _ = rank.shape
    n = steps + 1
    idx = torch.arange(b * t * 2 * n, device=rank.device).view(b, t, 2, n)
    src = idx.clone()
    if t > 1:
        # chosen sets equal to the first order's at that step
        chosen = rank[:, :, None, :] < counts.view(1, 1, -1, 1)  # [B, T, n, P]
        same = (chosen[:, 1:] == chosen[:, :1]).all(dim=-1)  # [B, T-1, n]
        for curve in (0, 1):
            src[:, 1:, curve] = torch.where(same, idx[:, :1, curve], idx[:, 1:, curve])
    # the end points: insertion's last = deletion's first (intact), first = deletion's last
    src[:, :, 1, n - 1] = src[:, :, 0, 0]
    src[:, :, 1, 0] = src[:, :, 0, n - 1]
    return src.flatten()


def average_drop_increase(
    model_fn: ModelFn,
    images: torch.Tensor,
    saliency: torch.Tensor,
    target: int | torch.Tensor,
    *,
    batch_size: int = 128,
) -> ConfidenceChange:
    """Average drop and increase in confidence (Chattopadhay et al. 2018).

    Args:
        model_fn: A model or callable returning logits (see :func:`deletion_insertion`).
        images: ``[B, C, H, W]`` model inputs.
        saliency: ``[B, h, w]`` maps in ``[0, 1]`` (min-max normalised; resized to ``H x W``).
            Values outside are clamped.
        target: Class per image or one class for all.
        batch_size: Images per forward pass.

    Returns:
        A :class:`ConfidenceChange`.
    """
    b, _, h, w = images.shape
    device = images.device
    sal = resize_maps(as_maps(saliency).to(device), (h, w)).clamp(0, 1)
    tgt = _targets(target, b, device)
    y = torch.empty(b, device=device)
    o = torch.empty(b, device=device)
    half = max(1, batch_size // 2)
    with _inference(model_fn), torch.no_grad():
        for start in range(0, b, half):
            sl = slice(start, min(b, start + half))
            x = images[sl]
            both = torch.cat([x, x * sal[sl, None]], dim=0)
            p = _probabilities(model_fn(both), torch.cat([tgt[sl], tgt[sl]]))
            n = x.shape[0]
            y[sl], o[sl] = p[:n], p[n:]
    drop = (y - o).clamp(min=0) / y.clamp(min=1e-12)
    return ConfidenceChange(drop=drop, increase=o > y, score=y, explanation_score=o)


def faithfulness_with_references(
    model_fn: ModelFn,
    images: torch.Tensor,
    saliency: torch.Tensor,
    target: int | torch.Tensor,
    *,
    baselines: tuple[str, ...] = ("blur", "zero"),
    steps: int = 20,
    tie_orders: int = 4,
    random_maps: int = 3,
    seed: int = 0,
    batch_size: int = 128,
    blur_sigma: float | None = None,
    reference: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Deletion / insertion AUCs labelled with their baseline, beside a random-map reference.

    For each baseline the maps' curves are computed with random tie orders
    (``ties="random"``, ``tie_orders`` orders averaged: a map with plateaus, such as EigenCAM's
    zeros, is not favoured or penalised by row-major order), and the same curves for
    ``random_maps`` maps of uniform noise (seeds ``seed + 1 ...``; no ties) give the reference an
    uninformative map reaches. ``"zero"`` is RISE's deletion baseline (the dataset mean colour
    for normalised inputs), ``"blur"`` RISE's insertion baseline.

    Cost: ``len(baselines) * (tie_orders + random_maps) * 2 * (steps + 1)`` forward passes per
    image.

    Args:
        model_fn: A model or callable returning logits (see :func:`deletion_insertion`).
        images: ``[B, C, H, W]`` model inputs.
        saliency: ``[B, h, w]`` maps.
        target: Class per image or one class for all.
        baselines: Baselines to run (see :func:`baseline_images`).
        steps: Curve steps.
        tie_orders: Random tie orders averaged.
        random_maps: Random maps averaged for the reference (0 to skip it).
        seed: Seed of the tie orders and the random maps.
        batch_size: Images per forward pass.
        blur_sigma: Blur sigma for the ``"blur"`` baseline.
        reference: A ready :func:`random_map_reference` for these images and targets (then
            ``random_maps`` only labels the output); ``None`` computes it.

    Returns:
        A JSON-ready dict with ``steps``, ``ties`` (``"random"``), ``tie_orders``,
        ``random_maps``, ``n`` and ``baselines``: for each baseline name a dict with
        ``baseline``, ``deletion_auc``, ``insertion_auc``, ``random_deletion_auc``,
        ``random_insertion_auc``, ``deletion_gain``, ``insertion_gain``, ``deletion_curve`` and
        ``insertion_curve``. ``deletion_gain = random - map`` and ``insertion_gain = map -
        random``: positive when the map beats a random one.
    """
    b = images.shape[0]
    sal = as_maps(saliency)
    out: dict[str, Any] = {
        "steps": steps,
        "ties": "random",
        "tie_orders": tie_orders,
        "random_maps": random_maps,
        "n": int(b),
        "baselines": {},
    }
    for name in baselines:
        res = deletion_insertion(
            model_fn,
            images,
            sal,
            target,
            baseline=name,
            ties="random",
            tie_orders=tie_orders,
            seed=seed,
            steps=steps,
            batch_size=batch_size,
            blur_sigma=blur_sigma,
        )
        summary = res.summary()
        entry: dict[str, Any] = {"baseline": name, **summary}
        ref = reference.get(name) if reference is not None else None
        if ref is None and random_maps > 0:
            ref = random_map_reference(
                model_fn,
                images,
                target,
                baselines=(name,),
                steps=steps,
                random_maps=random_maps,
                seed=seed,
                batch_size=batch_size,
                blur_sigma=blur_sigma,
            )[name]
        if ref is not None:
            entry["random_deletion_auc"], entry["random_insertion_auc"] = ref
            entry["deletion_gain"] = ref[0] - summary["deletion_auc"]
            entry["insertion_gain"] = summary["insertion_auc"] - ref[1]
        else:
            entry.update(
                random_deletion_auc=None,
                random_insertion_auc=None,
                deletion_gain=None,
                insertion_gain=None,
            )
        out["baselines"][name] = entry
    return out


def random_map_reference(
    model_fn: ModelFn,
    images: torch.Tensor,
    target: int | torch.Tensor,
    *,
    baselines: tuple[str, ...] = ("blur", "zero"),
    steps: int = 20,
    random_maps: int = 3,
    seed: int = 0,
    batch_size: int = 128,
    blur_sigma: float | None = None,
) -> dict[str, tuple[float, float]]:
    """Deletion and insertion areas of uninformative maps: the reference a map must beat.

    ``random_maps`` maps of uniform noise (seeds ``seed + 1 ...``; no ties) per baseline, their
    mean areas. They do not depend on any method's map, so one reference serves every method
    on the same images and targets (pass it as ``reference`` to
    :func:`faithfulness_with_references`).

    Returns:
        ``{baseline: (random_deletion_auc, random_insertion_auc)}``.
    """
    b, _, h, w = images.shape
    out: dict[str, tuple[float, float]] = {}
    for name in baselines:
        rdel, rins = [], []
        for r in range(random_maps):
            gen = torch.Generator().manual_seed(int(seed) + 1 + r)
            noise = torch.rand(b, h, w, generator=gen).to(images.device)
            res = deletion_insertion(
                model_fn,
                images,
                noise,
                target,
                baseline=name,
                ties="row-major",
                steps=steps,
                batch_size=batch_size,
                blur_sigma=blur_sigma,
            )
            rdel.append(float(res.deletion_auc.mean()))
            rins.append(float(res.insertion_auc.mean()))
        out[name] = (sum(rdel) / len(rdel), sum(rins) / len(rins))
    return out


def fully_removed(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    targets: torch.Tensor,
    labels: torch.Tensor,
    *,
    baselines: tuple[str, ...] = ("blur", "zero"),
    batch_size: int = 64,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The model on images whose every pixel was removed: the end point of the deletion curve.

    A model that still gets a fully blurred image right reads something a blur keeps (colour,
    layout: a background, say), not the object's detail; that is itself evidence of a
    shortcut. Per baseline: ``accuracy`` (prediction equals the label; Wilson interval),
    ``same_prediction`` (equals the intact image's prediction ``targets``) and ``confidence``
    (mean softmax probability of ``targets``), beside the intact ``intact_accuracy`` and the
    ``chance`` level ``1 / classes``; ``n`` images.
    """
    labels = labels.reshape(-1).to(images.device)
    targets = targets.reshape(-1).to(images.device)
    n = int(images.shape[0])
    out: dict[str, Any] = {"n": n}

    if n == 0:
        raise ValueError("fully_removed needs at least one image")

    def run(x: torch.Tensor) -> torch.Tensor:
        mode = eval_mode(model) if isinstance(model, nn.Module) else nullcontext()
        with mode, torch.no_grad():
            return torch.cat(
                [model(x[i : i + batch_size]).float() for i in range(0, n, batch_size)]
            )

    intact = run(images)
    out["intact_accuracy"] = float((intact.argmax(1) == labels).double().mean())
    out["chance"] = 1.0 / int(intact.shape[1])
    out["baselines"] = {}
    for name in baselines:
        logits = run(baseline_images(images, name))
        pred = logits.argmax(1)
        k = int((pred == labels).sum())
        out["baselines"][name] = {
            "accuracy": k / n,
            "interval": list(wilson_interval(k, n, confidence)),
            "same_prediction": float((pred == targets).double().mean()),
            "confidence": float(torch.softmax(logits, 1).gather(1, targets[:, None]).mean()),
        }
    return out
