"""Models: build by name, load and save checkpoints."""

from reporter.models.build import available_architectures, build_model, default_input_size
from reporter.models.checkpoint import (
    LoadedModel,
    check_state_dict,
    load_model,
    save_checkpoint,
    weights_sha256,
)
from reporter.models.gapnet import GapNet, gapnet
from reporter.models.meta import ModelMeta

__all__ = [
    "GapNet",
    "LoadedModel",
    "ModelMeta",
    "available_architectures",
    "build_model",
    "check_state_dict",
    "default_input_size",
    "gapnet",
    "load_model",
    "save_checkpoint",
    "weights_sha256",
]
