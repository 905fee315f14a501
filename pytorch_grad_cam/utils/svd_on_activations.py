"""Projection of activations onto their first principal component (Eigen-CAM)."""

from __future__ import annotations

from typing import overload

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


@overload
def get_2d_projection(activation_batch: np.ndarray) -> np.ndarray: ...
@overload
def get_2d_projection(activation_batch: torch.Tensor) -> torch.Tensor: ...
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


@overload
def get_2d_projection_with_sign_correction(activation_batch: np.ndarray) -> np.ndarray: ...
@overload
def get_2d_projection_with_sign_correction(activation_batch: torch.Tensor) -> torch.Tensor: ...
def get_2d_projection_with_sign_correction(activation_batch: ArrayLike) -> ArrayLike:
    """``get_2d_projection`` with the sign rule of Seg-Eigen-CAM.

    The first principal component is computed as in ``get_2d_projection``; then each image's
    map is negated when its most negative entry is larger in magnitude than its most positive
    one (``|min| > |max|``), so that its strongest response comes out positive.

    Args:
        activation_batch: (B, C, *spatial) numpy array or torch tensor.

    Returns:
        float32 maps of shape (B, *spatial), of the same type (and device) as the input.

    Example:
        >>> import numpy as np
        >>> acts = np.zeros((1, 1, 1, 4), dtype=np.float32)
        >>> acts[0, 0, 0] = [0.0, 0.0, 0.0, -4.0]  # centred: [1, 1, 1, -3]
        >>> get_2d_projection_with_sign_correction(acts).round(3)
        array([[[-1., -1., -1.,  3.]]], dtype=float32)
    """
    is_numpy = not isinstance(activation_batch, torch.Tensor)
    a = torch.as_tensor(np.asarray(activation_batch) if is_numpy else activation_batch).float()
    projection = get_2d_projection(a)
    flat = projection.flatten(1)
    flip = flat.amin(dim=1).abs() > flat.amax(dim=1).abs()
    projection = torch.where(flip.view(-1, *[1] * (projection.ndim - 1)), -projection, projection)
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


KERNELS = ("sigmoid", "rbf", "poly", "linear")


def get_2d_projection_kernel(
    activation_batch: ArrayLike,
    kernel: str = "sigmoid",
    gamma: float | None = None,
    degree: int = 3,
    coef0: float = 1.0,
) -> ArrayLike:
    """Project each image's activations onto their first kernel principal component (KPCA-CAM).

    Per image, the rows of X are the spatial positions and the columns the channels; NaNs
    become 0 and each channel's mean is subtracted. The kernel matrix K (P x P) over positions
    is (with ``gamma`` = 1 / channels when None, as in scikit-learn):

      * ``sigmoid``: tanh(gamma <x, y> + coef0);  ``poly``: (gamma <x, y> + coef0) ** degree;
      * ``rbf``: exp(-gamma ||x - y||^2);  ``linear``: <x, y> (same map as get_2d_projection).

    K is double-centred (centring in feature space) and the projection of the positions on the
    first component is its top eigenvector scaled by the square root of its eigenvalue. Sign
    rule: as in get_2d_projection, the map correlates non-negatively with the channel sum.

    Args:
        activation_batch: (B, C, *spatial) numpy array or torch tensor.
        kernel: one of "sigmoid", "rbf", "poly", "linear".
        gamma: kernel coefficient; None = 1 / C.
        degree: degree of the "poly" kernel.
        coef0: constant term of the "sigmoid" and "poly" kernels.

    Returns:
        float32 maps of shape (B, *spatial), of the same type (and device) as the input.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
    is_numpy = not isinstance(activation_batch, torch.Tensor)
    a = torch.as_tensor(np.asarray(activation_batch) if is_numpy else activation_batch).float()
    if a.ndim < 3:
        raise ValueError(f"activation_batch must have shape (B, C, *spatial); got {tuple(a.shape)}")
    batch, channels, spatial = a.shape[0], a.shape[1], a.shape[2:]
    x = torch.nan_to_num(a.reshape(batch, channels, -1), nan=0.0).transpose(1, 2).double()
    x = x - x.mean(dim=1, keepdim=True)
    gamma = 1.0 / channels if gamma is None else float(gamma)
    dot = x @ x.transpose(1, 2)
    if kernel == "linear":
        k = dot
    elif kernel == "poly":
        k = (gamma * dot + coef0) ** degree
    elif kernel == "sigmoid":
        k = torch.tanh(gamma * dot + coef0)
    else:
        sq_norms = dot.diagonal(dim1=1, dim2=2)
        k = torch.exp(-gamma * (sq_norms[:, :, None] + sq_norms[:, None, :] - 2 * dot).clamp_min(0))
    k = (
        k
        - k.mean(dim=1, keepdim=True)
        - k.mean(dim=2, keepdim=True)
        + k.mean(dim=(1, 2), keepdim=True)
    )
    values, vectors = torch.linalg.eigh(k)
    projection = vectors[..., -1] * values[..., -1:].clamp_min(0).sqrt()
    channel_sum = x.sum(dim=2)
    flip = (projection * channel_sum).sum(dim=1, keepdim=True) < 0
    projection = torch.where(flip, -projection, projection).float().reshape(batch, *spatial)
    return projection.cpu().numpy() if is_numpy else projection
