"""JPEG files decoded on the GPU, checked against the CPU decode.

For a folder of JPEGs audited on CUDA, the loader workers only read the files' bytes and
``torchvision.io.decode_jpeg(..., device="cuda")`` (nvJPEG) decodes each batch on the GPU,
where the resize and normalisation of :class:`~reporter.data.transforms.Preprocess` then run
too. Files the GPU path would read differently are decoded on the CPU as before, in the
workers: anything that is not a baseline 8-bit grey or RGB JPEG (CMYK, other formats behind a
``.jpg`` name) and images with an EXIF orientation other than upright.

nvJPEG and libjpeg may differ by a grey level here and there, so the first batch of the audit
is decoded both ways: when the mean absolute difference of any image exceeds
:data:`MAX_MEAN_DIFFERENCE` the run warns and decodes on the CPU. Every process of a
distributed run checks the same first batch, so all take the same decision.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from reporter.data.datasets import Batch, FileImageDataset, collate
from reporter.data.transforms import Preprocess, not_a_regular_file

__all__ = [
    "JPEG_SUFFIXES",
    "MAX_MEAN_DIFFERENCE",
    "GpuJpegDecoder",
    "JpegBatch",
    "JpegFiles",
    "collate_jpeg",
    "gpu_decode_reason",
    "torchvision_decodes_on_gpu",
]

log = logging.getLogger(__name__)

JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
MAX_MEAN_DIFFERENCE = 1.0 / 255
"""Largest mean absolute difference (pixels in [0, 1]) of an image between the two decodes."""
_ORIENTATION = 0x0112


def torchvision_decodes_on_gpu() -> bool:
    """Whether this torchvision decodes batches of JPEGs on CUDA (0.19 and later) and CUDA
    is available."""
    import torchvision

    try:
        major, minor = (int(p) for p in torchvision.__version__.split("+")[0].split(".")[:2])
    except ValueError:  # pragma: no cover - a development build
        return False
    return (major, minor) >= (0, 19) and torch.cuda.is_available()


def _files(dataset: Dataset) -> FileImageDataset | None:
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return base if isinstance(base, FileImageDataset) else None


def gpu_decode_reason(
    dataset: Dataset, device: torch.device | str, *, supported: bool | None = None
) -> str | None:
    """Why the images of ``dataset`` are not decoded on the GPU; ``None`` when they are.

    Args:
        dataset: The test images.
        device: Where the model runs.
        supported: Whether torchvision can (default: :func:`torchvision_decodes_on_gpu`).
    """
    if torch.device(device).type != "cuda":
        return "the model does not run on a CUDA GPU"
    if os.environ.get("REPORTER_GPU_DECODE", "").strip() == "0":
        return "REPORTER_GPU_DECODE=0"
    files = _files(dataset)
    if files is None:
        return "the images are held in memory"
    if not files.files or any(f.suffix.lower() not in JPEG_SUFFIXES for f in files.files):
        return "not every image file is a JPEG"
    if not (torchvision_decodes_on_gpu() if supported is None else supported):
        return "this torchvision cannot decode JPEG on the GPU (0.19 or later is needed)"
    return None


class JpegFiles(Dataset):
    """Items of a :class:`FileImageDataset` as raw JPEG bytes where the GPU can decode them.

    ``__getitem__`` returns ``("jpeg", uint8 bytes, label, index, None)`` or, for a file the
    GPU path would read differently or not at all, the CPU item
    ``("pixels", image or None, label, index, error)``.
    """

    def __init__(self, dataset: FileImageDataset) -> None:
        self.base = dataset

    def __len__(self) -> int:
        return len(self.base)

    def gpu_readable(self, index: int) -> bool:
        """A baseline 8-bit grey or RGB JPEG, upright: what nvJPEG decodes like the CPU."""
        path = self.base.files[index]
        if not_a_regular_file(path) is not None:
            return False
        try:
            with Image.open(path) as img:
                if img.format != "JPEG" or img.mode not in ("L", "RGB"):
                    return False
                return img.getexif().get(_ORIENTATION, 1) == 1
        except Exception:  # noqa: BLE001 - the CPU path reports why the file is unreadable
            return False

    def __getitem__(self, index: int) -> tuple[str, Any, int, int, str | None]:
        if self.gpu_readable(index):
            try:
                with open(self.base.files[index], "rb") as f:
                    data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
                return "jpeg", data, self.base.label(index), index, None
            except OSError:
                pass  # the CPU path says what is wrong with the file
        x, label, i, err = self.base[index]
        return "pixels", x, label, i, err


@dataclass
class JpegBatch:
    """A batch of :class:`JpegFiles` items: JPEG bytes and already decoded images."""

    kinds: list[str]
    payloads: list[Any]
    labels: list[int]
    indices: list[int]
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.kinds)


def collate_jpeg(items: list) -> JpegBatch:
    """Keep the usable items (bytes or pixels) in order; unreadable ones as ``skipped``."""
    good = [it for it in items if it[1] is not None]
    return JpegBatch(
        kinds=[it[0] for it in good],
        payloads=[it[1] for it in good],
        labels=[int(it[2]) for it in good],
        indices=[int(it[3]) for it in good],
        skipped=[(int(it[3]), str(it[4])) for it in items if it[1] is None],
    )


class GpuJpegDecoder:
    """Decodes :class:`JpegBatch` es on ``device`` and preprocesses them there.

    Args:
        dataset: The file dataset (its labels and CPU decode for the check and fallbacks).
        preprocess: The model's :class:`Preprocess`.
        device: Where to decode (``cuda``; ``cpu`` runs the same code with the CPU decoder).
    """

    def __init__(
        self, dataset: FileImageDataset, preprocess: Preprocess, device: torch.device
    ) -> None:
        self.dataset = dataset
        self.preprocess = preprocess
        self.device = torch.device(device)
        self.enabled = True
        self.difference: float | None = None

    def _decode(self, payloads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_jpeg

        with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec; it still works
            warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
            out = decode_jpeg(list(payloads), mode=ImageReadMode.UNCHANGED, device=self.device)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def __call__(self, batch: JpegBatch) -> Batch:
        """The batch as model inputs on ``device`` (a :class:`Batch`, in the items' order)."""
        images: list[torch.Tensor | None] = [None] * len(batch)
        jpeg = [i for i, k in enumerate(batch.kinds) if k == "jpeg"]
        if jpeg and self.enabled:
            try:
                decoded = self._decode([batch.payloads[i] for i in jpeg])
            except RuntimeError as exc:  # a file nvJPEG refuses: this batch on the CPU
                log.info("GPU JPEG decode failed (%s); this batch is decoded on the CPU", exc)
                decoded = []
            for i, pixels in zip(jpeg, decoded, strict=False):
                unit = pixels.to(self.device).float() / 255
                images[i] = self.preprocess(unit)
        skipped = list(batch.skipped)
        keep: list[int] = []
        for i, kind in enumerate(batch.kinds):
            if images[i] is None:
                x = batch.payloads[i] if kind == "pixels" else None
                if x is None:
                    x, _, _, err = self.dataset[batch.indices[i]]
                    if x is None:
                        skipped.append((batch.indices[i], str(err)))
                        continue
                images[i] = x.to(self.device)
            keep.append(i)
        stacked = (
            torch.stack([images[i] for i in keep])  # type: ignore[misc]
            if keep
            else torch.empty(0, device=self.device)
        )
        return Batch(
            images=stacked,
            labels=torch.tensor([batch.labels[i] for i in keep], dtype=torch.long),
            indices=torch.tensor([batch.indices[i] for i in keep], dtype=torch.long),
            skipped=sorted(skipped),
        )

    def calibrate(self, batch: JpegBatch) -> None:
        """Compare the batch decoded here with the CPU decode; disable this path if they
        differ by more than :data:`MAX_MEAN_DIFFERENCE` on any image."""
        if not self.enabled or self.difference is not None:
            return
        here = self(batch)
        if len(here) == 0:
            return
        cpu = collate([self.dataset[int(i)] for i in here.indices])
        unit_here = self.preprocess.denormalize(here.images.float().cpu())
        unit_cpu = self.preprocess.denormalize(cpu.images.float())
        self.difference = float((unit_here - unit_cpu).abs().flatten(1).mean(1).max())
        if self.difference > MAX_MEAN_DIFFERENCE:
            log.warning(
                "JPEG decoded on the GPU differs from the CPU decode (mean absolute difference "
                "%.4f > %.4f on an image of the first batch); decoding on the CPU.",
                self.difference,
                MAX_MEAN_DIFFERENCE,
            )
            self.enabled = False

    def summary(self) -> dict[str, Any]:
        """For ``audit.json``: whether JPEGs were decoded on the GPU and the first batch's
        largest mean difference from the CPU decode."""
        return {
            "jpeg_on_gpu": self.enabled,
            "first_batch_max_mean_difference": self.difference,
            "max_mean_difference": MAX_MEAN_DIFFERENCE,
        }
