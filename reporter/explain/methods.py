"""Class activation map methods as pure tensor functions (no hooks, no I/O).

Every function takes a layer's activations ``acts`` (``[B, C, h, w]``) and, for gradient
methods, the gradients ``grads`` of the target score with respect to them (same shape), and
returns maps ``[B, h, w]`` *after* the method's own ReLU, not normalised. The formulas and
epsilons follow pytorch-grad-cam (our test oracle) wherever the quantity is the same; see
``METHODS.md`` for the references. The list of methods, with titles and references, is
:mod:`reporter.explain.registry`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "EIGEN_TOL",
    "GRADPP_EPS",
    "POWER_TOL",
    "XGRAD_EPS",
    "cam",
    "eigencam",
    "eigencam_on_device",
    "first_component_projection",
    "gradcam",
    "gradcam_weights",
    "gradcampp",
    "gradcampp_weights",
    "gradient_maps",
    "hirescam",
    "layercam",
    "scorecam",
    "weighted_sum",
    "xgradcam",
    "xgradcam_weights",
]

GRADPP_EPS = 1e-6
"""Epsilon in the Grad-CAM++ alpha denominator (pytorch-grad-cam's value)."""

XGRAD_EPS = 1e-7
"""Epsilon in the XGrad-CAM normaliser (pytorch-grad-cam's value)."""

_TINY = 1e-30


def weighted_sum(acts: Tensor, weights: Tensor) -> Tensor:
    """Return ``sum_k weights[b, k] * acts[b, k]`` as ``[B, h, w]`` (one batched matmul)."""
    b, c, h, w = acts.shape
    return torch.bmm(weights.reshape(b, 1, c).to(acts.dtype), acts.reshape(b, c, h * w)).reshape(
        b, h, w
    )


def gradcam_weights(grads: Tensor) -> Tensor:
    """Grad-CAM channel weights: the spatial mean of the gradients, ``[B, C]``."""
    return grads.mean(dim=(2, 3))


def gradcam(acts: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k mean_ij(G_k) A_k)``."""
    return weighted_sum(acts, gradcam_weights(grads)).clamp_min_(0)


def gradcampp_weights(acts: Tensor, grads: Tensor, eps: float = GRADPP_EPS) -> Tensor:
    """Grad-CAM++ channel weights (Chattopadhay et al. 2018, eq. 19), ``[B, C]``.

    ``alpha = G^2 / (2 G^2 + sum_ij(A) G^3 + eps)`` (zero where ``G == 0``) and
    ``w_k = sum_ij alpha * ReLU(G)``, exactly as pytorch-grad-cam computes them.
    """
    g2 = grads * grads
    sum_acts = acts.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_acts * g2 * grads + eps)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (grads.clamp_min(0) * alpha).sum(dim=(2, 3))


def gradcampp(acts: Tensor, grads: Tensor, eps: float = GRADPP_EPS) -> Tensor:
    """Grad-CAM++: ``ReLU(sum_k w_k A_k)`` with :func:`gradcampp_weights`."""
    return weighted_sum(acts, gradcampp_weights(acts, grads, eps)).clamp_min_(0)


def xgradcam_weights(acts: Tensor, grads: Tensor, eps: float = XGRAD_EPS) -> Tensor:
    """XGrad-CAM channel weights (Fu et al. 2020): ``sum_ij(G A) / (sum_ij(A) + eps)``."""
    return (grads * acts).sum(dim=(2, 3)) / (acts.sum(dim=(2, 3)) + eps)


def xgradcam(acts: Tensor, grads: Tensor, eps: float = XGRAD_EPS) -> Tensor:
    """XGrad-CAM: ``ReLU(sum_k w_k A_k)`` with :func:`xgradcam_weights`."""
    return weighted_sum(acts, xgradcam_weights(acts, grads, eps)).clamp_min_(0)


def layercam(acts: Tensor, grads: Tensor) -> Tensor:
    """LayerCAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(G_k) * A_k)``, element-wise."""
    return (grads.clamp_min(0) * acts).sum(dim=1).clamp_min_(0)


def hirescam(acts: Tensor, grads: Tensor) -> Tensor:
    """HiResCAM (Draelos & Carin 2020): ``ReLU(sum_k G_k * A_k)``, element-wise."""
    return (grads * acts).sum(dim=1).clamp_min_(0)


def cam(acts: Tensor, class_weights: Tensor) -> Tensor:
    """CAM (Zhou et al. 2016): ``ReLU(sum_k W[c, k] A_k)``.

    Args:
        acts: Activations feeding global average pooling, ``[B, C, h, w]``.
        class_weights: The final linear layer's rows for each image's target class, ``[B, C]``.
    """
    return weighted_sum(acts, class_weights).clamp_min_(0)


def scorecam(acts: Tensor, scores: Tensor) -> Tensor:
    """Score-CAM (Wang et al. 2020): ``ReLU(sum_k softmax_k(scores) A_k)``.

    Args:
        acts: Activations ``[B, C, h, w]``.
        scores: Target-class scores of the input masked by each channel, ``[B, C]``.
    """
    return weighted_sum(acts, torch.softmax(scores.to(acts.dtype), dim=1)).clamp_min_(0)


EIGEN_TOL = 1e-4
"""Early exit of Eigen-CAM's repeated squaring on the CPU (see :func:`_top_eigenvector`)."""


