"""Tests for pytorch_grad_cam.utils.find_layers.find_target_layer and target_layers=None."""

import warnings

import pytest
import timm
import torch
import torch.nn as nn
import torchvision.models as tvm
from timm.models.cait import Cait
from timm.models.deit import VisionTransformerDistilled
from timm.models.swin_transformer import SwinTransformer as TimmSwin
from timm.models.vision_transformer import VisionTransformer as TimmViT

from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.find_layers import find_target_layer
from pytorch_grad_cam.utils.reshape_transforms import swinT_reshape_transform


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Real-size models on a shared machine: one intra-op thread avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check_cam_uses_layer(model, size, batch=2):
    """GradCAM with target_layers=None: found layer, non-zero gradient, non-constant maps."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, *size)
    layers, transform = find_target_layer(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # BaseCAM warns on an all-zero gradient
        cam = GradCAM(model)
        maps = cam(x)
    assert cam.target_layers == layers
    assert repr(cam.reshape_transform) == repr(transform)  # the same function and grid
    grads = cam.activations_and_grads.gradients[0]
    assert grads.ndim == 4 and grads.shape[0] == batch
    assert bool(grads.any())
    assert maps.shape == (batch, *size)
    assert all(m.max() - m.min() > 0.5 for m in maps)
    cam.release()
    return cam


# ----------------------------------------------------------------- torchvision CNNs
TORCHVISION_PATHS = [
    ("resnet18", lambda m: m.layer4[-1]),
    ("vgg11", lambda m: m.features[-1]),
    ("densenet121", lambda m: m.features[-1]),
    ("mobilenet_v2", lambda m: m.features[-1]),
    ("mobilenet_v3_small", lambda m: m.features[-1]),
    ("efficientnet_b0", lambda m: m.features[-1]),
    ("convnext_tiny", lambda m: m.features[-1]),
    ("alexnet", lambda m: m.features[-1]),
    ("squeezenet1_1", lambda m: m.features[-1]),
    ("googlenet", lambda m: m.inception5b),
    ("inception_v3", lambda m: m.Mixed_7c),
    ("shufflenet_v2_x0_5", lambda m: m.conv5),
    ("mnasnet0_5", lambda m: m.layers[-1]),
]


@pytest.mark.parametrize("name,expected", TORCHVISION_PATHS)
def test_torchvision_families_structure(name, expected):
    kwargs = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
    with torch.device("meta"):  # structure only: no weights are materialised
        model = getattr(tvm, name)(**kwargs)
    layers, transform = find_target_layer(model)
    assert layers == [expected(model)]
    assert transform is None


def test_regnet_structure():
    model = tvm.regnet_y_400mf(num_classes=3)
    assert find_target_layer(model) == ([model.trunk_output[-1]], None)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "convnext_tiny"])
def test_torchvision_cnn_cam_has_gradient(name):
    model = getattr(tvm, name)(num_classes=5)
    _check_cam_uses_layer(model, (64, 64))


# ----------------------------------------------------------------- transformers
def _tv_vit():
    torch.manual_seed(0)
    model = tvm.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=5,
    )
    nn.init.normal_(model.heads.head.weight)  # torchvision initialises the head to zero
    return model


def test_torchvision_vit_layer_and_transform():
    model = _tv_vit()
    layers, transform = find_target_layer(model)
    assert layers == [model.encoder.layers[-1].ln_1]
    tokens = torch.arange(2 * 17 * 16.0).reshape(2, 17, 16)
    assert torch.equal(transform(tokens), tokens[:, 1:].reshape(2, 4, 4, 16).permute(0, 3, 1, 2))
    _check_cam_uses_layer(model, (32, 32))


def test_vit_last_block_output_has_zero_patch_gradient():
    """Why the last block is avoided: a class-token head gives its patch tokens no gradient."""
    model = _tv_vit()
    _, transform = find_target_layer(model)
    cam = GradCAM(model, [model.encoder.layers[-1]], transform)
    with pytest.warns(RuntimeWarning, match=r"class token.*model.encoder.layers\[-1\].ln_1"):
        maps = cam(torch.randn(1, 3, 32, 32))
    assert not bool(cam.activations_and_grads.gradients[0].any())  # patch tokens only
    assert maps.max() == 0


def test_torchvision_swin_non_default_size():
    torch.manual_seed(0)
    model = tvm.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[1, 1],
        num_heads=[1, 2],
        window_size=[4, 4],
        num_classes=5,
    )
    layers, transform = find_target_layer(model)
    assert layers == [model.features[-1][-1].norm1]
    assert transform is swinT_reshape_transform
    _check_cam_uses_layer(model, (64, 96))


@pytest.mark.parametrize("img_size,grid", [(96, (6, 6)), ((64, 96), (4, 6))])
def test_timm_vit_non_default_size(img_size, grid):
    torch.manual_seed(0)
    model = TimmViT(
        img_size=img_size, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=5
    )
    layers, transform = find_target_layer(model)
    assert layers == [model.blocks[-1].norm1]
    tokens = torch.randn(1, 1 + grid[0] * grid[1], 32)
    assert transform(tokens).shape == (1, 32, *grid)
    size = (img_size, img_size) if isinstance(img_size, int) else img_size
    cam = _check_cam_uses_layer(model, size)
    assert cam.activations_and_grads.activations[0].shape[2:] == grid


def test_timm_vit_dynamic_size_infers_the_grid():
    torch.manual_seed(0)
    model = TimmViT(
        img_size=64,
        patch_size=16,
        embed_dim=32,
        depth=1,
        num_heads=2,
        num_classes=5,
        dynamic_img_size=True,
    )
    _, transform = find_target_layer(model)
    assert transform.keywords == {"num_prefix_tokens": 1}  # grid inferred from the tokens
    cam = _check_cam_uses_layer(model, (96, 96))  # not the 64x64 the model was built for
    assert cam.activations_and_grads.activations[0].shape[2:] == (6, 6)


def test_timm_deit_drops_both_prefix_tokens():
    torch.manual_seed(0)
    model = VisionTransformerDistilled(
        img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=5
    )
    _, transform = find_target_layer(model)
    tokens = torch.arange(18 * 16.0).reshape(1, 18, 16)  # class + distillation + 4x4 patches
    assert torch.equal(transform(tokens), tokens[:, 2:].reshape(1, 4, 4, 16).permute(0, 3, 1, 2))
    _check_cam_uses_layer(model, (32, 32))


def test_timm_cait_blocks_have_no_class_token():
    """CaiT adds its class token after ``blocks``: the grid, not num_prefix_tokens, decides."""
    torch.manual_seed(0)
    model = Cait(
        img_size=32,
        patch_size=8,
        embed_dim=16,
        depth=1,
        num_heads=2,
        num_classes=5,
        depth_token_only=1,
        init_values=1.0,
    )
    assert model.num_prefix_tokens == 1
    layers, transform = find_target_layer(model)
    assert layers == [model.blocks[-1].norm1]
    tokens = torch.arange(16 * 16.0).reshape(1, 16, 16)  # 4x4 patches, no prefix token
    assert torch.equal(transform(tokens), tokens.reshape(1, 4, 4, 16).permute(0, 3, 1, 2))
    _check_cam_uses_layer(model, (32, 32))


def test_timm_swin_non_default_size():
    torch.manual_seed(0)
    model = TimmSwin(
        img_size=(64, 96),
        patch_size=4,
        window_size=4,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(1, 2),
        num_classes=5,
    )
    layers, transform = find_target_layer(model)
    assert layers == [model.layers[-1].blocks[-1].norm1]
    assert transform is swinT_reshape_transform
    _check_cam_uses_layer(model, (64, 96))


# ----------------------------------------------------------------- timm CNNs (feature_info)
@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_timm_cnn_uses_feature_info(name):
    overlay = {"input_size": (3, 64, 64)}  # the size of find_target_layer's dry run
    model = timm.create_model(name, pretrained=False, num_classes=5, pretrained_cfg_overlay=overlay)
    layers, transform = find_target_layer(model)
    assert layers == [model.get_submodule(model.feature_info[-1]["module"])]
    assert transform is None
    _check_cam_uses_layer(model, (64, 64))


# ----------------------------------------------------------------- generic fallback
class TwoConvs(nn.Module):
    """conv1 -> conv2 -> head; ``zero_last`` makes the head ignore conv2 (zero gradient)."""

    def __init__(self, zero_last=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)
        self.zero_last = zero_last

    def forward(self, x):
        a = torch.relu(self.conv1(x))
        b = torch.relu(self.conv2(a))
        feats = a + 0 * b if self.zero_last else b
        return self.fc(feats.mean(dim=(2, 3)))


def test_fallback_picks_last_conv_with_gradient():
    model = TwoConvs()
    assert find_target_layer(model) == ([model.conv2], None)
    model = TwoConvs(zero_last=True)
    assert find_target_layer(model) == ([model.conv1], None)


def test_fallback_sequential_and_container():
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),  # 1x1 map: not a usable target
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    assert find_target_layer(model) == ([model[1]], None)


def test_fallback_leaves_model_unchanged():
    model = TwoConvs()
    model.train()
    model.conv1.weight.requires_grad_(False)
    rng = torch.get_rng_state()
    find_target_layer(model)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(m.training for m in model.modules())
    assert not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_no_convolution_raises():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(ValueError, match="target_layers"):
        find_target_layer(model)


def test_unknown_token_model_raises_with_candidates():
    class Wrapper(nn.Module):  # hides the ViT structure from the known-family rules
        def __init__(self):
            super().__init__()
            self.inner = TimmViT(
                img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=5
            )

        def forward(self, x):
            return self.inner(x)

    with pytest.raises(ValueError, match="reshape_transform") as info:
        find_target_layer(Wrapper())
    assert "inner.blocks.0" in str(info.value)
    assert "inner.patch_embed.proj" in str(info.value)


def test_base_cam_requires_layers_with_a_transform():
    with pytest.raises(ValueError, match="target_layers is required"):
        GradCAM(TwoConvs(), None, reshape_transform=swinT_reshape_transform)
