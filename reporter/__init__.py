"""reporter: audit a PyTorch image classifier and write a report people can read.

The Python API (importable without click):

- :func:`reporter.load_model` loads a checkpoint, TorchScript file or builds an architecture.
- :func:`reporter.run_audit` runs the whole audit from an :class:`reporter.config.AuditConfig`.
- :class:`reporter.explain.CamEngine` computes class activation maps.
- :func:`reporter.overlay` draws a map over an image.
"""

from __future__ import annotations

from typing import Any

from reporter._version import __version__

__all__ = ["__version__", "load_model", "overlay", "run_audit"]


def overlay(image: Any, saliency: Any, cmap: str = "viridis", alpha: float = 0.55):
    """A saliency map blended over an image, ``[H, W, 3]`` uint8 (see
    :func:`reporter.display.overlay`)."""
    from reporter.display import overlay as _overlay

    return _overlay(image, saliency, cmap=cmap, alpha=alpha)


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


def run_audit(
    config: Any = None,
    *,
    model: Any = None,
    preprocess: Any = None,
    classes: Any = None,
    argv: list[str] | None = None,
    **options: Any,
):
    """Run an audit and write the report files.

    Args:
        config: A :class:`reporter.config.AuditConfig` (``None`` or ``AuditConfig()`` is the
            digits demo).
        model: An in-memory ``torch.nn.Module`` to audit instead of ``config.model`` (a
            notebook needs no file). Left on its device; its train/eval modes are restored.
        preprocess: With ``model``: a :class:`reporter.data.Preprocess`, a dict of its
            keywords (``input_size``, ``mean``, ``std``, ``resize``, ``crop``,
            ``channel_order``, ``grayscale``) or a torchvision ``Compose`` of Resize /
            CenterCrop / ToTensor / Normalize. Without it, 224 px and the ImageNet mean / std
            are assumed, and the report says so.
        classes: With ``model``: one class name per output (default: the data's names).
        argv: The command line that started the run (recorded in the appendix).
        **options: :class:`~reporter.config.AuditConfig` fields that replace ``config``'s
            (``data="path/to/images"``, ``out="report"`` ...).

    Returns:
        A :class:`reporter.audit.AuditResult`: ``.audit`` (the audit.json context),
        ``.paths`` (written files by format), ``.seconds`` and ``.summary``. In Jupyter it
        displays itself (verdict, numbers, preprocessing).

    Raises:
        reporter.errors.ReporterError: for bad input; nothing in ``config.out`` changes then.
    """
    from dataclasses import fields

    from reporter.audit import run_audit as _run
    from reporter.config import AuditConfig
    from reporter.errors import ReporterError

    unknown = sorted(set(options) - {f.name for f in fields(AuditConfig)})
    if unknown:
        raise ReporterError(f"run_audit() got an unknown option {unknown[0]!r}.")
    if config is None:
        config = AuditConfig(**options)
    elif options:
        config = config.replace(**options)
    loaded = None
    if model is not None:
        from reporter.models.inmemory import from_module

        loaded = from_module(model, preprocess=preprocess, classes=classes)
    elif preprocess is not None or classes is not None:
        raise ReporterError(
            "preprocess= and classes= describe an in-memory model= ; for a checkpoint, state "
            "the preprocessing in the config (input_size, mean, std, resize, crop ...)."
        )
    return _run(config, argv=argv, model=loaded)
