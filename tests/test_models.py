"""End to end on torchvision CNNs and timm transformers (random weights, small inputs)."""

import numpy as np
import pytest
import torch
from torchvision.models import resnet18, vgg11

from pytorch_grad_cam import (
    FEM,
    SESS,
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    RefineCAM,
    SegEigenCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.reshape_transforms import swinT_reshape_transform, vit_reshape_transform

timm = pytest.importorskip("timm")


class FEMk1(FEM):
    """FEM at one standard deviation: the 2 x 2 layers of these small inputs never have a
    value two standard deviations above their mean (at most sqrt(3) for four positions)."""

    def __init__(self, model, target_layers, reshape_transform=None):
        super().__init__(model, target_layers, reshape_transform, k=1)


METHODS = [
    GradCAM,
    HiResCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    XGradCAM,
    LayerCAM,
    EigenGradCAM,
    EigenCAM,
    SegEigenCAM,
    FEMk1,
]
TARGETS = [ClassifierOutputTarget(3), ClassifierOutputTarget(7)]


def images(n: int, size: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(size))


def check(cam: np.ndarray, shape: tuple[int, ...], peak: float = 0.99) -> None:
    assert isinstance(cam, np.ndarray) and cam.dtype == np.float32 and cam.shape == shape
    assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    assert np.all(cam.max(axis=(1, 2)) > peak), "a non-trivial map for every image"


def check_clean(model: torch.nn.Module) -> None:
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


@pytest.fixture(scope="module")
def cnn_models():
    torch.manual_seed(0)
    resnet, vgg = resnet18(weights=None).eval(), vgg11(weights=None, num_classes=10).eval()
    return {"resnet18": (resnet, resnet.layer4[-1]), "vgg11": (vgg, vgg.features[-1])}


@pytest.mark.parametrize("name", ["resnet18", "vgg11"])
@pytest.mark.parametrize("method", METHODS)
def test_torchvision_cnns(cnn_models, name, method):
    model, layer = cnn_models[name]
    x = images(2, 64)
    with method(model, [layer]) as cam:
        got = cam(x, TARGETS)
    check(got, (2, 64, 64))
    check_clean(model)


def test_resnet_two_layers_and_smoothing(cnn_models):
    model, _ = cnn_models["resnet18"]
    x = images(1, 64)
    with GradCAM(model, [model.layer3[-1], model.layer4[-1]]) as cam:
        # the mean of 6 normalised views: its peak may be below 1
        check(cam(x, aug_smooth=True, eigen_smooth=True), (1, 64, 64), peak=0.3)
    check_clean(model)


@pytest.fixture(scope="module")
def vit_models():
    torch.manual_seed(0)
    return {
        name: timm.create_model(name, pretrained=False, img_size=64).eval()
        for name in [
            "vit_tiny_patch16_224",
            "deit_tiny_patch16_224",
            "deit_tiny_distilled_patch16_224",
        ]
    }


@pytest.mark.parametrize(
    "name, method",
    [("vit_tiny_patch16_224", method) for method in METHODS]
    + [("deit_tiny_patch16_224", GradCAM), ("deit_tiny_distilled_patch16_224", GradCAM)],
)
def test_timm_vision_transformers(vit_models, name, method):
    model = vit_models[name]
    with method(model, [model.blocks[-1].norm1], reshape_transform=vit_reshape_transform) as cam:
        got = cam(images(2, 64), TARGETS)
    check(got, (2, 64, 64))
    check_clean(model)


def test_vit_last_block_output_gets_no_gradient_on_patch_tokens(vit_models):
    # The README's warning: only the class token feeds the head, so the patch tokens of the
    # last block's output get zero gradient and Grad-CAM's map is all zero.
    model = vit_models["vit_tiny_patch16_224"]
    cam = GradCAM(model, [model.blocks[-1]], reshape_transform=vit_reshape_transform)
    with pytest.warns(RuntimeWarning, match=r"class token.*model.blocks\[-1\].norm1"):
        assert np.all(cam(images(1, 64), TARGETS[:1]) == 0)


def test_small_timm_swin_transformer_every_method():
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(
        img_size=64, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2), num_classes=10
    ).eval()
    layer = model.layers[-1].blocks[-1].norm1
    x = images(2, 64)
    for method in METHODS:
        with method(model, [layer], reshape_transform=swinT_reshape_transform) as cam:
            check(cam(x, TARGETS), (2, 64, 64))
    check_clean(model)


