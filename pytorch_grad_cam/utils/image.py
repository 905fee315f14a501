"""Image helpers: pre/post-processing of inputs and overlays of CAMs on images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pytorch_grad_cam._checks import describe_images

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
    if 0 in t.shape[1:]:
        raise ValueError(f"cam has empty maps (shape {tuple(t.shape)}): nothing to normalise")
    if is_numpy and t.numel() and not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).flatten(1).any(dim=1).tolist()
        raise ValueError(
            f"cam contains NaN or Inf values ({describe_images(bad)}); normalising it would "
            "give a map of NaN: check how the map was made"
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
    if not arr.size:
        raise ValueError(f"img is empty (shape {arr.shape}); it needs at least one value")
    if not np.isfinite(arr).all():
        raise ValueError(
            "img contains NaN or Inf values; deprocess_image would turn them into a black "
            "image: check how the gradients were made"
        )
    arr = arr - arr.mean()
    arr = arr / (arr.std() + 1e-5)
    arr = np.clip(arr * 0.1 + 0.5, 0, 1)
    return np.uint8(arr * 255)


# OpenCV's colour maps by value (``show_cam_on_image`` also takes a 256-entry lookup table)
_COLORMAPS = {getattr(cv2, name): name for name in dir(cv2) if name.startswith("COLORMAP_")}


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
    if not isinstance(colormap, np.ndarray) and colormap not in _COLORMAPS:
        names = ", ".join(f"cv2.{name}" for name in sorted(_COLORMAPS.values()))
        raise ValueError(f"colormap must be one of OpenCV's ({names}); got {colormap!r}")
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


@overload
def scale_accross_batch_and_channels(
    tensor: np.ndarray, target_size: Sequence[int] | None
) -> np.ndarray: ...
@overload
def scale_accross_batch_and_channels(
    tensor: torch.Tensor, target_size: Sequence[int] | None
) -> torch.Tensor: ...
def scale_accross_batch_and_channels(
    tensor: ArrayLike, target_size: Sequence[int] | None
) -> ArrayLike:
    """``scale_cam_image`` on every (image, channel) map of a (B, C, *spatial) batch.

    (grad-cam's spelling.) Each map is min-max normalised and resized to ``target_size``
    (OpenCV order, ``(W, H)`` or ``(W, H, D)``).

    Returns:
        float32 (B, C, *size), numpy or torch like ``tensor``.

    Example:
        >>> import numpy as np
        >>> scale_accross_batch_and_channels(np.ones((2, 3, 4, 5)), (10, 8)).shape
        (2, 3, 8, 10)
    """
    if tensor.ndim < 4:
        raise ValueError(f"tensor must have shape (B, C, *spatial); got {tuple(tensor.shape)}")
    batch, channels = tensor.shape[:2]
    scaled = scale_cam_image(tensor.reshape(batch * channels, *tensor.shape[2:]), target_size)
    return scaled.reshape(batch, channels, *scaled.shape[1:])


# Matplotlib's "gist_rainbow" colour map (its segment data), sampled into 256 colours the way
# matplotlib does: the default concept colours of show_factorization_on_image.
_GIST_RAINBOW = (
    (0.000, (1.00, 0.00, 0.16)),
    (0.030, (1.00, 0.00, 0.00)),
    (0.215, (1.00, 1.00, 0.00)),
    (0.400, (0.00, 1.00, 0.00)),
    (0.586, (0.00, 1.00, 1.00)),
    (0.770, (0.00, 0.00, 1.00)),
    (0.954, (1.00, 0.00, 1.00)),
    (1.000, (1.00, 0.00, 0.75)),
)


def concept_colors(n: int) -> list[np.ndarray]:
    """``n`` distinct RGB colours in [0, 1]: the "gist_rainbow" colour map at 0, 1/n, 2/n, ...

    Example:
        >>> [c.round(3).tolist() for c in concept_colors(2)]
        [[1.0, 0.0, 0.16], [0.0, 1.0, 0.548]]
    """
    stops = np.array([s for s, _ in _GIST_RAINBOW])
    rgb = np.array([c for _, c in _GIST_RAINBOW])
    table = np.stack([np.interp(np.linspace(0, 1, 256), stops, rgb[:, k]) for k in range(3)], 1)
    return [table[min(int(x * 256), 255)] for x in np.arange(0, 1, 1.0 / n)[:n]]


def show_factorization_on_image(
    img: np.ndarray,
    explanations: np.ndarray,
    colors: list[np.ndarray] | None = None,
    image_weight: float = 0.5,
    concept_labels: list | None = None,
) -> np.ndarray:
    """Overlay concept maps (e.g. Deep Feature Factorization's) on an image, one colour each.

    Every pixel takes the colour of the concept with the largest map value there, with the
    hue and saturation of that colour and the value (brightness) of the map (8-bit HSV, as
    OpenCV converts it); the result is blended with the image like ``show_cam_on_image``.
    With ``concept_labels`` a legend (a colour swatch and the label of each concept) is drawn
    on a white panel of the image's size, to the right of the overlay.

    Args:
        img: HxWx3 RGB float image in [0, 1].
        explanations: (K, H, W) concept maps in [0, 1] (numpy or torch; not modified).
        colors: K RGB colours in [0, 1] (default ``concept_colors(K)``).
        image_weight: weight of the image in the blend.
        concept_labels: K strings (may contain newlines), e.g. from ``create_labels_legend``.

    Returns:
        uint8 RGB image, HxWx3 (Hx2Wx3 with the legend).

    Example:
        >>> import numpy as np
        >>> maps = np.stack([np.eye(4), 1 - np.eye(4)])
        >>> show_factorization_on_image(np.zeros((4, 4, 3)), maps, image_weight=0.0)[0, :2]
        array([[255,   0,  42],
               [  0, 255, 136]], dtype=uint8)
    """
    img_a = _to_numpy(img)
    maps = _to_numpy(explanations).astype(np.float64)
    if maps.ndim != 3 or len(maps) == 0 or maps.shape[1:] != img_a.shape[:2]:
        raise ValueError(
            f"explanations must have shape (K, H, W) with the image's H, W {img_a.shape[:2]}; "
            f"got {maps.shape}"
        )
    _check_overlay_inputs(img_a, maps.max(axis=0), image_weight)
    colors = concept_colors(len(maps)) if colors is None else list(colors)
    if len(colors) < len(maps):
        raise ValueError(f"colors has {len(colors)} entries for {len(maps)} concepts")
    palette = np.array([np.asarray(c, np.float64)[:3] * 255 for c in colors]).astype(np.uint8)
    hsv = cv2.cvtColor(palette[None], cv2.COLOR_RGB2HSV)[0]
    pixels = hsv[maps.argmax(axis=0)]  # hue and saturation of each pixel's concept
    pixels[..., 2] = np.uint8(maps.max(axis=0) * 255)
    mask = cv2.cvtColor(pixels, cv2.COLOR_HSV2RGB).astype(np.float32) / 255
    result = np.uint8(255 * (img_a * image_weight + mask * (1 - image_weight)))
    if concept_labels is not None:
        result = np.hstack([result, _legend(img_a.shape[:2], concept_labels, colors)])
    return result


def _legend(size: tuple[int, int], labels: list, colors: list) -> np.ndarray:
    """A white (H, W, 3) panel listing each concept's colour and (multi-line) label."""
    height, width = size
    panel = np.full((height, width, 3), 255, np.uint8)
    entries = [str(label).split("\n") for label in labels]
    rows = sum(len(lines) for lines in entries) + len(entries)
    row = max(height / max(rows, 1), 1.0)
    font = cv2.FONT_HERSHEY_SIMPLEX
    longest = max((len(line) for lines in entries for line in lines), default=1)
    text_height = cv2.getTextSize("Ag", font, 1.0, 1)[0][1]
    text_width = cv2.getTextSize("A" * max(longest, 1), font, 1.0, 1)[0][0]
    scale = min(0.7 * row / text_height, 0.65 * width / text_width)
    swatch = int(0.2 * width)
    y = row
    for lines, color in zip(entries, colors):
        rgb = tuple(int(v) for v in np.uint8(np.asarray(color, np.float64)[:3] * 255))
        center = int(y + row * (len(lines) - 1) / 2 - row / 4)
        cv2.line(panel, (int(0.05 * width), center), (swatch, center), rgb, max(int(row / 4), 1))
        for line in lines:
            cv2.putText(panel, line, (swatch + 4, int(y)), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
            y += row
        y += row
    return panel


def create_labels_legend(
    concept_scores: np.ndarray, labels: dict[int, str], top_k: int = 2
) -> list[str]:
    """One legend string per concept: its ``top_k`` categories, best first, as
    ``"label:score"`` lines (scores with two decimals).

    Args:
        concept_scores: (K, num_classes) scores of each concept (numpy or torch).
        labels: category index -> name.
        top_k: categories per concept.

    Example:
        >>> import numpy as np
        >>> create_labels_legend(np.array([[0.1, 0.7, 0.2]]), {0: "cat", 1: "dog", 2: "car"})
        ['dog:0.70\\ncar:0.20']
    """
    scores = _to_numpy(concept_scores)
    if scores.ndim != 2:
        raise ValueError(f"concept_scores must be (K, num_classes); got shape {scores.shape}")
    best = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    return [
        "\n".join(f"{labels[int(c)]}:{row[c]:.2f}" for c in order)
        for row, order in zip(scores, best)
    ]
