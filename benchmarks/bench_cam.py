"""Benchmark the CAM engine against its floor and its peers, in one process, on the same inputs.

(a) floor: one forward pass plus one ``torch.autograd.grad`` to the earliest requested layer;
(b) ``reporter.explain.CamEngine``: six methods (gradcam, gradcam++, xgradcam, layercam,
    hirescam and the gradient-free eigencam) on three layers = 18 maps per image, one pass;
(c) pytorch-grad-cam computing the same 18 maps the way its users must: one call per method and
    layer;
(d) torchcam computing one ``GradCAM`` map (the last layer).
(b-per-batch) is (b) used the way torchcam users write it: ``with CamEngine(...)`` opened anew for
every batch, on a model with default-layout weights, so each round pays whatever entering costs
(the channels-last probe is cached per model; the weights are converted and put back).
On the CPU the engine runs the model channels-last (:mod:`reporter.nn.memory_format`); the peers
run the model as their users have it (default layout). So that the engine's own overhead can be told
apart from the layout's gain, the script also times the floor and torchcam channels-last (a-nhwc,
d-nhwc) and the engine in the default layout (b-nchw).
Then Score-CAM: the engine against its unavoidable masked forward passes alone.

Each timing is the best of ``--iters`` rounds (the rounds of (a), (b) and (d) are interleaved so
that load from other processes hits them alike). Usage::

    python benchmarks/bench_cam.py --batch 16 --size 224 --iters 3
    python benchmarks/bench_cam.py --device cuda --batch 64 --iters 20
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from reporter.explain import CamEngine
from reporter.explain.scorecam import channel_masks
from reporter.nn.memory_format import use_channels_last

__all__ = ["main"]

SIX_METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(fn: Callable[[], Any], device: torch.device, iters: int) -> float:
    times = []
    for _ in range(iters):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def _calibrate(model: nn.Module, size: int, device: torch.device) -> None:
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, size, size, device=device))
    model.eval()


def floor_fn(model: nn.Module, layer: str, images: Tensor) -> Callable[[], None]:
    """(a): forward with frozen parameters, graph started at ``layer``, one autograd.grad."""
    module = dict(model.named_modules())[layer]
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
        if torch.is_grad_enabled() and not out.requires_grad:
            out.requires_grad_(True)
        store["a"] = out

    def run() -> None:
        handle = module.register_forward_hook(hook)
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            logits = model(images)
            score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            torch.autograd.grad(score, [store["a"]])
        finally:
            handle.remove()
            for p in model.parameters():
                p.requires_grad_(True)
            store.clear()

    return run


def grad_cam_library_fn(model: nn.Module, layers: list[str], images: Tensor) -> Callable[[], None]:
    """(c): pytorch-grad-cam, one call per method and layer (18 calls for 6 x 3)."""
    from pytorch_grad_cam import (
        EigenCAM,
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        XGradCAM,
    )

    classes = [GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM, EigenCAM]
    modules = dict(model.named_modules())

    def run() -> None:
        for cls in classes:
            for layer in layers:
                with cls(model=model, target_layers=[modules[layer]]) as cam:
                    cam(input_tensor=images, targets=None)
        model.zero_grad(set_to_none=True)

    return run


def torchcam_fn(model: nn.Module, layer: str, images: Tensor) -> tuple[Callable[[], None], Any]:
    """(d): torchcam's GradCAM on one layer (extractor built once, as its users do)."""
    from torchcam.methods import GradCAM as TorchcamGradCAM

    extractor = TorchcamGradCAM(model, target_layer=layer)

    def run() -> None:
        scores = model(images)
        extractor(class_idx=scores.argmax(1).tolist(), scores=scores)

    return run, extractor


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the benchmark and print images/s and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=3, help="rounds for (a), (b), (d)")
    parser.add_argument("--iters-c", type=int, default=1, help="rounds for pytorch-grad-cam")
    parser.add_argument("--layers", default="layer2,layer3,layer4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--skip-c", action="store_true", help="skip pytorch-grad-cam (slow)")
    parser.add_argument("--scorecam-images", type=int, default=1)
    parser.add_argument("--scorecam-layer", default="layer4")
    parser.add_argument("--scorecam-batch", type=int, default=64)
    parser.add_argument("--skip-scorecam", action="store_true")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")  # peers' deprecation chatter is not what we measure
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    layers = [n.strip() for n in args.layers.split(",") if n.strip()]
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).to(device)
    _calibrate(model, args.size, device)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    n = args.batch
    print(
        f"resnet18 {args.size}x{args.size}, batch {n}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", torch {torch.__version__}, threads {torch.get_num_threads()}, layers {layers}"
    )

    # The peers and the default-layout runs use `model` as their users have it. The engine gets
    # its own copy (same weights): on the CPU it stores the weights channels-last while open.
    fast_model = copy.deepcopy(model)
    nhwc_images = images.contiguous(memory_format=torch.channels_last)
    floor = floor_fn(model, layers[0], images)
    floor_nhwc = floor_fn(fast_model, layers[0], nhwc_images)
    engine = CamEngine(fast_model, layers=layers, methods=SIX_METHODS, device=device)
    engine.__enter__()
    engine_nchw = CamEngine(
        model, layers=layers, methods=SIX_METHODS, device=device, channels_last=False
    )
    engine_nchw.__enter__()
    # (b1): the same six methods on the last layer only: the same backward depth as (d).
    engine_last = CamEngine(fast_model, layers=layers[-1:], methods=SIX_METHODS, device=device)
    engine_last.__enter__()
    # (b-per-batch): a third copy, in the default layout as users have it, for engines opened anew.
    user_model = copy.deepcopy(model)

    def per_batch() -> None:
        with CamEngine(user_model, layers=layers, methods=SIX_METHODS, device=device) as opened:
            opened(images)

    tc_run, tc_extractor = torchcam_fn(model, layers[-1], images)
    tc_nhwc_run, tc_nhwc_extractor = torchcam_fn(fast_model, layers[-1], nhwc_images)
    extractors = (tc_extractor, tc_nhwc_extractor)
    try:
        for ex in extractors:
            ex.disable_hooks()
        engine(images)  # warm-up + dry run (and, on the CPU, channels-last weights)
        engine_nchw(images)
        engine_last(images)
        per_batch()
        floor()
        floor_nhwc()
        runs = {
            "a": floor,
            "an": floor_nhwc,
            "b": lambda: engine(images),
            "bc": lambda: engine_nchw(images),
            "b1": lambda: engine_last(images),
            "bp": per_batch,
            "d": tc_run,
            "dn": tc_nhwc_run,
        }
        hooks = {"d": tc_extractor, "dn": tc_nhwc_extractor}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for round_ in range(args.iters + 1):  # round 0 warms the peers up
            for key, fn in runs.items():
                if key in hooks:
                    hooks[key].enable_hooks()
                elapsed = _best(fn, device, 1)
                if key in hooks:
                    hooks[key].disable_hooks()
                if round_:
                    times[key].append(elapsed)
    finally:
        for ex in extractors:
            ex.remove_hooks()
        engine_last.close()
        engine_nchw.close()
        engine.close()
    best = {k: min(v) for k, v in times.items()}
    t_a, t_b, t_d = best["a"], best["b"], best["d"]
    layout = "channels-last" if engine.channels_last else "default layout"
    rows = [
        ("a", f"(a) floor fwd+grad to {layers[0]}"),
        ("an", "(a-nhwc) the floor, channels-last"),
        ("b", f"(b) engine, 18 maps ({layout})"),
        ("bc", "(b-nchw) engine, default layout"),
        ("b1", f"(b1) engine, 6 maps on {layers[-1]}"),
        ("bp", "(b-per-batch) engine opened per batch"),
        ("d", "(d) torchcam GradCAM, 1 map"),
        ("dn", "(d-nhwc) torchcam, channels-last"),
    ]
    for key, label in rows:
        print(f"{label:<38}{n / best[key]:9.2f} images/s  ({best[key]:.3f} s/batch)")
    if not args.skip_c:
        run_c = grad_cam_library_fn(model, layers, images)
        t_c = _best(run_c, device, args.iters_c)
        print(f"{'(c) pytorch-grad-cam, 18 calls':<38}{n / t_c:9.2f} images/s  ({t_c:.3f} s/batch)")
    print(f"ratio (b)/(a) = {t_a / t_b:.2f}   goal >= 0.8 (CPU), >= 0.7 (GPU)")
    print(
        f"ratio (b)/(a-nhwc) = {best['an'] / t_b:.2f}   (against the floor in the engine's layout)"
    )
    print(f"ratio (b-nchw)/(a) = {t_a / best['bc']:.2f}   (both in the default layout)")
    print(
        f"ratio (b-per-batch)/(a) = {t_a / best['bp']:.2f}   (b-per-batch)/(b) = "
        f"{t_b / best['bp']:.2f}   (entering costs ~nothing when both are ~(b)'s)"
    )
    if not args.skip_c:
        print(f"ratio (b)/(c) = {t_c / t_b:.1f}   goal >= 30")
    print(f"ratio (b)/(d) = {t_d / t_b:.2f}   goal >= 0.8")
    print(
        f"ratio (a)/(d) = {t_d / t_a:.2f}   (bounds (b-nchw)/(d): (d) backpropagates to "
        f"{layers[-1]} only, (a) and (b) to {layers[0]})"
    )
    print(f"ratio (b)/(d-nhwc) = {best['dn'] / t_b:.2f}   (torchcam given the engine's layout)")
    print(
        f"ratio (b1)/(d-nhwc) = {best['dn'] / best['b1']:.2f}  (same depth and layout: 6 maps vs 1)"
    )

    if args.skip_scorecam:
        return
    m = args.scorecam_images
    sc_images = images[:m]
    with CamEngine(
        model,
        layers=[args.scorecam_layer],
        methods=["scorecam"],
        device=device,
        scorecam_batch=args.scorecam_batch,
    ) as sc_engine:
        sc_engine(sc_images[:1])  # warm-up + dry run
        result_holder: list[Any] = []
        t_sc = _best(lambda: result_holder.append(sc_engine(sc_images)), device, 1)
        acts = result_holder[-1].activations[args.scorecam_layer].to(device)

    # The unavoidable part: the masked images' forward passes alone, in the same chunks and
    # in the same memory layout as the engine ran them.
    ref_model = model
    if sc_engine.channels_last:
        ref_model = copy.deepcopy(model)
        use_channels_last(ref_model, tuple(sc_images.shape))
    ref_model.eval()
    flat = acts.reshape(-1, *acts.shape[2:])
    channels = acts.shape[1]
    masked = [
        sc_images[torch.arange(s, min(s + args.scorecam_batch, flat.shape[0])) // channels]
        * channel_masks(flat[s : s + args.scorecam_batch], (args.size, args.size)).unsqueeze(1)
        for s in range(0, flat.shape[0], args.scorecam_batch)
    ]

    def passes() -> None:
        with torch.inference_mode():
            for chunk in masked:
                ref_model(chunk)

    t_passes = _best(passes, device, 1)
    total = m * channels
    print(
        f"scorecam {args.scorecam_layer}, {m} image(s) x {channels} channels: engine "
        f"{t_sc:.2f} s, masked forward passes alone {t_passes:.2f} s "
        f"({total / t_passes:.0f} masked images/s): ratio {t_sc / t_passes:.2f}  goal <= 1.5"
    )


if __name__ == "__main__":
    main()
