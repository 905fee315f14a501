"""Forward hooks that record what the target layers output (and the gradients they get)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn


def flatten_tensors(obj: Any) -> tuple[list[torch.Tensor], Callable[[list[Any]], Any]]:
    """Split a (nested) layer output into its tensors and a function that rebuilds it.

    Tensors, lists, tuples (named tuples too) and mappings are walked; anything else is kept
    as it is. ``rebuild(new_tensors)`` returns the same structure with the tensors replaced.
    """
    if isinstance(obj, torch.Tensor):
        return [obj], lambda ts: ts[0]
    if isinstance(obj, (list, tuple, Mapping)):
        items = list(obj.items()) if isinstance(obj, Mapping) else list(enumerate(obj))
        parts = [flatten_tensors(value) for _, value in items]
        counts = [len(tensors) for tensors, _ in parts]

        def rebuild(ts: list[Any]) -> Any:
            values, start = [], 0
            for (_, build), n in zip(parts, counts):
                values.append(build(ts[start : start + n]))
                start += n
            if isinstance(obj, Mapping):
                return type(obj)(zip([k for k, _ in items], values))
            if isinstance(obj, tuple) and hasattr(obj, "_fields"):
                return type(obj)(*values)
            return type(obj)(values)

        return [t for tensors, _ in parts for t in tensors], rebuild
    return [], lambda ts: obj


class ActivationsAndGradients:
    """Records the outputs of ``target_layers`` on every forward pass of ``model``.

    Used on its own it wraps the model: ``out = aag(x)`` fills ``aag.activations`` (one entry
    per target layer, in the order of ``target_layers``, after ``reshape_transform``), and a
    later ``out[...].backward()`` fills ``aag.gradients``. ``BaseCAM`` sets ``truncate``: the
    forward pass then starts without autograd and the graph starts at the first target layer
    that runs, so nothing before it is kept for, or reached by, the backward pass.

    The hooks hold only a weak reference to this object: dropping it removes them.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Callable[[Any], torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.target_layers = list(target_layers)
        self.reshape_transform = reshape_transform
        self.truncate = False
        self.capture_gradients = True
        self.enabled = True  # BaseCAM enables recording only during its own forward passes
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self._reset()
        self.register()

    def _reset(self) -> None:
        n = len(self.target_layers)
        self.activations: list[Any] = [None] * n
        self.gradients: list[Any] = [None] * n
        self.layer_outputs: list[list[torch.Tensor] | None] = [None] * n
        self._rebuilders: list[Callable | None] = [None] * n

    def register(self) -> None:
        """Attach the forward hooks (does nothing if they are attached)."""
        if self.handles:
            return
        ref = weakref.ref(self)
        for index, layer in enumerate(self.target_layers):
            self.handles.append(layer.register_forward_hook(_make_hook(ref, index)))

    def __call__(self, x: Any) -> Any:
        self._reset()
        return self.model(x)

    def _record(self, index: int, output: Any) -> Any:
        tensors, rebuild = flatten_tensors(output)
        if self.truncate:
            if not torch.is_grad_enabled():
                torch.set_grad_enabled(True)  # the first target layer: the graph starts here
            tensors = [
                t.detach().requires_grad_() if t.is_floating_point() and not t.requires_grad else t
                for t in tensors
            ]
        self.layer_outputs[index] = tensors
        self._rebuilders[index] = rebuild
        with torch.no_grad():
            self.activations[index] = self.apply_reshape(rebuild([t.detach() for t in tensors]))
        if self.capture_gradients and len(tensors) == 1 and tensors[0].requires_grad:
            tensors[0].register_hook(_make_grad_hook(weakref.ref(self), index))
        # Later in-place ops (e.g. ReLU(inplace=True)) act on a copy, not on what was recorded.
        return rebuild([t.clone() if t.is_floating_point() else t for t in tensors])

    def apply_reshape(self, value: Any) -> Any:
        """Apply ``reshape_transform`` (if any) to an activation or gradient."""
        return self.reshape_transform(value) if self.reshape_transform is not None else value

    def rebuild(self, index: int, tensors: list[torch.Tensor]) -> Any:
        """Put tensors (e.g. gradients) back into the structure of layer ``index``'s output."""
        return self._rebuilders[index](tensors)

    def release(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __del__(self) -> None:
        self.release()


def _make_hook(ref: weakref.ref[ActivationsAndGradients], index: int) -> Callable:
    def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        owner = ref()
        return None if owner is None or not owner.enabled else owner._record(index, output)

    return hook


def _make_grad_hook(ref: weakref.ref[ActivationsAndGradients], index: int) -> Callable:
    def hook(grad: torch.Tensor) -> None:
        owner = ref()
        if owner is not None:
            with torch.no_grad():
                owner.gradients[index] = owner.apply_reshape(grad.detach())

    return hook
