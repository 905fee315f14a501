"""Tests for pytorch_grad_cam.utils.find_layers."""

import pytest
import torch
import torch.nn as nn
from torchvision.models import resnet18

from pytorch_grad_cam.utils.find_layers import (
    find_layer_predicate_recursive,
    find_layer_types_recursive,
    replace_all_layer_type_recursive,
    replace_layer_recursive,
)


class MyReLU(nn.ReLU):
    """A subclass, to check exact-type matching."""


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), MyReLU(), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def test_find_layer_types_exact_types_in_order(model):
    relus = find_layer_types_recursive(model, [nn.ReLU])
    assert len(relus) == 2
    assert relus[0] is model[1] and relus[1] is model[2][2]
    convs = find_layer_types_recursive(model, nn.Conv2d)  # a single type is accepted
    assert convs == [model[0], model[2][0]]
    both = find_layer_types_recursive(model, (nn.Linear, MyReLU))
    assert both[0] is model[2][1] and both[1] is model[5]


def test_find_layer_types_excludes_root(model):
    assert find_layer_types_recursive(model, [nn.Sequential]) == [model[2]]


def test_find_layer_predicate(model):
    found = find_layer_predicate_recursive(model, lambda m: isinstance(m, nn.ReLU))
    assert found == [model[1], model[2][1], model[2][2]]
    assert find_layer_predicate_recursive(model, lambda m: False) == []


def test_replace_layer_recursive_by_identity(model):
    old = model[2][0]
    new = nn.Conv2d(4, 4, 1)
    assert replace_layer_recursive(model, old, new) is True
    assert model[2][0] is new
    assert old not in list(model.modules())
    assert replace_layer_recursive(model, old, new) is False  # already gone
    assert model(torch.zeros(1, 3, 5, 5)).shape == (1, 2)


def test_replace_layer_recursive_only_first_occurrence():
    shared = nn.ReLU()
    model = nn.Sequential(shared, nn.Sequential(shared))
    new = nn.Tanh()
    assert replace_layer_recursive(model, shared, new)
    assert model[0] is new and model[1][0] is shared


def test_replace_all_layer_type_recursive(model):
    new = nn.GELU()
    replace_all_layer_type_recursive(model, nn.ReLU, new)
    assert find_layer_predicate_recursive(model, lambda m: isinstance(m, nn.ReLU)) == []
    assert len(find_layer_types_recursive(model, [nn.GELU])) == 3
    assert model[1] is new and model[2][1] is new


def test_resnet18_layers():
    net = resnet18(weights=None)
    # 1 stem conv + 8 basic blocks x 2 convs + 3 downsample convs
    assert len(find_layer_types_recursive(net, [nn.Conv2d])) == 20
    assert len(find_layer_types_recursive(net, [nn.BatchNorm2d])) == 20
    last_block = net.layer4[-1]
    assert find_layer_predicate_recursive(net, lambda m: m is last_block) == [last_block]

    new_conv = nn.Conv2d(512, 512, 3, padding=1, bias=False)
    assert replace_layer_recursive(net, net.layer4[-1].conv2, new_conv)
    assert net.layer4[-1].conv2 is new_conv

    replace_all_layer_type_recursive(net, nn.BatchNorm2d, nn.Identity())
    assert find_layer_types_recursive(net, [nn.BatchNorm2d]) == []
    net.eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 1000)


def test_suggested_target_layer_names_the_families_layer():
    import torchvision
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    from pytorch_grad_cam.utils.find_layers import suggested_target_layer

    tv_vit = torchvision.models.VisionTransformer(32, 8, 1, 2, 16, 16)
    swin = torchvision.models.SwinTransformer([4, 4], 16, [1, 1], [1, 1], [4, 4])
    timm_vit = TimmViT(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    assert suggested_target_layer(resnet18()) == "layer4[-1]"
    assert suggested_target_layer(tv_vit) == (
        "encoder.layers[-1].ln_1 (with reshape_transform=vit_reshape_transform)"
    )
    assert suggested_target_layer(swin) == (
        "features[-1][-1].norm1 (with reshape_transform=swinT_reshape_transform)"
    )
    assert suggested_target_layer(timm_vit).startswith("blocks[-1].norm1 (with")
    assert suggested_target_layer(nn.Sequential(nn.Conv2d(3, 4, 3))) is None
