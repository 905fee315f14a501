"""RefineCAM: map = minmax(prod_l M_l), M_l = the base method's normalised map at layer l."""

import numpy as np
import pytest
import torch
from conftest import make_two_layer_case, minmax, postprocess, project
from torch import nn

from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, RefineCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


def grad_cam_raw(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    return (grads.mean(axis=(2, 3), keepdims=True) * acts).sum(axis=1)


@pytest.mark.parametrize("targets", ["per-image", None])
def test_matches_numpy_oracle_with_grad_cam(targets):
    case = make_two_layer_case(targets=targets)
    size = tuple(case.x.shape[2:])
    # each layer alone, as a one-layer Grad-CAM returns it, then the product
    layer_maps = [postprocess([grad_cam_raw(a, g)], size) for a, g in zip(case.acts, case.grads)]
    expected = minmax(np.prod(layer_maps, axis=0))
    got = RefineCAM(case.model, case.layers, base_method=GradCAM)(case.x, case.targets)
    assert got.dtype == np.float32 and got.shape == (2, *size)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_equals_the_product_of_one_layer_cams_for_any_base_method():
    case = make_two_layer_case()
    for method in (GradCAMPlusPlus, EigenCAM, ScoreCAM):
        kwargs = {"progress": False} if method is ScoreCAM else {}
        singles = [
            method(case.model, [layer], **kwargs)(case.x, case.targets) for layer in case.layers
        ]
        refined = RefineCAM(case.model, case.layers, base_method=method, **kwargs)
        np.testing.assert_allclose(
            refined(case.x, case.targets), minmax(singles[0] * singles[1]), atol=1e-5
        )


def test_one_forward_pass_for_all_layers():
    case = make_two_layer_case()
    calls = []
    handle = case.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        RefineCAM(case.model, case.layers)(case.x, case.targets)
    finally:
        handle.remove()
    assert len(calls) == 1
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in case.model.modules())


def test_eigen_smooth_reaches_the_base_method():
    case = make_two_layer_case()
    refine = RefineCAM(case.model, case.layers, base_method=GradCAM)
    size = tuple(case.x.shape[2:])
    layer_maps = [
        postprocess([project(g.mean(axis=(2, 3), keepdims=True) * a)], size)
        for a, g in zip(case.acts, case.grads)
    ]
    np.testing.assert_allclose(
        refine(case.x, case.targets, eigen_smooth=True),
        minmax(np.prod(layer_maps, axis=0)),
        atol=1e-5,
    )


def test_compute_stays_in_torch_and_bad_base_method_is_named():
    case = make_two_layer_case()
    maps = RefineCAM(case.model, case.layers).compute(case.x, case.targets)
    assert isinstance(maps, torch.Tensor) and maps.shape == (2, 8, 12)
    with pytest.raises(TypeError, match="base_method must be a BaseCAM subclass"):
        RefineCAM(case.model, case.layers, base_method=GradCAM(case.model, case.layers))


def test_a_zero_gradient_is_told_in_refine_cams_terms():
    from snapshot import expect_clean_warning

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    ).eval()
    with torch.no_grad():
        model[4].weight.zero_()  # the scores do not change with the layers: zero gradients
    got = expect_clean_warning(
        model,
        lambda: RefineCAM(model, [model[0], model[1]], base_method=GradCAM)(
            torch.rand(2, 3, 10, 10), [ClassifierOutputTarget(1)]
        ),
        r"the gradient of the targets at target_layers\[\d\] .* is exactly zero",
    )
    assert got.max() == 0
