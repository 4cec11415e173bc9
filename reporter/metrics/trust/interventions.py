"""Shortcut detection by intervention: change the suspected cue, watch the predictions.

Saliency statistics (:mod:`~reporter.metrics.trust.shortcut`) only point to candidates; these
functions decide. Each one edits the images, runs the model, and reports per class the
number of images, the accuracy with the cue and without it, and an interval; a class is
``flagged`` only on the size of the effect, by thresholds that are parameters (defaults below).

With object masks:

- :func:`background_swap`: every image keeps its object; its background is replaced by the
  background of an image of *another* class (``mode="swap"``; the donor's own object is filled
  with the donor's background, see below) or by a blur of its own background (``mode="blur"``:
  removes texture, keeps colour). Reported per class (true label): recall before and after, the
  drop and its bootstrap interval, and the share of predictions that changed class with its
  Wilson interval. **Flagged** when the recall drops by at least ``drop_threshold`` (0.2) with
  the interval's lower bound above ``ci_lower_threshold`` (0.05), *or* when at least
  ``change_threshold`` (0.5) of the class's predictions change with the Wilson lower bound at
  least ``change_lower_threshold`` (0.3). The second rule catches a shortcut on a test split
  where the cue is already broken (``shapes-spurious`` with ``shortcut="absent"``): recall is
  then low before and after, but the predictions still follow the swapped background.

Without masks (a watermark-like cue at a fixed place):

- :func:`consistent_region`: the box of a given area holding the most mass of a class-average
  map, with its position in words and, given the class's maps, their location agreement and the
  share of maps whose peak lies in the box.
- :func:`region_ablation`: recall of the class with the box filled (``"blur"``: a Gaussian
  average of the pixels around the box, ``"mean"``: the mean colour outside it) versus intact.
- :func:`region_paste`: the share of other-class images whose prediction flips to the class when
  the box is copied in from the class's images, beside a control: the same box copied in from
  other-class images (a model that falls back to one class whenever its own cue is covered
  flips in both; a cue flips only with the class's region).
- :func:`region_cue` / :func:`region_shortcuts`: **flagged** as a watermark-like cue when the box
  is small (``area_fraction <= max_area``, 0.10) and pasting it flips most predictions beyond
  the control (``flip_rate - control_flip_rate >= flip_threshold``, 0.5, and the flip rate's
  Wilson lower bound minus the control rate at least ``flip_lower``, 0.25). Ablation is
  reported as evidence, never as the flag: removing the most salient region of a class also
  removes the object when objects sit at one place, which is not a shortcut.

Intervals: percentile bootstrap (``n_boot`` resamples of the class's images, seeded) for a
difference of paired rates; Wilson score intervals for a rate. All functions take images as the
model takes them; box filling and blurring commute with per-channel affine normalisation.
Models run in eval mode under ``torch.no_grad()`` (their training flags are restored).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from reporter.metrics.trust._common import (
    as_maps,
    bootstrap_interval,
    resize_maps,
    wilson_interval,
)
from reporter.metrics.trust.faithfulness import _blur
from reporter.metrics.trust.shortcut import location_agreement
from reporter.models.meta import int_pair
from reporter.nn.hooks import eval_mode

__all__ = [
    "CHANGE_LOWER_THRESHOLD",
    "CHANGE_THRESHOLD",
    "CI_LOWER_THRESHOLD",
    "DROP_THRESHOLD",
    "FLIP_LOWER_THRESHOLD",
    "FLIP_THRESHOLD",
    "MAX_REGION_AREA",
    "PULL_LOWER_THRESHOLD",
    "PULL_THRESHOLD",
    "REGION_AREA",
    "CueSearch",
    "InterventionEffect",
    "PasteEffect",
    "Region",
    "RegionCue",
    "background_swap",
    "bootstrap_interval",
    "box_mask",
    "class_mean_maps",
    "consistent_region",
    "fill_box",
    "pasted_images",
    "pixel_contrast_maps",
    "region_ablation",
    "region_cue",
    "region_paste",
    "region_proposals",
    "region_shortcuts",
    "search_forward_passes",
    "search_region_cues",
    "swapped_images",
    "wilson_interval",
]

ModelFn = Callable[[torch.Tensor], torch.Tensor]
Box = tuple[int, int, int, int]

DROP_THRESHOLD = 0.2
"""Flag when a class's recall falls by at least this (20 points: far above the few points a
clean model loses to an edited image)."""

CI_LOWER_THRESHOLD = 0.05
"""...and the bootstrap interval's lower bound of the drop is above this (not chance)."""

CHANGE_THRESHOLD = 0.5
"""Background swap also flags when at least this share of a class's predictions change class."""

CHANGE_LOWER_THRESHOLD = 0.3
"""...with the Wilson lower bound of that share at least this."""

PULL_THRESHOLD = 0.5
"""Background swap: a class's backgrounds pull other classes' images to it when at least this
share more of them is predicted as the class after the swap than before."""

PULL_LOWER_THRESHOLD = 0.25
"""... and the lower end of the Wilson interval of that share is at least this far above."""

REGION_AREA = 0.05
"""Default area of the consistently salient box, as a fraction of the image (7 x 7 at 32 x 32)."""

MAX_REGION_AREA = 0.10
"""A region cue must be small: at most this fraction of the image."""

FLIP_THRESHOLD = 0.5
"""A pasted region is a cue when it flips at least this share ("most") of other-class images."""

FLIP_LOWER_THRESHOLD = 0.25
"""...with the Wilson lower bound of the flip rate at least this (guards small samples)."""


def _inference(model: ModelFn):
    return eval_mode(model) if isinstance(model, nn.Module) else nullcontext()


