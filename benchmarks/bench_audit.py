"""Time each stage of `reporter audit` and its peak memory, for the demo and for 2,000 images.

Runs (each in its own process, so peak RSS is per run):

1. the default demo, exactly what `make report` runs (digits, gapnet trained or reused);
2. folders of 200, 2,000 and 5,000 test images (digits images with seeded noise, written as
   PNGs) audited with the same trained model: peak memory should not grow with the image count
   beyond the per-image outputs (goal: 2,000 and 5,000 within 10 % of 200), and the bundle
   should grow only by its per-image records.

Prints stage times, the share of the render stage (goal < 20 %), the memory ratio and the
bundle size (per 1,000 images).

    python benchmarks/bench_audit.py [--skip-demo] [--out /tmp/bench-audit]

``--resnet18 N`` instead times the default audit (every default setting) of a torchvision
resnet18 at 224 px on N images (a state_dict with seeded weights; 10 class folders of seeded
224 px PNGs) and prints the split per stage, each stage's share and the ratio of the wall time
to the 5-minute budget (goal <= 1.0):

    python benchmarks/bench_audit.py --resnet18 500
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` digit images (32x32 PNG) in class folders 0..9, with seeded pixel noise."""
    from reporter.data import load_dataset

    if root.exists() and sum(1 for _ in root.rglob("*.png")) == n:
        return root
    bundle = load_dataset("digits")
    images = bundle.test.images.numpy()[:, 0]
    labels = bundle.test.labels
    rng = np.random.default_rng(seed)
    for c in range(10):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        j = i % len(labels)
        noisy = np.clip(images[j] + rng.normal(0, 0.05, images[j].shape), 0, 1)
        Image.fromarray((noisy * 255).astype(np.uint8)).save(root / str(labels[j]) / f"{i:05d}.png")
    return root


def child(args: list[str]) -> None:
    """In a fresh process: run the CLI, then print this process's own peak RSS (KiB)."""
    from reporter.cli import cli

    try:
        cli.main(["audit", "--quiet", *args], prog_name="reporter")
    except SystemExit as exc:
        if exc.code:
            raise
    print(f"PEAK_RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


def run(args: list[str]) -> dict:
    """Run `reporter audit` in a child process; return its audit.json timings and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr or proc.stdout)
    peak_kb = int(proc.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    out = Path(args[args.index("--out") + 1])
    audit = json.loads((out / "audit.json").read_text())
    artifacts = {Path(e["file"]).stem: e["bytes"] for e in audit.get("artifacts", [])}
    return {
        "wall": wall,
        "timings": {**audit["timings"], "render": audit.get("rendering", {}).get("seconds", 0.0)},
        "bundle_bytes": sum(artifacts.values()) + (out / "audit.json").stat().st_size,
        "records_bytes": artifacts.get("records", 0),
        "peak_mb": peak_kb / 1024,
        "images": audit["dataset"]["audited_images"],
    }


def resnet18_case(base: Path, n: int) -> None:
    """The default audit of a resnet18 at 224 px on ``n`` images, split per stage."""
    import torch
    import torchvision

    folder = base / f"r18-folder-{n}"
    if not (folder.exists() and sum(1 for _ in folder.rglob("*.png")) == n):
        rng = np.random.default_rng(0)
        for i in range(n):
            c = i % 10
            (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
            pixels[c * 20 : c * 20 + 40, :, :] //= 2  # a class-dependent band
            Image.fromarray(pixels).save(folder / f"class{c}" / f"{i:05d}.png")
    weights = base / "resnet18-224.pth"
    if not weights.exists():
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), weights)
    r = run(
        [
            "--model",
            str(weights),
            "--arch",
            "resnet18",
            "--input-size",
            "224",
            "--data",
            str(folder),
            "--out",
            str(base / f"r18-out-{n}"),
        ]
    )
    show(f"resnet18 at 224 px, {n} images, default settings", r)
    total = r["wall"]
    for stage, seconds in sorted(r["timings"].items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<10} {seconds:7.1f} s  {seconds / total:6.1%}")
    print(f"wall / 300 s budget: {total / 300:.2f} (goal <= 1.0)")


def show(name: str, r: dict) -> None:
    t = r["timings"]
    total = r["wall"]
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in t.items())
    render = t.get("render", 0.0)
    print(
        f"{name}: {r['images']} images, wall {total:.1f} s ({stages}); "
        f"render {render / total:.0%} of wall; peak RSS {r['peak_mb']:.0f} MB; "
        f"bundle {r['bundle_bytes'] / 1e6:.2f} MB (records {r['records_bytes'] / 1e3:.0f} kB, "
        f"{r['records_bytes'] / r['images'] * 1000 / 1e6:.2f} MB per 1,000 images)"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bench-audit")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument(
        "--sizes", default="200,2000,5000", help="folder sizes; memory is compared with the first"
    )
    parser.add_argument(
        "--resnet18", type=int, default=None, metavar="N", help="time a resnet18 at 224 px"
    )
    args = parser.parse_args()
    base = Path(args.out)
    base.mkdir(parents=True, exist_ok=True)
    if args.resnet18:
        resnet18_case(base, args.resnet18)
        return
    if not args.skip_demo:
        show("demo (make report)", run(["--out", str(base / "demo")]))
    ckpt = base / "digits.pt"
    if not ckpt.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "reporter",
                "train",
                "--data",
                "digits",
                "--out",
                str(ckpt),
                "--quiet",
            ],
            check=True,
        )
    results = {}
    sizes = [int(v) for v in args.sizes.split(",")]
    for n in sizes:
        folder = make_folder(base / f"folder-{n}", n)
        results[n] = run(
            [
                "--model",
                str(ckpt),
                "--data",
                str(folder),
                "--out",
                str(base / f"out-{n}"),
                "--formats",
                "json",
            ]
        )
        show(f"folder of {n}", results[n])
    for n in sizes[1:]:
        ratio = results[n]["peak_mb"] / results[sizes[0]]["peak_mb"]
        print(f"peak memory {n:,} / {sizes[0]:,} images: {ratio:.3f} (goal <= 1.10)")
        grow = (results[n]["bundle_bytes"] - results[sizes[0]]["bundle_bytes"]) / (n - sizes[0])
        print(
            f"bundle growth {sizes[0]:,} -> {n:,} images: {grow * 1000 / 1e6:.2f} MB per 1,000 "
            "images (per-image records only; everything else is bounded)"
        )


if __name__ == "__main__":
    main()
