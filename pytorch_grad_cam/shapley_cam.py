"""ShapleyCAM."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM

# names grad-cam 1.5.7 also exposes from this module
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget as ClassifierOutputTarget


class ShapleyCAM(BaseCAM):
    """ShapleyCAM (Cai et al., 2025, "CAMs as Shapley Value-based Explainers", arXiv:2501.06261).

    A second-order Taylor expansion of the score y around the activations A gives each entry
    the Shapley value A * (g - 1/2 H A), with g = dy/dA and H A the Hessian-vector product in
    the direction of A (exact for quadratic y). Hence
    w_k = mean over positions of (g - 1/2 H A)_k;  map = ReLU(sum_k w_k A_k).

    For ReLU networks with a logit target H A is zero and this is Grad-CAM; the paper pairs it
    with ``ClassifierOutputReST`` (logit minus cross-entropy), which is curved. The gradients
    this method hands to ``get_cam_weights`` (and ``activations_and_grads.gradients``) are the
    corrected ``g - 1/2 H A``. As in grad-cam, ``detach`` is False: an override receives torch
    tensors.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import ShapleyCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST
        >>> model = load_demo_model()
        >>> cam = ShapleyCAM(model, [model.target_layer])
        >>> cam(torch.rand(1, 3, 64, 64), targets=[ClassifierOutputReST(0)]).shape
        (1, 64, 64)
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | Sequence[nn.Module] | None = None,
        reshape_transform: Callable[[Any], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("detach", False)
        super().__init__(model, target_layers, reshape_transform, **kwargs)

    def forward_context(self) -> AbstractContextManager:
        # Fused attention kernels have no double backward: use the plain math one.
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError:  # older torch: nothing to switch
            return nullcontext()
        return sdpa_kernel(SDPBackend.MATH)

    def layer_gradients(
        self, scores: torch.Tensor, tensors: list[torch.Tensor]
    ) -> Sequence[torch.Tensor | None]:
        grads = torch.autograd.grad(scores.sum(), tensors, allow_unused=True, create_graph=True)
        corrected = []
        for tensor, grad in zip(tensors, grads):
            hvp = None
            if grad is not None and grad.requires_grad:  # d(g . A)/dA with A held fixed: H A
                hvp = torch.autograd.grad(
                    grad, tensor, grad_outputs=tensor.detach(), retain_graph=True, allow_unused=True
                )[0]
            corrected.append(
                None if grad is None else grad.detach() - 0.5 * (0 if hvp is None else hvp)
            )
        return corrected

    def get_cam_weights(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: torch.Tensor,
        grads: torch.Tensor,
    ) -> torch.Tensor:
        return grads.mean(dim=tuple(range(2, grads.ndim)))
