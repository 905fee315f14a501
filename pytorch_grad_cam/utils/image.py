"""Image helpers: pre/post-processing of inputs and overlays of CAMs on images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = np.ndarray | torch.Tensor


@overload
def scale_cam_image(cam: np.ndarray, target_size: Sequence[int] | None = None) -> np.ndarray: ...
@overload
def scale_cam_image(
    cam: torch.Tensor, target_size: Sequence[int] | None = None
) -> torch.Tensor: ...
def scale_cam_image(cam: ArrayLike, target_size: Sequence[int] | None = None) -> ArrayLike:
    """Min-max normalise each map of a batch (or one 2-D map) and optionally resize it.

    Each map becomes ``(m - min(m)) / (max(m - min(m)) + 1e-7)``. Resizing is bilinear
    (trilinear for volumes) with half-pixel centres, as ``cv2.resize(..., INTER_LINEAR)``.

    Args:
        cam: maps of shape (B, H, W) or (B, D, H, W), or a single (H, W) map; numpy array or
            torch tensor.
        target_size: output size in OpenCV order, ``(W, H)`` or ``(W, H, D)``; None keeps the size.

    Returns:
        float32 maps of the same type (numpy or torch, same device) and layout as ``cam``.

    Example:
        >>> import numpy as np
        >>> scale_cam_image(np.array([[0.0, 2.0], [4.0, 8.0]]), target_size=(4, 3)).shape
        (3, 4)
    """
    is_numpy = not isinstance(cam, torch.Tensor)
    t = torch.as_tensor(np.asarray(cam) if is_numpy else cam).float()
    single = t.ndim == 2
    if single:
        t = t[None]
    if t.ndim not in (3, 4):
        raise ValueError(
            f"cam must have shape (H, W), (B, H, W) or (B, D, H, W); got {tuple(t.shape)}"
        )
    dims = tuple(range(1, t.ndim))
    t = t - t.amin(dim=dims, keepdim=True)
    t = t / (t.amax(dim=dims, keepdim=True) + 1e-7)
    if target_size is not None:
        if isinstance(target_size, (str, bytes)) or not isinstance(
            target_size, (Sequence, np.ndarray)
        ):
            raise TypeError(
                "target_size must be a (width, height) pair, or (width, height, depth) for "
                f"volumes, in OpenCV order; got {target_size!r}"
            )
        if not all(isinstance(s, (int, np.integer)) and s > 0 for s in target_size):
            raise ValueError(f"target_size must hold positive integers; got {tuple(target_size)}")
        size = tuple(int(s) for s in target_size)[::-1]
        if len(size) != t.ndim - 1:
            raise ValueError(
                f"target_size must have {t.ndim - 1} entries for maps of shape {tuple(t.shape)}; "
                f"got {tuple(target_size)}"
            )
        if size != tuple(t.shape[1:]):
            mode = "bilinear" if t.ndim == 3 else "trilinear"
            t = F.interpolate(t[:, None], size=size, mode=mode, align_corners=False)[:, 0]
    if single:
        t = t[0]
    return t.cpu().numpy() if is_numpy else t


def _to_numpy(x: ArrayLike) -> np.ndarray:
    """Return ``x`` as a numpy array (detaching and moving torch tensors to the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_image(
    img: np.ndarray,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> torch.Tensor:
    """Turn an RGB image into a normalised network input: ``(img - mean) / std``.

    The defaults are grad-cam's (0.5 for every channel, mapping [0, 1] to [-1, 1]); for
    ImageNet-trained torchvision models pass ``mean=IMAGENET_MEAN, std=IMAGENET_STD``.

    Args:
        img: HxWx3 image, float in [0, 1] or uint8 in [0, 255] (divided by 255 first).
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation (positive) divided by after subtracting ``mean``.

    Returns:
        float32 tensor of shape (1, 3, H, W).

    Raises:
        TypeError: for other integer (or bool) images: their scale is unknown.
        ValueError: for float images outside [0, 1] or with NaN/Inf, an empty image, or a
            non-positive std.
    """
    arr = _to_numpy(img)
    if arr.ndim != 3 or arr.shape[2] != 3 or not arr.size:
        raise ValueError(f"img must be a non-empty HxWx3 image; got an array of shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"img must be a float image in [0, 1] or a uint8 image in [0, 255]; got dtype "
            f"{arr.dtype} (convert it to float and scale it to [0, 1] first, e.g. "
            "img.astype(np.float32) / 65535 for 16-bit images)"
        )
    elif not np.isfinite(arr).all():
        raise ValueError("img contains NaN or Inf values")
    elif arr.min() < 0 or arr.max() > 1:
        raise ValueError(
            "img must be a float image with values in [0, 1] (divide a 0..255 image by 255, "
            f"clip interpolation overshoot); got values in [{arr.min()}, {arr.max()}]"
        )
    mean_a = np.asarray(mean, dtype=np.float32).reshape(-1)
    std_a = np.asarray(std, dtype=np.float32).reshape(-1)
    if mean_a.size != 3 or std_a.size != 3:
        raise ValueError(f"mean and std must have 3 entries; got {mean_a.size} and {std_a.size}")
    if not (np.isfinite(mean_a).all() and np.isfinite(std_a).all() and (std_a > 0).all()):
        raise ValueError(
            f"mean must be finite and std finite and positive (it is divided by); got mean "
            f"{tuple(mean_a.tolist())}, std {tuple(std_a.tolist())}"
        )
    arr = (arr.astype(np.float32) - mean_a) / std_a
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]


def deprocess_image(img: np.ndarray) -> np.ndarray:
    """Map an arbitrary-valued array (e.g. guided-backprop gradients) to a viewable uint8 image.

    The array is standardised, scaled by 0.1, shifted to 0.5, clipped to [0, 1] and
    multiplied by 255.

    Args:
        img: array of any shape, typically HxWx3.

    Returns:
        uint8 array of the same shape.
    """
    arr = _to_numpy(img).astype(np.float64)
    arr = arr - arr.mean()
    arr = arr / (arr.std() + 1e-5)
    arr = np.clip(arr * 0.1 + 0.5, 0, 1)
    return np.uint8(arr * 255)


def _check_overlay_inputs(img: np.ndarray, mask: np.ndarray, image_weight: float) -> None:
    """Raise ``ValueError`` if the inputs of :func:`show_cam_on_image` are inconsistent."""
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must be in [0, 1]; got {image_weight}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"img must be an HxWx3 (or HxW) image; got an array of shape {img.shape}")
    if not img.size:  # checked before OpenCV, which crashes the process on an empty map
        raise ValueError(f"img is empty (shape {img.shape}); it needs at least one pixel")
    if img.size and (np.isnan(img).any() or img.max() > 1 or img.min() < 0):
        raise ValueError(
            "img must be a float image with values in [0, 1] (divide a 0..255 image by 255); "
            f"got values in [{img.min()}, {img.max()}]"
        )
    if mask.ndim != 2:
        raise ValueError(f"mask must be an HxW map; got an array of shape {mask.shape}")
    if mask.shape != img.shape[:2]:
        raise ValueError(
            f"mask size {mask.shape} does not match img size {img.shape[:2]} "
            "(resize the CAM to the image, e.g. with scale_cam_image)"
        )
    if mask.size and (np.isnan(mask).any() or mask.max() > 1 + 1e-6 or mask.min() < -1e-6):
        raise ValueError(
            f"mask values must be in [0, 1] (and not NaN); got values in [{mask.min()}, "
            f"{mask.max()}]"
        )


