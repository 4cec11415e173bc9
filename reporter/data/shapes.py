"""The ``shapes`` data set: coloured geometric shapes on textured backgrounds, with exact masks.

Every image holds one shape drawn with hard edges, so its boolean mask is exact: a pixel is the
shape's flat colour exactly when the mask is true. The class is the shape's geometry
(``circle``, ``square``, ``triangle``, ``cross``; ``star`` and ``ring`` are available too). The
shape's colour is drawn at random from :data:`SHAPE_PALETTE` and its size, position and rotation
are random, so nothing but the geometry identifies the class, unless a shortcut is switched on:

``spurious=P``
    With probability ``P`` an image's background colour is its class's own colour
    (``BACKGROUND_PALETTE[label]``); otherwise it is drawn uniformly from the background colours
    of all classes (so it can still match the class by chance: the observed match rate is
    ``P + (1 - P) / K`` for ``K`` classes). In the ``"train"`` split the shortcut is always
    applied; in the ``"test"`` split ``shortcut="absent"`` draws every background at random
    (independent of the class) and ``shortcut="kept"`` applies the same ``P`` as in training.

``patch=P`` (the ``shapes-patch`` data set)
    A watermark-like cue: with probability ``P`` an image of class ``patch_class`` (default 0)
    carries a small square of :data:`PATCH_COLOUR` in its top-left corner (side ``patch_size``,
    default ``max(3, round(min(H, W) / 8))``: 4 pixels at 32 x 32, 1.6 % of the image). No other
    class ever carries it. The split rule is the one of ``spurious``: always applied with ``P``
    in ``"train"``; in ``"test"``, ``shortcut="kept"`` applies the same ``P`` and
    ``shortcut="absent"`` draws no patch at all. The patch is drawn over the shape (the mask is
    false under it, so masks stay exact), and its random draws come after all others, so images
    without patches are the same as with ``patch=0``.

Backgrounds are textured (a random sinusoidal grating plus per-pixel noise, at most
:data:`TEXTURE_AMPLITUDE` away from the background colour in every channel). Shape colours are at
least 100 levels away from every background colour in some channel, so no background pixel can
take a shape's colour.

Generation is vectorised with NumPy: 2,000 images of 64x64 take a fraction of a second. The same
``(seed, split)`` gives the same images; train and test splits with the same seed differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "BACKGROUND_PALETTE",
    "PATCH_COLOUR",
    "SHAPE_CLASSES",
    "SHAPE_PALETTE",
    "TEXTURE_AMPLITUDE",
    "ShapesData",
    "ShapesDataset",
    "generate_shapes",
]

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "ring")
"""Every available class, in order. The default data set uses the first four."""

BACKGROUND_PALETTE: tuple[tuple[int, int, int], ...] = (
    (40, 110, 40),  # green
    (40, 60, 130),  # blue
    (130, 45, 45),  # red
    (110, 90, 30),  # olive
    (90, 40, 110),  # purple
    (30, 110, 110),  # teal
)
"""Muted background colours; ``BACKGROUND_PALETTE[k]`` is class ``k``'s own (shortcut) colour."""

SHAPE_PALETTE: tuple[tuple[int, int, int], ...] = (
    (250, 250, 250),  # white
    (250, 220, 40),  # yellow
    (240, 120, 200),  # pink
    (120, 230, 250),  # cyan
    (200, 250, 120),  # lime
    (250, 160, 60),  # orange
)
"""Bright shape colours, drawn independently of the class."""

PATCH_COLOUR: tuple[int, int, int] = (255, 0, 255)
"""Colour of the ``shapes-patch`` cue (magenta: in neither palette)."""

TEXTURE_AMPLITUDE = 30
"""Largest per-channel deviation of a background pixel from its background colour."""

_SPLITS = {"train": 0, "test": 1}
_CHUNK = 512  # images per vectorised block (bounds the temporary memory)


