"""The audit as a sequence of stages, each a function from typed inputs to a typed result.

``prepare`` (model and data) -> :func:`~reporter.audit.stream.stream_pass` ->
:func:`~reporter.audit.explanations.galleries` and
:func:`~reporter.audit.explanations.class_averages` ->
:func:`~reporter.audit.features.feature_visualization` ->
:func:`~reporter.audit.trust.trust_checks` -> :func:`~reporter.audit.findings.key_findings`,
run in order by :func:`run_audit`, which writes the bundle (``audit.json`` + ``artifacts/``)
and has the report rendered from it. No stage imports the report.
"""

from reporter.audit.run import AuditResult, run_audit

__all__ = ["AuditResult", "run_audit"]
