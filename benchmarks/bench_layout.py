"""Benchmark channels-last (:mod:`reporter.nn.memory_format`) against the default, in one process.

For each model and input size, the same seeded weights and inputs are timed in both layouts:
an inference forward pass (``predict``, trust metrics), a forward pass plus one
``torch.autograd.grad`` to an early layer (the CAM engine's floor) and a training step (``train``).
Rounds of the two layouts are interleaved so load from other processes hits them alike; each
number is the best of ``--iters`` rounds. Usage::

    python benchmarks/bench_layout.py --iters 5
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from reporter.models.build import build_model
from reporter.nn.memory_format import use_channels_last

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_cam import floor_fn

__all__ = ["main"]

CASES = [
    # arch, channels, size, batch, layer for the gradient floor
    ("gapnet", 1, 32, 64, "features.relu2"),
    ("gapnet", 3, 64, 64, "features.relu2"),
    ("resnet18", 3, 224, 16, "layer2"),
    ("mobilenet_v3_small", 3, 224, 16, "features.3"),
]


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _tasks(model: nn.Module, x: Tensor, layer: str) -> dict[str, Callable[[], Any]]:
    floor = floor_fn(model, layer, x)

    def forward() -> None:
        model.eval()
        with torch.inference_mode():
            model(x)

    def grad_floor() -> None:
        model.eval()
        floor()

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    labels = torch.zeros(x.shape[0], dtype=torch.long)

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()

    return {"forward": forward, "fwd+grad": grad_floor, "train step": train_step}


def main(argv: list[str] | None = None) -> None:
    """Time each case in both layouts and print the speed-up of channels-last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU")
    print(f"{'model':<34}{'pass':<12}{'default':>10}{'NHWC':>10}{'speed-up':>10}")
    for arch, channels, size, batch, layer in CASES:
        torch.manual_seed(0)
        plain = build_model(arch, 10, channels)
        fast = copy.deepcopy(plain)
        converted = use_channels_last(fast, (batch, channels, size, size))
        x = torch.randn(batch, channels, size, size)
        plain_tasks = _tasks(plain, x, layer)
        fast_tasks = _tasks(fast, x, layer)
        label = f"{arch} {channels}x{size}x{size} b{batch}"
        if not converted:
            print(f"{label:<34}(the probe kept the default layout)")
            continue
        for name in plain_tasks:
            plain_tasks[name]()  # warm-up
            fast_tasks[name]()
            t_plain, t_fast = [], []
            for _ in range(args.iters):
                t_plain.append(_time(plain_tasks[name]))
                t_fast.append(_time(fast_tasks[name]))
            a, b = min(t_plain), min(t_fast)
            print(f"{label:<34}{name:<12}{batch / a:>8.1f}/s{batch / b:>8.1f}/s{a / b:>9.2f}x")
            label = ""


if __name__ == "__main__":
    main()
