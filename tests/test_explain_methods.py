"""The pure tensor functions of reporter.explain.methods, targets and scorecam masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reporter.errors import ReporterError
from reporter.explain import methods as M
from reporter.explain import resolve_targets, tokens_to_grid
from reporter.explain.scorecam import channel_masks, scorecam_scores
from tests.conftest_explain import pearson


@pytest.fixture(scope="module")
def tensors() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(3, 16, 7, 5, generator=gen).relu()
    grads = torch.randn(3, 16, 7, 5, generator=gen) * 1e-2
    grads[0, 0, 0, 0] = 0.0
    return acts, grads


def test_gradient_maps_equal_single_method_functions(tensors) -> None:
    acts, grads = tensors
    single = {
        "gradcam": M.gradcam,
        "gradcam++": M.gradcampp,
        "xgradcam": M.xgradcam,
        "layercam": M.layercam,
        "hirescam": M.hirescam,
    }
    shared = M.gradient_maps(acts, grads, list(single))
    assert list(shared) == list(single)
    for name, fn in single.items():
        expected = fn(acts.clone(), grads.clone())
        assert expected.shape == (3, 7, 5)
        assert float(expected.min()) >= 0.0
        torch.testing.assert_close(shared[name], expected, rtol=1e-5, atol=1e-7)
    # one method alone gives the same too (no shared product missing)
    for name in single:
        torch.testing.assert_close(M.gradient_maps(acts, grads, [name])[name], shared[name])


def test_gradcampp_matches_pytorch_grad_cam_weights(tensors) -> None:
    from pytorch_grad_cam import GradCAMPlusPlus, XGradCAM

    acts, grads = tensors
    theirs = GradCAMPlusPlus.get_cam_weights(
        None, None, None, None, acts.double().numpy(), grads.double().numpy()
    )
    ours = M.gradcampp_weights(acts.double(), grads.double())
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-10)
    theirs_x = XGradCAM.get_cam_weights(
        None, None, None, None, acts.double().numpy(), grads.double().numpy()
    )
    np.testing.assert_allclose(M.xgradcam_weights(acts.double(), grads.double()), theirs_x)


def test_eigencam_is_first_principal_component_with_fixed_sign() -> None:
    gen = torch.Generator().manual_seed(1)
    for c, h, w in ((8, 6, 6), (40, 3, 4)):  # C <= hw and C > hw branches
        acts = torch.randn(4, c, h, w, generator=gen).relu() + 0.1
        proj = M.first_component_projection(acts)
        for i in range(4):
            x = acts[i].reshape(c, -1).double()
            x = x - x.mean(dim=1, keepdim=True)
            _, _, vt = torch.linalg.svd(x.t(), full_matrices=False)
            ref = (x.t() @ vt[0]).reshape(h, w)
            torch.testing.assert_close(proj[i].double().abs(), ref.abs(), rtol=1e-3, atol=1e-4)
            assert pearson(proj[i], acts[i].sum(0)) > 0  # sign: agrees with the activations
        assert torch.equal(M.eigencam(acts), proj.clamp_min(0))


@pytest.mark.parametrize("gap", [0.3, 0.6, 0.9, 0.99])
def test_cpu_shortcuts_stop_only_when_converged(
    gap: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``tol``: power iteration on a clear spectral gap, fewer squarings on a middling one,
    all ten squarings on a tiny one; always the right eigenvector."""
    gen = torch.Generator().manual_seed(3)
    n = 24
    q, _ = torch.linalg.qr(torch.randn(3, n, n, generator=gen, dtype=torch.float64))
    eig = torch.tensor([1.0, gap, *torch.linspace(0.3 * gap, 0.01, n - 2).tolist()])
    gram = (q * eig.to(q.dtype)) @ q.transpose(1, 2)
    squarings = {"n": 0}
    real_bmm = torch.bmm

    def counting_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape == b.shape:  # [B, n, n] @ [B, n, n]: one squaring
            squarings["n"] += 1
        return real_bmm(a, b)

    monkeypatch.setattr(M.torch, "bmm", counting_bmm)
    fixed = M._top_eigenvector(gram.float())
    assert squarings["n"] == 10
    squarings["n"] = 0
    early = M._top_eigenvector(gram.float(), tol=M.EIGEN_TOL)
    truth = q[:, :, 0].float()
    for v in (fixed, early):
        assert (v * truth).sum(1).abs().min() > 1 - 1e-5
    expected = {0.3: (0, 0), 0.6: (0, 0), 0.9: (1, 9), 0.99: (10, 10)}[gap]
    assert expected[0] <= squarings["n"] <= expected[1]