def _predict(model: ModelFn, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    out = []
    with _inference(model), torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            out.append(model(images[start : start + batch_size]).argmax(dim=1))
    if not out:
        return torch.zeros(0, dtype=torch.long, device=images.device)
    return torch.cat(out).to(images.device)


@dataclass(frozen=True)
class InterventionEffect:
    """How one class's recall moves when an intervention removes a suspected cue.

    Attributes:
        class_name: The class (images grouped by true label).
        intervention: ``"background_swap"``, ``"background_blur"``, ``"region_ablation_blur"``
            or ``"region_ablation_mean"``.
        n: Number of the class's images.
        accuracy_with: Recall on the intact images (cue present).
        accuracy_without: Recall after the intervention (cue removed).
        drop: ``accuracy_with - accuracy_without``.
        interval: Percentile bootstrap interval of ``drop``.
        changed: Share of the class's predictions that changed class (any class).
        changed_interval: Wilson interval of ``changed``.
        flagged: Whether the effect passes the thresholds (see the module docstring).
        basis: ``"mask"`` (background interventions) or ``"region"``.
        to_donor: Background swap only: share of the class's images predicted as their donor's
            class after the swap (``None`` otherwise). High when the *donor's* background carries
            a cue (a watermark in another class's corner): the drop is then that class's cue,
            not this class's background.
        box: The ablated box ``(y0, x0, y1, x1)`` (end exclusive) for region interventions.
        thresholds: The thresholds used.
    """

    class_name: str
    intervention: str
    n: int
    accuracy_with: float
    accuracy_without: float
    drop: float
    interval: tuple[float, float]
    changed: float
    changed_interval: tuple[float, float]
    flagged: bool
    basis: str
    box: Box | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    to_donor: float | None = None
    pull: float | None = None
    pull_before: float | None = None
    pull_interval: tuple[float, float] | None = None
    pull_n: int | None = None
    pulls: bool = False
    excluded_donors: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """A JSON-safe dict (tuples become lists)."""
        d = asdict(self)
        d["interval"] = list(self.interval)
        d["changed_interval"] = list(self.changed_interval)
        d["box"] = list(self.box) if self.box is not None else None
        d["pull_interval"] = list(self.pull_interval) if self.pull_interval else None
        d["excluded_donors"] = list(self.excluded_donors)
        return d


def _donor_pull(
    before: torch.Tensor,
    after: torch.Tensor,
    labels: torch.Tensor,
    donor_labels: torch.Tensor,
    index: int,
    confidence: float,
) -> tuple[float, float, tuple[float, float], int]:
    """How much class ``index``'s backgrounds pull other classes' images to it: among the
    images of *other* classes that received one of its backgrounds, the share predicted as
    ``index`` after the swap and before it, the Wilson interval of the first, and their count."""
    sel = (donor_labels == index) & (labels != index)
    n = int(sel.sum())
    if n == 0:
        return 0.0, 0.0, (0.0, 1.0), 0
    k = int((after[sel] == index).sum())
    return (
        k / n,
        float((before[sel] == index).double().mean()),
        wilson_interval(k, n, confidence),
        n,
    )


def _attribute_to_donors(
    effects: dict[str, InterventionEffect],
    before: torch.Tensor,
    after: torch.Tensor,
    labels: torch.Tensor,
    donor_labels: torch.Tensor,
    names: Sequence[str],
    judge: Callable[..., dict[str, InterventionEffect]],
    *,
    confidence: float,
    pull_threshold: float,
    pull_lower_threshold: float,
) -> dict[str, InterventionEffect]:
    """The class-level decision of a background swap: whose background carries a cue?

    A class is flagged when its backgrounds *pull* other classes' images to it (its background
    carries its label: ``pull - pull_before >= pull_threshold`` with the Wilson lower end at
    least ``pull_lower_threshold`` above ``pull_before``), or when its own recall collapses with
    backgrounds from classes that pull nothing (the drop/changed rule on those images only). A
    watermark in one class's background thus flags that class, not the classes whose images
    received it.
    """
    pulling: dict[int, tuple[float, float, tuple[float, float], int]] = {}
    for index in range(len(names)):
        pulling[index] = _donor_pull(before, after, labels, donor_labels, index, confidence)
    pulls = {
        i: (p - b >= pull_threshold and lo - b >= pull_lower_threshold and n > 0)
        for i, (p, b, (lo, _), n) in pulling.items()
    }
    excluded = torch.tensor([pulls[int(d)] for d in donor_labels.tolist()], dtype=torch.bool)
    keep = ~excluded.to(labels.device)
    restricted = judge(before[keep], after[keep], labels[keep])
    out: dict[str, InterventionEffect] = {}
    for name, effect in effects.items():
        index = list(names).index(name)
        p, b, interval, n = pulling[index]
        own = restricted.get(name)
        flagged = pulls[index] or bool(own is not None and own.flagged)
        out[name] = replace(
            effect,
            flagged=flagged,
            pull=p,
            pull_before=b,
            pull_interval=interval,
            pull_n=n,
            pulls=pulls[index],
            excluded_donors=tuple(names[i] for i, v in pulls.items() if v and i != index),
            thresholds={
                **effect.thresholds,
                "pull": pull_threshold,
                "pull_lower": pull_lower_threshold,
            },
        )
    return out


def _effects(
    before: torch.Tensor,
    after: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    *,
    intervention: str,
    basis: str,
    box: Box | None,
    n_boot: int,
    confidence: float,
    seed: int,
    drop_threshold: float,
    ci_lower_threshold: float,
    change_threshold: float | None,
    change_lower_threshold: float,
    donor_labels: torch.Tensor | None = None,
) -> dict[str, InterventionEffect]:
    """Per-class effects from predictions ``before`` / ``after`` the intervention."""
    out: dict[str, InterventionEffect] = {}
    thresholds = {"drop": drop_threshold, "ci_lower": ci_lower_threshold}
    if change_threshold is not None:
        thresholds.update(change=change_threshold, change_lower=change_lower_threshold)
    for index, name in enumerate(class_names):
        sel = labels == index
        n = int(sel.sum())
        if n == 0:
            continue
        ok_before = (before[sel] == index).double()
        ok_after = (after[sel] == index).double()
        diff = ok_before - ok_after
        drop = float(diff.mean())
        lo, hi = bootstrap_interval(
            diff, n_boot=n_boot, confidence=confidence, seed=seed * 1009 + index
        )
        k_changed = int((before[sel] != after[sel]).sum())
        c_lo, c_hi = wilson_interval(k_changed, n, confidence)
        flagged = drop >= drop_threshold and lo > ci_lower_threshold
        if change_threshold is not None:
            flagged = flagged or (
                k_changed / n >= change_threshold and c_lo >= change_lower_threshold
            )
        out[name] = InterventionEffect(
            class_name=name,
            intervention=intervention,
            n=n,
            accuracy_with=float(ok_before.mean()),
            accuracy_without=float(ok_after.mean()),
            drop=drop,
            interval=(lo, hi),
            changed=k_changed / n,
            changed_interval=(c_lo, c_hi),
            flagged=bool(flagged),
            basis=basis,
            box=box,
            thresholds=dict(thresholds),
            to_donor=(
                float((after[sel] == donor_labels[sel]).double().mean())
                if donor_labels is not None
                else None
            ),
        )
    return out


def _masked_blur(images: torch.Tensor, keep: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian average of the pixels where ``keep`` is true (normalised convolution).

    Pixels too far from any kept pixel (weight below 1e-3) take the mean of the kept pixels.
    """
    w = keep.to(images.dtype)[:, None]  # [B, 1, H, W]
    num = _blur(images.float() * w, sigma)
    den = _blur(w.float(), sigma)
    total = w.flatten(2).sum(-1).clamp(min=1)[..., None, None]
    mean = (images.float() * w).flatten(2).sum(-1)[..., None, None] / total
    filled = torch.where(den > 1e-3, num / den.clamp(min=1e-3), mean)
    return filled.to(images.dtype)


def _object_free_background(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each image's background with its object filled from the same image's own background.

    The object's pixels take, in turn, the pixels of the horizontally flipped, vertically flipped
    and rotated image where those are background; what is left takes the mean background colour.
    Texture is kept (no smooth silhouette of the removed object that a model could read).
    """
    out = images.clone()
    hole = masks.clone()
    for dims in ((-1,), (-2,), (-2, -1)):
        src = images.flip(dims)
        src_bg = ~masks.flip(dims)
        use = hole & src_bg
        out = torch.where(use[:, None], src, out)
        hole = hole & ~use
    bg = (~masks)[:, None].to(images.dtype)
    mean = (images * bg).flatten(2).sum(-1) / bg.flatten(2).sum(-1).clamp(min=1)
    return torch.where(hole[:, None], mean[..., None, None].to(images.dtype), out)


def _donors(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    donors = torch.empty_like(labels)
    for c in labels.unique():
        sel = torch.nonzero(labels == c).flatten()
        pool = torch.nonzero(labels != c).flatten()
        if pool.numel() == 0:
            raise ValueError("background_swap needs images of at least two classes")
        donors[sel] = pool[torch.randint(pool.numel(), (sel.numel(),), generator=gen)]
    return donors


def swapped_images(
    images: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    *,
    mode: str = "swap",
    seed: int = 0,
    blur_sigma: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The edited images of :func:`background_swap` (same arguments, same images) and the
    donors' labels (``None`` for ``mode="blur"``)."""
    masks = masks.bool().to(images.device)
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    labels = labels.reshape(-1).to(images.device)
    donor_labels = None
    if mode == "swap":
        gen = torch.Generator().manual_seed(int(seed))
        donors = _donors(labels.cpu(), gen).to(images.device)
        donor_labels = labels[donors]
        background = _object_free_background(images[donors], masks[donors])
    elif mode == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(1.0, min(images.shape[-2:]) / 10)
        background = _masked_blur(images, ~masks, float(sigma))
    else:
        raise ValueError(f"mode must be 'swap' or 'blur', got {mode!r}")
    return torch.where(masks[:, None], images, background), donor_labels


def background_swap(
    model: ModelFn,
    images: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    *,
    class_names: Sequence[str] | None = None,
    mode: str = "swap",
    seed: int = 0,
    batch_size: int = 128,
    n_boot: int = 1000,
    confidence: float = 0.95,
    blur_sigma: float | None = None,
    drop_threshold: float = DROP_THRESHOLD,
    ci_lower_threshold: float = CI_LOWER_THRESHOLD,
    change_threshold: float = CHANGE_THRESHOLD,
    change_lower_threshold: float = CHANGE_LOWER_THRESHOLD,
    pull_threshold: float = PULL_THRESHOLD,
    pull_lower_threshold: float = PULL_LOWER_THRESHOLD,
) -> dict[str, InterventionEffect]:
    """Keep each object, replace its background, and measure each class's recall change.

    With ``mode="swap"`` the decision is attributed to the donors (see
    :func:`_attribute_to_donors`): a class is flagged when its backgrounds pull other classes'
    images to it (``pull``), or when its recall collapses with backgrounds of classes that pull
    nothing; a watermark in one class's background flags that class alone.

    Args:
        model: A model or callable mapping ``[N, C, H, W]`` to logits.
        images: ``[N, C, H, W]`` model inputs.
        masks: ``[N, H, W]`` boolean object masks at the images' size.
        labels: ``[N]`` true labels.
        class_names: Names in label order (default ``"0", "1", ...``).
        mode: ``"swap"``: the background of a random image of another class (seeded), whose own
            object is first filled with its background (:func:`_object_free_background`);
            ``"blur"``: the image's own background blurred (Gaussian average of background
            pixels only, sigma ``blur_sigma``, default ``max(1, min(H, W) / 10)``), which
            removes texture but keeps colour.
        seed: Seed of the donor choice and of the bootstrap.
        batch_size: Images per forward pass.
        n_boot: Bootstrap resamples.
        confidence: Level of the intervals.
        drop_threshold: See :data:`DROP_THRESHOLD`.
        ci_lower_threshold: See :data:`CI_LOWER_THRESHOLD`.
        change_threshold: See :data:`CHANGE_THRESHOLD`.
        change_lower_threshold: See :data:`CHANGE_LOWER_THRESHOLD`.

    Returns:
        ``{class_name: InterventionEffect}`` for the classes with images.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got {tuple(images.shape)}")
    masks = masks.bool().to(images.device)
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"masks must be [N, H, W] like the images, got {tuple(masks.shape)}")
    labels = labels.reshape(-1).to(images.device)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {images.shape[0]} images")
    names = (
        list(class_names)
        if class_names is not None
        else [str(i) for i in range(int(labels.max()) + 1)]
    )
    edited, donor_labels = swapped_images(
        images, masks, labels, mode=mode, seed=seed, blur_sigma=blur_sigma
    )
    before = _predict(model, images, batch_size)
    after = _predict(model, edited, batch_size)
    # one rule for the class-level effects, applied to all images and (swap) to a subset
    judge = partial(
        _effects,
        class_names=names,
        intervention=f"background_{mode}",
        basis="mask",
        box=None,
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
        drop_threshold=drop_threshold,
        ci_lower_threshold=ci_lower_threshold,
        change_threshold=change_threshold,
        change_lower_threshold=change_lower_threshold,
    )
    effects = judge(before, after, labels, donor_labels=donor_labels)
    if donor_labels is None:
        return effects
    return _attribute_to_donors(
        effects,
        before,
        after,
        labels,
        donor_labels,
        names,
        judge,
        confidence=confidence,
        pull_threshold=pull_threshold,
        pull_lower_threshold=pull_lower_threshold,
    )


# --------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class Region:
    """A class's consistently salient box.

    Attributes:
        box: ``(y0, x0, y1, x1)`` in pixels, end exclusive.
        area_fraction: The box's share of the image area.
        mass_fraction: Share of the class-average map's mass inside the box (a uniform map
            gives ``area_fraction``).
        position: Where the box is, in words (``"top-left corner"``, ``"centre"``, ...).
        location_agreement: Mean pairwise correlation of the class's maps
            (:func:`~reporter.metrics.trust.shortcut.location_agreement`), when maps were given.
        peak_in_box: Share of the class's maps whose maximum lies in the box, when given
            (constant maps have no peak and count as outside).
        n: Number of maps given (0 when only the mean map was).
    """

    box: Box
    area_fraction: float
    mass_fraction: float
    position: str
    location_agreement: float | None = None
    peak_in_box: float | None = None
    n: int = 0

    def as_dict(self) -> dict:
        """A JSON-safe dict."""
        d = asdict(self)
        d["box"] = list(self.box)
        return d


def _position(box: Box, height: int, width: int) -> str:
    cy = (box[0] + box[2]) / 2 / height
    cx = (box[1] + box[3]) / 2 / width
    row = "top" if cy < 1 / 3 else ("bottom" if cy > 2 / 3 else "middle")
    col = "left" if cx < 1 / 3 else ("right" if cx > 2 / 3 else "centre")
    if row == "middle" and col == "centre":
        return "centre"
    if row == "middle":
        return f"{col} edge"
    if col == "centre":
        return f"{row} edge"
    return f"{row}-{col} corner"


def box_mask(box: Box, size: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """Boolean ``[H, W]`` mask of ``box``."""
    m = torch.zeros(size, dtype=torch.bool, device=device)
    m[box[0] : box[2], box[1] : box[3]] = True
    return m


def class_mean_maps(maps: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class-average maps ``[K, H, W]``; each map is first scaled to unit mass (so every image
    counts equally), negative values clamped to 0. Classes without images get zeros."""
    sal = as_maps(maps).float().clamp(min=0)
    mass = sal.flatten(1).sum(1).clamp(min=1e-30)[:, None, None]
    sal = sal / mass
    labels = labels.reshape(-1).to(sal.device)
    out = torch.zeros(num_classes, *sal.shape[-2:], device=sal.device)
    out.index_add_(0, labels, sal)
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).float()
    return out / counts[:, None, None]


def consistent_region(
    class_mean_map: torch.Tensor,
    *,
    area: float = REGION_AREA,
    maps: torch.Tensor | None = None,
    size: tuple[int, int] | None = None,
    centre: tuple[int, int] | None = None,
) -> Region:
    """The box of about ``area`` of the image that holds the most class-average saliency.

    Args:
        class_mean_map: ``[H, W]`` (or ``[1, H, W]``) class-average map, e.g. a row of
            :func:`class_mean_maps`; negative values are clamped to 0.
        area: The box's target share of the image; its sides are ``round(H * sqrt(area))`` and
            ``round(W * sqrt(area))`` (at least 1 pixel).
        maps: Optional ``[N, h, w]`` per-image maps of the class, for the location agreement and
            the share of peaks in the box.
        size: ``(H, W)`` in which to express the box (the image size); default the map's own.
            The map is resized bilinearly first.
        centre: Optional ``(y, x)``: the box is centred on this pixel (clipped to the image)
            instead of placed where the mass is largest (a sharp, small peak can hold less
            mass than a broad plateau of the same area).

    Returns:
        A :class:`Region`. Among boxes of equal mass the first in row-major order wins; a map
        without mass gives the top-left box with ``mass_fraction = area_fraction``.
    """
    if not 0.0 < area < 1.0:
        raise ValueError(f"area must be in (0, 1), got {area}")
    m = class_mean_map.float()
    if m.dim() == 3 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2:
        raise ValueError(f"class_mean_map must be [H, W], got {tuple(class_mean_map.shape)}")
    if size is not None:
        m = resize_maps(m[None], int_pair(size, "size"))[0]
    m = m.clamp(min=0)
    h, w = m.shape
    bh = min(h, max(1, round(h * math.sqrt(area))))
    bw = min(w, max(1, round(w * math.sqrt(area))))
    sums = F.avg_pool2d(m[None, None].double(), (bh, bw), stride=1)[0, 0] * (bh * bw)
    if centre is None:
        best = int(torch.argmax(sums.flatten()))
        y0, x0 = divmod(best, sums.shape[1])
    else:
        y0 = min(max(0, int(centre[0]) - bh // 2), h - bh)
        x0 = min(max(0, int(centre[1]) - bw // 2), w - bw)
        best = y0 * sums.shape[1] + x0
    box = (y0, x0, y0 + bh, x0 + bw)
    total = float(m.double().sum())
    area_fraction = bh * bw / (h * w)
    mass = float(sums.flatten()[best]) / total if total > 0 else area_fraction
    agreement = peak = None
    n = 0
    if maps is not None:
        sal = resize_maps(as_maps(maps).float().to(m.device), (h, w))
        n = int(sal.shape[0])
        agreement = location_agreement(sal)
        flat = sal.flatten(1)
        idx = flat.argmax(dim=1)
        py, px = idx // w, idx % w
        inside = (py >= box[0]) & (py < box[2]) & (px >= box[1]) & (px < box[3])
        span = flat.max(dim=1).values - flat.min(dim=1).values
        inside &= span > 1e-6 * flat.abs().max(dim=1).values  # a constant map has no peak
        peak = float(inside.float().mean()) if n else 0.0
    return Region(
        box=box,
        area_fraction=area_fraction,
        mass_fraction=min(1.0, mass),
        position=_position(box, h, w),
        location_agreement=agreement,
        peak_in_box=peak,
        n=n,
    )


def fill_box(
    images: torch.Tensor, box: Box, fill: str = "blur", *, blur_sigma: float | None = None
) -> torch.Tensor:
    """``images`` with ``box`` filled from its surroundings (none of the box's own pixels used).

    ``"blur"``: a Gaussian average of the pixels outside the box (sigma ``blur_sigma``, default
    half the box's longer side, at least 1), so the box takes its neighbourhood's colours;
    ``"mean"``: each image's mean colour outside the box.
    """
    b, _, h, w = images.shape
    inside = box_mask(box, (h, w), images.device)
    if fill == "mean":
        keep = (~inside).to(images.dtype)
        mean = (images * keep).flatten(2).sum(-1) / keep.sum().clamp(min=1)
        filled = mean[..., None, None].expand_as(images)
    elif fill == "blur":
        side = max(box[2] - box[0], box[3] - box[1])
        sigma = blur_sigma if blur_sigma is not None else max(1.0, side / 2)
        filled = _masked_blur(images, (~inside).expand(b, h, w), float(sigma))
    else:
        raise ValueError(f"fill must be 'blur' or 'mean', got {fill!r}")
    return torch.where(inside, filled, images)


def region_ablation(
    model: ModelFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    box: Box,
    *,
    fill: str = "blur",
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 128,
    n_boot: int = 1000,
    confidence: float = 0.95,
    drop_threshold: float = DROP_THRESHOLD,
    ci_lower_threshold: float = CI_LOWER_THRESHOLD,
    before: torch.Tensor | None = None,
) -> dict[str, InterventionEffect]:
    """Recall per class with ``box`` ablated (see :func:`fill_box`) versus intact.

    Pass one class's images to test that class's region (the usual call), or any images.
    ``flagged`` here means only that the drop passes its thresholds; the class-level decision
    is :func:`region_cue`'s. ``before``: the model's predictions on ``images`` when already
    known (one forward pass saved).

    Returns:
        ``{class_name: InterventionEffect}`` (``basis="region"``, ``box`` set).
    """
    labels = labels.reshape(-1).to(images.device)
    names = (
        list(class_names)
        if class_names is not None
        else [str(i) for i in range(int(labels.max()) + 1)]
    )
    box = tuple(int(v) for v in box)  # type: ignore[assignment]
    if before is None:
        before = _predict(model, images, batch_size)
    after = _predict(model, fill_box(images, box, fill), batch_size)
    return _effects(
        before,
        after,
        labels,
        names,
        intervention=f"region_ablation_{fill}",
        basis="region",
        box=box,
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
        drop_threshold=drop_threshold,
        ci_lower_threshold=ci_lower_threshold,
        change_threshold=None,
        change_lower_threshold=0.0,
    )


@dataclass(frozen=True)
class PasteEffect:
    """What pasting a class's region into other classes' images does.

    Attributes:
        class_name: The class whose region is pasted (the target).
        n: Number of other-class images.
        rate_before: Share of them predicted as the target when intact.
        rate_after: Share predicted as the target with the region pasted in.
        n_eligible: Images not predicted as the target before (the flip rate's denominator).
        flip_rate: Share of the eligible images whose prediction becomes the target.
        interval: Wilson interval of ``flip_rate``.
        box: The pasted box.
        control_flip_rate: The same paste with the box taken from *other-class* images instead
            (``None`` without control sources): flips caused by removing the image's own content
            at the box rather than by adding the class's region.
        net_flip_rate: ``flip_rate - control_flip_rate`` (``flip_rate`` without a control).
    """

    class_name: str
    n: int
    rate_before: float
    rate_after: float
    n_eligible: int
    flip_rate: float
    interval: tuple[float, float]
    box: Box
    control_flip_rate: float | None = None
    net_flip_rate: float = 0.0

    def as_dict(self) -> dict:
        """A JSON-safe dict."""
        d = asdict(self)
        d["interval"] = list(self.interval)
        d["box"] = list(self.box)
        return d


def _paste_into_other_classes(
    model: ModelFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    sel: torch.Tensor,
    index: int,
    box: Box,
    name: str,
    seed: int,
    batch_size: int,
    confidence: float,
    *,
    before: torch.Tensor | None = None,
    control: bool = True,
) -> PasteEffect:
    """:func:`region_paste` of class ``index``'s ``box`` (its images: ``sel``) into every other
    class's images, with the same box from those images as the control (``control=False``:
    none; :func:`_with_control` adds it later)."""
    return region_paste(
        model,
        images[~sel],
        box,
        images[sel],
        index,
        control_source_images=images[~sel] if control else None,
        labels_other=labels[~sel],
        control_labels=labels[~sel],
        class_name=name,
        seed=seed + index,
        batch_size=batch_size,
        confidence=confidence,
        before=before,
    )


def region_paste(
    model: ModelFn,
    images_other: torch.Tensor,
    box: Box,
    patch_source_images: torch.Tensor,
    target_class: int,
    *,
    control_source_images: torch.Tensor | None = None,
    labels_other: torch.Tensor | None = None,
    control_labels: torch.Tensor | None = None,
    class_name: str | None = None,
    seed: int = 0,
    batch_size: int = 128,
    confidence: float = 0.95,
    before: torch.Tensor | None = None,
) -> PasteEffect:
    """Paste ``box`` from the class's images into other classes' images; count the flips.

    Args:
        model: A model or callable returning logits.
        images_other: ``[N, C, H, W]`` images of the other classes.
        box: ``(y0, x0, y1, x1)``, end exclusive.
        patch_source_images: ``[M, C, H, W]`` images of the target class; image ``i`` gets the
            box of a source drawn at random (seeded).
        target_class: The class index the region is suspected to give away.
        control_source_images: Optional ``[M', C, H, W]`` images of other classes: the same
            paste from them measures the flips that any content at the box causes (for a model
            that predicts a default class once its cue is covered, say).
        labels_other: Optional ``[N]`` labels of ``images_other``; with ``control_labels``
            (``[M']``), image ``i``'s control source is drawn among those whose label differs
            from ``labels_other[i]`` (as the class's own sources do), so that a receiver never
            gets its own class's region back. Without a source of a third class, no control.
        control_labels: Labels of ``control_source_images``.
        class_name: Name reported (default ``str(target_class)``).
        seed: Seed of the source choice.
        batch_size: Images per forward pass.
        confidence: Level of the Wilson interval.
        before: The model's predictions on ``images_other`` when already known (several boxes
            pasted into the same images: one forward pass saved per box).

    Returns:
        A :class:`PasteEffect`.
    """
    if patch_source_images.shape[0] == 0:
        raise ValueError("region_paste needs at least one patch source image")
    y0, x0, y1, x1 = (int(v) for v in box)
    n = images_other.shape[0]
    gen = torch.Generator().manual_seed(int(seed))

    def pasted(sources: torch.Tensor) -> torch.Tensor:
        src = torch.randint(sources.shape[0], (n,), generator=gen).to(sources.device)
        edited = images_other.clone()
        edited[:, :, y0:y1, x0:x1] = sources[src][:, :, y0:y1, x0:x1].to(edited)
        return edited

    if before is None:
        before = _predict(model, images_other, batch_size)
    after = _predict(model, pasted(patch_source_images), batch_size)
    eligible = before != target_class
    n_eligible = int(eligible.sum())
    k = int((eligible & (after == target_class)).sum())
    flip = k / n_eligible if n_eligible else 0.0
    control = _control_flip_rate(
        model,
        images_other,
        (y0, x0, y1, x1),
        control_source_images,
        labels_other,
        control_labels,
        eligible,
        target_class,
        gen,
        batch_size,
    )
    return PasteEffect(
        class_name=class_name if class_name is not None else str(target_class),
        n=int(n),
        rate_before=float((before == target_class).float().mean()) if n else 0.0,
        rate_after=float((after == target_class).float().mean()) if n else 0.0,
        n_eligible=n_eligible,
        flip_rate=flip,
        interval=wilson_interval(k, n_eligible, confidence),
        box=(y0, x0, y1, x1),
        control_flip_rate=control,
        net_flip_rate=flip - (control or 0.0),
    )


def _control_flip_rate(
    model: ModelFn,
    images_other: torch.Tensor,
    box: Box,
    control_source_images: torch.Tensor | None,
    labels_other: torch.Tensor | None,
    control_labels: torch.Tensor | None,
    eligible: torch.Tensor,
    target_class: int,
    gen: torch.Generator,
    batch_size: int,
) -> float | None:
    """:func:`region_paste`'s control: the share of the eligible images that ``box`` pasted
    from a third class turns into ``target_class`` (``None`` without control sources)."""
    if control_source_images is None or control_source_images.shape[0] == 0:
        return None
    edited = _pasted_from_other_classes(
        images_other, control_source_images, labels_other, control_labels, box, gen
    )
    if edited is None:
        return None
    n_eligible = int(eligible.sum())
    after = _predict(model, edited, batch_size)
    k = int((eligible & (after == target_class)).sum())
    return k / n_eligible if n_eligible else 0.0


def _with_control(
    model: ModelFn,
    paste: PasteEffect,
    images: torch.Tensor,
    labels: torch.Tensor,
    sel: torch.Tensor,
    index: int,
    seed: int,
    batch_size: int,
    before: torch.Tensor,
) -> PasteEffect:
    """``paste`` (made by :func:`_paste_into_other_classes` with ``control=False``) with its
    control added: the same numbers, draws included, as with ``control=True``."""
    gen = torch.Generator().manual_seed(int(seed + index))
    n = int((~sel).sum())
    torch.randint(int(sel.sum()), (n,), generator=gen)  # the paste's own draws come first
    control = _control_flip_rate(
        model,
        images[~sel],
        paste.box,
        images[~sel],
        labels[~sel],
        labels[~sel],
        before != index,
        index,
        gen,
        batch_size,
    )
    return replace(
        paste, control_flip_rate=control, net_flip_rate=paste.flip_rate - (control or 0.0)
    )


def _pasted_from_other_classes(
    images: torch.Tensor,
    sources: torch.Tensor,
    labels: torch.Tensor | None,
    source_labels: torch.Tensor | None,
    box: Box,
    gen: torch.Generator,
) -> torch.Tensor | None:
    """``images`` with ``box`` copied from random ``sources`` of another label (``None`` when
    some image has no such source)."""
    y0, x0, y1, x1 = box
    n = images.shape[0]
    if labels is None or source_labels is None:
        src = torch.randint(sources.shape[0], (n,), generator=gen)
    else:
        labels, source_labels = labels.reshape(-1).cpu(), source_labels.reshape(-1).cpu()
        src = torch.empty(n, dtype=torch.long)
        for c in labels.unique():
            sel = torch.nonzero(labels == c).flatten()
            pool = torch.nonzero(source_labels != c).flatten()
            if pool.numel() == 0:
                return None
            src[sel] = pool[torch.randint(pool.numel(), (sel.numel(),), generator=gen)]
    edited = images.clone()
    edited[:, :, y0:y1, x0:x1] = sources[src.to(sources.device)][:, :, y0:y1, x0:x1].to(edited)
    return edited


@dataclass(frozen=True)
class RegionCue:
    """The region verdict for one class: region, ablation, paste, and the flag.

    Attributes:
        class_name: The class.
        region: Its consistently salient :class:`Region`.
        ablation: Its recall with the region ablated (:func:`region_ablation`), or ``None``.
        paste: The paste effect (:func:`region_paste`), or ``None`` without other classes.
        flagged: ``area_fraction <= max_area`` and ``net_flip_rate >= flip_threshold`` and the
            flip rate's Wilson lower bound minus the control flip rate ``>= flip_lower``.
        thresholds: The thresholds used.
    """

    class_name: str
    region: Region
    ablation: InterventionEffect | None
    paste: PasteEffect | None
    flagged: bool
    thresholds: dict[str, float]

    def as_dict(self) -> dict:
        """A JSON-safe dict: ``n``, ``accuracy_with`` / ``accuracy_without`` (ablation),
        ``interval``, ``flip_rate``, ``flip_interval``, ``box``, ``position``, ``basis``,
        ``flagged``, and the nested region, ablation and paste records."""
        ab = self.ablation
        pa = self.paste
        return {
            "basis": "region",
            "flagged": self.flagged,
            "box": list(self.region.box),
            "position": self.region.position,
            "area_fraction": self.region.area_fraction,
            "n": ab.n if ab is not None else self.region.n,
            "accuracy_with": ab.accuracy_with if ab is not None else None,
            "accuracy_without": ab.accuracy_without if ab is not None else None,
            "interval": list(ab.interval) if ab is not None else None,
            "flip_rate": pa.flip_rate if pa is not None else None,
            "control_flip_rate": pa.control_flip_rate if pa is not None else None,
            "flip_interval": list(pa.interval) if pa is not None else None,
            "region": self.region.as_dict(),
            "ablation": ab.as_dict() if ab is not None else None,
            "paste": pa.as_dict() if pa is not None else None,
            "thresholds": dict(self.thresholds),
        }


def region_cue(
    class_name: str,
    region: Region,
    ablation: InterventionEffect | None,
    paste: PasteEffect | None,
    *,
    max_area: float = MAX_REGION_AREA,
    flip_threshold: float = FLIP_THRESHOLD,
    flip_lower: float = FLIP_LOWER_THRESHOLD,
) -> RegionCue:
    """Decide whether a class's region is a watermark-like cue (see :class:`RegionCue`)."""
    flagged = bool(
        paste is not None
        and region.area_fraction <= max_area
        and paste.n_eligible > 0
        and paste.net_flip_rate >= flip_threshold
        and paste.interval[0] - (paste.control_flip_rate or 0.0) >= flip_lower
    )
    return RegionCue(
        class_name=class_name,
        region=region,
        ablation=ablation,
        paste=paste,
        flagged=flagged,
        thresholds={"max_area": max_area, "flip": flip_threshold, "flip_lower": flip_lower},
    )


def region_shortcuts(
    model: ModelFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    maps: torch.Tensor,
    class_names: Sequence[str],
    *,
    area: float = REGION_AREA,
    fill: str = "blur",
    seed: int = 0,
    batch_size: int = 128,
    n_boot: int = 1000,
    confidence: float = 0.95,
    max_area: float = MAX_REGION_AREA,
    flip_threshold: float = FLIP_THRESHOLD,
    flip_lower: float = FLIP_LOWER_THRESHOLD,
) -> dict[str, RegionCue]:
    """The whole mask-free procedure, per class: region, ablation, paste, verdict.

    Args:
        model: A model or callable returning logits.
        images: ``[N, C, H, W]`` model inputs (the trust sample).
        labels: ``[N]`` true labels (group images by class).
        maps: ``[N, h, w]`` raw saliency maps of the images (one method and layer; for the label
            or the prediction), resized to ``H x W``.
        class_names: Names in label order; classes without images are left out.
        area: Box area for :func:`consistent_region`.
        fill: Ablation fill for :func:`region_ablation`.
        seed: Seed of the paste sources and the bootstrap.
        batch_size: Images per forward pass.
        n_boot: Bootstrap resamples.
        confidence: Level of the intervals.
        max_area: See :data:`MAX_REGION_AREA`.
        flip_threshold: See :data:`FLIP_THRESHOLD`.
        flip_lower: See :data:`FLIP_LOWER_THRESHOLD`.

    Returns:
        ``{class_name: RegionCue}``.
    """
    h, w = images.shape[-2:]
    labels = labels.reshape(-1).to(images.device)
    sal = resize_maps(as_maps(maps).float().to(images.device), (h, w))
    means = class_mean_maps(sal, labels, len(class_names))
    out: dict[str, RegionCue] = {}
    for index, name in enumerate(class_names):
        sel = labels == index
        if not bool(sel.any()):
            continue
        region = consistent_region(means[index], area=area, maps=sal[sel])
        ablation = region_ablation(
            model,
            images[sel],
            labels[sel],
            region.box,
            fill=fill,
            class_names=class_names,
            seed=seed,
            batch_size=batch_size,
            n_boot=n_boot,
            confidence=confidence,
        ).get(name)
        paste = None
        if bool((~sel).any()):
            paste = _paste_into_other_classes(
                model, images, labels, sel, index, region.box, name, seed, batch_size, confidence
            )
        out[name] = region_cue(
            name,
            region,
            ablation,
            paste,
            max_area=max_area,
            flip_threshold=flip_threshold,
            flip_lower=flip_lower,
        )
    return out


# --------------------------------------------------------------------------- cue search


def pixel_contrast_maps(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Per class, how strongly each pixel tells the class's images from the others' ``[K, H, W]``.

    ``max over channels of |mean_k - mean_rest| / (std_k + std_rest + 1e-6)``: high where the
    class's images all carry the same content that other images never carry (a watermark at a
    fixed place), low where objects sit anywhere. A *candidate* source for the region search
    that needs no saliency map (the intervention decides); classes without images, or with
    every image, get zeros.
    """
    x = images.float()
    labels = labels.reshape(-1).to(x.device)
    out = torch.zeros(num_classes, *x.shape[-2:], device=x.device)
    for k in range(num_classes):
        sel = labels == k
        if not bool(sel.any()) or bool(sel.all()):
            continue
        a, b = x[sel], x[~sel]
        diff = (a.mean(0) - b.mean(0)).abs()
        spread = a.std(0, unbiased=False) + b.std(0, unbiased=False) + 1e-6
        out[k] = (diff / spread).amax(0)
    return out


@dataclass(frozen=True)
class CueSearch:
    """The region search of one class over candidate maps, decided by intervention.

    Attributes:
        cue: The :class:`RegionCue` of the candidate whose pasted box moved the predictions
            most (largest ``net_flip_rate``, first on ties), with its ablation.
        source: Which candidate that was: ``"method@layer"``, ``"pixel-contrast"`` (the box
            of most contrast) or ``"pixel-contrast-peak"`` (the box around its strongest pixel).
        candidates: One record per candidate (``source``, ``box``, ``position``, ``flagged``,
            ``flip_rate``, ``control_flip_rate``, ``net_flip_rate``), in the order given.
    """

    cue: RegionCue
    source: str
    candidates: list[dict]

    @property
    def flagged(self) -> bool:
        return self.cue.flagged

    def as_dict(self) -> dict:
        """``RegionCue.as_dict()`` plus ``source`` and ``candidates``."""
        return {**self.cue.as_dict(), "source": self.source, "candidates": list(self.candidates)}


def region_proposals(
    images: torch.Tensor,
    labels: torch.Tensor,
    candidate_maps: dict[str, torch.Tensor],
    class_names: Sequence[str],
    *,
    classes: Sequence[str] | None = None,
    pixel_contrast: bool = True,
    area: float = REGION_AREA,
) -> dict[str, list[tuple[str, Region]]]:
    """Each class's candidate boxes, before any intervention: ``{class: [(source, Region)]}``.

    Every candidate map proposes the box of :func:`consistent_region` on its class average;
    with ``pixel_contrast``, :func:`pixel_contrast_maps` proposes its box of most contrast
    (``"pixel-contrast"``) and the box around its strongest pixel (``"pixel-contrast-peak"``:
    a sharp mark can lose to a broad plateau of the same area). Classes without images, or
    without images of another class, are left out. Computing the proposals needs no forward
    pass: the search's cost is known from them (the number of distinct boxes per class).
    """
    h, w = images.shape[-2:]
    labels = labels.reshape(-1).to(images.device)
    k = len(class_names)
    sources: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, maps in candidate_maps.items():
        sal = resize_maps(as_maps(maps).detach().float().to(images.device), (h, w))
        sources[name] = (class_mean_maps(sal, labels, k), sal)
    if pixel_contrast:
        contrast = pixel_contrast_maps(images, labels, k)
        sources["pixel-contrast"] = (contrast, contrast[labels])
    wanted = set(classes) if classes is not None else set(class_names)
    out: dict[str, list[tuple[str, Region]]] = {}
    for index, cname in enumerate(class_names):
        sel = labels == index
        if cname not in wanted or not bool(sel.any()) or not bool((~sel).any()) or not sources:
            continue
        proposals: list[tuple[str, tuple[int, int] | None]] = [(src, None) for src in sources]
        if pixel_contrast:
            peak = int(sources["pixel-contrast"][0][index].argmax())
            proposals.append(("pixel-contrast", divmod(peak, w)))
        regions = []
        for source, centre in proposals:
            means, sal = sources[source]
            region = consistent_region(means[index], area=area, maps=sal[sel], centre=centre)
            regions.append((f"{source}-peak" if centre is not None else source, region))
        out[cname] = regions
    return out


def search_forward_passes(
    labels: torch.Tensor,
    proposals: dict[str, list[tuple[str, Region]]],
    class_names: Sequence[str],
    *,
    controls: int | None = 1,
) -> int:
    """Images :func:`search_region_cues` runs through the model for these proposals (with the
    predictions on the intact images given as ``before``): per class, each distinct box pasted
    into the other classes' images, ``controls`` controls of as many images (at least the
    chosen box's; another box's when its paste beats the chosen box's net effect: ``None``
    counts a control for every distinct box, the most there can be), and the chosen box
    ablated in the class's own images."""
    labels = labels.reshape(-1)
    total = 0
    for cname, regions in proposals.items():
        own = int((labels == list(class_names).index(cname)).sum())
        distinct = len({region.box for _, region in regions})
        checked = distinct if controls is None else min(distinct, controls)
        total += (distinct + checked) * (len(labels) - own) + own
    return total


def search_region_cues(
    model: ModelFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    candidate_maps: dict[str, torch.Tensor],
    class_names: Sequence[str],
    *,
    classes: Sequence[str] | None = None,
    pixel_contrast: bool = True,
    area: float = REGION_AREA,
    fill: str = "blur",
    seed: int = 0,
    batch_size: int = 128,
    n_boot: int = 1000,
    confidence: float = 0.95,
    max_area: float = MAX_REGION_AREA,
    flip_threshold: float = FLIP_THRESHOLD,
    flip_lower: float = FLIP_LOWER_THRESHOLD,
    before: torch.Tensor | None = None,
) -> dict[str, CueSearch]:
    """Find each class's cue region among several candidates and keep the one whose paste
    moves the predictions most.

    Every candidate proposes one box per class (:func:`region_proposals`: :func:`consistent_region`
    on the class-average of its maps; with ``pixel_contrast``, also on
    :func:`pixel_contrast_maps`). Each distinct box is pasted into other classes' images beside
    the third-class control (:func:`region_paste`); the candidate with the largest
    ``net_flip_rate`` is the class's region (chosen by the intervention's effect, never by
    saliency), flagged by :func:`region_cue`'s rule, and ablated in the class's images as
    evidence. A deep layer's coarse or object-bound map can miss a small corner cue that a
    shallower layer or the pixel contrast finds; searching them all and letting the
    intervention pick is what makes the search find it.

    Args:
        model: A model or callable returning logits.
        images: ``[N, C, H, W]`` model inputs.
        labels: ``[N]`` true labels.
        candidate_maps: ``{name: [N, h, w] raw maps}`` (e.g. ``"gradcam@features.relu4"``).
        class_names: Names in label order.
        classes: Search only these classes (default all with images and other classes).
        pixel_contrast: Add the pixel-contrast candidate.
        area, fill, seed, batch_size, n_boot, confidence, max_area, flip_threshold, flip_lower:
            As for :func:`region_shortcuts`.
        before: ``[N]`` the model's predictions on ``images`` when already known; computed
            once otherwise (every class's pastes and ablation share them).

    Returns:
        ``{class_name: CueSearch}``.
    """
    labels = labels.reshape(-1).to(images.device)
    proposals = region_proposals(
        images,
        labels,
        candidate_maps,
        class_names,
        classes=classes,
        pixel_contrast=pixel_contrast,
        area=area,
    )
    if proposals and before is None:
        before = _predict(model, images, batch_size)
    out: dict[str, CueSearch] = {}
    for cname, regions in proposals.items():
        index = list(class_names).index(cname)
        sel = labels == index
        assert before is not None
        # every distinct box pasted; a control only where it can change the choice: the box
        # whose bound (its net effect once controlled, its flip rate until then: the control
        # can only lower it) is the largest, first on ties, is controlled, until the largest
        # bound is a controlled box's. That box has the largest net effect of all, as if every
        # box had been controlled.
        pastes: dict[Box, PasteEffect] = {}
        for _, region in regions:
            if region.box not in pastes:
                pastes[region.box] = _paste_into_other_classes(
                    model,
                    images,
                    labels,
                    sel,
                    index,
                    region.box,
                    cname,
                    seed,
                    batch_size,
                    confidence,
                    before=before[~sel],
                    control=False,
                )
        controlled: set[Box] = set()
        while True:
            top = max(pastes, key=lambda b: pastes[b].net_flip_rate)  # first on ties
            if top in controlled:
                break
            pastes[top] = _with_control(
                model, pastes[top], images, labels, sel, index, seed, batch_size, before[~sel]
            )
            controlled.add(top)
        records: list[dict] = []
        for source, region in regions:
            paste = pastes[region.box]
            checked = region.box in controlled
            verdict = region_cue(
                cname,
                region,
                None,
                paste,
                max_area=max_area,
                flip_threshold=flip_threshold,
                flip_lower=flip_lower,
            )
            records.append(
                {
                    "source": source,
                    "box": list(region.box),
                    "position": region.position,
                    "flagged": verdict.flagged if checked else False,
                    "flip_rate": paste.flip_rate,
                    "control_flip_rate": paste.control_flip_rate,
                    "net_flip_rate": paste.net_flip_rate if checked else None,
                    "controlled": checked,
                }
            )
        # the chosen box is the loop's last top; its first proposer names it
        source, region = next((src, reg) for src, reg in regions if reg.box == top)
        paste = pastes[top]
        ablation = region_ablation(
            model,
            images[sel],
            labels[sel],
            region.box,
            fill=fill,
            class_names=class_names,
            seed=seed,
            batch_size=batch_size,
            n_boot=n_boot,
            confidence=confidence,
            before=before[sel],
        ).get(cname)
        cue = region_cue(
            cname,
            region,
            ablation,
            paste,
            max_area=max_area,
            flip_threshold=flip_threshold,
            flip_lower=flip_lower,
        )
        out[cname] = CueSearch(cue=cue, source=source, candidates=records)
    return out


def pasted_images(
    images_other: torch.Tensor, box: Box, patch_source_images: torch.Tensor, seed: int
) -> torch.Tensor:
    """The images :func:`region_paste` (same ``seed``) gives the model: ``box`` copied from
    random sources into ``images_other`` (for showing them)."""
    y0, x0, y1, x1 = (int(v) for v in box)
    gen = torch.Generator().manual_seed(int(seed))
    n = images_other.shape[0]
    src = torch.randint(patch_source_images.shape[0], (n,), generator=gen).to(
        patch_source_images.device
    )
    edited = images_other.clone()
    edited[:, :, y0:y1, x0:x1] = patch_source_images[src][:, :, y0:y1, x0:x1].to(edited)
    return edited