POWER_TOL = 1e-5
"""Convergence of :func:`_power_iteration`: ``||G v - lambda v|| <= POWER_TOL * lambda``."""


def _power_iteration(
    gram: Tensor, tol: float, max_iter: int = 48, check_every: int = 4
) -> Tensor | None:
    """Leading eigenvectors ``[B, n]`` by plain power iteration, or None if any has not converged.

    Starts from each matrix's column with the largest diagonal entry and checks the residual
    ``||G v - (v^T G v) v||`` every ``check_every`` steps; with a residual of ``tol * lambda_1``
    the angle to the true eigenvector is at most about ``tol / (1 - lambda_2 / lambda_1)``.
    """
    # Row vectors [B, 1, n]: v^T G is G v for symmetric G, and MKL's batched row-times-matrix
    # product is much faster than matrix-times-column for these sizes (docs/performance.rst).
    n = gram.shape[-1]
    best = gram.diagonal(dim1=-2, dim2=-1).argmax(dim=-1)
    vec = torch.gather(gram, 1, best[:, None, None].expand(-1, 1, n))
    vec = F.normalize(vec, dim=2, eps=_TINY)
    for step in range(1, max_iter + 1):
        nxt = torch.bmm(vec, gram)
        if step % check_every == 0:
            lam = (vec * nxt).sum(dim=2, keepdim=True)
            residual = torch.linalg.vector_norm(nxt - lam * vec, dim=2)
            if bool((residual <= tol * lam.abs().reshape(-1, 1)).all()):
                return F.normalize(nxt, dim=2, eps=_TINY).squeeze(1)
        vec = F.normalize(nxt, dim=2, eps=_TINY)
    return None


def _top_eigenvector(
    gram: Tensor, squarings: int = 10, polish: int = 2, tol: float | None = None
) -> Tensor:
    """Leading eigenvector of batched symmetric PSD matrices ``[B, n, n]`` without an SVD.

    Repeated squaring raises the matrix to the power ``2**squarings``, which leaves essentially
    the projector on the first eigenvector; its column with the largest diagonal entry is a start
    vector that cannot be orthogonal to that eigenvector. A few plain power iterations on
    ``gram`` then polish it. Only batched matmuls and a handful of small kernels, so it is cheap
    on CPUs and launch-light on GPUs.

    With ``tol`` (for the CPU only: it reads values back to the host, and a CUDA graph needs a
    fixed sequence of kernels) it first tries :func:`_power_iteration`, which needs only
    matrix-vector products and converges in a few dozen steps when the first eigenvalue
    stands out (``lambda_2 / lambda_1`` up to about 0.7, as in the activations we measured);
    otherwise the squaring runs and stops as soon as every power is rank one to within ``tol``
    (``1 - ||P||_F / trace(P)``, about ``(lambda_2 / lambda_1) ** 2**k`` after ``k``
    squarings).
    """
    if tol is not None:
        found = _power_iteration(gram, POWER_TOL)
        if found is not None:
            return found
    # Scale so the largest eigenvalue is in [1/n, 1]; after three squarings it is still
    # >= n^-8 (1e-23 for n = 784), far from float32 underflow, so rescaling every third
    # squaring is enough.
    power = gram / gram.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(_TINY)[:, None, None]
    for step in range(squarings):
        power = torch.bmm(power, power)
        if step % 3 == 2 or step == squarings - 1:
            power = power / power.amax(dim=(1, 2), keepdim=True).clamp_min(_TINY)
        if tol is not None and step >= 2:
            trace = power.diagonal(dim1=-2, dim2=-1).sum(-1)
            frob = torch.linalg.vector_norm(power.flatten(1), dim=1)
            if bool((frob >= trace * (1 - tol)).all()):
                break
    best = power.diagonal(dim1=-2, dim2=-1).argmax(dim=-1)
    vec = torch.gather(power, 1, best[:, None, None].expand(-1, 1, power.shape[2]))  # a row
    for _ in range(polish):
        vec = torch.bmm(F.normalize(vec, dim=2, eps=_TINY), gram)  # row form: see above
    return F.normalize(vec, dim=2, eps=_TINY).squeeze(1)


