"""Deep Feature Factorization: the torch NMF, dff, DeepFeatureFactorization, run_dff_on_image."""

import numpy as np
import pytest
import torch
from PIL import Image
from snapshot import expect_clean_error
from torch import nn

from pytorch_grad_cam import DeepFeatureFactorization, run_dff_on_image
from pytorch_grad_cam.feature_factorization.deep_feature_factorization import dff, nmf


def planted(rows=40, cols=300, k=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(rows, k, generator=gen) * (torch.rand(rows, k, generator=gen) < 0.5)
    h = torch.rand(k, cols, generator=gen) * (torch.rand(k, cols, generator=gen) < 0.5)
    return w, h


def test_nmf_recovers_a_planted_factorisation():
    w, h = planted()
    x = w @ h
    W, H = nmf(x, 4, max_iter=500, tol=0)
    assert W.shape == (40, 4) and H.shape == (4, 300) and W.min() >= 0 and H.min() >= 0
    assert float((x - W @ H).norm() / x.norm()) < 1e-3
    # the same factors up to the order and scale of the components
    wn, Wn = w / w.norm(dim=0), W / W.norm(dim=0)
    assert (Wn.T @ wn).amax(dim=0).min() > 0.99


def test_nmf_is_deterministic_and_leaves_the_global_random_state_alone():
    x = torch.rand(30, 20, generator=torch.Generator().manual_seed(4))
    state = torch.get_rng_state()
    first, again = nmf(x, 3), nmf(x, 3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


@pytest.mark.filterwarnings("ignore:Maximum number of iterations")
def test_nmf_error_is_within_5_percent_of_scikit_learn():
    sklearn = pytest.importorskip("sklearn.decomposition")
    torch.manual_seed(0)
    layer = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU()
    )
    acts = layer(torch.rand(4, 3, 12, 12)).detach()  # non-negative, like a ReLU layer's
    x = acts.transpose(0, 1).reshape(64, -1)
    for k in (2, 5):
        reference = sklearn.NMF(n_components=k, init="random", random_state=0, max_iter=200)
        w_ref = reference.fit_transform(x.numpy())
        error_ref = np.linalg.norm(x.numpy() - w_ref @ reference.components_)
        W, H = nmf(x, k)
        assert float((x - W @ H).norm()) <= 1.05 * error_ref


def test_dff_shapes_shift_and_kinds():
    gen = torch.Generator().manual_seed(1)
    acts = torch.randn(2, 6, 3, 4, generator=gen)  # signed: shifted per channel
    concepts, explanations = dff(acts, n_components=2)
    assert isinstance(concepts, torch.Tensor) and concepts.shape == (6, 2)
    assert explanations.shape == (2, 2, 3, 4) and explanations.min() >= 0
    rows = acts.transpose(0, 1).reshape(6, -1)
    shift = rows.amin(dim=1, keepdim=True)
    reconstruction = (concepts - shift) @ explanations.transpose(0, 1).reshape(2, -1) + shift
    best_rank2 = torch.linalg.svdvals(rows - shift)[2:].norm()  # no rank-2 fit does better
    assert float((rows - reconstruction).norm()) >= float(best_rank2) - 1e-4
    assert float((rows - reconstruction).norm()) < float((rows - shift).norm())
    c_np, e_np = dff(acts.numpy(), n_components=2)
    assert isinstance(c_np, np.ndarray) and c_np.dtype == np.float32
    np.testing.assert_allclose(c_np, concepts.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="n_components must be between 1 and"):
        dff(acts, n_components=7)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU()
        )
        self.fc = nn.Linear(12, 5)
        self.config = type("Config", (), {"id2label": {i: f"class{i}" for i in range(5)}})()

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_deep_feature_factorization_leaves_the_model_as_it_was():
    model = Net().train()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    concepts, explanations, scores = DeepFeatureFactorization(
        model, model.features[-1], computation_on_concepts=model.fc
    )(x, n_components=3)
    assert concepts.shape == (12, 3) and concepts.dtype == np.float32
    assert isinstance(explanations, list) and len(explanations) == 2
    assert all(e.shape == (3, 16, 16) and e.min() >= 0 and e.max() <= 1 for e in explanations)
    with torch.no_grad():
        np.testing.assert_allclose(
            scores, model.fc(torch.from_numpy(concepts.T)).numpy(), atol=1e-5
        )
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    two = DeepFeatureFactorization(model, model.features[-1])(x, n_components=3)
    assert len(two) == 2


