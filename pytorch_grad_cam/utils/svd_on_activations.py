"""Projection of activations onto their first principal component (Eigen-CAM)."""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def get_2d_projection(activation_batch: ArrayLike) -> ArrayLike:
    """Project each image's activations onto their first principal component.

    Per image, the activations form a matrix X with one row per spatial position and one column
    per channel. NaNs become 0, each channel's mean is subtracted, and the rows are projected
    onto the top right-singular vector v of the centred matrix: ``map = (X - mean) @ v``.

    Sign rule: a singular vector's sign is arbitrary, so v is oriented to have a non-negative
    sum of entries. This is the same as requiring the map to correlate non-negatively with the
    channel sum of the activations, so high-activation (salient) regions come out positive.

    Args:
        activation_batch: (B, C, *spatial) numpy array or torch tensor.

    Returns:
        float32 maps of shape (B, *spatial), of the same type (and device) as the input.
    """
    is_numpy = not isinstance(activation_batch, torch.Tensor)
    a = torch.as_tensor(np.asarray(activation_batch) if is_numpy else activation_batch).float()
    if a.ndim < 3:
        raise ValueError(f"activation_batch must have shape (B, C, *spatial); got {tuple(a.shape)}")
    batch, channels, spatial = a.shape[0], a.shape[1], a.shape[2:]
    x = torch.nan_to_num(a.reshape(batch, channels, -1), nan=0.0).transpose(1, 2)
    x = x - x.mean(dim=1, keepdim=True)
    v = _top_right_singular_vector(x)
    v = torch.where(v.sum(dim=-1, keepdim=True) < 0, -v, v)
    projection = (x @ v.unsqueeze(-1)).reshape(batch, *spatial)
    return projection.cpu().numpy() if is_numpy else projection


def _top_right_singular_vector(x: torch.Tensor) -> torch.Tensor:
    """Top right-singular vector (B, C) of each (P, C) matrix of a batch.

    Takes the top eigenvector of the smaller Gram matrix (X^T X or X X^T, in float64): much
    faster than a full SVD of the wide or tall matrix, and as accurate for the top component.
    """
    xd = x.double()
    if x.shape[1] < x.shape[2]:  # fewer positions than channels: eigenvector u of X X^T
        u = torch.linalg.eigh(xd @ xd.transpose(1, 2)).eigenvectors[..., -1]
        v = (xd.transpose(1, 2) @ u.unsqueeze(-1)).squeeze(-1)
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    else:
        v = torch.linalg.eigh(xd.transpose(1, 2) @ xd).eigenvectors[..., -1]
    return v.to(x.dtype)
