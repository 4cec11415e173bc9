"""Activation maximization: objectives, parameterizations, transforms, render."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from reporter.errors import ReporterError
from reporter.featvis import channel, layer, logit, neuron, parse_objective, render
from reporter.featvis.objectives import LOGITS, batched_objective
from reporter.featvis.param import image_param
from reporter.featvis.transforms import compose, jitter, pad, random_rotate, standard_transforms
from reporter.models.gapnet import gapnet


def tiny_net(in_channels: int = 1, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def edge_net() -> nn.Sequential:
    """Channel 0 detects horizontal edges, channel 1 vertical edges."""
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    horizontal = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]])
    with torch.no_grad():
        conv.weight[0, 0] = horizontal
        conv.weight[1, 0] = horizontal.T
    return nn.Sequential(conv, nn.ReLU())


def _acts() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {
        "a": torch.randn(3, 4, 5, 5, generator=gen),
        "b": torch.randn(3, 2, 4, 4, generator=gen),
        LOGITS: torch.randn(3, 6, generator=gen),
    }


# --------------------------------------------------------------------------------- objectives
def test_objective_kinds_values() -> None:
    acts = _acts()
    torch.testing.assert_close(channel("a", 2)(acts), acts["a"][:, 2].mean((1, 2)))
    torch.testing.assert_close(neuron("a", 1)(acts), acts["a"][:, 1, 2, 2])
    torch.testing.assert_close(neuron("b", 1)(acts), acts["b"][:, 1, 2, 2])
    torch.testing.assert_close(logit(4)(acts), acts[LOGITS][:, 4])
    torch.testing.assert_close(layer("b")(acts), acts["b"].pow(2).mean((1, 2, 3)))


def test_objectives_compose() -> None:
    acts = _acts()
    a, b = channel("a", 0), channel("b", 1)
    torch.testing.assert_close((a + b)(acts), a(acts) + b(acts))
    torch.testing.assert_close((a - 0.5 * b)(acts), a(acts) - 0.5 * b(acts))
    torch.testing.assert_close((-a)(acts), -a(acts))
    torch.testing.assert_close((a * b)(acts), a(acts) * b(acts))
    torch.testing.assert_close((2 * a / 4)(acts), 0.5 * a(acts))
    from reporter.featvis import Objective

    total = Objective.sum([a, b], weights=[2.0, -1.0])
    torch.testing.assert_close(total(acts), 2 * a(acts) - b(acts))
    assert set(total.layers) == {"a", "b"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("a:2", lambda t: t["a"][:, 2].mean((1, 2))),
        ("channel:a:2", lambda t: t["a"][:, 2].mean((1, 2))),
        ("neuron:a:3", lambda t: t["a"][:, 3, 2, 2]),
        ("logit:5", lambda t: t[LOGITS][:, 5]),
        ("layer:b", lambda t: t["b"].pow(2).mean((1, 2, 3))),
        ("-a:1", lambda t: -t["a"][:, 1].mean((1, 2))),
        (
            "0.5*a:1 - 2*b:0 + logit:0",
            lambda t: (
                0.5 * t["a"][:, 1].mean((1, 2)) - 2 * t["b"][:, 0].mean((1, 2)) + t[LOGITS][:, 0]
            ),
        ),
        ("1e-1 * a:0", lambda t: 0.1 * t["a"][:, 0].mean((1, 2))),
    ],
)
def test_parse_objective(spec: str, expected) -> None:
    acts = _acts()
    torch.testing.assert_close(parse_objective(spec)(acts), expected(acts))


def test_parse_dotted_layer_names() -> None:
    obj = parse_objective("features.conv2:7")
    assert obj.kind == "channel" and obj.target == ("features.conv2", 7)
    assert parse_objective("layer:layer4.1").layers == ("layer4.1",)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "Empty objective"),
        ("a:b", "whole number"),
        ("foo:bar:1", "unknown kind 'foo'"),
        ("a:1 b:2", "joined by '+' or '-'"),
        ("logit:x", "whole number"),
        ("logit:1:2", "logit:CLASS"),
        ("a:", "Bad objective term"),
        ("neuron:a", "neuron:LAYER:CHANNEL"),
        ("a:1 + *", "Cannot read objective"),
        ("justaname", "unknown kind"),
    ],
)
def test_parse_errors_are_clear(spec: str, fragment: str) -> None:
    with pytest.raises(ReporterError) as info:
        parse_objective(spec)
    assert fragment in str(info.value)
    assert "LAYER:CHANNEL" in str(info.value) or "write" in str(info.value)


def test_batched_objective_gather_and_generic_agree() -> None:
    acts = _acts()
    objs = [channel("a", 0), channel("a", 3), -channel("a", 1)]
    gathered = batched_objective(objs)(acts)
    expected = torch.stack([o(acts)[i] for i, o in enumerate(objs)])
    torch.testing.assert_close(gathered, expected)
    mixed = [channel("a", 0), logit(2), layer("b")]
    torch.testing.assert_close(
        batched_objective(mixed)(acts), torch.stack([o(acts)[i] for i, o in enumerate(mixed)])
    )
    neurons = [neuron("a", 0), neuron("a", 2), neuron("a", 3)]
    torch.testing.assert_close(
        batched_objective(neurons)(acts), torch.stack([o(acts)[i] for i, o in enumerate(neurons)])
    )


# ------------------------------------------------------------------------ param / transforms
@pytest.mark.parametrize("kind", ["fft", "pixel"])
@pytest.mark.parametrize(("channels", "size"), [(1, 16), (3, (15, 17)), (4, 8)])
def test_image_param_shapes_and_range(kind: str, channels: int, size) -> None:
    image = image_param(kind, 2, channels, size, generator=torch.Generator().manual_seed(0))
    out = image()
    hw = (size, size) if isinstance(size, int) else size
    assert out.shape == (2, channels, *hw)
    assert out.min() >= 0 and out.max() <= 1
    assert all(p.requires_grad for p in image.params)


def test_image_param_errors() -> None:
    with pytest.raises(ReporterError, match="Unknown parameterization"):
        image_param("wavelet", 1, 3, 8)


def test_transforms_are_seeded() -> None:
    x = torch.rand(2, 3, 20, 20)
    t = compose(standard_transforms(20))
    a = t(x, torch.Generator().manual_seed(3))
    b = t(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert pad(2)(x, torch.Generator()).shape[-1] == 24
    assert jitter(4)(x, torch.Generator()).shape[-1] == 17
    assert random_rotate([15])(x, torch.Generator()).shape == x.shape


# ------------------------------------------------------------------------------------ render
def test_objective_rises_for_every_kind() -> None:
    model = tiny_net()
    specs = ["2:3", "neuron:2:1", "logit:1", "layer:3", "-2:5", "0:1 - 0.5*2:0"]
    for optimizer, lr in (("adam", 0.1), ("normalized", 0.5)):
        result = render(
            model, specs, size=24, steps=25, lr=lr, optimizer=optimizer, seed=0, transforms=None
        )
        assert result.images.shape == (len(specs), 1, 24, 24)
        assert result.history.shape == (25, len(specs))
        rise = result.final - result.initial
        assert (rise > 0).all(), (optimizer, dict(zip(specs, rise.tolist(), strict=True)))


def test_channels_batch_rises_with_transforms() -> None:
    model = tiny_net(in_channels=3)
    result = render(model, "2", channels=range(8), size=24, steps=20, lr=0.1, seed=0)
    assert result.images.shape == (8, 3, 24, 24)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert (result.final > result.initial).all()
    assert result.objectives == [f"2:{c}" for c in range(8)]


def _grad_energy(image: torch.Tensor) -> tuple[float, float]:
    gy = (image[..., 1:, :] - image[..., :-1, :]).pow(2).mean().item()
    gx = (image[..., :, 1:] - image[..., :, :-1]).pow(2).mean().item()
    return gy, gx


@pytest.mark.parametrize(("param", "ratio"), [("fft", 1.5), ("pixel", 3.0)])
def test_edge_filters_show_their_orientation(param: str, ratio: float) -> None:
    # The 1/f scaling of the FFT parameterization favours smoother, blob-like images, so the
    # stripes are less clean than with pixels (measured ~2x vs ~6x); both must lean the right way.
    result = render(edge_net(), "1", channels=[0, 1], param=param, size=32, steps=40, lr=0.1)
    gy, gx = _grad_energy(result.images[0])
    assert gy > ratio * gx, (gy, gx)  # horizontal edges: intensity changes along y
    gy, gx = _grad_energy(result.images[1])
    assert gx > ratio * gy, (gy, gx)


def test_same_seed_same_images() -> None:
    model = tiny_net(in_channels=3)
    kwargs = dict(channels=[0, 1, 2], size=20, steps=6, lr=0.1)
    a = render(model, "2", seed=7, **kwargs)
    b = render(model, "2", seed=7, **kwargs)
    c = render(model, "2", seed=8, **kwargs)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.history, b.history)
    assert not torch.equal(a.images, c.images)


def test_grayscale_gapnet_with_normalization() -> None:
    torch.manual_seed(0)
    model = gapnet(in_channels=1, num_classes=4)
    result = render(
        model, "features.conv3", channels=[0, 5], size=16, steps=10, lr=0.1, mean=[0.5], std=[0.5]
    )
    assert result.images.shape == (2, 1, 16, 16)
    assert (result.final > result.initial).all()


def _snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: m.training for n, m in model.named_modules()},
        {n: p.requires_grad for n, p in model.named_parameters()},
    )


def _assert_restored(model: nn.Module, snapshot) -> None:
    state, training, grads = snapshot
    after = model.state_dict()
    assert state.keys() == after.keys()
    for k, v in state.items():
        assert torch.equal(v, after[k]), k
    assert {n: m.training for n, m in model.named_modules()} == training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks
    assert all(p.grad is None for p in model.parameters())


def test_model_restored_after_render() -> None:
    model = tiny_net()
    model.train()
    model[1].eval()  # mixed flags must come back as they were
    model[0].weight.requires_grad_(False)
    snapshot = _snapshot(model)
    render(model, ["2:0", "logit:2"], size=16, steps=3)
    _assert_restored(model, snapshot)


class Flaky(nn.Module):
    """Raises on its n-th call (after the dry run)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.calls = 0
        self.fail_at = fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return x


