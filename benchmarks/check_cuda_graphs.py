"""Check and time the engine's CUDA graphs on a GPU: the same maps as eager, and how much faster.

Runs ``CamEngine`` on resnet18 (``weights=None``) with and without CUDA graphs on the same
batches (several full batches and a smaller last one, as a test set gives), asserts that maps,
flags, logits and targets agree, then times both, interleaved, with the floor (one forward plus
one ``autograd.grad`` to the earliest layer) as in ``bench_cam.py``. Exits non-zero on a
mismatch. Needs a CUDA device::

    python benchmarks/check_cuda_graphs.py --batch 64 --iters 20
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch
import torchvision

from reporter.explain import CamEngine

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_cam import SIX_METHODS, floor_fn

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Compare graphed and eager engines on CUDA; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--layers", default="layer2,layer3,layer4")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    device = torch.device("cuda")
    layers = args.layers.split(",")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).to(device).eval()
    batches = [torch.randn(args.batch, 3, args.size, args.size, device=device) for _ in range(3)]
    batches.append(batches[0][: max(1, args.batch // 5)].flip(0).contiguous())
    methods = [*SIX_METHODS, "cam"]
    layer4_only = ["layer4"]
    status = 0
    for names in (layers, layer4_only):
        use = methods if names == layer4_only else SIX_METHODS
        with (
            CamEngine(model, layers=names, methods=use, device=device) as graphed,
            CamEngine(model, layers=names, methods=use, device=device, cuda_graphs=False) as eager,
        ):
            for x in batches + batches:
                g, e = graphed(x), eager(x)
                for m in use:
                    for layer in e.layers:
                        a, b = g.maps[m][layer], e.maps[m][layer]
                        scale = max(1.0, float(b.abs().max()))
                        if not torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale):
                            print(f"MISMATCH {m} {layer}: max diff {(a - b).abs().max():.3g}")
                            status = 1
                        if not torch.equal(g.flags[m][layer], e.flags[m][layer]):
                            print(f"MISMATCH flags {m} {layer}")
                            status = 1
                if not torch.equal(g.targets, e.targets):
                    print("MISMATCH targets")
                    status = 1
            stats = graphed._graphed
            print(
                f"layers {names}: {getattr(stats, 'captures', 0)} recordings, "
                f"{getattr(stats, 'replays', 0)} replays, enabled={getattr(stats, 'enabled', None)}"
            )
    print("maps agree" if status == 0 else "MAPS DISAGREE")

    x = batches[0]
    floor = floor_fn(model, layers[0], x)
    with (
        CamEngine(model, layers=layers, methods=SIX_METHODS, device=device) as graphed,
        CamEngine(
            model, layers=layers, methods=SIX_METHODS, device=device, cuda_graphs=False
        ) as eager,
    ):
        runs = {"floor": floor, "graphs": lambda: graphed(x), "eager": lambda: eager(x)}
        for fn in runs.values():
            fn()
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.iters):
            for name, fn in runs.items():
                torch.cuda.synchronize(device)
                start = time.perf_counter()
                fn()
                torch.cuda.synchronize(device)
                times[name].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    n = x.shape[0]
    print(f"{torch.cuda.get_device_name(device)}, resnet18 {args.size}px, batch {n}, {layers}")
    for name, t in best.items():
        print(f"{name:<8}{n / t:10.0f} images/s  ({t * 1e3:.2f} ms/batch)")
    print(f"ratio engine with graphs / floor = {best['floor'] / best['graphs']:.2f}  (goal >= 0.7)")
    print(f"ratio engine eager / floor       = {best['floor'] / best['eager']:.2f}")
    return status


if __name__ == "__main__":
    sys.exit(main())