def test_timm_swin_tiny():
    # The timm Swin-T architecture at 128 px (windows of 4) to keep the test fast.
    torch.manual_seed(0)
    model = timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, img_size=128, window_size=4
    ).eval()
    layer = model.layers[-1].blocks[-1].norm1
    with GradCAM(model, [layer], reshape_transform=swinT_reshape_transform) as cam:
        got = cam(images(1, 128), [ClassifierOutputTarget(281)])
        assert cam.activations_and_grads.activations[0].shape == (1, 768, 4, 4)
    check(got, (1, 128, 128))
    check_clean(model)


# ----------------------------------------------------------------- methods on a base method
@pytest.fixture(scope="module")
def composed_cases(cnn_models, vit_models):
    """name -> (model, two layers for RefineCAM, reshape transform, SESS window size)."""
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    swin = SwinTransformer(
        img_size=64, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2), num_classes=10
    ).eval()
    resnet, vgg = cnn_models["resnet18"][0], cnn_models["vgg11"][0]
    vit = vit_models["vit_tiny_patch16_224"]
    return {
        "resnet18": (resnet, [resnet.layer3[-1], resnet.layer4[-1]], None, 48),
        "vgg11": (vgg, [vgg.features[-6], vgg.features[-1]], None, 64),
        "vit": (vit, [vit.blocks[-2].norm1, vit.blocks[-1].norm1], vit_reshape_transform, 64),
        "swin": (
            swin,
            [swin.layers[-1].blocks[-1].norm1, swin.layers[-1].blocks[-1].norm2],
            swinT_reshape_transform,
            64,
        ),
    }


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "vit", "swin"])
def test_refine_cam_and_sess(composed_cases, name):
    model, layers, transform, window = composed_cases[name]
    x = images(2, 64)
    refined = RefineCAM(model, layers, reshape_transform=transform)(x, TARGETS)
    check(refined, (2, 64, 64))
    sess = SESS(
        model, layers[-1:], reshape_transform=transform, scales=[64, 80], window_size=window,
        step_size=32,
    )  # fmt: skip
    check(sess(x, TARGETS), (2, 64, 64))
    check_clean(model)


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "vit", "swin"])
def test_multilayer_ablation_cam(composed_cases, name):
    from pytorch_grad_cam import AblationLayerVit
    from pytorch_grad_cam.ablation_cam_multilayer import AblationCAM as MultiLayerAblationCAM

    model, layers, transform, _ = composed_cases[name]
    if name == "resnet18":  # the layers must have the same number of channels
        layers = [model.layer4[0], model.layer4[-1]]
    elif name == "vgg11":
        layers = [model.features[-3], model.features[-1]]
    options = {"ablation_layer": AblationLayerVit()} if transform else {}
    x = images(2, 64)
    cam = MultiLayerAblationCAM(
        model, layers, reshape_transform=transform, progress=False, **options
    )
    check(cam(x, TARGETS), (2, 64, 64))
    check_clean(model)


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "vit", "swin"])
def test_deep_feature_factorization(composed_cases, name):
    from pytorch_grad_cam import DeepFeatureFactorization

    model, layers, transform, _ = composed_cases[name]
    dff = DeepFeatureFactorization(model, layers[-1], reshape_transform=transform)
    concepts, explanations = dff(images(2, 64), n_components=3)
    assert concepts.shape[1] == 3 and np.isfinite(concepts).all()
    assert len(explanations) == 2
    for maps in explanations:
        assert maps.shape == (3, 64, 64) and np.isfinite(maps).all()
        assert maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0.99
    check_clean(model)
