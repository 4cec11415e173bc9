"""The dataset registry: ``digits``, ``shapes`` and image folders in the ImageFolder layout."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reporter.data.datasets import (
    FileImageDataset,
    ImageDataset,
    TensorImageDataset,
    display_name,
)
from reporter.data.transforms import not_a_regular_file
from reporter.errors import ReporterError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataBundle",
    "load_dataset",
    "registered_datasets",
    "scan_folder",
    "stratified_split",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
)
_JUNK_DIRS = frozenset({"__MACOSX", ".ipynb_checkpoints", "__pycache__"})


@dataclass
class DataBundle:
    """A train/test pair of datasets with what the report needs to say about them.

    Attributes:
        name: ``digits``, ``shapes`` or the folder path.
        class_names: Class names, index = label.
        train: The training split (``None`` when only test data was given).
        test: The test split.
        skipped: Files found but not usable, as ``{"path", "reason"}`` (more are added as
            images fail to decode during a run).
        channels: Natural channel count of the data (1 grayscale, 3 colour).
        input_size: Natural ``(H, W)`` for models trained on this data.
        masks: Whether the test split has object masks.
        spurious: For generated shapes: probability that the background gives the class away.
    """

    name: str
    class_names: list[str]
    train: ImageDataset | None
    test: ImageDataset
    skipped: list[dict[str, str]] = field(default_factory=list)
    channels: int = 3
    input_size: tuple[int, int] = (64, 64)
    masks: bool = False
    spurious: float = 0.0

    def set_transform(self, transform: Callable | None) -> None:
        """Attach the model's preprocessing to both splits."""
        for ds in (self.train, self.test):
            if ds is not None:
                ds.transform = transform

    def fingerprint(self) -> str:
        """Fingerprint of the training data (or the test data when there is none)."""
        return (self.train or self.test).fingerprint()


def registered_datasets() -> list[str]:
    """Names accepted by ``--data`` besides folder paths."""
    return ["digits", "shapes", "shapes-spurious", "shapes-patch"]


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class with a seeded permutation; every class keeps >= 1 train image."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = round(len(idx) * test_fraction)
        n_test = min(max(n_test, 1 if len(idx) > 1 else 0), len(idx) - 1)
        test.extend(idx[:n_test].tolist())
        train.extend(idx[n_test:].tolist())
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def _digits(seed: int, test_fraction: float) -> DataBundle:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # [N,1,8,8]
    images = torch.nn.functional.interpolate(
        images, size=(32, 32), mode="bilinear", align_corners=False
    ).clamp(0, 1)
    labels = digits.target.astype(np.int64)
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        idx, test_size=test_fraction, random_state=seed, stratify=labels
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    names = [str(i) for i in range(10)]
    train = TensorImageDataset(images[train_idx], labels[train_idx], names, name="digits-train")
    test = TensorImageDataset(images[test_idx], labels[test_idx], names, name="digits")
    return DataBundle("digits", names, train, test, channels=1, input_size=(32, 32), masks=False)


def _shapes(seed: int, spurious: float, shortcut: str, size: int, patch: float = 0.0) -> DataBundle:
    from reporter.data.shapes import generate_shapes

    n_train, n_test = 1600, 400
    train = generate_shapes(
        n_train, size=size, seed=seed, spurious=spurious, split="train", patch=patch
    )
    test = generate_shapes(
        n_test,
        size=size,
        seed=seed + 10_000,
        spurious=spurious,
        split="test",
        shortcut=shortcut,
        patch=patch,
    )
    names = list(train.class_names)
    if patch > 0:
        name = (
            f"shapes with a corner patch on {names[0]} ({patch:.0%}; {shortcut} in the test split)"
        )
    elif spurious == 0:
        name = "shapes"
    else:
        name = f"shapes with a background shortcut ({spurious:.0%}; {shortcut} in the test split)"

    def as_dataset(data, name: str) -> TensorImageDataset:
        return TensorImageDataset(
            data.float_images(), data.labels, names, name=name, masks=data.masks
        )

    return DataBundle(
        name,
        names,
        as_dataset(train, "shapes-train"),
        as_dataset(test, "shapes"),
        channels=3,
        input_size=(size, size),
        masks=True,
        spurious=spurious,
    )


