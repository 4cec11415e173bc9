"""Shared fixtures: seeded, offline, tiny. Nothing here downloads anything."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Never touch the user's cache from tests.
os.environ.setdefault("REPORTER_CACHE", tempfile.mkdtemp(prefix="reporter-test-cache-"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def make_image_folder(root: Path, classes: dict[str, int], size: int = 20, seed: int = 0) -> Path:
    """Write ``count`` small PNG images per class; class ``i`` is brighter in a different corner."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for ci, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(count):
            arr = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            q = size // 2
            r, c = divmod(ci % 4, 2)
            arr[r * q : (r + 1) * q, c * q : (c + 1) * q] += 150
            Image.fromarray(arr).save(folder / f"img_{j:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes of 8 small RGB PNGs each."""
    return make_image_folder(tmp_path / "data", {"cat": 8, "dog": 8, "frog": 8})


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gapnet trained for one epoch on digits at 16x16 (fast; accuracy is not the point)."""
    from reporter.data import load_dataset
    from reporter.models import save_checkpoint
    from reporter.train import TrainConfig, train

    bundle = load_dataset("digits")
    result = train(bundle, TrainConfig(epochs=1, input_size=(16, 16), lr=5e-3), progress=False)
    path = tmp_path_factory.mktemp("ckpt") / "gapnet-digits.pt"
    save_checkpoint(path, result.loaded.model, result.loaded.meta)
    return path


def folder_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (recursively), by relative path, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }
