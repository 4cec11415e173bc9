"""Regenerate example_reports/: the digits demo and the clean / shortcut shapes audits.

Run with ``make examples``. Each report is the output of ``reporter audit`` with the settings
below; the trained models are cached, so re-running after a template change only re-renders.
"""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner

from reporter.cli import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {
    "digits": [],
    "shapes-clean": [
        "--data",
        "shapes",
        "--epochs",
        "6",
        "--methods",
        "gradcam,gradcam++,eigencam",
    ],
    "shapes-shortcut": [
        "--data",
        "shapes-spurious",
        "--spurious",
        "0.95",
        "--epochs",
        "6",
        "--methods",
        "gradcam,gradcam++,eigencam",
    ],
}


def main(names: list[str]) -> int:
    for name in names or list(EXAMPLES):
        out = ROOT / "example_reports" / name
        args = [
            "audit",
            *EXAMPLES[name],
            "--out",
            str(out),
            "--quiet",
            "--format",
            "html,pdf,json,modelcard",
        ]
        print("reporter", " ".join(args[:-4]), flush=True)
        result = CliRunner().invoke(cli, args)
        print(result.output, flush=True)
        if result.exit_code != 0:
            return result.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
