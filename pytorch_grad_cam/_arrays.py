"""NumPy at the API boundary: conversions, and the bridge to overrides written for numpy.

The package computes in torch on the model's device. grad-cam's extension contract hands
numpy arrays to a subclass's overrides; ``defined_outside_package`` tells which methods are
such overrides, and ``numpy_compatible`` lets the package's own weighting methods be called
with numpy (e.g. by ``super()`` from an override), returning numpy then.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

Array = np.ndarray | torch.Tensor  # what the weighting methods take and return
PACKAGE = __name__.split(".")[0]
F = TypeVar("F", bound=Callable[..., Any])


def as_numpy(value: Any) -> Any:
    """float32 numpy array of a tensor or array (None stays None)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def as_tensor(value: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """A torch tensor of ``value`` on ``device`` (floating arrays as float32)."""
    if isinstance(value, torch.Tensor):
        return value if device is None else value.to(device)
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    return torch.as_tensor(array, device=device)


def like(value: Any, reference: Any) -> Any:
    """``value`` as the kind of ``reference``: a numpy array, or a tensor on its device."""
    if isinstance(reference, torch.Tensor):
        return as_tensor(value, reference.device)
    return as_numpy(value)


def defined_outside_package(obj: object, name: str) -> bool:
    """Whether ``type(obj).<name>`` comes from a class defined outside this package: an
    override written against grad-cam's contract."""
    for cls in type(obj).__mro__:
        if name in vars(cls):
            return not cls.__module__.startswith(PACKAGE + ".")
    return False


def numpy_compatible(method: F) -> F:
    """Let a torch weighting method ``(self, input_tensor, ..., activations, grads, ...)`` be
    called with numpy arrays: they become tensors on ``input_tensor``'s device and the
    result goes back to numpy. Tensor calls pass through untouched."""

    @functools.wraps(method)
    def wrapper(self: Any, input_tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not any(isinstance(a, np.ndarray) for a in (*args, *kwargs.values())):
            return method(self, input_tensor, *args, **kwargs)
        device = input_tensor.device if isinstance(input_tensor, torch.Tensor) else None

        def convert(a: Any) -> Any:
            return as_tensor(a, device) if isinstance(a, np.ndarray) else a

        args = tuple(convert(a) for a in args)
        kwargs = {k: convert(v) for k, v in kwargs.items()}
        return as_numpy(method(self, input_tensor, *args, **kwargs))

    return wrapper  # type: ignore[return-value]
