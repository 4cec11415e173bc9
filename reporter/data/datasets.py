"""Datasets that never stop a run on a bad image.

Every dataset here returns ``(image, label, index, error)`` from ``__getitem__``: ``image`` is the
preprocessed tensor, or ``None`` with ``error`` the reason when the file cannot be used.
:func:`collate` turns a list of those into a :class:`Batch` that carries the skipped items, so
bad files are recorded (path and reason) even when loading runs in worker processes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from reporter.data.transforms import ImageReadError, Preprocess, pil_to_tensor, read_image

__all__ = [
    "Batch",
    "FileImageDataset",
    "ImageDataset",
    "TensorImageDataset",
    "collate",
    "default_workers",
    "display_name",
    "loader_workers",
    "make_loader",
]


def display_name(value: str | os.PathLike[str] | bytes) -> str:
    """A file or folder name as text that strict UTF-8 (``audit.json``, HTML) can hold.

    Names are bytes on Linux; Python keeps bytes that are not UTF-8 as lone surrogates
    (``surrogateescape``), which no UTF-8 writer accepts. They are shown as backslash escapes
    (``caf\\xe9.png``); valid names, unicode included, come back unchanged. Use it for every name
    that reaches the report; open and hash files by their real path (:func:`os.fsencode`).
    """
    text = os.fsdecode(value) if isinstance(value, bytes) else os.fspath(value)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


@dataclass
class Batch:
    """A batch of usable images and the items that had to be skipped."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (DataLoader's ``pin_memory=True`` calls this)."""
        images = self.images.pin_memory() if self.images.numel() else self.images
        return Batch(images, self.labels.pin_memory(), self.indices.pin_memory(), self.skipped)