@dataclass
class ShapesData:
    """A generated set of shapes images.

    Attributes:
        images: ``uint8`` tensor ``[N, H, W, 3]``.
        masks: ``bool`` tensor ``[N, H, W]``, true on the shape.
        labels: ``int64`` tensor ``[N]``, indices into ``class_names``.
        class_names: The class names, in label order.
        background_index: ``int64`` ``[N]``: which class's colour the background has.
        background_colours: ``uint8`` ``[N, 3]``: each image's background colour.
        shape_colours: ``uint8`` ``[N, 3]``: each image's shape colour.
        spurious: The shortcut probability used.
        split: ``"train"`` or ``"test"``.
        shortcut: ``"absent"`` or ``"kept"`` (what the test split does with the shortcut).
        has_patch: ``bool`` ``[N]``: the image carries the corner patch (``shapes-patch``).
        patch_box: ``(y0, x0, y1, x1)`` of the corner patch in pixels (end exclusive), or
            ``None`` when no patch was requested.
        patch_class: The class that carries the patch, or ``None``.
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    background_index: torch.Tensor
    background_colours: torch.Tensor
    shape_colours: torch.Tensor
    spurious: float
    split: str
    shortcut: str
    has_patch: torch.Tensor | None = None
    patch_box: tuple[int, int, int, int] | None = None
    patch_class: int | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shortcut_match(self) -> torch.Tensor:
        """``bool`` ``[N]``: the background has the image's class colour."""
        return self.background_index == self.labels

    def float_images(self) -> torch.Tensor:
        """Images as a float tensor ``[N, 3, H, W]`` in ``[0, 1]``."""
        return self.images.permute(0, 3, 1, 2).float().div_(255.0)