def test_bad_arguments_are_named():
    model = Net()
    with pytest.raises(ValueError, match="target_layer must be a submodule"):
        DeepFeatureFactorization(model, nn.Conv2d(3, 3, 1))
    factorize = DeepFeatureFactorization(model, model.features[-1])
    with pytest.raises(ValueError, match=r"input_tensor must be a batch of shape \(B, C, H, W\)"):
        factorize(torch.rand(3, 16, 16))
    assert not any(m._forward_hooks for m in model.modules())


def test_run_dff_on_image_draws_image_and_legend():
    model = Net()
    img = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    tensor = torch.from_numpy(img.transpose(2, 0, 1)).float() / 255
    picture = run_dff_on_image(
        model, model.features[-1], model.fc, Image.fromarray(img), tensor, n_components=3
    )
    assert picture.dtype == np.uint8 and picture.shape == (16, 48, 3)
    np.testing.assert_array_equal(picture[:, :16], img)  # the image, then the overlay
    assert (picture[:, 32:] == 255).mean() > 0.5  # a white legend panel


# ----------------------------------------------------------------------------- bad inputs


def _bad_batch(kind):
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    if kind == "uint8":
        return (x * 255).to(torch.uint8)
    if kind == "nan":
        x[1, 0, 3, 3] = float("nan")
    return x[:0] if kind == "empty" else x


@pytest.mark.parametrize(
    "kind, error, match",
    [
        ("uint8", TypeError, "dtype torch.uint8.*convert and normalise"),
        ("nan", ValueError, r"input_tensor contains NaN or Inf values \(image 1\)"),
        ("empty", ValueError, "input_tensor is an empty batch"),
    ],
)
def test_bad_batches_get_the_shared_clear_errors(kind, error, match):
    model = Net()
    factorize = DeepFeatureFactorization(model, model.features[-1], None, model.fc)
    expect_clean_error(model, lambda: factorize(_bad_batch(kind), n_components=2), error, match)


class Overflow(nn.Module):
    """Overflows (Inf) for the second image of the batch only."""

    def forward(self, x):
        scale = torch.ones(len(x), 1, 1, 1)
        scale[1:] = float("inf")
        return x * scale


def test_non_finite_activations_name_the_image():
    model = Net()
    model.features.append(Overflow())
    x = torch.rand(2, 3, 16, 16)
    factorize = DeepFeatureFactorization(model, model.features[-1])
    expect_clean_error(
        model,
        lambda: factorize(x, n_components=2),
        RuntimeError,
        r"output of target_layer contains NaN or Inf for image 1, although the input is finite",
    )
    with pytest.raises(ValueError, match=r"activations contain NaN or Inf \(image 1\)"):
        dff(torch.stack([torch.rand(4, 2, 2), torch.full((4, 2, 2), float("nan"))]), 2)
    with pytest.raises(ValueError, match="activations are an empty batch"):
        dff(torch.rand(0, 4, 2, 2), 2)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated
def test_torchscript_models_are_rejected_at_construction():
    model = Net().eval()
    scripted = torch.jit.trace(model, torch.rand(1, 3, 16, 16))
    with pytest.raises(TypeError, match="TorchScript module"):
        DeepFeatureFactorization(scripted, scripted.features)
    model.features = torch.jit.script(model.features)
    with pytest.raises(TypeError, match=r"target_layers\[0\] is inside a TorchScript module"):
        DeepFeatureFactorization(model, model.features)
