"""The 2021 spellings of the API (``target_layer=``, ``use_cuda=``), still accepted."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn


def legacy_constructor_args(
    model: nn.Module,
    target_layers: Any,
    reshape_transform: Any,
    target_layer: Any,
    use_cuda: bool | None,
    stacklevel: int = 3,
) -> tuple[nn.Module, Any, Any]:
    """Map the 2021 constructor spellings to ``(model, target_layers, reshape_transform)``.

    * ``target_layer=layer`` -> ``target_layers=[layer]`` (DeprecationWarning);
    * ``use_cuda=True`` moves the model to CUDA when there is one (DeprecationWarning; a
      warning and the CPU when there is not);
    * the 2021 positional order ``(model, target_layer, use_cuda)`` puts a bool where the
      reshape transform now goes: it is read as ``use_cuda``.
    """
    if isinstance(reshape_transform, bool):
        use_cuda, reshape_transform = reshape_transform, None
    if target_layer is not None:
        warnings.warn(
            "target_layer= is deprecated; use target_layers=[layer]",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        if target_layers is not None:
            raise ValueError("pass either target_layers or target_layer, not both")
        target_layers = [target_layer]
    if use_cuda is not None:
        warnings.warn(
            "use_cuda= is deprecated; move the model to the device you want instead "
            "(the CAM runs on the model's device)",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        if use_cuda:
            if torch.cuda.is_available():
                model = model.cuda()
            else:
                warnings.warn(
                    "use_cuda=True but CUDA is not available; using the CPU",
                    stacklevel=stacklevel,
                )
    return model, target_layers, reshape_transform