def _shape_masks(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test for one shape kind in local coordinates (circumradius 1, centred at 0)."""
    if kind == "circle":
        return u * u + v * v <= 1.0
    if kind == "square":
        half = 0.7
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if kind == "triangle":
        # Equilateral triangle inscribed in the unit circle: three half-planes, inradius 1/2.
        inside = np.ones(u.shape, dtype=bool)
        for angle in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6):
            inside &= u * np.cos(angle) + v * np.sin(angle) <= 0.5
        return inside
    if kind == "cross":
        arm, width = 0.95, 0.32
        au, av = np.abs(u), np.abs(v)
        return ((au <= width) & (av <= arm)) | ((au <= arm) & (av <= width))
    if kind == "star":
        # Five-pointed star: fold the angle into one tenth of a turn, then one edge from an outer
        # vertex (radius 1, angle 0) to an inner vertex (radius r_in, angle pi/5).
        r_in = 0.42
        rho = np.sqrt(u * u + v * v)
        phi = np.mod(np.arctan2(v, u), 2 * np.pi / 5)
        phi = np.minimum(phi, 2 * np.pi / 5 - phi)
        x, y = rho * np.cos(phi), rho * np.sin(phi)
        ax, ay = 1.0, 0.0
        bx, by = r_in * np.cos(np.pi / 5), r_in * np.sin(np.pi / 5)
        # Inside when the point is on the origin's side of the line A-B.
        cross_p = (bx - ax) * (y - ay) - (by - ay) * (x - ax)
        cross_o = (bx - ax) * (0 - ay) - (by - ay) * (0 - ax)
        return (cross_p * cross_o >= 0) | (rho <= r_in * np.cos(np.pi / 5))
    if kind == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    raise ValueError(f"unknown shape {kind!r}; choose from {', '.join(SHAPE_CLASSES)}")


def _resolve_classes(classes: int | Sequence[str] | None) -> list[str]:
    if classes is None:
        return list(SHAPE_CLASSES[:4])
    if isinstance(classes, int):
        if not 2 <= classes <= len(SHAPE_CLASSES):
            raise ValueError(f"classes must be between 2 and {len(SHAPE_CLASSES)}, got {classes}")
        return list(SHAPE_CLASSES[:classes])
    names = list(classes)
    unknown = [c for c in names if c not in SHAPE_CLASSES]
    if unknown or len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(
            f"classes must be at least two distinct names from {', '.join(SHAPE_CLASSES)}; "
            f"got {names}"
        )
    return names


def generate_shapes(
    n: int,
    *,
    size: int | tuple[int, int] = 64,
    seed: int = 0,
    spurious: float = 0.0,
    split: str = "train",
    shortcut: str = "absent",
    classes: int | Sequence[str] | None = None,
    patch: float = 0.0,
    patch_class: int = 0,
    patch_size: int | None = None,
) -> ShapesData:
    """Generate ``n`` shapes images with exact masks.

    Args:
        n: Number of images. Labels are balanced (``i % K``, shuffled).
        size: Image size, an int for square images or ``(height, width)``; at least 16.
        seed: Seed; with ``split`` it fully determines the result.
        spurious: Probability ``P`` in ``[0, 1]`` that the background has the class's colour.
        split: ``"train"`` (the shortcut is applied with ``P``) or ``"test"``.
        shortcut: For ``split="test"``: ``"absent"`` (random backgrounds) or ``"kept"``
            (the same ``P`` as in training). Ignored for ``"train"``.
        classes: Number of classes (the first ones of :data:`SHAPE_CLASSES`) or their names;
            default the four ``circle, square, triangle, cross``.
        patch: Probability ``P`` in ``[0, 1]`` that an image of ``patch_class`` carries the corner
            patch (the same split rule as ``spurious``).
        patch_class: Index of the class that carries the patch.
        patch_size: Side of the patch in pixels; default ``max(3, round(min(H, W) / 8))``.

    Returns:
        A :class:`ShapesData`.

    Raises:
        ValueError: for an unknown split, shortcut mode or class, ``P`` outside ``[0, 1]``,
            a negative ``n`` or an image smaller than 16 pixels.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if shortcut not in ("absent", "kept"):
        raise ValueError(f"shortcut must be 'absent' or 'kept', got {shortcut!r}")
    if not 0.0 <= spurious <= 1.0:
        raise ValueError(f"spurious must be a probability in [0, 1], got {spurious}")
    if not 0.0 <= patch <= 1.0:
        raise ValueError(f"patch must be a probability in [0, 1], got {patch}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(height, width) < 16:
        raise ValueError(f"image size must be at least 16 pixels, got {(height, width)}")
    names = _resolve_classes(classes)
    k = len(names)
    if not 0 <= patch_class < k:
        raise ValueError(f"patch_class must be a class index in [0, {k}), got {patch_class}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SPLITS[split]]))

    labels = rng.permutation(np.arange(n) % k)
    p = spurious if (split == "train" or shortcut == "kept") else 0.0
    use_class_colour = rng.random(n) < p
    random_bg = rng.integers(0, k, size=n)
    bg_index = np.where(use_class_colour, labels, random_bg)
    palette_bg = np.asarray(BACKGROUND_PALETTE[:k], dtype=np.float32)
    palette_fg = np.asarray(SHAPE_PALETTE, dtype=np.uint8)
    fg = palette_fg[rng.integers(0, len(palette_fg), size=n)]

    side = min(height, width)
    radius = rng.uniform(0.18, 0.32, size=n) * side
    margin = radius * 1.08 + 1.0
    cy = rng.uniform(margin, height - margin)
    cx = rng.uniform(margin, width - margin)
    theta = rng.uniform(0.0, 2 * np.pi, size=n)
    # Texture: a grating with random period, orientation and phase, plus per-pixel noise.
    period = rng.uniform(4.0, 12.0, size=n)
    orient = rng.uniform(0.0, np.pi, size=n)
    phase = rng.uniform(0.0, 2 * np.pi, size=n)
    grating_amp = rng.uniform(0.3, 0.7, size=n) * TEXTURE_AMPLITUDE

    images = np.empty((n, height, width, 3), dtype=np.uint8)
    masks = np.empty((n, height, width), dtype=bool)
    ys = np.arange(height, dtype=np.float32)[None, :, None] + 0.5
    xs = np.arange(width, dtype=np.float32)[None, None, :] + 0.5
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        m = sl.stop - sl.start

        def col(a: np.ndarray, sl: slice = sl) -> np.ndarray:
            return a[sl].astype(np.float32)[:, None, None]

        dy, dx = ys - col(cy), xs - col(cx)
        cos_t, sin_t, r = np.cos(col(theta)), np.sin(col(theta)), col(radius)
        u = (dx * cos_t + dy * sin_t) / r
        v = (-dx * sin_t + dy * cos_t) / r
        chunk_mask = np.zeros((m, height, width), dtype=bool)
        chunk_labels = labels[sl]
        for ci, kind in enumerate(names):
            idx = np.nonzero(chunk_labels == ci)[0]
            if idx.size:
                chunk_mask[idx] = _shape_masks(kind, u[idx], v[idx])
        freq = 2 * np.pi / col(period)
        wave = np.sin(
            freq * (xs * np.cos(col(orient)) + ys * np.sin(col(orient))) + col(phase)
        ) * col(grating_amp)
        noise_amp = TEXTURE_AMPLITUDE - col(grating_amp)
        noise = rng.random((m, height, width, 3), dtype=np.float32) * 2.0 - 1.0
        bg = (
            palette_bg[bg_index[sl]][:, None, None, :]
            + wave[..., None]
            + noise * noise_amp[..., None]
        )
        chunk_img = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
        chunk_img = np.where(chunk_mask[..., None], fg[sl][:, None, None, :], chunk_img)
        images[sl] = chunk_img
        masks[sl] = chunk_mask

    has_patch = np.zeros(n, dtype=bool)
    box: tuple[int, int, int, int] | None = None
    if patch > 0:
        side_p = int(patch_size) if patch_size is not None else max(3, round(side / 8))
        if not 1 <= side_p <= side // 2:
            raise ValueError(f"patch_size must be between 1 and {side // 2}, got {side_p}")
        box = (0, 0, side_p, side_p)
        p_patch = patch if (split == "train" or shortcut == "kept") else 0.0
        # drawn after everything else: images without a patch match ``patch=0`` exactly
        has_patch = (labels == patch_class) & (rng.random(n) < p_patch)
        idx = np.nonzero(has_patch)[0]
        images[idx, :side_p, :side_p] = np.asarray(PATCH_COLOUR, dtype=np.uint8)
        masks[idx, :side_p, :side_p] = False

    return ShapesData(
        images=torch.from_numpy(images),
        masks=torch.from_numpy(masks),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=names,
        background_index=torch.from_numpy(bg_index.astype(np.int64)),
        background_colours=torch.from_numpy(
            np.asarray(BACKGROUND_PALETTE, dtype=np.uint8)[bg_index]
        ),
        shape_colours=torch.from_numpy(fg),
        spurious=float(spurious),
        split=split,
        shortcut=shortcut,
        has_patch=torch.from_numpy(has_patch),
        patch_box=box,
        patch_class=int(patch_class) if patch > 0 else None,
    )


class ShapesDataset(Dataset):
    """A :class:`torch.utils.data.Dataset` over generated shapes.

    Items are ``(image, label)`` with ``image`` a float tensor ``[3, H, W]`` in ``[0, 1]`` and
    ``label`` an int. ``masks`` (``bool [N, H, W]``), ``targets`` and ``classes`` are exposed for
    the trust metrics and samplers.

    Args:
        n: Number of images, or an already generated :class:`ShapesData`.
        **kwargs: Passed to :func:`generate_shapes` when ``n`` is an int.
    """

    def __init__(self, n: int | ShapesData, **kwargs: object) -> None:
        self.data = n if isinstance(n, ShapesData) else generate_shapes(n, **kwargs)  # type: ignore[arg-type]

    @property
    def masks(self) -> torch.Tensor:
        """``bool`` ``[N, H, W]`` object masks."""
        return self.data.masks

    @property
    def targets(self) -> torch.Tensor:
        """``int64`` ``[N]`` labels."""
        return self.data.labels

    @property
    def classes(self) -> list[str]:
        """Class names in label order."""
        return self.data.class_names

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.data.images[index].permute(2, 0, 1).float().div_(255.0)
        return image, int(self.data.labels[index])
