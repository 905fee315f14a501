"""Guided backpropagation: exact values, batching, and leaving the model untouched."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from snapshot import expect_clean_error
from torch import nn

from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel

SHAPE = (2, 3, 2)  # (C, H, W) of the toy inputs


class FunctionalMLP(nn.Module):
    """Linear -> relu -> Linear -> relu -> Linear, with the relus written in various ways."""

    def __init__(self, style: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(int(np.prod(SHAPE)), 8)
        self.fc2 = nn.Linear(8, 6)
        self.fc3 = nn.Linear(6, 4)
        self.style = style
        self.act = nn.ReLU(inplace=style == "module_inplace")

    def relu(self, h: torch.Tensor) -> torch.Tensor:
        if self.style.startswith("module"):
            return self.act(h)
        if self.style == "F.relu":
            return F.relu(h)
        if self.style == "F.relu_inplace":
            return F.relu(h, inplace=True)
        if self.style == "torch.relu":
            return torch.relu(h)
        if self.style == "method":
            return h.relu()
        h.relu_()  # "method_inplace": the return value is ignored on purpose
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.fc1(x.flatten(1)))
        return self.fc3(self.relu(self.fc2(h)))


def guided_by_hand(model: FunctionalMLP, x: torch.Tensor, category: int) -> np.ndarray:
    """The guided gradient of one image, computed with explicit matrices."""
    w1, w2, w3 = (m.weight.detach().double() for m in (model.fc1, model.fc2, model.fc3))
    b1, b2 = model.fc1.bias.detach().double(), model.fc2.bias.detach().double()
    v = x.flatten().double()
    h1 = w1 @ v + b1
    h2 = w2 @ h1.clamp(min=0) + b2
    g = w3[category].clamp(min=0) * (h2 > 0)
    g = (w2.T @ g).clamp(min=0) * (h1 > 0)
    return (w1.T @ g).reshape(SHAPE).permute(1, 2, 0).numpy()


def plain_by_hand(model: FunctionalMLP, x: torch.Tensor, category: int) -> np.ndarray:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x[None])[0, category], x)
    return g.permute(1, 2, 0).numpy()


STYLES = [
    "module",
    "module_inplace",
    "F.relu",
    "F.relu_inplace",
    "torch.relu",
    "method",
    "method_inplace",
]


@pytest.mark.parametrize("style", STYLES)
def test_matches_hand_computed_guided_gradient(style: str) -> None:
    model = FunctionalMLP(style).eval()
    x = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(1))
    gb = GuidedBackpropReLUModel(model)
    differs = False
    for i in range(len(x)):
        for category in range(4):
            got = gb(x[i : i + 1], target_category=category)
            assert got.shape == (SHAPE[1], SHAPE[2], SHAPE[0]) and got.dtype == np.float32
            expected = guided_by_hand(model, x[i], category)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
            differs |= not np.allclose(expected, plain_by_hand(model, x[i], category), atol=1e-4)
    assert differs, "the toy model should tell guided from plain gradients"


def test_target_category_forms() -> None:
    model = FunctionalMLP("module").eval()
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(2))
    gb = GuidedBackpropReLUModel(model)
    cats = [3, 0, 2, 1]
    batch = gb(x, target_category=cats)
    assert batch.shape == (4, SHAPE[1], SHAPE[2], SHAPE[0])
    for i, c in enumerate(cats):
        np.testing.assert_allclose(batch[i], guided_by_hand(model, x[i], c), rtol=1e-4, atol=1e-6)
    same = gb(x, target_category=2)
    for i in range(4):
        np.testing.assert_allclose(same[i], guided_by_hand(model, x[i], 2), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        top = model(x).argmax(1).tolist()
    np.testing.assert_allclose(gb(x), gb(x, target_category=top))
    expect_clean_error(model, lambda: gb(x, target_category=[0, 1]), ValueError, "2 entries")


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def test_batch_matches_single_images() -> None:
    model = small_cnn().train()  # the call must use eval-mode batch norm
    x = torch.randn(3, 3, 12, 10)
    gb = GuidedBackpropReLUModel(model)
    batch = gb(x, target_category=[1, 4, 0])
    assert batch.shape == (3, 12, 10, 3)
    for i, c in enumerate([1, 4, 0]):
        np.testing.assert_allclose(batch[i], gb(x[i : i + 1], c), rtol=1e-4, atol=1e-7)


def _hooks(model: nn.Module) -> list:
    names = [n for n in vars(nn.Module()) if n.endswith("hooks") or "hooks_" in n]
    return [(m, n, dict(getattr(m, n))) for m in model.modules() for n in names]


def test_model_left_untouched() -> None:
    model = small_cnn().train()
    model[1].eval()  # mixed train/eval flags must come back as they were
    modules = [(name, id(m), type(m)) for name, m in model.named_modules()]
    inplace = [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    training = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hooks(model)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    x_before = x.detach().clone()

    GuidedBackpropReLUModel(model)(x)

    assert [(name, id(m), type(m)) for name, m in model.named_modules()] == modules
    assert [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)] == inplace
    assert [m.training for m in model.modules()] == training
    assert _hooks(model) == hooks
    after = model.state_dict()
    assert after.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(after[k], v), k
    assert x.grad is None and x.requires_grad and torch.equal(x.detach(), x_before)
    assert all(p.grad is None for p in model.parameters())


def test_works_under_no_grad_and_plain_forward_after() -> None:
    model = small_cnn().eval()
    x = torch.randn(1, 3, 8, 8)
    gb = GuidedBackpropReLUModel(model)
    with torch.no_grad():
        got = gb(x, 2)
    np.testing.assert_allclose(got, gb(x, 2))
    assert np.abs(got).sum() > 0
    # After the call, ReLUs backpropagate normally again.
    xr = x.clone().requires_grad_(True)
    model(xr)[0, 2].backward()
    assert xr.grad is not None


def test_device_and_deprecated_use_cuda() -> None:
    model = small_cnn()
    assert GuidedBackpropReLUModel(model).device == torch.device("cpu")
    assert GuidedBackpropReLUModel(model, device="cpu").device == torch.device("cpu")
    with pytest.warns(DeprecationWarning):
        gb = GuidedBackpropReLUModel(model, use_cuda=False)
    assert gb.device == torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GuidedBackpropReLUModel(model, device=None)


def test_a_device_without_cuda_or_a_bool_device_is_named(monkeypatch) -> None:
    model = small_cnn()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", torch.device("cuda:0")):
        expect_clean_error(
            model,
            lambda device=device: GuidedBackpropReLUModel(model, device=device),
            ValueError,
            r"device='cuda(:0)?' but CUDA is not available here; pass device='cpu'",
        )
    expect_clean_error(
        model,
        lambda: GuidedBackpropReLUModel(model, True),
        TypeError,
        "device must be a str or torch.device.*got bool True .*use_cuda",
    )
    with pytest.warns(UserWarning, match="use_cuda=True but CUDA is not available; using the CPU"):
        gb = GuidedBackpropReLUModel(model, use_cuda=True)
    assert gb.device == torch.device("cpu")


def test_resnet18_output_shape() -> None:
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 48)
    out = GuidedBackpropReLUModel(model)(x)
    assert out.shape == (64, 48, 3) and out.dtype == np.float32
    assert np.isfinite(out).all() and np.abs(out).sum() > 0
    assert GuidedBackpropReLUModel(model)(torch.randn(2, 3, 32, 32), 7).shape == (2, 32, 32, 3)


def test_bad_target_category_and_output_shape_are_named() -> None:
    model = FunctionalMLP("module").eval()  # 4 classes
    x = torch.randn(2, *SHAPE)
    gb = GuidedBackpropReLUModel(model)
    for bad in (4, -1, [0, 4]):
        expect_clean_error(
            model,
            lambda bad=bad: gb(x, target_category=bad),
            IndexError,
            "target_category .* out of range .* 4 classes",
        )
    expect_clean_error(
        model,
        lambda: gb(x, target_category=[0, 1, 2]),
        ValueError,
        "target_category has 3 entries for a batch of 2",
    )
    scalar_per_image = nn.Sequential(model, nn.Flatten(0))  # (B * 4,): not (B, num_classes)
    expect_clean_error(
        scalar_per_image,
        lambda: GuidedBackpropReLUModel(scalar_per_image)(x),
        ValueError,
        r"\(B, num_classes\) scores; got .* \(8,\)",
    )


def test_inplace_relu_on_the_input_leaves_the_callers_tensor_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(12, 3)).eval()
    x = torch.randn(2, *SHAPE)
    x_before = x.clone()
    got = GuidedBackpropReLUModel(model)(x, target_category=[2, 0])
    assert torch.equal(x, x_before)
    w = model[2].weight.detach()
    for i, c in enumerate([2, 0]):  # d/dx of w_c . relu(x), positive gradients only
        expected = (w[c].clamp(min=0) * (x[i].flatten() > 0)).reshape(SHAPE).permute(1, 2, 0)
        np.testing.assert_allclose(got[i], expected.numpy(), rtol=1e-6)


def test_float_categories_are_rejected_and_integer_scalars_accepted() -> None:
    model = FunctionalMLP("module").eval()
    x = torch.randn(2, *SHAPE)
    gb = GuidedBackpropReLUModel(model)
    for bad, name in ((2.7, "target_category"), ([1.5, 2], r"target_category\[0\]")):
        expect_clean_error(
            model,
            lambda bad=bad: gb(x, target_category=bad),
            TypeError,
            rf"{name} must be an integer class index",
        )
    expected = gb(x, target_category=[1, 2])
    for same in ([np.int64(1), torch.tensor(2)], np.array([1, 2]), torch.tensor([1, 2])):
        np.testing.assert_array_equal(gb(x, target_category=same), expected)
    np.testing.assert_array_equal(gb(x, np.int64(3)), gb(x, 3))


def test_bad_inputs_are_named_and_an_empty_batch_is_empty() -> None:
    model = FunctionalMLP("module").eval()
    gb = GuidedBackpropReLUModel(model)
    x = torch.randn(2, *SHAPE)
    expect_clean_error(
        model, lambda: gb((x * 100).to(torch.uint8)), TypeError, "input_img has dtype torch.uint8"
    )
    x[1, 0, 0, 0] = float("nan")
    expect_clean_error(
        model, lambda: gb(x), ValueError, r"input_img contains NaN or Inf values \(image 1\)"
    )
    empty = gb(torch.randn(0, *SHAPE))
    assert empty.shape == (0, 3, 2, 2) and empty.dtype == np.float32
    np.testing.assert_array_equal(gb(x[:1].numpy()), gb(x[:1]))  # numpy input still works


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated
def test_torchscript_models_are_rejected_and_scripted_parts_warned_about() -> None:
    model = FunctionalMLP("module").eval()
    x = torch.randn(2, *SHAPE)
    traced = torch.jit.trace(model, x)
    expect_clean_error(
        traced,
        lambda: GuidedBackpropReLUModel(traced)(x),
        TypeError,
        "TorchScript module .*guided backward rule",
    )
    part = nn.Sequential(torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(12, 4))))
    with pytest.warns(RuntimeWarning, match="TorchScript parts .*plain gradient"):
        GuidedBackpropReLUModel(part)(x)
