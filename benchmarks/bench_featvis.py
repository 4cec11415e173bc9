"""Feature visualization speed: K channels rendered as one batch vs one at a time.

16 channels of a resnet18 layer (torchvision, ``weights=None``, BatchNorm calibrated with a few
train-mode passes) at 128x128 for 128 steps, batched (one batch of 16) and one channel per call,
in the same process. Prints both wall times and the ratio.

``--resnet18`` instead times what the audit's feature-visualization stage runs the model for,
per render size: the size check (:func:`reporter.featvis.fit_size`), the render of K channels
and the receptive-field probe, for a torchvision resnet18 (``weights=None``, seeded, 10
classes, the default audit's layer: the CAM layer ``auto`` picks) at a 224 px input, rendered
at each of ``--sizes`` (``--rounds`` interleaved rounds). Prints each run's wall and CPU time
and the ratio of the best wall times to that of the last size.

Usage::

    python benchmarks/bench_featvis.py [--layer layer3] [--steps 128] [--size 128] [--k 16]
    python benchmarks/bench_featvis.py --resnet18 [--sizes 224,128] [--k 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torchvision.models import resnet18

from reporter.featvis import render


def calibrated_resnet18(seed: int = 0) -> torch.nn.Module:
    """A resnet18 with random weights whose BatchNorm statistics match random inputs."""
    torch.manual_seed(seed)
    model = resnet18(weights=None)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(8, 3, 128, 128))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default=None, help="default: layer3 (--resnet18: auto)")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--k", type=int, default=None, help="channels (default 16; --resnet18 8)")
    parser.add_argument("--param", default="fft")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--resnet18",
        action="store_true",
        help="the audit's featvis stage for a 224 px resnet18, per render size",
    )
    parser.add_argument("--sizes", default="224,128", help="--resnet18: render sizes to time")
    parser.add_argument(
        "--rounds", type=int, default=1, help="--resnet18: interleaved rounds (best kept)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resnet18:
        stage_sizes(args)
        return
    args.layer = args.layer or "layer3"
    args.k = args.k or 16
    model = calibrated_resnet18().to(args.device)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    channels = list(range(args.k))
    common = dict(
        size=args.size,
        steps=args.steps,
        param=args.param,
        mean=mean,
        std=std,
        seed=0,
        device=args.device,
    )

    render(model, args.layer, channels=[0], **{**common, "steps": 2})  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    batched = render(model, args.layer, channels=channels, **common)
    t_batched, c_batched = time.perf_counter() - start, time.process_time() - cpu

    start, cpu = time.perf_counter(), time.process_time()
    singles = [render(model, args.layer, channels=[c], **common) for c in channels]
    t_single, c_single = time.perf_counter() - start, time.process_time() - cpu

    rise_b = (batched.final - batched.initial).mean().item()
    rise_s = torch.cat([(r.final - r.initial) for r in singles]).mean().item()
    print(
        f"resnet18 {args.layer}, {args.k} channels, {args.size}x{args.size}, {args.steps} steps, "
        f"param={args.param}, torch threads={torch.get_num_threads()}"
    )
    print(
        f"batched (one batch of {args.k}): wall {t_batched:8.2f} s  cpu {c_batched:8.2f} s  "
        f"mean objective rise {rise_b:.3f}"
    )
    print(
        f"one at a time ({args.k} calls):  wall {t_single:8.2f} s  cpu {c_single:8.2f} s  "
        f"mean objective rise {rise_s:.3f}"
    )
    print(f"speed-up: wall {t_single / t_batched:.2f}x  cpu {c_single / c_batched:.2f}x")
    # The ceiling batching can reach: one forward+backward step at batch 1 vs batch K.
    t1, tk = (
        step_time(model, args.layer, 1, args.size, device=args.device),
        step_time(model, args.layer, args.k, args.size, device=args.device),
    )
    print(
        f"raw step (forward to {args.layer} + input gradient), cpu s: batch 1 {t1:.3f}, "
        f"batch {args.k} {tk:.3f} -> batching ceiling {args.k * t1 / tk:.2f}x"
    )


def stage_sizes(args: argparse.Namespace) -> None:
    """The featvis stage's model work for a 224 px resnet18 at each render size of ``--sizes``."""
    from reporter.featvis import fit_size, receptive_field
    from reporter.nn.layers import auto_layer_choice, trace_layers

    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10).eval().to(args.device)
    full = (224, 224)
    layer = args.layer or auto_layer_choice(trace_layers(model, torch.zeros(1, 3, *full)))[0]
    k = args.k or 8
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    print(
        f"resnet18 (weights=None, seed 0, 10 classes), input 224x224, layer {layer}, {k} "
        f"channels, {args.steps} steps, param={args.param}, torch threads "
        f"{torch.get_num_threads()}"
    )
    sides = [int(v) for v in args.sizes.split(",")]
    for side in sides:  # warm-up: the first pass at a new shape pays for setting up kernels
        render(model, layer, channels=range(k), size=side, steps=2, trace_size=full)
    receptive_field(model, layer, full, image_channels=3, device=args.device)
    times: dict[int, float] = {}
    for side in [side for _ in range(args.rounds) for side in sides]:
        start, cpu = time.perf_counter(), time.process_time()
        size, fixed = fit_size(model, layer, side, full, image_channels=3, device=args.device)
        t_fit = time.perf_counter() - start
        result = render(
            model,
            layer,
            channels=range(k),
            size=size,
            steps=args.steps,
            param=args.param,
            seed=0,
            mean=mean,
            std=std,
            device=args.device,
            trace_size=full,
            fixed_size=fixed is not None,
        )
        t_render = time.perf_counter() - start - t_fit
        receptive_field(model, layer, full, image_channels=3, device=args.device)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        times[side] = min(wall, times.get(side, wall))
        rise = (result.final - result.initial).mean().item()
        print(
            f"rendered at {size[0]}x{size[1]}: wall {wall:8.2f} s  cpu {cpu:8.2f} s  (size "
            f"check {t_fit:.2f} s, render {t_render:.2f} s, receptive field "
            f"{wall - t_fit - t_render:.2f} s)  mean objective rise {rise:.3f}"
        )
    last = sides[-1]
    for side, wall in times.items():
        if side != last:
            print(f"best wall {side} px / {last} px: {wall / times[last]:.2f}x")


def step_time(
    model: torch.nn.Module, layer: str, batch: int, size: int, repeats: int = 3, device: str = "cpu"
) -> float:
    """CPU seconds of one forward (stopped at ``layer``) and input-gradient pass (CPU only)."""
    from reporter.featvis._forward import StopForward, stop_after
    from reporter.nn.hooks import ActivationRecorder, frozen_parameters

    module = dict(model.named_modules())[layer]
    times = []
    with frozen_parameters(model), ActivationRecorder(model, [layer]) as rec, stop_after(module):
        for i in range(repeats + 1):
            x = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
            cpu = time.process_time()
            with contextlib.suppress(StopForward):
                model(x)
            torch.autograd.grad(rec.outputs[layer][:, 0].sum(), x)
            if i:
                times.append(time.process_time() - cpu)
    return min(times)


if __name__ == "__main__":
    main()
