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

from pytorch_grad_cam._checks import checked_batch, class_index, warn

# names grad-cam 1.5.7 also exposes from this module
from pytorch_grad_cam.utils.find_layers import (
    replace_all_layer_type_recursive as replace_all_layer_type_recursive,
)


class GuidedBackpropReLU(torch.autograd.Function):
    """``relu(x)`` whose backward keeps positive gradients where ``x > 0``.

    Use ``GuidedBackpropReLU.apply(x)``, or the ``GuidedBackpropReLUasModule`` layer.

    Example:
        >>> import torch
        >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
        >>> GuidedBackpropReLU.apply(x).mul(torch.tensor([5.0, 5.0, -5.0])).sum().backward()
        >>> x.grad  # only positive gradients, only where x > 0
        tensor([0., 5., 0.])
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
    """A ReLU layer with the guided backward rule (``GuidedBackpropReLU``).

    Example:
        >>> import torch
        >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
        >>> GuidedBackpropReLUasModule()(x).backward(torch.tensor([5.0, -1.0, 4.0]))
        >>> x.grad  # only positive gradients, only where the input was positive
        tensor([0., 0., 4.])
    """

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

    Example:
        >>> import torch
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model = load_demo_model()
        >>> saliency = GuidedBackpropReLUModel(model)(torch.rand(1, 3, 64, 64), target_category=0)
        >>> saliency.shape  # (H, W, C) for one image, as grad-cam returns it
        (64, 64, 3)
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device | None = None,
        use_cuda: bool | None = None,
    ) -> None:
        if isinstance(device, bool) or not isinstance(device, (str, torch.device, type(None))):
            raise TypeError(
                "device must be a str or torch.device, e.g. 'cuda' or 'cpu'; got "
                f"{type(device).__name__} {device!r} (the second argument is the device: the "
                "old use_cuda flag is the keyword use_cuda=..., deprecated for device=)"
            )
        if use_cuda is not None:
            warnings.warn(
                "use_cuda is deprecated; pass device='cuda' instead",
                DeprecationWarning,
                stacklevel=2,
            )
            if device is None and use_cuda:
                if torch.cuda.is_available():
                    device = "cuda"
                else:
                    warnings.warn(
                        "use_cuda=True but CUDA is not available; using the CPU", stacklevel=2
                    )
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else "cpu"
        self.model = model
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={str(device)!r} but CUDA is not available here; pass device='cpu', "
                "or leave device out to run on the model's device"
            )

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
        _check_not_scripted(self.model)
        wanted = self._requested(target_category)
        if isinstance(input_img, np.ndarray):
            input_img = torch.from_numpy(input_img)
        x = checked_batch(input_img, self.model, "input_img", ndims=(4,))
        x = x.detach().to(self.device).requires_grad_(True)
        if not len(x):
            return np.zeros((0, *x.shape[2:], x.shape[1]), dtype=np.float32)
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        try:
            with torch.enable_grad(), _GuidedReLUMode():
                output = self.model(x)
                cats = self._categories(output, wanted)
                score = output[torch.arange(len(cats), device=output.device), cats].sum()
                (grad,) = torch.autograd.grad(score, x)
        finally:
            for module, training in modes.items():
                module.training = training
        result = grad.detach().cpu().float().numpy().transpose(0, 2, 3, 1)
        return result[0] if result.shape[0] == 1 else result

    @staticmethod
    def _requested(target_category: Any) -> int | list[int] | None:
        """``target_category`` as None, one class index or a list of them (integers only)."""
        if target_category is None:
            return None
        categories: Any = target_category
        if isinstance(categories, (torch.Tensor, np.ndarray)) and categories.ndim == 1:
            categories = list(categories)
        if isinstance(categories, (list, tuple)):
            return [class_index(c, f"target_category[{i}]") for i, c in enumerate(categories)]
        return class_index(categories, "target_category")

    @staticmethod
    def _categories(output: torch.Tensor, wanted: int | list[int] | None) -> torch.Tensor:
        if output.ndim != 2:
            raise ValueError(
                "GuidedBackpropReLUModel needs a model returning (B, num_classes) scores; "
                f"got an output of shape {tuple(output.shape)}"
            )
        batch, num_classes = output.shape
        if wanted is None:
            return output.argmax(dim=-1)
        cats = [wanted] * batch if isinstance(wanted, int) else wanted
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


def _check_not_scripted(model: nn.Module) -> None:
    """TorchScript runs ReLUs where the guided rule cannot reach: an error for a scripted
    model, a warning for scripted parts."""
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            f"model is a TorchScript module ({type(model).__name__}), which "
            "GuidedBackpropReLUModel does not support: its ReLUs run inside TorchScript, where "
            "the guided backward rule cannot be applied. Pass the original nn.Module"
        )
    scripted = [n for n, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)]
    if scripted:
        warn(
            f"model has TorchScript parts ({', '.join(scripted[:3])}): their ReLUs keep the "
            "ordinary backward, so the result there is a plain gradient, not guided "
            "backpropagation"
        )
