"""Reshape transforms: turn transformer/detector activations into (B, C, H, W) maps.

The CAM methods apply these to activations and to gradients alike, so they are pure
rearrangements (or differentiable tensor ops) of their input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral

import torch
import torch.nn.functional as F

_MAX_PREFIX_TOKENS = 8


def _is_square(n: int) -> bool:
    """Whether ``n`` is a positive perfect square."""
    return n > 0 and math.isqrt(n) ** 2 == n


def _vit_grid(
    num_tokens: int,
    height: int | None,
    width: int | None,
    num_prefix_tokens: int | None,
) -> tuple[int, int, int]:
    """Resolve ``(num_prefix_tokens, height, width)`` for ``num_tokens`` ViT tokens."""
    sides: tuple[tuple[str, object], ...] = (("height", height), ("width", width))
    for name, value in sides:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, Integral):
            whole = isinstance(value, float) and value.is_integer()
            raise TypeError(
                f"{name} must be an integer number of patches; got {type(value).__name__} "
                f"{value!r}" + (f" (pass {value:.0f})" if whole else "")
            )
        if value < 1:
            raise ValueError(f"{name} must be at least 1 patch; got {value}")
    height = None if height is None else int(height)
    width = None if width is None else int(width)
    if num_prefix_tokens is None:
        if height is not None and width is not None:
            prefix = num_tokens - height * width
            if prefix > _MAX_PREFIX_TOKENS:
                raise ValueError(
                    f"height={height} x width={width} = {height * width} grid tokens leave "
                    f"{prefix} of the {num_tokens} tokens as prefix (class, distillation or "
                    f"register) tokens, which are at most {_MAX_PREFIX_TOKENS}: height and "
                    "width must be the patch grid of the input; pass num_prefix_tokens too "
                    "if that many leading tokens are really meant"
                )
            candidates = [prefix]
        else:
            candidates = [1, 0, *range(2, _MAX_PREFIX_TOKENS + 1)]
    else:
        candidates = [num_prefix_tokens]

    for prefix in candidates:
        grid = num_tokens - prefix
        if prefix < 0 or grid <= 0:
            continue
        if height is not None and width is not None:
            if grid == height * width:
                return prefix, height, width
        elif height is not None or width is not None:
            known = height if height is not None else width
            assert known is not None
            if known > 0 and grid % known == 0:
                other = grid // known
                return (prefix, known, other) if height is not None else (prefix, other, known)
        elif _is_square(grid):
            side = math.isqrt(grid)
            return prefix, side, side
    raise ValueError(
        f"cannot arrange {num_tokens} tokens into a grid (height={height}, width={width}, "
        f"num_prefix_tokens={num_prefix_tokens}); pass height and width (and num_prefix_tokens) "
        "explicitly"
    )


def vit_reshape_transform(
    tensor: torch.Tensor,
    height: int | None = None,
    width: int | None = None,
    num_prefix_tokens: int | None = None,
) -> torch.Tensor:
    """Turn ViT tokens (B, N, C) into a (B, C, H, W) map, dropping the leading prefix tokens.

    Prefix tokens are the class token, DeiT's distillation token, register tokens, etc.

    Args:
        tensor: token activations of shape (B, N, C).
        height: patch-grid height; inferred when None.
        width: patch-grid width; inferred when None.
        num_prefix_tokens: number of leading non-patch tokens. When None it is ``N - H * W``
            if both sizes are given (at most 8: the grid must account for the other tokens),
            else the first of 1, 0, 2, ..., 8 that leaves a square grid (or a grid divisible
            by the one size given). An inferred square grid may not be the model's: a CAM
            checks that the grid fits the input's aspect ratio.

    Returns:
        tensor of shape (B, C, H, W).

    Example:
        >>> import torch
        >>> tokens = torch.rand(2, 1 + 14 * 14, 192)  # a class token, then 14 x 14 patches
        >>> vit_reshape_transform(tokens).shape
        torch.Size([2, 192, 14, 14])
    """
    if tensor.ndim != 3:
        raise ValueError(f"expected ViT tokens of shape (B, N, C); got {tuple(tensor.shape)}")
    batch, num_tokens, channels = tensor.shape
    prefix, h, w = _vit_grid(num_tokens, height, width, num_prefix_tokens)
    return tensor[:, prefix:, :].reshape(batch, h, w, channels).permute(0, 3, 1, 2)


def swinT_reshape_transform(
    tensor: torch.Tensor,
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """Turn Swin Transformer activations into a (B, C, H, W) map.

    Args:
        tensor: tokens of shape (B, N, C) (older Swin implementations) or channels-last maps
            of shape (B, H, W, C) (current timm and torchvision Swin blocks).
        height: grid height for token input; a square grid is inferred when None.
        width: grid width for token input; a square grid is inferred when None.

    Returns:
        tensor of shape (B, C, H, W).

    Example:
        >>> import torch
        >>> swinT_reshape_transform(torch.rand(2, 7, 7, 768)).shape  # channels-last maps
        torch.Size([2, 768, 7, 7])
        >>> swinT_reshape_transform(torch.rand(2, 49, 768)).shape  # tokens
        torch.Size([2, 768, 7, 7])
    """
    if tensor.ndim == 4:
        _, h, w, _ = tensor.shape
        if (height is not None and height != h) or (width is not None and width != w):
            raise ValueError(
                f"height={height}, width={width} do not match the channels-last map of shape "
                f"{tuple(tensor.shape)} (expected (B, H, W, C))"
            )
        return tensor.permute(0, 3, 1, 2)
    if tensor.ndim != 3:
        raise ValueError(
            f"expected Swin activations of shape (B, N, C) or (B, H, W, C); "
            f"got {tuple(tensor.shape)}"
        )
    batch, num_tokens, channels = tensor.shape
    _, h, w = _vit_grid(num_tokens, height, width, 0)
    return tensor.reshape(batch, h, w, channels).permute(0, 3, 1, 2)


def fasterrcnn_reshape_transform(
    x: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
) -> torch.Tensor:
    """Merge the FPN maps of a torchvision Faster R-CNN backbone into one (B, C, H, W) tensor.

    Each map's absolute value is resized (bilinearly) to the size of the ``'pool'`` entry, or
    of the smallest map when there is none, and the results are concatenated along channels.

    Args:
        x: ordered mapping (or sequence) of (B, C_i, H_i, W_i) feature maps.

    Returns:
        tensor of shape (B, sum(C_i), H, W).

    Example:
        >>> from collections import OrderedDict
        >>> import torch
        >>> pyramid = OrderedDict(
        ...     [("0", torch.rand(1, 256, 32, 32)), ("1", torch.rand(1, 256, 16, 16)),
        ...      ("pool", torch.rand(1, 256, 8, 8))]
        ... )
        >>> fasterrcnn_reshape_transform(pyramid).shape
        torch.Size([1, 768, 8, 8])
    """
    maps = list(x.values()) if isinstance(x, Mapping) else list(x)
    if not maps:
        raise ValueError("fasterrcnn_reshape_transform got no feature maps")
    if isinstance(x, Mapping) and "pool" in x:
        size: tuple[int, ...] = tuple(x["pool"].shape[-2:])
    else:
        size = tuple(min((tuple(m.shape[-2:]) for m in maps), key=math.prod))
    resized = [
        F.interpolate(m.abs(), size=size, mode="bilinear", align_corners=False) for m in maps
    ]
    return torch.cat(resized, dim=1)