def test_power_iteration_of_a_zero_matrix_is_zero() -> None:
    v = M._power_iteration(torch.zeros(2, 5, 5), M.POWER_TOL)
    assert v is not None and torch.equal(v, torch.zeros(2, 5))


def test_eigencam_of_zero_and_constant_activations_is_zero() -> None:
    assert torch.equal(M.eigencam(torch.zeros(2, 4, 3, 3)), torch.zeros(2, 3, 3))
    assert torch.equal(M.eigencam(torch.ones(1, 4, 3, 3)), torch.zeros(1, 3, 3))


def test_cam_and_scorecam_weighted_sums() -> None:
    acts = torch.arange(8.0).reshape(1, 2, 2, 2)
    torch.testing.assert_close(
        M.cam(acts, torch.tensor([[1.0, -0.5]])), (acts[0, 0] - 0.5 * acts[0, 1]).clamp_min(0)[None]
    )
    equal = M.scorecam(acts, torch.tensor([[3.0, 3.0]]))
    torch.testing.assert_close(equal, acts.mean(dim=1))


def test_channel_masks_min_max_and_align_corners() -> None:
    acts = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]]])
    masks = channel_masks(acts, (3, 3))
    assert masks.shape == (2, 3, 3)
    torch.testing.assert_close(masks[0], torch.tensor([[0, 1, 2], [2, 3, 4], [4, 5, 6]]) / 6.0)
    assert torch.equal(masks[1], torch.zeros(3, 3))


def test_scorecam_scores_chunks_across_images() -> None:
    images = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    acts = torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(3))

    def forward(batch: torch.Tensor) -> torch.Tensor:
        flat = batch.flatten(1)
        return torch.stack([flat.sum(1), flat.max(1).values], dim=1)

    targets = torch.tensor([0, 1])
    a = scorecam_scores(forward, images, acts, targets, batch_size=4)
    b = scorecam_scores(forward, images, acts, targets, batch_size=1)
    assert not a.is_inference()
    torch.testing.assert_close(a, b)
    masked = images[1] * channel_masks(acts[1], (4, 4)).unsqueeze(1)
    torch.testing.assert_close(a[1], masked.flatten(1).max(1).values)


def test_resolve_targets() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert resolve_targets(None, logits).tolist() == [1, 0]
    assert resolve_targets(2, logits).tolist() == [2, 2]
    assert resolve_targets([0, 2], logits).tolist() == [0, 2]
    assert resolve_targets(torch.tensor([2, 1]), logits).dtype == torch.long
    for bad in (3, -1, [0], [0.5, 1.0], True, torch.tensor([[0, 1], [1, 0]])):
        with pytest.raises(ReporterError):
            resolve_targets(bad, logits)  # type: ignore[arg-type]


def test_tokens_to_grid() -> None:
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)
    grid = tokens_to_grid(tokens, (32, 32))
    assert grid.shape == (2, 3, 4, 4)
    assert torch.equal(grid[1, 2, 0, 1], tokens[1, 2, 2])  # class token dropped, row-major
    assert tokens_to_grid(tokens[:, 1:], (32, 32)).shape == (2, 3, 4, 4)
    assert tokens_to_grid(torch.zeros(1, 8, 3), (32, 64)).shape == (1, 3, 2, 4)
    with pytest.raises(ReporterError):
        tokens_to_grid(torch.zeros(1, 7, 3), (32, 32))
