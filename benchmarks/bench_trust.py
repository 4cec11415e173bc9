"""Forward passes per second reached by the trust metrics, against plain forward-only inference.

Deletion/insertion and the randomization test cost many forward passes. This script measures, in
one process and on the same model and batch size:

- ``forward``: ``model(x)`` on a fixed batch under ``torch.no_grad()`` (the ceiling);
- ``deletion/insertion``: images evaluated per second by
  :func:`reporter.metrics.trust.deletion_insertion` (building the perturbed images included);
- ``randomization``: images per second through :func:`randomization_scores` with a CAM map
  function (one forward per image per randomized step, plus copying, re-initialising, ranking
  and SSIM).

Goal: both at least 0.7 x the forward-only rate.

With ``--stage`` it instead runs the digits demo audit (``reporter audit`` with its defaults,
JSON only, the demo model cached) and prints where the trust stage's time goes, per check
(``trust.seconds`` of audit.json), as seconds and as a share of the stage and of the run.

Usage::

    python benchmarks/bench_trust.py [--model resnet18|gapnet] [--size 64] [--batch 64]
    python benchmarks/bench_trust.py --stage [--out /tmp/bench-trust]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from reporter.metrics.trust import deletion_insertion, randomization_scores


def build(name: str, classes: int = 10) -> tuple[nn.Module, Callable[[nn.Module], nn.Module]]:
    """The model and a function giving its feature extractor (input -> last conv features)."""
    if name == "gapnet":
        from reporter.models.gapnet import gapnet

        return gapnet(3, classes), lambda m: m.features
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=classes)
    return model, lambda m: nn.Sequential(*list(m.children())[:-2])


def cam_fn(features_of: Callable[[nn.Module], nn.Module], targets: torch.Tensor):
    """Hook-free CAM for GAP + linear models: ``relu(sum_k W[c, k] A_k)``, upsampled, in [0, 1]."""

    def map_fn(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            a = features_of(model)(images)
            fc = model.fc
            m = torch.relu(torch.einsum("bk,bkhw->bhw", fc.weight[targets], a))
            m = nn.functional.interpolate(m[:, None], size=images.shape[-2:], mode="bilinear")
            m = m[:, 0] - m.flatten(1).min(1).values[:, None, None]
            return m / m.flatten(1).max(1).values.clamp(min=1e-12)[:, None, None]

    return map_fn


def interleaved(fns: list[Callable[[], object]], rounds: int) -> list[float]:
    """Best seconds per call of each function, measured in alternation after one warm-up each.

    Alternating keeps a busy machine's load from favouring one measurement over another.
    """
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def stage(out: str) -> None:
    """The digits demo's trust stage, check by check."""
    import json
    from pathlib import Path

    from reporter import run_audit
    from reporter.config import AuditConfig

    start = time.perf_counter()
    run_audit(AuditConfig(out=out, formats=("json",), quiet=True))
    total = time.perf_counter() - start
    audit = json.loads((Path(out) / "audit.json").read_text())
    seconds = audit["trust"]["seconds"]
    stage_s = audit["timings"]["trust"]
    print(f"digits demo: run {total:.1f} s, trust stage {stage_s:.1f} s ({stage_s / total:.0%})")
    for name, sec in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:28s} {sec:7.2f} s  {sec / stage_s:5.1%} of the stage")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", action="store_true", help="time the digits demo's checks")
    parser.add_argument("--out", default="/tmp/bench-trust", help="bundle folder of --stage")
    parser.add_argument("--model", default="resnet18", choices=["resnet18", "gapnet"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=16, help="images for deletion/insertion")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    args = parser.parse_args()
    if args.stage:
        stage(args.out)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, features_of = build(args.model)
    model = model.to(device).eval()
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def forward() -> None:
        with torch.no_grad():
            for _ in range(4):
                model(x)
        sync()

    images = x[: args.images]
    targets = torch.zeros(args.images, dtype=torch.long, device=device)
    saliency = torch.rand(args.images, args.size, args.size, device=device)

    def deletion() -> None:
        deletion_insertion(
            model, images, saliency, targets, steps=args.steps, batch_size=args.batch
        )
        sync()

    n_di = args.images * 2 * (args.steps + 1)

    rnd_images = x
    map_fn = cam_fn(features_of, torch.zeros(len(rnd_images), dtype=torch.long, device=device))
    reference = map_fn(model, rnd_images)
    n_layers = len(
        randomization_scores(
            model, rnd_images[:2], cam_fn(features_of, targets[:2]), reference=reference[:2]
        )
    )

    def randomization() -> None:
        randomization_scores(model, rnd_images, map_fn, reference=reference)
        sync()

    t_fwd, t_di, t_rnd = interleaved([forward, deletion, randomization], args.rounds)
    fwd_rate = 4 * args.batch / t_fwd
    di_rate = n_di / t_di
    rnd_rate = n_layers * len(rnd_images) / t_rnd

    print(
        f"device={device} model={args.model} size={args.size} batch={args.batch} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"forward-only        {fwd_rate:9.1f} images/s")
    print(
        f"deletion/insertion  {di_rate:9.1f} images/s  ratio {di_rate / fwd_rate:.2f}  "
        f"({args.images} images x 2 x {args.steps + 1} steps)"
    )
    print(
        f"randomization (CAM) {rnd_rate:9.1f} images/s  ratio {rnd_rate / fwd_rate:.2f}  "
        f"({n_layers} cascading steps x {len(rnd_images)} images)"
    )


if __name__ == "__main__":
    main()
