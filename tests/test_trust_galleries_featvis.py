"""Feature visualizations that did not work are marked failed (never drawn as a result)."""

from __future__ import annotations

import torch

from reporter.audit.features import MIN_ACTIVATION, MIN_CONTRAST, render_status


def test_render_status_rules():
    textured = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    flat = torch.full((3, 8, 8), 0.5)
    assert render_status(0.1, 2.0, textured) == ("converged", None)
    status, reason = render_status(0.0, 0.0, textured)
    assert status == "failed" and "ends at 0" in reason
    assert render_status(0.0, MIN_ACTIVATION, textured)[0] == "failed"
    assert render_status(1.0, 0.9, textured) == (
        "failed",
        "the activation did not rise (1 to 0.9)",
    )
    assert render_status(0.1, 2.0, flat) == ("failed", "the image is flat")
    assert (
        render_status(
            0.1,
            2.0,
            flat
            + 3 * MIN_CONTRAST * torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1)),
        )[0]
        == "converged"
    )
    assert render_status(0.1, float("nan"), textured)[0] == "failed"
