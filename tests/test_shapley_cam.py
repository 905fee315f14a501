"""Tests for pytorch_grad_cam.shapley_cam.ShapleyCAM."""

import numpy as np
import torch
import torch.nn as nn
from torch.autograd.functional import hessian

from pytorch_grad_cam import GradCAM, ShapleyCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget


class QuadraticHead(nn.Module):
    """y_k = sum_{c,p} Q[k,c] A_cp^2 + L[k,c] A_cp."""

    def __init__(self, channels, classes):
        super().__init__()
        self.q = nn.Parameter(torch.randn(classes, channels))
        self.lin = nn.Parameter(torch.randn(classes, channels))

    def forward(self, a):
        return (a**2).sum(dim=(2, 3)) @ self.q.T + a.sum(dim=(2, 3)) @ self.lin.T


class TanhHead(nn.Module):
    """y_k = sum_j V[k,j] tanh(<M_j, A>): a curved head with a full Hessian."""

    def __init__(self, size, classes, hidden=3):
        super().__init__()
        self.m = nn.Parameter(torch.randn(hidden, size) * 0.3)
        self.v = nn.Parameter(torch.randn(classes, hidden))

    def forward(self, a):
        return torch.tanh(a.flatten(1) @ self.m.T) @ self.v.T


def _model(head):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    return nn.Sequential(conv, head(3, 4) if head is QuadraticHead else head(3 * 5 * 5, 4))


def _expected(weights, acts):
    cam = (weights[:, :, None, None] * acts).sum(dim=1).clamp_min(0)
    cam = cam - cam.amin(dim=(1, 2), keepdim=True)
    return (cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-7)).numpy()


def test_quadratic_head_by_hand():
    """g = 2QA + L and HA = 2QA, so g - HA/2 = QA + L: w_c = mean_p(Q[k,c] A_cp) + L[k,c]."""
    model = _model(QuadraticHead)
    x = torch.randn(2, 2, 5, 5)
    maps = ShapleyCAM(model, [model[0]])(x, targets=[ClassifierOutputTarget(1)])
    with torch.no_grad():
        acts = model[0](x)
        q, lin = model[1].q[1], model[1].lin[1]
        weights = q * acts.mean(dim=(2, 3)) + lin
    assert np.allclose(maps, _expected(weights, acts), atol=1e-5)


def test_tanh_head_matches_explicit_hessian():
    model = _model(TanhHead)
    x = torch.randn(2, 2, 5, 5)
    maps = ShapleyCAM(model, [model[0]])(x, targets=[ClassifierOutputTarget(2)])
    acts = model[0](x).detach()
    weights = []
    for a in acts:

        def score(flat, a=a):
            return model[1](flat.reshape(1, *a.shape))[0, 2]

        flat = a.flatten()
        grad = torch.autograd.grad(score(flat.requires_grad_()), flat)[0]
        hvp = hessian(score, flat.detach()) @ flat.detach()
        weights.append((grad - 0.5 * hvp).reshape(a.shape).mean(dim=(1, 2)))
    assert np.allclose(maps, _expected(torch.stack(weights).detach(), acts), atol=1e-5)


def test_relu_network_logit_is_grad_cam():
    """Piecewise-linear network and a logit target: zero Hessian, so ShapleyCAM = Grad-CAM."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    x = torch.randn(2, 3, 6, 6)
    shapley = ShapleyCAM(model, [model[0]])(x)
    assert np.allclose(shapley, GradCAM(model, [model[0]])(x), atol=1e-6)
    rest = [ClassifierOutputReST(0)]  # the softmax in ReST is curved: the maps differ
    assert not np.allclose(
        ShapleyCAM(model, [model[0]])(x, rest), GradCAM(model, [model[0]])(x, rest), atol=1e-3
    )


def test_model_unchanged_and_gradients_kept():
    model = _model(QuadraticHead)
    model.train()
    cam = ShapleyCAM(model, [model[0]])
    x = torch.randn(1, 2, 5, 5)
    cam(x, targets=[0])
    assert cam.activations_and_grads.gradients[0].shape == (1, 3, 5, 5)
    assert not cam.activations_and_grads.gradients[0].requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training for m in model.modules())
    cam.release()
    assert all(not m._forward_hooks for m in model.modules())


def test_runs_on_a_vit_with_fused_attention():
    """Fused attention has no double backward; ShapleyCAM must still work on a timm ViT."""
    import timm

    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2, num_classes=4
    )
    cam = ShapleyCAM(model, [model.blocks[-1].norm1], reshape_transform=vit_reshape_transform)
    maps = cam(torch.rand(2, 3, 32, 32), targets=[ClassifierOutputReST(1)])
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all() and maps.max() > 0
