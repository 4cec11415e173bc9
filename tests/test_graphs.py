"""GraphedFunction bookkeeping, with a CPU stand-in for CUDA graph capture.

The stand-in records like a CUDA graph does: the function's inputs and output are fixed buffers,
and a replay recomputes the output buffer in place from whatever the input buffers hold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor

from reporter.explain import CamEngine
from reporter.explain import engine as engine_module
from reporter.explain.graphs import ENV_VAR, GraphedFunction
from reporter.models.build import build_model


class FakeCapture:
    """Records ``fn`` on static buffers; ``corrupt`` makes replays wrong, ``fail`` raises."""

    def __init__(self, corrupt: bool = False, fail: bool = False) -> None:
        self.corrupt, self.fail = corrupt, fail
        self.recorded = 0

    def __call__(
        self, fn: Callable[..., Tensor], static_inputs: Sequence[Tensor]
    ) -> tuple[Callable[[], None], Tensor]:
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.recorded += 1
        out = fn(*static_inputs).clone()

        def replay() -> None:
            out.copy_(fn(*static_inputs))
            if self.corrupt:
                out.add_(1.0)

        return replay, out


def _fn(a: Tensor, b: Tensor) -> Tensor:
    return torch.cat([(a * b).sum(1), a.amax(1)])


def test_replays_follow_the_inputs_and_reuse_one_recording() -> None:
    cap = FakeCapture()
    graphed = GraphedFunction(_fn, capture=cap)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        a, b = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
        torch.testing.assert_close(graphed(a, b), _fn(a, b))
    assert cap.recorded == 1 and graphed.captures == 1 and graphed.replays == 3


def test_one_recording_per_signature_with_a_cap() -> None:
    cap = FakeCapture()
    graphed = GraphedFunction(_fn, capture=cap, max_graphs=2)
    for rows in (2, 3, 4, 2, 3, 4):
        a = torch.ones(rows, 5)
        torch.testing.assert_close(graphed(a, a), _fn(a, a))
    # 2, 3, 4 recorded; 4 evicted 2, so 2 is recorded again, evicting 3, and so on.
    assert cap.recorded == 6
    a = torch.ones(4, 5).t()  # same shape as a (5, 4) batch but other strides: a new signature
    torch.testing.assert_close(graphed(a, a), _fn(a, a))
    assert cap.recorded == 7


def test_static_output_is_overwritten_by_the_next_call() -> None:
    graphed = GraphedFunction(_fn, capture=FakeCapture())
    a = torch.ones(2, 3)
    graphed(a, a)  # records
    first = graphed(a, a)
    kept = first.clone()
    graphed(a * 2, a)
    assert not torch.equal(first, kept)  # documented: copy the result before calling again


@pytest.mark.parametrize("cap", [FakeCapture(corrupt=True), FakeCapture(fail=True)])
def test_a_bad_recording_falls_back_to_eager_for_good(
    cap: FakeCapture, caplog: pytest.LogCaptureFixture
) -> None:
    graphed = GraphedFunction(_fn, capture=cap)
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    with caplog.at_level(logging.WARNING):
        torch.testing.assert_close(graphed(a, b), _fn(a, b))
        torch.testing.assert_close(graphed(b, a), _fn(b, a))
    assert not graphed.enabled and graphed.replays == 0
    assert sum("CUDA graphs turned off" in r.message for r in caplog.records) == 1


def test_cpu_inputs_without_a_capture_are_plain_calls() -> None:
    graphed = GraphedFunction(_fn)
    a = torch.randn(2, 3)
    torch.testing.assert_close(graphed(a, a), _fn(a, a))
    assert graphed.captures == 0


def test_environment_turns_graphs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "off")
    assert not GraphedFunction(_fn).enabled
    assert CamEngine(build_model("gapnet", 3, 3), cuda_graphs=None).cuda_graphs is False


def test_engine_maps_through_recorded_math_match_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's math function is pure: recorded replays give the eager maps."""
    cap = FakeCapture()
    real = engine_module.GraphedFunction
    monkeypatch.setattr(
        engine_module,
        "GraphedFunction",
        lambda fn, enabled: real(fn, capture=cap, enabled=enabled, rtol=0, atol=0),
    )
    torch.manual_seed(0)
    model = build_model("gapnet", 4, 3)
    methods = ["cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"]
    batches = [torch.randn(4, 3, 16, 16) for _ in range(3)] + [torch.randn(2, 3, 16, 16)]
    with CamEngine(model, layers=["auto"], methods=methods) as graphed:
        got = [graphed(x) for x in batches]
    with CamEngine(model, layers=["auto"], methods=methods, cuda_graphs=False) as eager:
        want = [eager(x) for x in batches]
    assert cap.recorded == 2  # batches of 4 and the last batch of 2
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.logits, w.logits)
        assert torch.equal(g.targets, w.targets)
        for m in methods:
            for layer in w.layers:
                torch.testing.assert_close(g.maps[m][layer], w.maps[m][layer])
                assert torch.equal(g.flags[m][layer], w.flags[m][layer])