def scan_folder(root: Path) -> tuple[list[Path], list[int], list[str], list[dict[str, str]]]:
    """Find images in the ImageFolder layout ``root/<class>/**/<image>``.

    Hidden files and folders and ``__MACOSX`` are ignored; files with other extensions, entries
    that are not regular files (broken symbolic links, FIFOs, device files) and empty class
    folders are recorded in the returned ``skipped`` list. Class names and recorded paths are
    display forms (:func:`~reporter.data.datasets.display_name`); the returned files are the
    real paths.

    Raises:
        ReporterError: for a missing path, a file instead of a folder, a folder without class
            subfolders or images, or fewer than two classes with images.
    """
    shown = display_name(root)
    if not root.exists():
        raise ReporterError(f"Data folder not found: {shown}")
    if not root.is_dir():
        raise ReporterError(
            f"{shown} is a file; --data expects a folder in the layout <folder>/<class>/<image> "
            "or a registered name (digits, shapes)."
        )
    skipped: list[dict[str, str]] = []
    class_dirs = sorted(
        (
            d
            for d in root.iterdir()
            if d.is_dir() and not d.name.startswith(".") and d.name not in _JUNK_DIRS
        ),
        key=lambda d: d.name,
    )
    loose = [f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
    if not class_dirs:
        hint = (
            f" It holds {len(loose)} images directly; put them in one subfolder per class."
            if loose
            else ""
        )
        raise ReporterError(
            f"{shown} has no class subfolders. Expected <folder>/<class>/<image>.{hint}"
        )
    for f in loose:
        skipped.append({"path": display_name(f), "reason": "image outside any class folder"})
    for f in sorted(root.iterdir()):
        odd = f.suffix.lower() in IMAGE_EXTENSIONS and not_a_regular_file(f)
        if odd and not f.name.startswith("."):
            skipped.append({"path": display_name(f), "reason": odd})
    files: list[Path] = []
    labels: list[int] = []
    kept_classes: list[str] = []
    for class_dir in class_dirs:
        class_files: list[Path] = []
        for path in sorted(class_dir.rglob("*")):
            rel_parts = path.relative_to(root).parts
            if any(p.startswith(".") or p in _JUNK_DIRS for p in rel_parts):
                continue
            odd = not_a_regular_file(path)
            if odd is not None:
                skipped.append({"path": display_name(path), "reason": odd})
                continue
            if not path.is_file():
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(
                    {
                        "path": display_name(path),
                        "reason": f"not an image file ({path.suffix or 'no'} extension)",
                    }
                )
                continue
            class_files.append(path)
        if not class_files:
            skipped.append(
                {"path": display_name(class_dir), "reason": "empty class folder, ignored"}
            )
            continue
        label = len(kept_classes)
        kept_classes.append(display_name(class_dir.name))
        files.extend(class_files)
        labels.extend([label] * len(class_files))
    if not files:
        raise ReporterError(f"{shown} has class folders but no image files in them.")
    if len(kept_classes) < 2:
        raise ReporterError(
            f"{shown} has images for only one class ({kept_classes[0]!r}); a classifier audit "
            "needs at least two class folders."
        )
    return files, labels, kept_classes, skipped


def _sniff(files: list[Path], limit: int = 16) -> tuple[int, tuple[int, int]]:
    """Guess channel count and a typical size from a few readable images."""
    from reporter.data.transforms import ImageReadError, read_image

    gray, sizes = 0, []
    seen = 0
    for path in files[:: max(1, len(files) // limit)][:limit]:
        try:
            img = read_image(str(path))
        except ImageReadError:
            continue
        seen += 1
        gray += img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
        sizes.append(min(img.size))
    channels = 1 if seen and gray == seen else 3
    side = int(np.median(sizes)) if sizes else 64
    side = int(min(224, max(32, side)))
    return channels, (side, side)


def _folder(path: Path, *, seed: int, test_fraction: float, test_path: Path | None) -> DataBundle:
    files, labels, classes, skipped = scan_folder(path)
    if test_path is not None:
        t_files, t_labels, t_classes, t_skipped = scan_folder(test_path)
        if t_classes != classes:
            raise ReporterError(
                f"The train folder {display_name(path)} and test folder {display_name(test_path)} "
                "have different class "
                f"folders ({len(classes)} vs {len(t_classes)}): "
                f"only in train: {sorted(set(classes) - set(t_classes))[:5]}, "
                f"only in test: {sorted(set(t_classes) - set(classes))[:5]}."
            )
        train = FileImageDataset(files, labels, classes, root=path)
        test = FileImageDataset(t_files, t_labels, classes, root=test_path)
        skipped += t_skipped
    else:
        train_idx, test_idx = stratified_split(np.asarray(labels), test_fraction, seed)
        train = FileImageDataset(
            [files[i] for i in train_idx], [labels[i] for i in train_idx], classes, root=path
        )
        test = FileImageDataset(
            [files[i] for i in test_idx], [labels[i] for i in test_idx], classes, root=path
        )
    channels, size = _sniff(files)
    return DataBundle(display_name(path), classes, train, test, skipped, channels, size)


def load_dataset(
    spec: str,
    *,
    seed: int = 0,
    test_fraction: float = 0.25,
    train_path: str | Path | None = None,
    test_path: str | Path | None = None,
    test_only: bool = False,
    spurious: float = 0.0,
    shortcut: str = "absent",
    size: int | None = None,
) -> DataBundle:
    """Resolve ``--data`` (a registered name or a folder) to a :class:`DataBundle`.

    Args:
        spec: ``digits``, ``shapes``, ``shapes-spurious``, ``shapes-patch`` or a folder path.
            The rule: ``train_path`` (with ``test_path`` or a split of it) names the data alone;
            ``spec`` may then be empty, ``digits`` (the ``train`` command's default, which cannot
            be told apart from an explicit ``--data digits``) or the same folder; anything else
            is a conflict. Without ``train_path``, ``test_path`` is always what is tested: with
            a folder ``spec``, the model trains on the folder; alone, or beside ``digits`` (the
            default of ``--data``, so it never hides a test folder), it is test-only data (no
            training split: training then stops with a clear message); beside a generated data
            set (``shapes``...), which has its own test split, it is a conflict.
            Every conflict is a :class:`ReporterError` that says what to pass instead.
        seed: Seed of the train/test split (and of generated data).
        test_fraction: Fraction of each class held out for testing when one folder is split.
        train_path: Explicit training folder (``--train-data``); ``spec`` may then be empty.
        test_path: Explicit test folder (``--test-data``).
        test_only: Treat the whole folder ``spec`` as test data (auditing a trained model).
        spurious: For ``shapes``: probability that the background colour gives the class away;
            for ``shapes-patch``: probability that a first-class image carries the corner patch
            (default 1).
        shortcut: For ``shapes``: in the test split, ``absent`` or ``kept`` (the background
            shortcut, or the corner patch for ``shapes-patch``).
        size: For ``shapes``: image side in pixels.
    """
    generated = ("shapes", "shapes-spurious", "shapes-patch")
    if train_path is not None:
        # Checked before the registered names: ``train --train-data X`` arrives with the CLI's
        # default ``--data digits`` and must not silently train on digits.
        if spec in generated:
            raise ReporterError(
                f"--data {spec} is generated data; it cannot be combined with --train-data. "
                "Pass either a registered name or folders."
            )
        if spec and spec != "digits" and Path(spec) != Path(train_path):
            raise ReporterError(
                f"--data {spec} and --train-data {train_path} both name the training data; "
                "give one of them (--train-data X --test-data Y, or --data FOLDER)."
            )
        if spec == "digits":
            log.info("--train-data given: using the folders, not the default --data digits")
        return _folder(
            Path(train_path),
            seed=seed,
            test_fraction=test_fraction,
            test_path=Path(test_path) if test_path else None,
        )
    if spec in generated and test_path is not None:
        raise ReporterError(
            f"--test-data {test_path} cannot be combined with --data {spec}: {spec} is generated "
            "with its own test split. To audit a folder, pass --data FOLDER (or --test-data "
            "FOLDER alone with --model); to train on one folder and test on another, pass "
            "--train-data X --test-data Y."
        )
    if spec == "digits" and test_path is not None:
        # ``digits`` is the default of --data: a test folder given alone is what is audited
        log.info("--test-data given: auditing that folder, not the default --data digits")
        spec = ""
    if spec == "digits":
        return _digits(seed, test_fraction)
    if spec in ("shapes", "shapes-spurious"):
        p = spurious if spec == "shapes" else (spurious or 0.9)
        return _shapes(seed, p, shortcut, size or 32)
    if spec == "shapes-patch":
        return _shapes(seed, 0.0, shortcut, size or 32, patch=spurious or 1.0)
    if not spec and test_path is not None:
        spec, test_only = str(test_path), True
    if not spec:
        raise ReporterError("No data given: pass --data digits|shapes|FOLDER.")
    path = Path(spec)
    if not path.exists() and "/" not in spec and "\\" not in spec:
        raise ReporterError(
            f"Unknown dataset {spec!r} and no folder of that name exists. "
            f"Use one of {', '.join(registered_datasets())} or a folder path."
        )
    if test_only:
        files, labels, classes, skipped = scan_folder(path)
        test = FileImageDataset(files, labels, classes, root=path)
        channels, sz = _sniff(files)
        return DataBundle(display_name(path), classes, None, test, skipped, channels, sz)
    return _folder(
        path,
        seed=seed,
        test_fraction=test_fraction,
        test_path=Path(test_path) if test_path is not None else None,
    )
