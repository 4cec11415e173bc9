"""Replay the engine's pure tensor math as CUDA graphs.

After the forward and backward passes, the engine computes every map with a few hundred small
tensor operations (channel weights, weighted sums, Eigen-CAM's power iterations, flags). On a
GPU each is one kernel launch, and at the batch sizes we run the GPU finishes them faster than
Python can issue them (measured in :doc:`performance`). A CUDA graph records the launches once
per input shape and replays them with one call.

:class:`GraphedFunction` wraps a *pure* function of tensors (no host synchronisation, no
Python-side branching on tensor values, same output shapes for the same input shapes). Per input
signature it warms the function up on a side stream, captures it, replays the capture once and
compares that with the eager result; a capture that fails or disagrees switches the wrapper to
plain eager calls for good (with one warning), so a graph can cost speed but never correctness.
On the CPU it is a plain call.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

__all__ = ["ENV_VAR", "Capture", "GraphedFunction", "cuda_capture", "cuda_graphs_enabled"]

log = logging.getLogger(__name__)

ENV_VAR = "REPORTER_CUDA_GRAPHS"
"""Environment variable: ``0`` (or ``false``/``off``/``no``) turns CUDA graphs off."""


def cuda_graphs_enabled() -> bool:
    """False when ``REPORTER_CUDA_GRAPHS`` turns graphs off."""
    return os.environ.get(ENV_VAR, "").strip().lower() not in {"0", "false", "off", "no"}


class Capture(Protocol):
    """Records ``fn(*static_inputs)`` and returns ``(replay, static_output)``.

    ``replay()`` recomputes ``static_output`` in place from the current contents of
    ``static_inputs``.
    """

    def __call__(
        self, fn: Callable[..., Tensor], static_inputs: Sequence[Tensor]
    ) -> tuple[Callable[[], None], Tensor]: ...


def cuda_capture(
    fn: Callable[..., Tensor], static_inputs: Sequence[Tensor]
) -> tuple[Callable[[], None], Tensor]:
    """Capture ``fn`` on ``static_inputs`` as a ``torch.cuda.CUDAGraph`` (warm-up included)."""
    device = static_inputs[0].device
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):  # cuBLAS handles and workspaces are created outside the capture
            fn(*static_inputs)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = fn(*static_inputs)
    return graph.replay, static_output


class GraphedFunction:
    """Call ``fn`` through one recorded graph per input signature (shapes, strides, dtypes).

    Args:
        fn: A pure function of tensors returning one tensor.
        capture: How to record; :func:`cuda_capture` by default, used for CUDA inputs only.
            Tests pass a stand-in that records on the CPU.
        enabled: False makes every call a plain call; ``None``: on unless
            ``REPORTER_CUDA_GRAPHS=0`` (always on with an explicit ``capture``).
        max_graphs: Recorded signatures kept (least recently used dropped); a test set gives
            two (full batches and the last, smaller one).
        rtol, atol: Tolerance of the check of the first replay against the eager result
            (``atol`` is scaled by the largest magnitude of the eager result).

    The returned tensor is the graph's static output: it is overwritten by the next call with
    the same signature, so copy it (e.g. ``.cpu()``) before calling again.
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        *,
        capture: Capture | None = None,
        enabled: bool | None = None,
        max_graphs: int = 4,
        rtol: float = 1e-4,
        atol: float = 1e-5,
    ) -> None:
        self.fn = fn
        self._capture = capture
        self.max_graphs = max(1, int(max_graphs))
        self.rtol, self.atol = rtol, atol
        if enabled is None:
            enabled = capture is not None or cuda_graphs_enabled()
        self.enabled = enabled
        self.captures = 0
        self.replays = 0
        self.replayed_last = False  # True when the last result is a graph's static output
        self._graphs: OrderedDict[tuple, tuple[list[Tensor], Callable[[], None], Tensor]] = (
            OrderedDict()
        )

    def _applies(self, inputs: Sequence[Tensor]) -> bool:
        if not self.enabled or not inputs:
            return False
        return self._capture is not None or inputs[0].device.type == "cuda"

    def __call__(self, *inputs: Tensor) -> Tensor:
        self.replayed_last = False
        if not self._applies(inputs):
            return self.fn(*inputs)
        key = tuple((tuple(t.shape), t.stride(), t.dtype, t.device) for t in inputs)
        entry = self._graphs.get(key)
        if entry is None:
            return self._record(key, inputs)
        self._graphs.move_to_end(key)
        static_inputs, replay, static_output = entry
        for buf, x in zip(static_inputs, inputs, strict=True):
            buf.copy_(x)
        replay()
        self.replays += 1
        self.replayed_last = True
        return static_output

    def _record(self, key: tuple, inputs: Sequence[Tensor]) -> Tensor:
        expected = self.fn(*inputs)
        static_inputs = [
            torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device) for x in inputs
        ]
        for buf, x in zip(static_inputs, inputs, strict=True):
            buf.copy_(x)
        capture = self._capture or cuda_capture
        try:
            replay, static_output = capture(self.fn, static_inputs)
            replay()
            agrees = _close(static_output, expected, self.rtol, self.atol)
        except Exception as exc:  # noqa: BLE001 - any capture problem means: stay eager
            self._give_up(f"recording failed ({type(exc).__name__}: {exc})")
            return expected
        if not agrees:
            self._give_up("the replay disagreed with the eager result")
            return expected
        self._graphs[key] = (static_inputs, replay, static_output)
        self.captures += 1
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return expected

    def _give_up(self, reason: str) -> None:
        self.enabled = False
        self._graphs.clear()
        log.warning("CUDA graphs turned off for the CAM math: %s; computing eagerly", reason)

    def clear(self) -> None:
        """Drop every recorded graph (and the GPU memory it holds)."""
        self._graphs.clear()


def _close(actual: Tensor, expected: Tensor, rtol: float, atol: float) -> bool:
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return False
    a, e = actual.float(), expected.float()
    finite = torch.isfinite(e)
    if not torch.equal(finite, torch.isfinite(a)):
        return False
    scale = max(1.0, float(e[finite].abs().max())) if bool(finite.any()) else 1.0
    return bool(torch.allclose(a[finite], e[finite], rtol=rtol, atol=atol * scale))