class ImageDataset(Dataset):
    """Base class: labelled images with names for the report and an optional preprocess."""

    class_names: list[str]
    transform: Callable | None = None

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def label(self, index: int) -> int:
        """The label of item ``index`` without decoding the image."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """A human-readable identifier of item ``index`` (file path or ``name#index``)."""
        raise NotImplementedError

    def load_unit(self, index: int) -> torch.Tensor:
        """The image ``index`` resized to the model's input, in [0, 1], not normalised.

        Without a transform the image comes back at its own size, as a ``[C, H, W]`` tensor.
        """
        raise NotImplementedError

    def _to_unit(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """``image`` through the transform's :meth:`~Preprocess.to_unit` (the one resize)."""
        if self.transform is None:
            return pil_to_tensor(image) if isinstance(image, Image.Image) else image
        if not isinstance(self.transform, Preprocess):
            raise TypeError(
                f"load_unit needs a Preprocess transform (it has to_unit); this dataset has "
                f"{type(self.transform).__name__}."
            )
        return self.transform.to_unit(image)

    @property
    def labels(self) -> np.ndarray:
        """All labels as an int64 array."""
        return np.array([self.label(i) for i in range(len(self))], dtype=np.int64)

    def fingerprint(self) -> str:
        """A short stable hash identifying the data (for checkpoint caching and the report)."""
        raise NotImplementedError


class TensorImageDataset(ImageDataset):
    """Images held in memory as a float tensor ``[N, C, H, W]`` in [0, 1]."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: Sequence[int] | torch.Tensor,
        class_names: list[str],
        *,
        name: str,
        transform: Callable | None = None,
        masks: torch.Tensor | None = None,
    ) -> None:
        self.images = images
        self._labels = torch.as_tensor(labels, dtype=torch.long)
        self.class_names = class_names
        self.name = name
        self.transform = transform
        self.masks = masks

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def label(self, index: int) -> int:
        return int(self._labels[index])

    @property
    def labels(self) -> np.ndarray:
        return self._labels.numpy().astype(np.int64)

    def describe(self, index: int) -> str:
        return f"{self.name}#{index}"

    def load_unit(self, index: int) -> torch.Tensor:
        return self._to_unit(self.images[index])

    def __getitem__(self, index: int):
        x = self.images[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.label(index), index, None

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.images.numpy().tobytes())
        digest.update(self._labels.numpy().tobytes())
        return digest.hexdigest()[:16]


class FileImageDataset(ImageDataset):
    """Images read from files on demand; unreadable files come back as errors, not exceptions."""

    def __init__(
        self,
        files: Sequence[Path],
        labels: Sequence[int],
        class_names: list[str],
        *,
        root: Path,
        transform: Callable | None = None,
    ) -> None:
        self.files = [Path(f) for f in files]
        self._labels = list(labels)
        self.class_names = class_names
        self.root = Path(root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def label(self, index: int) -> int:
        return self._labels[index]

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self._labels, dtype=np.int64)

    def describe(self, index: int) -> str:
        return display_name(self.files[index])

    def relative(self, index: int) -> str:
        """The path of item ``index`` relative to the data root, for display."""
        return display_name(self.relative_path(self.files[index]))

    def load_unit(self, index: int) -> torch.Tensor:
        return self._to_unit(read_image(str(self.files[index])))

    def __getitem__(self, index: int):
        try:
            img = read_image(str(self.files[index]))
            x = self.transform(img) if self.transform is not None else img
        except ImageReadError as exc:
            return None, self.label(index), index, str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad image must never stop the run
            return None, self.label(index), index, f"{type(exc).__name__}: {exc}"
        return x, self.label(index), index, None

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path, label in zip(self.files, self._labels, strict=True):
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            # names are bytes on Linux: hash those, not a text form that may not encode
            digest.update(os.fsencode(self.relative_path(path)))
            digest.update(f"\0{label}\0{size}\n".encode())
        return digest.hexdigest()[:16]

    def relative_path(self, path: Path) -> str:
        """``path`` relative to the data root (the real name, for opening; not for display)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()


def collate(items: list) -> Batch:
    """Stack usable items into a :class:`Batch`; keep ``(index, reason)`` for the others."""
    good = [it for it in items if it[0] is not None]
    skipped = [(int(it[2]), str(it[3])) for it in items if it[0] is None]
    images = torch.stack([it[0] for it in good]) if good else torch.empty(0)
    labels = torch.tensor([int(it[1]) for it in good], dtype=torch.long)
    indices = torch.tensor([int(it[2]) for it in good], dtype=torch.long)
    return Batch(images=images, labels=labels, indices=indices, skipped=skipped)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int = 64,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    indices: Sequence[int] | None = None,
    pin_memory: bool = False,
    collate_fn: Callable[[list], Any] = collate,
) -> DataLoader:
    """A DataLoader yielding :class:`Batch` objects (seeded when shuffling).

    ``pin_memory`` (for a CUDA model) puts batches in page-locked memory so that copies to
    the GPU can overlap the next batch's loading.
    """
    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, list(indices))
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=False,
        pin_memory=pin_memory,
    )


MAX_AUTO_WORKERS = 8
"""Most loader processes ``--workers`` chooses on its own."""


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_workers(dataset: Dataset, *, cpus: int | None = None, processes: int = 1) -> int:
    """Loader processes for ``--workers`` left unset.

    Images held in memory (digits, shapes) need none: a worker would only copy tensors. Image
    files get one worker per CPU core this process may use, less one for the model, shared
    among the ``processes`` of the machine (``LOCAL_WORLD_SIZE`` under torchrun), at most
    :data:`MAX_AUTO_WORKERS`.
    """
    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    if isinstance(base, TensorImageDataset):
        return 0
    cpus = available_cpus() if cpus is None else cpus
    share = cpus // max(1, processes)
    return max(0, min(MAX_AUTO_WORKERS, share - 1))


def loader_workers(workers: int | None, dataset: Dataset) -> int:
    """``--workers`` as given, or :func:`default_workers` for this machine's processes."""
    if workers is not None:
        return workers
    try:
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        processes = 1
    return default_workers(dataset, processes=processes)
