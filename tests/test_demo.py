"""The offline demo: shape generator, shipped model, and Grad-CAM localisation on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytorch_grad_cam.demo import (
    DEMO_CLASSES,
    WEIGHTS_PATH,
    DemoCNN,
    load_demo_model,
    make_shapes_batch,
    make_shapes_image,
)


@pytest.fixture(scope="module")
def model() -> DemoCNN:
    return load_demo_model()


def test_generator_is_deterministic() -> None:
    a = make_shapes_image(np.random.default_rng(3))
    b = make_shapes_image(np.random.default_rng(3))
    c = make_shapes_image(np.random.default_rng(4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
    for k in (0, 1):
        np.testing.assert_array_equal(a[1][k], b[1][k])
    assert not np.array_equal(a[0], c[0])
    xa, ya, ma = make_shapes_batch(np.random.default_rng(5), 8)
    xb, yb, mb = make_shapes_batch(np.random.default_rng(5), 8)
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ma, mb)


@pytest.mark.parametrize("classes", [(0, 1), (1, 0), (0,), (1,), ()])
def test_masks_match_drawn_shapes(classes: tuple) -> None:
    for seed in range(20):
        img, masks, labels = make_shapes_image(np.random.default_rng(seed), classes)
        # The background is drawn first, so the same seed with no shapes gives it alone.
        background, empty, _ = make_shapes_image(np.random.default_rng(seed), ())
        assert img.shape == (64, 64, 3) and img.dtype == np.float32
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert set(masks) == {0, 1} and not any(m.any() for m in empty.values())
        np.testing.assert_array_equal(labels, [float(k in classes) for k in (0, 1)])
        assert not (masks[0] & masks[1]).any()
        union = masks[0] | masks[1]
        np.testing.assert_array_equal(img[~union], background[~union])
        contrast = np.linalg.norm(img[union] - background[union], axis=1)
        assert (contrast > 0.15).all()
        for k in (0, 1):
            m = masks[k]
            assert m.any() == (k in classes)
            if not m.any():
                continue
            rows, cols = np.nonzero(m)
            box = m[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            assert m.sum() > 100
            if k == 1:  # a filled square fills its bounding box
                assert box.all() and abs(box.shape[0] - box.shape[1]) <= 1
            else:  # a pixelated disc fills about pi/4 of it
                assert 0.65 < box.mean() < 0.9


def test_batch_helper() -> None:
    x, y, m = make_shapes_batch(np.random.default_rng(0), 64)
    assert x.shape == (64, 3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (64, 2) and y.dtype == torch.float32
    assert m.shape == (64, 2, 64, 64) and m.dtype == torch.bool
    assert torch.equal(m.flatten(2).any(2).float(), y)
    assert {tuple(r) for r in y.tolist()} == {(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)}
    _, y_both, _ = make_shapes_batch(np.random.default_rng(0), 8, classes=(0, 1))
    assert bool((y_both == 1).all())


def test_model_size_and_output(model: DemoCNN) -> None:
    assert WEIGHTS_PATH.stat().st_size < 1_000_000
    n_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert n_bytes < 1_000_000
    assert len(DEMO_CLASSES) == 2
    assert not model.training
    assert model.target_layer is model.features[-1]
    with torch.no_grad():
        out = model(torch.rand(3, 3, 64, 64))
    assert out.shape == (3, 2)


def test_model_detects_presence(model: DemoCNN) -> None:
    x, y, _ = make_shapes_batch(np.random.default_rng(2024), 400)
    with torch.no_grad():
        pred = model(x) > 0
    accuracy = (pred == y.bool()).all(dim=1).float().mean().item()
    assert accuracy >= 0.95


def test_gradcam_localises_each_shape(model: DemoCNN) -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    n = 200
    x, _, masks = make_shapes_batch(np.random.default_rng(77), n, classes=(0, 1))
    masks = masks.numpy()
    with GradCAM(model=model, target_layers=[model.target_layer]) as cam:
        for k in (0, 1):
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(k)] * n)
            assert maps.shape == (n, 64, 64) and maps.dtype == np.float32
            assert maps.min() >= 0.0 and maps.max() <= 1.0
            own, other = masks[:, k], masks[:, 1 - k]
            mass_ok = (maps * own).sum((1, 2)) > (maps * other).sum((1, 2))
            peak_ok = (maps * own).max((1, 2)) > (maps * other).max((1, 2))
            assert mass_ok.mean() >= 0.95, f"class {k}: mass on own shape in {mass_ok.mean():.0%}"
            assert peak_ok.mean() >= 0.95, f"class {k}: peak on own shape in {peak_ok.mean():.0%}"


def test_training_script_is_seeded_and_matches_the_shipped_architecture(model: DemoCNN) -> None:
    from pytorch_grad_cam.demo.train import presence_accuracy, train

    a = train(steps=2, batch_size=8, seed=5)
    b = train(steps=2, batch_size=8, seed=5)
    assert isinstance(a, DemoCNN) and not a.training
    shipped = model.state_dict()
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in shipped.items()
    }
    for key, value in a.state_dict().items():  # same seed, same weights
        assert torch.equal(value, b.state_dict()[key]), key
    x, y, _ = make_shapes_batch(np.random.default_rng(9), 100)
    assert presence_accuracy(model, x, y) >= 0.95
