"""ShapleyCAM."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from pytorch_grad_cam.base_cam import BaseCAM


class ShapleyCAM(BaseCAM):
    """ShapleyCAM (Cai et al., 2025, "CAMs as Shapley Value-based Explainers", arXiv:2501.06261).

    A second-order Taylor expansion of the score y around the activations A gives each entry
    the Shapley value A * (g - 1/2 H A), with g = dy/dA and H A the Hessian-vector product in
    the direction of A (exact for quadratic y). Hence
    w_k = mean over positions of (g - 1/2 H A)_k;  map = ReLU(sum_k w_k A_k).

    For ReLU networks with a logit target H A is zero and this is Grad-CAM; the paper pairs it
    with ``ClassifierOutputReST`` (logit minus cross-entropy), which is curved. The ``grads``
    this method hands to ``get_cam_weights`` (and keeps in ``activations_and_grads.gradients``)
    are the corrected ``g - 1/2 H A``.
    """

    def _run_model(self, input_tensor: torch.Tensor) -> Any:
        # Fused attention kernels have no double backward: use the plain math one.
        with _math_attention():
            return super()._run_model(input_tensor)

    def _raw_gradients(
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
        self, input_tensor, target_layer, targets, activations, grads
    ) -> torch.Tensor:
        return grads.mean(dim=tuple(range(2, grads.ndim)))


@contextmanager
def _math_attention() -> Iterator[None]:
    """Force ``scaled_dot_product_attention`` onto its twice-differentiable math backend."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch: nothing to switch
        context = nullcontext()
    else:
        context = sdpa_kernel(SDPBackend.MATH)
    with context:
        yield
