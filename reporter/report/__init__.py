"""The report: context (audit.json), figures, findings, HTML and PDF rendering, model card."""
