"""reporter: audit a PyTorch image classifier and write a report people can read.

The Python API (importable without click):

- :func:`reporter.load_model` loads a checkpoint, TorchScript file or builds an architecture.
- :func:`reporter.run_audit` runs the whole audit from an :class:`reporter.config.AuditConfig`.
- :class:`reporter.explain.CamEngine` computes class activation maps.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "run_audit"]


def load_model(path_or_name: str, **kwargs: Any):
    """Load a model from a checkpoint path or build one by architecture name.

    See :func:`reporter.models.load_model` for the arguments.
    """
    from reporter.models import load_model as _load

    return _load(path_or_name, **kwargs)


def run_audit(config: Any):
    """Run an audit; see :func:`reporter.pipeline.run_audit`."""
    from reporter.pipeline import run_audit as _run

    return _run(config)
