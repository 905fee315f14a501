"""Guided backpropagation (Springenberg et al., 2015, "Striving for Simplicity").

The gradient of a class score with respect to the input image, where every ReLU passes the
gradient back only where its forward input was positive *and* the incoming gradient is
positive. The model is never modified: during the call a :class:`torch.overrides.TorchFunctionMode`
swaps each ReLU evaluation (``nn.ReLU`` modules, ``F.relu``, ``torch.relu``, ``Tensor.relu`` and
their in-place forms) for an equivalent autograd function with the guided backward rule.

Limitations: ReLUs written another way (``clamp(min=0)``, ``torch.maximum(x, 0)``, other
activations) and TorchScript-compiled modules keep their ordinary backward.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

# names grad-cam 1.5.7 also exposes from this module
from pytorch_grad_cam.utils.find_layers import (
    replace_all_layer_type_recursive as replace_all_layer_type_recursive,
)


class GuidedBackpropReLU(torch.autograd.Function):
    """``relu(x)`` whose backward keeps positive gradients where ``x > 0``.

    Use ``GuidedBackpropReLU.apply(x)``, or the ``GuidedBackpropReLUasModule`` layer.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.mask = x > 0
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0) * ctx.mask


class _GuidedReLUInplace(torch.autograd.Function):
    """In-place ``relu_(x)`` with the guided backward rule."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.mask = x > 0
        x.clamp_(min=0)
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0) * ctx.mask


class GuidedBackpropReLUasModule(nn.Module):
    """A ReLU layer with the guided backward rule (``GuidedBackpropReLU``)."""

    def forward(self, input_img: torch.Tensor) -> torch.Tensor:
        return GuidedBackpropReLU.apply(input_img)


_RELU = {F.relu, torch.relu, torch.Tensor.relu}
_RELU_INPLACE = {torch.relu_, torch.Tensor.relu_}


class _GuidedReLUMode(TorchFunctionMode):
    """While active, every ReLU call that needs a gradient uses the guided rule."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _RELU or func in _RELU_INPLACE:
            x = args[0] if args else kwargs.get("input", kwargs.get("self"))
            if isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled():
                inplace = func in _RELU_INPLACE or bool(
                    kwargs.get("inplace", args[1] if len(args) > 1 else False)
                )
                # A leaf (the input image itself) cannot be changed in place under autograd,
                # and it shares memory with the caller's tensor: use the out-of-place form.
                inplace = inplace and not x.is_leaf
                return (_GuidedReLUInplace if inplace else GuidedBackpropReLU).apply(x)
        return func(*args, **kwargs)


class GuidedBackpropReLUModel:
    """Computes guided-backpropagation saliency maps for a classifier.

    Args:
        model: a classifier returning (B, num_classes) scores; it is left unchanged.
        device: device the input is moved to; None uses the device of the model's parameters.
        use_cuda: deprecated; ``True`` means ``device="cuda"``.
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device | None = None,
        use_cuda: bool | None = None,
    ) -> None:
        if use_cuda is not None:
            warnings.warn(
                "use_cuda is deprecated; pass device='cuda' instead",
                DeprecationWarning,
                stacklevel=2,
            )
            if device is None and use_cuda:
                device = "cuda"
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else "cpu"
        self.model = model
        self.device = torch.device(device)

    def forward(self, input_img: torch.Tensor) -> torch.Tensor:
        """Runs the model as is (no guided rule)."""
        return self.model(input_img)

    def recursive_replace_relu_with_guidedrelu(self, module_top: nn.Module) -> None:
        """Replace every ``nn.ReLU`` under ``module_top`` by ``GuidedBackpropReLUasModule``
        (in place; grad-cam's way. ``__call__`` does not need it: it leaves the model as is)."""
        for name, child in module_top._modules.items():
            if isinstance(child, nn.ReLU):
                module_top._modules[name] = GuidedBackpropReLUasModule()
            elif child is not None:
                self.recursive_replace_relu_with_guidedrelu(child)

    def recursive_replace_guidedrelu_with_relu(self, module_top: nn.Module) -> None:
        """Undo ``recursive_replace_relu_with_guidedrelu``: put ``nn.ReLU`` layers back."""
        for name, child in module_top._modules.items():
            if isinstance(child, GuidedBackpropReLUasModule):
                module_top._modules[name] = nn.ReLU()
            elif child is not None:
                self.recursive_replace_guidedrelu_with_relu(child)

    def __call__(
        self, input_img: torch.Tensor, target_category: int | Sequence[int] | None = None
    ) -> np.ndarray:
        """Guided gradient of the target class score with respect to the input.

        Args:
            input_img: images of shape (B, C, H, W).
            target_category: None for each image's top-scoring class, an int for the same
                class in every image, or one class per image.

        Returns:
            float32 array of shape (H, W, C) when B is 1, else (B, H, W, C).
        """
        x = torch.as_tensor(input_img).detach().to(self.device).requires_grad_(True)
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        try:
            with torch.enable_grad(), _GuidedReLUMode():
                output = self.model(x)
                cats = self._categories(output, target_category)
                score = output[torch.arange(len(cats), device=output.device), cats].sum()
                (grad,) = torch.autograd.grad(score, x)
        finally:
            for module, training in modes.items():
                module.training = training
        result = grad.detach().cpu().float().numpy().transpose(0, 2, 3, 1)
        return result[0] if result.shape[0] == 1 else result

    @staticmethod
    def _categories(
        output: torch.Tensor, target_category: int | Sequence[int] | None
    ) -> torch.Tensor:
        if output.ndim != 2:
            raise ValueError(
                "GuidedBackpropReLUModel needs a model returning (B, num_classes) scores; "
                f"got an output of shape {tuple(output.shape)}"
            )
        batch, num_classes = output.shape
        if target_category is None:
            return output.argmax(dim=-1)
        categories: Any = target_category
        if isinstance(categories, torch.Tensor):
            categories = categories.tolist()
        if np.ndim(categories) == 0:
            categories = [categories] * batch
        cats = [int(c) for c in categories]
        if len(cats) != batch:
            raise ValueError(
                f"target_category has {len(cats)} entries for a batch of {batch} images"
            )
        bad = [c for c in cats if not 0 <= c < num_classes]
        if bad:  # checked here: an out-of-range index on CUDA is an unrecoverable device assert
            raise IndexError(
                f"target_category {bad[0]} is out of range for a model with {num_classes} classes"
            )
        return torch.tensor(cats, device=output.device)
