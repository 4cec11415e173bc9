"""End to end on shapes: the shortcut flag fires on a background-reading gapnet, not on an
object-reading model.

The spurious model is really trained (gapnet, 320 images of 16 x 16 whose background colour
always matches the class, four epochs: a few seconds on 2 cores; it learned the crutch for every
seed tried, 0-5). A trained *clean* gapnet is not used: learning shape geometry takes minutes, too
slow for a test, and an under-trained one is no reliable "clean" reference (in a trial, one class
of a 47 %-accurate model was recognised by the absence of the other shapes, i.e. from the
background). The clean side is a tiny GAP + linear net with hand-set weights that responds to the
bright shape colours only: a model known to look at the object. Maps are class activation maps
(Zhou et al. 2016), computed without hooks since both models end in ``features`` -> global
average pooling -> ``fc``.
"""

from __future__ import annotations

import torch
from torch import nn

from reporter.data.shapes import generate_shapes
from reporter.metrics.trust import energy_pointing_game, pointing_game, shortcut_scores
from reporter.models.gapnet import GapNet, gapnet


def class_activation_maps(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """CAM of the predicted class for a ``features`` + GAP + ``fc`` model, ``[B, H, W]``."""
    with torch.no_grad():
        features = model.features(images)
        pred = model.fc(features.mean((2, 3))).argmax(1)
        return torch.relu(torch.einsum("bk,bkhw->bhw", model.fc.weight[pred], features))


def train_spurious(seed: int = 0) -> GapNet:
    torch.manual_seed(seed)
    data = generate_shapes(320, size=16, seed=seed, spurious=1.0)
    model = gapnet(3, 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = data.float_images(), data.labels
    for _ in range(4):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 16):
            idx = perm[i : i + 16]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class ObjectReader(nn.Module):
    """A GAP + linear net whose only feature is 'brightness above 1.5' (the shapes are bright; the
    muted backgrounds never exceed a channel sum of 1.25): a model known to look at the object."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 1, 1), nn.ReLU())
        self.fc = nn.Linear(1, 4)
        with torch.no_grad():
            self.features[0].weight.fill_(1.0)
            self.features[0].bias.fill_(-1.5)
            self.fc.weight.copy_(torch.tensor([[1.0], [0.9], [0.8], [0.7]]))
            self.fc.bias.zero_()


def test_shortcut_flag_fires_on_spurious_model_only():
    test = generate_shapes(120, size=16, seed=11, split="test", shortcut="absent")
    images = test.float_images()

    spurious = train_spurious()
    with torch.no_grad():
        pred = spurious(images).argmax(1)
    # It learned the crutch: it predicts the background colour's class, not the shape.
    assert float((pred == test.background_index).float().mean()) > 0.8
    maps = class_activation_maps(spurious, images)
    flagged = shortcut_scores(maps, test.labels, test.class_names, test.masks)
    assert all(s["flagged"] for s in flagged.values()), flagged
    assert float(energy_pointing_game(maps, test.masks).mean()) < 0.3

    clean_maps = class_activation_maps(ObjectReader().eval(), images)
    clean = shortcut_scores(clean_maps, test.labels, test.class_names, test.masks)
    assert not any(s["flagged"] for s in clean.values()), clean
    assert float(energy_pointing_game(clean_maps, test.masks).mean()) > 0.99
    assert pointing_game(clean_maps, test.masks).all()
