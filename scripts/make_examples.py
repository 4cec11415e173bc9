"""Regenerate example_reports/: the digits demo, the clean / shortcut shapes audits, and the
comparison of the two shapes audits (example_reports/compare/).

Run with ``make examples``. Each report is the output of ``reporter audit`` with the settings
below; the trained models are cached, so re-running after a template change only re-renders.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from click.testing import CliRunner

from reporter.cli import cli

ROOT = Path(__file__).resolve().parent.parent
# features.relu3 comes first for the shapes: its 15-pixel receptive field can localize the small
# shapes, while relu4's covers the whole 32x32 image. The trust checks use the first layer.
SHAPES = [
    "--methods",
    "gradcam,layercam,eigencam",
    "--layers",
    "features.relu3,features.relu4",
    "--epochs",
    "10",
]
EXAMPLES = {
    "digits": [],
    "shapes-clean": ["--data", "shapes", *SHAPES],
    "shapes-shortcut": ["--data", "shapes-spurious", "--spurious", "0.95", *SHAPES],
}

# `reporter compare OLD NEW --fail-on GATES`: the shortcut model's regression, with the gates of
# docs/scheduling.rst (they fail: the comparison exits 1, which is the example's point)
COMPARISONS = {
    "compare": (
        "shapes-clean",
        "shapes-shortcut",
        "accuracy<-0.01, ece>+0.02, sanity:fail, shortcut:new, drift>0.3",
    ),
}


def compare(name: str) -> int:
    old, new, gates = COMPARISONS[name]
    base = Path("example_reports")
    args = ["compare", str(base / old), str(base / new), "--out", str(base / name)]
    print("reporter", " ".join(args), "--fail-on", repr(gates), flush=True)
    result = CliRunner().invoke(cli, [*args, "--fail-on", gates])
    print(result.output, flush=True)
    return 0 if result.exit_code in (0, 1) else result.exit_code


def main(names: list[str]) -> int:
    os.chdir(ROOT)
    for name in names or [*EXAMPLES, *COMPARISONS]:
        if name in COMPARISONS:
            status = compare(name)
            if status:
                return status
            continue
        out = Path("example_reports") / name  # relative: the report records its command line
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