def test_model_restored_when_model_raises() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), Flaky(fail_at=3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    model.train()
    snapshot = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        render(model, "3", channels=[0, 1], size=16, steps=5)
    _assert_restored(model, snapshot)


def test_forward_stops_after_deepest_needed_layer() -> None:
    counter = Flaky(fail_at=-1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), counter, nn.Conv2d(4, 2, 3))
    render(model, "1", channels=[0, 1], size=12, steps=4)
    assert counter.calls == 1  # only the dry run reached it
    render(model, "logit:0", size=12, steps=2)
    assert counter.calls == 1 + 1 + 2 + 1  # + initial, 2 steps, final (no dry run needed)


def test_user_errors() -> None:
    model = tiny_net()
    with pytest.raises(ReporterError, match="Unknown layer 'nope'"):
        render(model, "nope:1", size=8, steps=1)
    with pytest.raises(ReporterError, match="out of range"):
        render(model, "2", channels=[99], size=8, steps=1)
    with pytest.raises(ReporterError, match="optimizer"):
        render(model, "2:0", size=8, steps=1, optimizer="sgd")
    with pytest.raises(ReporterError, match="layer name"):
        render(model, "2:0", channels=[1], size=8, steps=1)
    _assert_restored(model, _snapshot(model))


def test_inplace_relu_layer_is_resolved(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(inplace=True), nn.Conv2d(3, 2, 3))
    with caplog.at_level(logging.WARNING, logger="reporter.nn.layers"):
        result = render(model, "0", channels=[0], size=12, steps=3)
    assert "overwritten in place" in caplog.text
    assert result.images.shape == (1, 1, 12, 12)


