"""Data: the dataset registry, robust datasets and preprocessing."""

from reporter.data.datasets import (
    Batch,
    FileImageDataset,
    ImageDataset,
    TensorImageDataset,
    collate,
    make_loader,
)
from reporter.data.registry import (
    IMAGE_EXTENSIONS,
    DataBundle,
    load_dataset,
    registered_datasets,
    scan_folder,
    stratified_split,
)
from reporter.data.transforms import ImageReadError, Preprocess, pil_to_tensor, read_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "Batch",
    "DataBundle",
    "FileImageDataset",
    "ImageDataset",
    "ImageReadError",
    "Preprocess",
    "TensorImageDataset",
    "collate",
    "load_dataset",
    "make_loader",
    "pil_to_tensor",
    "read_image",
    "registered_datasets",
    "scan_folder",
    "stratified_split",
]