def show_cam_on_image(
    img: np.ndarray,
    mask: np.ndarray,
    use_rgb: bool = False,
    colormap: int = cv2.COLORMAP_JET,
    image_weight: float = 0.5,
) -> np.ndarray:
    """Overlay a CAM heatmap on an image.

    Args:
        img: HxWx3 (or HxW grayscale) image with values in [0, 1].
        mask: HxW CAM with values in [0, 1] (a leading axis of size 1 is dropped).
        use_rgb: return an RGB overlay (for an RGB ``img``) instead of OpenCV's BGR.
        colormap: OpenCV colormap used for the heatmap.
        image_weight: weight of the image in the blend; the heatmap gets ``1 - image_weight``.

    Returns:
        uint8 HxWx3 overlay, rescaled so that its maximum is 255.
    """
    img_a = _to_numpy(img)
    mask_a = _to_numpy(mask)
    if img_a.ndim == 2:
        img_a = np.repeat(img_a[:, :, None], 3, axis=2)
    if not np.issubdtype(img_a.dtype, np.floating):
        img_a = img_a.astype(np.float32)
    if mask_a.ndim == 3 and mask_a.shape[0] == 1:
        mask_a = mask_a[0]
    mask_a = mask_a.astype(np.float32)
    _check_overlay_inputs(img_a, mask_a, float(image_weight))
    mask_a = np.clip(mask_a, 0.0, 1.0)

    heatmap = cv2.applyColorMap(np.uint8(255 * mask_a), colormap)
    if use_rgb:
        heatmap = cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB)
    heatmap = np.float32(heatmap) / 255
    cam = (1 - image_weight) * heatmap + image_weight * img_a
    peak = cam.max()
    if peak > 0:
        cam = cam / peak
    return np.uint8(255 * cam)
