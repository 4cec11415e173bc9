"""reporter: audit a PyTorch image classifier and write a report people can read.

The Python API (importable without click):

- :func:`reporter.load_model` loads a checkpoint, TorchScript file or builds an architecture.
- :func:`reporter.run_audit` runs the whole audit from an :class:`reporter.config.AuditConfig`.
- :class:`reporter.explain.CamEngine` computes class activation maps.
"""

from __future__ import annotations

from typing import Any

from reporter._version import __version__

__all__ = ["__version__", "load_model", "run_audit"]


def load_model(path_or_name: str, **kwargs: Any):
    """Load a model from a checkpoint path or build one by architecture name.

    Args:
        path_or_name: A reporter checkpoint, a state_dict file (with ``arch=``), a TorchScript
            file, or an architecture name (with ``num_classes=``).
        **kwargs: Passed to :func:`reporter.models.load_model` (``arch``, ``num_classes``,
            ``class_names``, ``channels``, ``input_size``, ``trust_checkpoint``, ``device`` ...).

    Returns:
        A :class:`reporter.models.LoadedModel` with ``.model`` (in eval mode) and ``.meta``.

    Raises:
        reporter.errors.ReporterError: for a missing, unreadable or untrusted file.
    """
    from reporter.models import load_model as _load

    return _load(path_or_name, **kwargs)


def run_audit(config: Any):
    """Run an audit and write the report files.

    Args:
        config: A :class:`reporter.config.AuditConfig` (``AuditConfig()`` is the digits demo).

    Returns:
        A :class:`reporter.audit.AuditResult`: ``.audit`` (the audit.json context),
        ``.paths`` (written files by format), ``.seconds`` and ``.summary``.

    Raises:
        reporter.errors.ReporterError: for bad input; nothing in ``config.out`` changes then.
    """
    from reporter.audit import run_audit as _run

    return _run(config)