def first_component_projection(acts: Tensor, tol: float | None = None) -> Tensor:
    """Project activations (centred over positions) on their first principal component.

    This is the quantity of pytorch-grad-cam's ``get_2d_projection`` (``X @ VT[0]`` with ``X``
    the ``[h*w, C]`` centred activations), computed from the smaller of the ``C x C`` and
    ``hw x hw`` Gram matrices instead of a full SVD. The sign is fixed so that the projection
    correlates positively with the channel-summed activations.

    Args:
        acts: Activations ``[B, C, h, w]``.
        tol: Early exit of the eigenvector iteration (CPU only; see :func:`_top_eigenvector`).

    Returns:
        The signed projection ``[B, h, w]`` (no ReLU).
    """
    b, c, h, w = acts.shape
    n = h * w
    x = acts.reshape(b, c, n)
    x = x - x.mean(dim=2, keepdim=True)
    if c <= n:
        gram = x @ x.transpose(1, 2)  # [B, C, C]
        v = _top_eigenvector(gram, tol=tol)
        proj = (v.unsqueeze(1) @ x).squeeze(1)  # [B, N]
    else:
        gram = x.transpose(1, 2) @ x  # [B, N, N]
        u = _top_eigenvector(gram, tol=tol)
        eig = (u.unsqueeze(1) @ gram @ u.unsqueeze(2)).reshape(b, 1)
        proj = u * eig.clamp_min(0).sqrt()
    summed = acts.sum(dim=1).reshape(b, n)
    agreement = (proj * (summed - summed.mean(dim=1, keepdim=True))).sum(dim=1, keepdim=True)
    proj = torch.where(agreement < 0, -proj, proj)
    return proj.reshape(b, h, w)


def eigencam(acts: Tensor, tol: float | None = None) -> Tensor:
    """Eigen-CAM (Muhammad & Yeasin 2020): ``ReLU`` of :func:`first_component_projection`.

    ``tol`` (CPU only) lets the eigenvector iteration stop early; ``None`` runs the fixed
    sequence of kernels that CUDA graphs need.
    """
    return first_component_projection(acts, tol).clamp_min_(0)


def eigencam_on_device(acts: Tensor) -> Tensor:
    """:func:`eigencam` with the early exit on the CPU and the fixed kernel sequence elsewhere."""
    return eigencam(acts, EIGEN_TOL if acts.device.type == "cpu" else None)


def gradient_maps(acts: Tensor, grads: Tensor, methods: Iterable[str]) -> dict[str, Tensor]:
    """Compute several gradient methods on one layer, sharing intermediate products.

    Gives the same maps as the single-method functions above (up to float rounding) with about
    half the kernel launches: ``sum_ij A``, ``ReLU(G)`` and ``G * A`` are computed once.
    Grad-CAM++'s alpha is evaluated as ``G^2 / (G^2 (2 + S G) + eps)``, which is zero where
    ``G == 0`` without pytorch-grad-cam's extra ``where``.

    Args:
        acts: Activations ``[B, C, h, w]``.
        grads: Gradients of the target score with respect to ``acts``.
        methods: Gradient method names; those this function does not fuse are left out of the
            result (:mod:`reporter.explain.mapmath` calls their own function).

    Returns:
        ``{method: map [B, h, w]}`` for the methods it knows.
    """
    wanted = set(methods)
    out: dict[str, Tensor] = {}
    channel_weights: dict[str, Tensor] = {}  # methods that are a weighted sum of channels
    if "gradcam" in wanted:
        channel_weights["gradcam"] = grads.mean(dim=(2, 3))
    sum_acts = acts.sum(dim=(2, 3), keepdim=True) if wanted & {"gradcam++", "xgradcam"} else None
    pos_grads = grads.clamp_min(0) if wanted & {"gradcam++", "layercam"} else None
    if "gradcam++" in wanted:
        assert sum_acts is not None and pos_grads is not None
        g2 = grads * grads
        denom = (grads * sum_acts).add_(2).mul_(g2).add_(GRADPP_EPS)
        channel_weights["gradcam++"] = (pos_grads * g2).div_(denom).sum(dim=(2, 3))
    if wanted & {"xgradcam", "hirescam"}:
        ga = grads * acts
        if "hirescam" in wanted:
            out["hirescam"] = ga.sum(dim=1).clamp_min_(0)
        if "xgradcam" in wanted:
            assert sum_acts is not None
            channel_weights["xgradcam"] = ga.sum(dim=(2, 3)) / (
                sum_acts.reshape(ga.shape[:2]) + XGRAD_EPS
            )
    if "layercam" in wanted:
        assert pos_grads is not None
        out["layercam"] = pos_grads.mul_(acts).sum(dim=1).clamp_min_(0)
    if channel_weights:
        # One batched matmul for every channel-weighted method: [B, M, C] @ [B, C, hw].
        b, c, h, w = acts.shape
        stacked = torch.stack(list(channel_weights.values()), dim=1).to(acts.dtype)
        summed = torch.bmm(stacked, acts.reshape(b, c, h * w)).clamp_min_(0)
        for i, name in enumerate(channel_weights):
            out[name] = summed[:, i].reshape(b, h, w)
    return {m: out[m] for m in methods if m in out}
