"""Model-parameter randomization test (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

A saliency method whose maps barely change when the model's learned weights are replaced by random
ones does not explain the model: it shows something about the image (edges, colour) instead. The
test re-initialises the layers of a *copy* of the model from the output down (cascading), recomputes
the maps for the same images and targets, and compares them with the trained model's maps by
Spearman rank correlation and SSIM.

Everything here is pure tensor code: the maps themselves come from a caller-supplied function
(the CAM engine in the pipeline), which keeps hooks out of this module.

:func:`graded_randomization` is the graded form the report uses: several seeds, the
random-versus-random floor (how similar the maps of two unrelated random networks are: image
structure alone), constant randomized maps counted apart, and a status ``passed`` /
``inconclusive`` / ``failed`` with a bootstrap interval and a sentence of meaning
(:data:`SANITY_MEANINGS`). BatchNorm running statistics are kept (:data:`BATCHNORM_NOTE`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from reporter.metrics.trust._common import as_maps, bootstrap_interval, resize_maps
from reporter.models.meta import int_pair

__all__ = [
    "BATCHNORM_NOTE",
    "SANITY_MEANINGS",
    "SPEARMAN_THRESHOLD",
    "SSIM_THRESHOLD",
    "GradedSanity",
    "SanityVerdict",
    "grade_randomization",
    "graded_randomization",
    "parameter_layers",
    "randomization_scores",
    "randomized_copies",
    "rank_correlation",
    "ranks",
    "sanity_verdict",
    "ssim",
]

SPEARMAN_THRESHOLD = 0.5
"""A method fails when the mean ``|Spearman|`` between trained and fully randomized maps is at least
this. Adebayo et al. show methods that fail (guided backprop, gradient x input on some nets) keep
rank correlations of 0.6-0.9 after full randomization, while Grad-CAM drops to about 0-0.3; 0.5
sits between the two groups."""

SSIM_THRESHOLD = 0.8
"""A method also fails when the mean SSIM between trained and fully randomized maps is at least
this (the maps look nearly identical). SSIM is kept lenient because sparse maps (mostly zero) get
a high SSIM from their flat regions alone, so rank correlation is the primary criterion."""


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of modules that own parameters directly, from the output layer down.

    The order is the reverse of ``model.named_modules()`` (registration order), which matches
    execution order for the usual ``Sequential``-style and torchvision models. Pass an explicit
    order to :func:`randomized_copies` where it does not.
    """
    names = [
        name
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    return names[::-1]


def _reinit_(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module``'s own parameters in place, reproducibly; buffers are kept.

    Layers with a weight of two or more dimensions (convolutions, linear layers) get PyTorch's
    default initialisation for them: weight and bias uniform in ``+-1 / sqrt(fan_in)``.
    Normalisation layers (a one-dimensional weight) get their initial values, weight 1 and bias 0.
    Any other parameter is drawn from a normal distribution with the trained parameter's own mean
    and standard deviation (scale kept, structure destroyed). Buffers such as BatchNorm running
    statistics are left as trained: only learned parameters are randomized.

    Numbers come from a generator on the parameter's device seeded with ``seed``: the caller's
    global RNG state is untouched and nothing waits for the device.
    """
    params = dict(module.named_parameters(recurse=False))
    if not params:
        return
    weight = params.get("weight")
    fan_in = weight[0].numel() if weight is not None and weight.dim() >= 2 else None
    gens: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for name, p in params.items():
            if p.device not in gens:
                gens[p.device] = torch.Generator(device=p.device).manual_seed(seed)
            gen = gens[p.device]
            if fan_in is not None and (p.dim() >= 2 or name == "bias"):
                bound = 1.0 / math.sqrt(max(1, fan_in))
                p.uniform_(-bound, bound, generator=gen)
            elif fan_in is None and p.dim() == 1 and name == "weight":
                p.fill_(1.0)
            elif fan_in is None and p.dim() == 1 and name == "bias":
                p.zero_()
            else:
                std, mean = (p.std(), p.mean()) if p.numel() > 1 else (1.0, p.mean())
                p.normal_(generator=gen).mul_(std).add_(mean)


def randomized_copies(
    model: nn.Module,
    order: str = "cascading",
    *,
    seed: int = 0,
    layers: Sequence[str] | None = None,
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer_name, randomized_model)`` for the model-parameter randomization test.

    The caller's model is never modified: randomization happens on deep copies.

    Args:
        model: The trained model.
        order: ``"cascading"``: step ``i`` has every layer from the output down to ``layers[i]``
            re-initialised (Adebayo et al.'s cascading randomization). ``"independent"``: step
            ``i`` re-initialises ``layers[i]`` alone.
        seed: Seed of the re-initialisation; layer ``i`` uses ``seed * 100_003 + i`` (the draws
            differ between CPU and CUDA, but are reproducible on each).
        layers: Layer names to randomize, output first. Default :func:`parameter_layers`.

    Yields:
        The layer name and a model whose parameters are randomized as above. In ``cascading``
        order one working copy is yielded at every step and randomized further when the
        iteration resumes: deep-copy it to keep a step's model.

    Raises:
        ValueError: for an unknown ``order`` or layer name.
    """
    if order not in ("cascading", "independent"):
        raise ValueError(f"order must be 'cascading' or 'independent', got {order!r}")
    names = list(layers) if layers is not None else parameter_layers(model)
    known = dict(model.named_modules())
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"unknown layer(s) {missing}; expected names from model.named_modules()")
    work = copy.deepcopy(model) if order == "cascading" else None
    for i, name in enumerate(names):
        target = work if work is not None else copy.deepcopy(model)
        _reinit_(dict(target.named_modules())[name], seed * 100_003 + i)
        yield name, target


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (0-based) along the last axis; tied values share the mean of their ranks.

    Exact tie handling (as ``scipy.stats.rankdata(method="average")``), batched: one sort, then
    the first and last position of every run of equal values by a running max / min.
    """
    vals, order = torch.sort(x, dim=-1)
    n = x.shape[-1]
    pos = torch.arange(n, device=x.device).expand_as(vals)
    starts = torch.ones_like(vals, dtype=torch.bool)
    starts[..., 1:] = vals[..., 1:] != vals[..., :-1]
    ends = torch.ones_like(starts)
    ends[..., :-1] = starts[..., 1:]
    first = torch.where(starts, pos, 0).cummax(dim=-1).values
    last = torch.where(ends, pos, n).flip(-1).cummin(dim=-1).values.flip(-1)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    avg = (first + last).to(dtype) / 2
    return torch.empty_like(avg).scatter_(-1, order, avg)


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=-1, keepdim=True)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per row, 0 where a row is all zero (a constant map before centring)."""
    num = (a * b).sum(dim=-1)
    den = torch.sqrt((a * a).sum(dim=-1) * (b * b).sum(dim=-1))
    return torch.where(den > 0, num / den.clamp(min=1e-30), torch.zeros_like(num)).clamp(-1, 1)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per image between two batches of maps.

    Args:
        a: Maps ``[B, ...]`` (flattened per image).
        b: Maps of the same shape.

    Returns:
        ``[B]`` correlations in ``[-1, 1]``. Ties get average ranks (the textbook Spearman, equal
        to ``scipy.stats.spearmanr``). A constant map has no ranking: its correlation is defined
        as 0.

    Raises:
        ValueError: when the shapes differ.
    """
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    a = a.reshape(a.shape[0], -1).float()
    b = b.reshape(b.shape[0], -1).float()
    return _cosine(_centred(ranks(a)), _centred(ranks(b)))


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004) between maps in ``[0, data_range]``.

    Gaussian window (11 x 11, sigma 1.5), constants ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``,
    the mean of the SSIM map over the valid (unpadded) positions. Maps smaller than the window use
    the largest odd window that fits.

    Args:
        a: Maps ``[B, H, W]`` (or ``[B, 1, H, W]``), e.g. min-max normalised saliency.
        b: Maps of the same shape.
        window: Gaussian window side.
        sigma: Gaussian standard deviation.
        data_range: ``L``, the dynamic range of the maps.

    Returns:
        ``[B]`` SSIM values (1 for identical maps).
    """
    a, b = as_maps(a, "a"), as_maps(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    ref = _SsimReference(a, window=window, sigma=sigma, data_range=data_range)
    return ref.compare(b)


class _SsimReference:
    """SSIM against fixed maps ``a``: their local means and variances are filtered once."""

    def __init__(self, a: torch.Tensor, *, window: int, sigma: float, data_range: float) -> None:
        size = min(window, a.shape[-1], a.shape[-2])
        self.size = size if size % 2 == 1 else size - 1
        self.g = _gaussian_window(self.size, sigma, a.device)
        self._bands: tuple[torch.Tensor, torch.Tensor] | None = None
        self.a = a.float()
        self.mu_a, e_aa = self._filter(torch.stack([self.a, self.a * self.a], 1)).unbind(1)
        self.var_a = e_aa - self.mu_a**2
        self.c1 = (0.01 * data_range) ** 2
        self.c2 = (0.03 * data_range) ** 2

    def _band(self, n: int) -> torch.Tensor:
        """``[n - k + 1, n]`` matrix whose rows hold the window at every valid offset."""
        k = self.size
        rows = torch.arange(n - k + 1, device=self.g.device)[:, None]
        cols = rows + torch.arange(k, device=self.g.device)
        band = torch.zeros(n - k + 1, n, device=self.g.device)
        return band.scatter_(1, cols, self.g.expand(n - k + 1, k))

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        # separable valid Gaussian filtering as two banded matrix products: the same numbers
        # as two depthwise convolutions, about twice as fast on a CPU
        if self._bands is None or self._bands[0].shape[1] != x.shape[-2]:
            self._bands = (self._band(x.shape[-2]), self._band(x.shape[-1]).T.contiguous())
        return self._bands[0] @ x @ self._bands[1]

    def compare(self, b: torch.Tensor) -> torch.Tensor:
        b = b.float()
        mu_b, e_bb, e_ab = self._filter(torch.stack([b, b * b, self.a * b], 1)).unbind(1)
        var_b = e_bb - mu_b**2
        cov = e_ab - self.mu_a * mu_b
        num = (2 * self.mu_a * mu_b + self.c1) * (2 * cov + self.c2)
        den = (self.mu_a**2 + mu_b**2 + self.c1) * (self.var_a + var_b + self.c2)
        return (num / den).flatten(1).mean(dim=1)


def randomization_scores(
    model: nn.Module,
    images: torch.Tensor,
    map_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    *,
    reference: torch.Tensor | None = None,
    order: str = "cascading",
    seed: int = 0,
    layers: Sequence[str] | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Compare the maps of the trained model with those of each randomized copy.

    Args:
        model: The trained model (left unchanged).
        images: Input batch ``[B, C, H, W]``.
        map_fn: ``map_fn(model, images) -> [B, H, W]`` saliency maps normalised to ``[0, 1]``.
            It must explain *fixed* targets (the trained model's predictions or the labels),
            not the randomized model's own predictions.
        reference: The trained model's maps, if already computed (else ``map_fn(model, images)``).
        order: ``"cascading"`` or ``"independent"`` (see :func:`randomized_copies`).
        seed: Re-initialisation seed.
        layers: Layers to randomize, output first.

    Returns:
        ``{layer_name: {"spearman": [B], "ssim": [B]}}`` in randomization order; with cascading
        order the last entry is the fully randomized model.
    """
    if reference is None:
        reference = map_fn(model, images)
    reference = as_maps(reference, "reference").float()
    size = int_pair(reference.shape[-2:], "reference map size")
    # The reference's ranks and SSIM statistics are computed once for all steps.
    ref_ranks = _centred(ranks(reference.flatten(1)))
    ref_ssim = _SsimReference(reference.clamp(0, 1), window=11, sigma=1.5, data_range=1.0)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, randomized in randomized_copies(model, order, seed=seed, layers=layers):
        maps = resize_maps(as_maps(map_fn(randomized, images)).float(), size)
        out[name] = {
            "spearman": _cosine(ref_ranks, _centred(ranks(maps.flatten(1)))),
            "ssim": ref_ssim.compare(maps.clamp(0, 1)),
        }
    return out


@dataclass(frozen=True)
class SanityVerdict:
    """Outcome of the randomization test for one method.

    Attributes:
        spearman: Mean ``|Spearman|`` between trained and randomized maps.
        ssim: Mean SSIM between trained and randomized maps.
        passed: ``spearman < spearman_threshold and ssim < ssim_threshold``.
        spearman_threshold: The rank-correlation threshold used.
        ssim_threshold: The SSIM threshold used.
        n: Number of images.
    """

    spearman: float
    ssim: float
    passed: bool
    spearman_threshold: float
    ssim_threshold: float
    n: int

    def as_dict(self) -> dict[str, float | bool | int]:
        """A JSON-ready dict."""
        return asdict(self)


def sanity_verdict(
    spearman: torch.Tensor,
    ssim: torch.Tensor,
    threshold: float = SPEARMAN_THRESHOLD,
    *,
    ssim_threshold: float = SSIM_THRESHOLD,
) -> SanityVerdict:
    """Decide whether a method passes the randomization test.

    Pass the scores of the *fully* randomized model (the last entry of
    :func:`randomization_scores` in cascading order).

    Args:
        spearman: ``[B]`` Spearman correlations, trained vs randomized maps.
        ssim: ``[B]`` SSIM values, trained vs randomized maps.
        threshold: Fail when ``mean(|spearman|) >= threshold`` (:data:`SPEARMAN_THRESHOLD`).
            The absolute value counts: an inverted map is as model-independent as a copy.
        ssim_threshold: Fail also when ``mean(ssim) >= ssim_threshold`` (:data:`SSIM_THRESHOLD`).

    Returns:
        A :class:`SanityVerdict`.
    """
    rho = float(spearman.float().abs().mean()) if spearman.numel() else float("nan")
    sim = float(ssim.float().mean()) if ssim.numel() else float("nan")
    passed = bool(rho < threshold and sim < ssim_threshold)
    return SanityVerdict(
        spearman=rho,
        ssim=sim,
        passed=passed,
        spearman_threshold=float(threshold),
        ssim_threshold=float(ssim_threshold),
        n=int(spearman.numel()),
    )


# --------------------------------------------------------------------------- graded check

SANITY_MEANINGS: dict[str, str] = {
    "passed": (
        "its maps change when the learned weights are randomized: they depend on what the "
        "model learned."
    ),
    "failed": (
        "its maps stay much the same when the learned weights are randomized: it mainly shows "
        "where the object (or other image structure) is, not what the model used for its class."
    ),
    "inconclusive": (
        "the similarity after randomization is near the threshold, depends on the seed, or "
        "rests on too few non-constant maps: this check neither clears nor condemns the method."
    ),
}
"""One sentence per status, saying what the result means for a reader."""

BATCHNORM_NOTE = (
    "Only learned parameters are randomized; BatchNorm running statistics (buffers) are kept "
    "as trained."
)

Explain = Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class GradedSanity:
    """Graded outcome of the randomization test for one method (and layer).

    Attributes:
        method: The key of the map in ``explain``'s result (e.g. ``"gradcam"`` or
            ``"gradcam@layer4"``).
        status: ``"passed"``, ``"inconclusive"`` or ``"failed"``.
        meaning: :data:`SANITY_MEANINGS` for the status.
        spearman: Mean ``|Spearman|`` between the trained model's maps and the fully randomized
            models' maps, averaged over seeds per image, then over images (constant randomized
            maps left out).
        interval: Percentile bootstrap interval of ``spearman`` over images.
        ssim: Mean SSIM (min-max normalised maps), same averaging.
        ssim_interval: Its bootstrap interval.
        floor_spearman: Mean ``|Spearman|`` between the maps of two independently randomized
            networks (every pair of seeds): the similarity that image structure alone produces.
            ``None`` with one seed.
        floor_ssim: The same for SSIM.
        per_seed: Mean ``|Spearman|`` per seed (the status is inconclusive when they fall on
            both sides of the threshold).
        cascade: ``{layer: mean |Spearman|}`` for each randomization step, averaged over seeds.
        n_images: Images compared.
        n_seeds: Seeds.
        n_maps: Randomized maps at full randomization (``n_images * n_seeds``).
        n_constant: How many of them are constant (all values equal). They have no ranking, so
            they are counted here and left out of the similarities.
        order: ``"cascading"`` or ``"independent"`` (the cascade curve's order; the status always
            uses the fully randomized model).
        thresholds: ``{"spearman", "ssim", "min_valid"}``.
        note: :data:`BATCHNORM_NOTE`.
    """

    method: str
    status: str
    meaning: str
    spearman: float
    interval: tuple[float, float]
    ssim: float
    ssim_interval: tuple[float, float]
    floor_spearman: float | None
    floor_ssim: float | None
    per_seed: list[float]
    cascade: dict[str, float]
    n_images: int
    n_seeds: int
    n_maps: int
    n_constant: int
    order: str
    thresholds: dict[str, float]
    note: str = BATCHNORM_NOTE

    def as_dict(self) -> dict:
        """A JSON-safe dict (tuples become lists; NaN becomes ``None``)."""
        d = asdict(self)
        d["interval"] = list(self.interval)
        d["ssim_interval"] = list(self.ssim_interval)
        for key in ("spearman", "ssim"):
            if isinstance(d[key], float) and math.isnan(d[key]):
                d[key] = None
        return d


def _is_constant(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    span = flat.max(dim=1).values - flat.min(dim=1).values
    scale = flat.abs().max(dim=1).values.clamp(min=1e-30)
    return span <= 1e-6 * scale


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    span = (flat.max(dim=1, keepdim=True).values - lo).clamp(min=1e-30)
    return ((flat - lo) / span).view_as(maps)


def grade_randomization(
    spearman: torch.Tensor,
    ssim_values: torch.Tensor,
    constant: torch.Tensor,
    *,
    spearman_threshold: float = SPEARMAN_THRESHOLD,
    ssim_threshold: float = SSIM_THRESHOLD,
    min_valid: float = 0.5,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """The status rule on per-seed, per-image similarities (pure arithmetic, testable alone).

    Args:
        spearman: ``[S, B]`` ``|Spearman|`` trained vs fully randomized, per seed and image.
        ssim_values: ``[S, B]`` SSIM, same layout.
        constant: ``[S, B]`` bool, the randomized map was constant (left out).
        spearman_threshold: :data:`SPEARMAN_THRESHOLD`.
        ssim_threshold: :data:`SSIM_THRESHOLD`.
        min_valid: Inconclusive when fewer than this share of randomized maps is non-constant.
        n_boot: Bootstrap resamples (over images).
        confidence: Interval level.
        seed: Bootstrap seed.

    Returns:
        ``{"status", "spearman", "interval", "ssim", "ssim_interval", "per_seed"}``:

        * ``failed`` when the interval's lower bound of ``spearman`` is at least the threshold,
          or that of ``ssim`` is at least its threshold (clearly similar);
        * ``passed`` when both upper bounds are below their thresholds and every seed's mean
          ``spearman`` is below the threshold (clearly changed, whatever the seed);
        * ``inconclusive`` otherwise, and whenever fewer than ``min_valid`` of the maps are
          non-constant.
    """
    valid = ~constant.bool()
    w = valid.double()
    counts = w.sum(dim=0)
    has = counts > 0
    rho_img = (spearman.double().abs() * w).sum(0)[has] / counts[has]
    ssim_img = (ssim_values.double() * w).sum(0)[has] / counts[has]
    per_seed = [
        float(spearman[s][valid[s]].double().abs().mean()) if bool(valid[s].any()) else math.nan
        for s in range(spearman.shape[0])
    ]
    if rho_img.numel() == 0:
        nan = math.nan
        return {
            "status": "inconclusive",
            "spearman": nan,
            "interval": (nan, nan),
            "ssim": nan,
            "ssim_interval": (nan, nan),
            "per_seed": per_seed,
        }
    rho = float(rho_img.mean())
    sim = float(ssim_img.mean())
    lo, hi = bootstrap_interval(rho_img, n_boot=n_boot, confidence=confidence, seed=seed)
    s_lo, s_hi = bootstrap_interval(ssim_img, n_boot=n_boot, confidence=confidence, seed=seed)
    if float(w.mean()) < min_valid:
        status = "inconclusive"
    elif lo >= spearman_threshold or s_lo >= ssim_threshold:
        status = "failed"
    elif (
        hi < spearman_threshold
        and s_hi < ssim_threshold
        and all(not (p >= spearman_threshold) for p in per_seed)
    ):
        status = "passed"
    else:
        status = "inconclusive"
    return {
        "status": status,
        "spearman": rho,
        "interval": (lo, hi),
        "ssim": sim,
        "ssim_interval": (s_lo, s_hi),
        "per_seed": per_seed,
    }


def _fully_randomized(model: nn.Module, seed: int, layers: Sequence[str] | None) -> nn.Module:
    last = None
    for _, randomized in randomized_copies(model, "cascading", seed=seed, layers=layers):
        last = randomized
    if last is None:
        raise ValueError("the model has no layer to randomize")
    return last


def graded_randomization(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    explain: Explain,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    order: str = "cascading",
    layers: Sequence[str] | None = None,
    max_steps: int | None = None,
    spearman_threshold: float = SPEARMAN_THRESHOLD,
    ssim_threshold: float = SSIM_THRESHOLD,
    min_valid: float = 0.5,
    n_boot: int = 1000,
    confidence: float = 0.95,
    boot_seed: int = 0,
) -> dict[str, GradedSanity]:
    """Model-parameter randomization with several seeds, a random-versus-random floor and a
    graded status per method.

    For every seed, the model's copy is randomized step by step (``order``, see
    :func:`randomized_copies`) and ``explain`` recomputes the maps for the *same* images and
    targets at every step (the cascade curve). The status uses the fully randomized model of
    every seed (:func:`grade_randomization`); the floor compares the fully randomized models of
    every pair of seeds with each other. The caller's model is never modified; BatchNorm running
    statistics are kept (:data:`BATCHNORM_NOTE`).

    Args:
        model: The trained model.
        images: ``[B, C, H, W]`` inputs.
        targets: ``[B]`` fixed target classes (the trained model's predictions or the labels).
        explain: ``explain(model, images, targets) -> {key: [B, H, W] maps}``: one entry per
            method (or per ``"method@layer"``, to grade several layers in one run). Raw maps
            are fine: Spearman is rank-based and SSIM is computed on min-max normalised maps.
            It must register and remove its own hooks (the engine's context manager).
        seeds: At least three seeds are recommended (the floor needs two).
        order: ``"cascading"`` or ``"independent"``.
        layers: Layers to randomize, output first (default :func:`parameter_layers`).
        max_steps: With cascading order, recompute the maps at this many evenly spaced steps of
            the cascade only (always including the fully randomized model); every layer is
            still randomized. ``None``: every step.
        spearman_threshold: :data:`SPEARMAN_THRESHOLD`.
        ssim_threshold: :data:`SSIM_THRESHOLD`.
        min_valid: See :func:`grade_randomization`.
        n_boot: Bootstrap resamples.
        confidence: Interval level.
        boot_seed: Bootstrap seed.

    Returns:
        ``{key: GradedSanity}`` in ``explain``'s key order.
    """
    if not seeds:
        raise ValueError("graded_randomization needs at least one seed")
    reference = {
        k: as_maps(v, k).detach().float() for k, v in explain(model, images, targets).items()
    }
    keys = list(reference)
    size = {k: int_pair(v.shape[-2:], f"{k} map size") for k, v in reference.items()}
    ref_ranks = {k: _centred(ranks(v.flatten(1))) for k, v in reference.items()}
    ref_ssim = {
        k: _SsimReference(_minmax(v), window=11, sigma=1.5, data_range=1.0)
        for k, v in reference.items()
    }

    def compare(k: str, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maps = resize_maps(as_maps(maps, k).detach().float(), size[k])
        rho = _cosine(ref_ranks[k], _centred(ranks(maps.flatten(1)))).abs()
        return rho, ref_ssim[k].compare(_minmax(maps)), _is_constant(maps)

    curves: dict[str, dict[str, list[float]]] = {k: {} for k in keys}
    final: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    scores: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {k: [] for k in keys}
    names = list(layers) if layers is not None else parameter_layers(model)
    keep = set(range(len(names)))
    if max_steps is not None and order == "cascading" and len(names) > max_steps:
        keep = {round(i * (len(names) - 1) / max(1, max_steps - 1)) for i in range(max_steps)}
    for seed in seeds:
        last: dict[str, torch.Tensor] | None = None
        for step, (name, randomized) in enumerate(
            randomized_copies(model, order, seed=seed, layers=names)
        ):
            if step not in keep:
                continue
            maps = explain(randomized, images, targets)
            for k in keys:
                rho, _, const = compare(k, maps[k])
                value = float(rho[~const].mean()) if bool((~const).any()) else math.nan
                curves[k].setdefault(name, []).append(value)
            last = maps
        if order != "cascading" or last is None:
            last = explain(_fully_randomized(model, seed, layers), images, targets)
        for k in keys:
            resized = resize_maps(as_maps(last[k], k).detach().float(), size[k])
            final[k].append(resized)
            scores[k].append(compare(k, resized))

    out: dict[str, GradedSanity] = {}
    for k in keys:
        rho = torch.stack([s[0] for s in scores[k]])
        sim = torch.stack([s[1] for s in scores[k]])
        const = torch.stack([s[2] for s in scores[k]])
        graded = grade_randomization(
            rho,
            sim,
            const,
            spearman_threshold=spearman_threshold,
            ssim_threshold=ssim_threshold,
            min_valid=min_valid,
            n_boot=n_boot,
            confidence=confidence,
            seed=boot_seed,
        )
        floor_rho: list[torch.Tensor] = []
        floor_sim: list[torch.Tensor] = []
        for i in range(len(final[k])):
            for j in range(i + 1, len(final[k])):
                a, b = final[k][i], final[k][j]
                ok = ~(_is_constant(a) | _is_constant(b))
                if bool(ok.any()):
                    floor_rho.append(rank_correlation(a[ok], b[ok]).abs())
                    floor_sim.append(ssim(_minmax(a[ok]), _minmax(b[ok])))
        cascade = {
            name: float(torch.tensor(v).nanmean()) if v else math.nan
            for name, v in curves[k].items()
        }
        out[k] = GradedSanity(
            method=k,
            status=graded["status"],
            meaning=SANITY_MEANINGS[graded["status"]],
            spearman=graded["spearman"],
            interval=graded["interval"],
            ssim=graded["ssim"],
            ssim_interval=graded["ssim_interval"],
            floor_spearman=float(torch.cat(floor_rho).mean()) if floor_rho else None,
            floor_ssim=float(torch.cat(floor_sim).mean()) if floor_sim else None,
            per_seed=graded["per_seed"],
            cascade=cascade,
            n_images=int(rho.shape[1]),
            n_seeds=len(seeds),
            n_maps=int(const.numel()),
            n_constant=int(const.sum()),
            order=order,
            thresholds={
                "spearman": float(spearman_threshold),
                "ssim": float(ssim_threshold),
                "min_valid": float(min_valid),
            },
        )
    return out