def test_progress_callback() -> None:
    calls: list[tuple[int, int]] = []
    render(tiny_net(), "2:0", size=8, steps=3, progress=lambda s, t: calls.append((s, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


# ------------------------------------------------------------- channel order and render size
class Recorder(nn.Module):
    """Keeps the last input it was given (the model's first layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.last: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = x.detach().clone()
        return x


def test_bgr_model_gets_the_image_as_its_preprocessing_gives_it() -> None:
    """RGB image in [0, 1] -> BGR -> mean / std given in BGR order (as the data is fed)."""
    from reporter.data.transforms import Preprocess

    torch.manual_seed(0)
    recorder = Recorder()
    model = nn.Sequential(recorder, nn.Conv2d(3, 4, 3), nn.ReLU())
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 0.125]  # blue, green, red
    result = render(
        model, "2", channels=[0, 1], size=8, steps=2, mean=mean, std=std, channel_order="bgr"
    )
    assert recorder.last is not None  # the final evaluation saw result.images exactly
    data = Preprocess((8, 8), 3, mean, std, channel_order="bgr")
    torch.testing.assert_close(recorder.last, data.normalize(result.images))
    blue = (result.images[:, 2] - 0.1) / 0.5
    torch.testing.assert_close(recorder.last[:, 0], blue)  # the model's channel 0 is blue
    assert result.settings["channel_order"] == "bgr"
    rgb = render(model, "2", channels=[0, 1], size=8, steps=2, mean=mean, std=std)
    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(recorder.last, (rgb.images - mean_t) / std_t)  # rgb: no reorder
    with pytest.raises(ReporterError, match="channel_order"):
        render(model, "2", channels=[0], size=8, steps=1, channel_order="rbg")


def test_bgr_render_optimizes_the_blue_channel_of_the_rgb_image() -> None:
    """A model that reads only its input channel 0 (blue, for a BGR model) makes the render
    brighten the RGB image's blue channel, and leaves red (its channel 2) alone."""
    conv = nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
    model = nn.Sequential(conv, nn.ReLU())
    kwargs = {"size": 8, "steps": 30, "lr": 0.2, "param": "pixel", "transforms": None}
    for order, bright, untouched in (("bgr", 2, 0), ("rgb", 0, 2)):
        result = render(
            model, "1", channels=[0], channel_order=order, decorrelate=False, seed=0, **kwargs
        )
        image = result.images[0]
        assert image[bright].mean() > 0.9, order
        assert image[untouched].mean() < 0.7, order
        assert result.final[0] > result.initial[0]


class NeedsSize(nn.Module):
    """A model's first layer that refuses any input but ``side x side`` (a fixed position
    embedding, an input check)."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.side, self.side):
            raise ValueError(f"this model takes {self.side}x{self.side} images")
        return x


def flatten_head(side: int = 16) -> nn.Sequential:
    """Convolutions, then a flatten and a linear layer that only fit ``side x side`` inputs."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * side * side, 2)
    )


def test_size_error_stops_after_the_layer() -> None:
    from reporter.featvis import size_error

    head = flatten_head()
    head.train()
    snapshot = _snapshot(head)
    assert size_error(head, "1", 8, trace_size=16) is None  # the head after the layer: no matter
    assert size_error(head, "2", 16) is None
    error = size_error(head, "3", 8, trace_size=16)  # the linear layer itself fails at 8x8
    assert error is not None and error.startswith("RuntimeError: ") and "\n" not in error
    guarded = nn.Sequential(NeedsSize(16), *flatten_head())
    assert size_error(guarded, "2", 8, trace_size=16) == (
        "ValueError: this model takes 16x16 images"
    )
    assert size_error(guarded, "2", (16, 16), image_channels=3) is None
    _assert_restored(head, snapshot)
    _assert_restored(guarded, _snapshot(guarded))
    with pytest.raises(ReporterError, match="Unknown layer"):
        size_error(head, "nope", 8, trace_size=16)


def test_render_below_the_input_size_with_trace_size() -> None:
    head = flatten_head()
    with pytest.raises(ReporterError, match="dry run"):  # traced at 8x8: the head fails
        render(head, "1", channels=[0], size=8, steps=1)
    result = render(head, "1", channels=[0, 1], size=8, steps=3, trace_size=16, transforms=None)
    assert result.images.shape == (2, 3, 8, 8) and result.settings["size"] == [8, 8]


def test_fit_size_and_fixed_size_render_a_model_that_needs_its_input_size() -> None:
    from reporter.featvis import fit_size

    free = flatten_head()
    assert fit_size(free, "1", 8, 16) == ((8, 8), None)
    assert fit_size(free, "1", 16, 16) == ((16, 16), None)  # probed at 17x17
    guarded = nn.Sequential(NeedsSize(16), *flatten_head())
    why = (
        "the model does not run up to 2 on a 8x8 image (ValueError: this model takes 16x16 images)"
    )
    assert fit_size(guarded, "2", 8, 16) == ((16, 16), why)
    size, why = fit_size(guarded, "2", (16, 16), (16, 16), image_channels=3)
    assert size == (16, 16) and why is not None and "on a 17x17 image" in why
    with pytest.raises(ValueError, match="16x16"):  # the transforms change the size
        render(guarded, "2", channels=[0], size=16, steps=2)
    result = render(guarded, "2", channels=[0, 1], size=16, steps=4, fixed_size=True)
    assert result.images.shape == (2, 3, 16, 16) and result.settings["fixed_size"] is True
    assert (result.final > result.initial).all()
