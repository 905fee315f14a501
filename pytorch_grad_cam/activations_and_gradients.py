"""Forward hooks that record what the target layers output, and the gradients they get."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from pytorch_grad_cam._outputs import flatten_tensors

__all__ = ["ActivationsAndGradients", "flatten_tensors"]


class ActivationsAndGradients:
    """Records the outputs of ``target_layers`` and the gradients that reach them.

    grad-cam's contract: constructing it attaches the hooks; ``out = aag(x)`` runs the model
    (clearing the records first) and appends each target layer's output, after
    ``reshape_transform``, to ``aag.activations`` in the order the layers run; a later
    backward pass puts the gradients in ``aag.gradients``, each new one in front (so for
    layers run one after the other they end up in the same order as the activations).
    ``detach=False`` keeps the autograd graph of both. ``release()`` removes the hooks.

    Subclasses may override ``__call__``, ``save_activation`` and ``save_gradient``. A CAM
    object makes its own instance with ``attach=False``: nothing is attached to the model
    between calls. Its pipeline registers ``save_activation`` and ``save_gradient`` for the
    duration of each forward pass; called directly (as grad-cam-style ``forward`` overrides
    do), such an instance attaches its hooks for that one model call.

    The hooks hold only a weak reference to this object: dropping it removes them.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
        >>> recorder = ActivationsAndGradients(model, [model[0]])
        >>> out = recorder(torch.rand(1, 3, 8, 8))
        >>> out[:, 0].sum().backward()
        >>> recorder.activations[0].shape, recorder.gradients[0].shape
        (torch.Size([1, 4, 6, 6]), torch.Size([1, 4, 6, 6]))
        >>> recorder.release()
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Callable[[Any], Any] | None = None,
        detach: bool = True,
        *,
        attach: bool = True,
    ) -> None:
        self.model = model
        self.target_layers = list(target_layers)
        self.reshape_transform = reshape_transform
        self.detach = detach
        self.gradients: list[Any] = []
        self.activations: list[Any] = []
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.attach_per_call = not attach  # attach the hooks in each __call__ instead
        if attach:
            self.attach()

    def attach(self) -> None:
        """Register the hooks on the target layers (``release()`` removes them)."""
        ref = weakref.ref(self)
        for layer in self.target_layers:
            self.handles.append(layer.register_forward_hook(_weak_hook(ref, "save_activation")))
            self.handles.append(layer.register_forward_hook(_weak_hook(ref, "save_gradient")))

    def save_activation(self, module: nn.Module, input: Any, output: Any) -> None:
        """Forward hook: append the (reshaped) layer output to ``self.activations``."""
        activation = self._reshape(output)
        self.activations.append(_detached(activation) if self.detach else activation)

    def save_gradient(self, module: nn.Module, input: Any, output: Any) -> None:
        """Forward hook: have the gradient of the layer output put in front of
        ``self.gradients`` when it is computed (nothing if the output needs no gradient)."""
        tensors, rebuild = flatten_tensors(output)
        tracked = [i for i, t in enumerate(tensors) if t.requires_grad]
        if not tracked:
            return
        # (the hooks keep no reference to the tensors they sit on, nor to self: no cycles)
        specs = [(t.shape, t.dtype, t.device) for t in tensors]
        arrived: dict[int, torch.Tensor] = {}
        ref = weakref.ref(self)

        def store(i: int, grad: torch.Tensor) -> None:
            owner = ref()
            arrived[i] = grad
            if owner is None or len(arrived) < len(tracked):
                return
            grads = [arrived.get(i, _zeros(spec)) for i, spec in enumerate(specs)]
            arrived.clear()
            gradient = owner._reshape(rebuild(grads))
            owner.gradients = [_detached(gradient) if owner.detach else gradient, *owner.gradients]

        for i in tracked:
            tensors[i].register_hook(functools.partial(store, i))

    def __call__(self, x: Any) -> Any:
        """Clear the records and run the model on ``x`` (with ``attach=False`` and no hooks
        attached, attaching them for this call: the gradient hooks stay on its outputs)."""
        self.gradients = []
        self.activations = []
        if self.handles or not self.attach_per_call:
            return self.model(x)
        self.attach()
        try:
            return self.model(x)
        finally:
            self.release()

    def clear(self) -> None:
        """Forget the recorded activations and gradients."""
        self.gradients = []
        self.activations = []

    def release(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __del__(self) -> None:
        self.release()

    def _reshape(self, value: Any) -> Any:
        return self.reshape_transform(value) if self.reshape_transform is not None else value


def _zeros(spec: tuple[torch.Size, torch.dtype, torch.device]) -> torch.Tensor:
    shape, dtype, device = spec
    return torch.zeros(shape, dtype=dtype, device=device)


def _detached(value: Any) -> Any:
    tensors, rebuild = flatten_tensors(value)
    return rebuild([t.detach() for t in tensors])


def _weak_hook(ref: weakref.ref[ActivationsAndGradients], name: str) -> Callable:
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        owner = ref()
        if owner is not None:
            getattr(owner, name)(module, inputs, output)

    return hook
