"""SESS: Saliency Enhancing with Scaling and Sliding."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pytorch_grad_cam._arrays import as_numpy
from pytorch_grad_cam._checks import check_finite_scores, checked_batch
from pytorch_grad_cam._composition import ComposedCAM, MessageRelay
from pytorch_grad_cam._model_state import eval_mode
from pytorch_grad_cam._outputs import logits_of
from pytorch_grad_cam._targets import (
    Target,
    broadcast_targets,
    resolve_targets,
    target_scores,
    top_class_targets,
)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

POOLS = ("mean", "max")
SMOOTH_KERNEL, SMOOTH_SIGMA = 11, 5.0  # the Gaussian blur of the fused map (smooth=True)


def window_starts(length: int, step_size: int, window_size: int) -> list[int]:
    """Start offsets of windows of ``window_size`` along ``length``: one every ``step_size``
    from 0 (below ``length``), a window running past the end moved back flush with it, each
    offset once ([0] when one window covers the length).

    Example:
        >>> window_starts(10, 4, 4), window_starts(10, 5, 4)
        ([0, 4, 6], [0, 5])
    """
    if step_size < 1 or window_size < 1:
        raise ValueError(
            f"step_size and window_size must be positive; got {step_size} and {window_size}"
        )
    if length <= window_size:
        return [0]
    return sorted({min(start, length - window_size) for start in range(0, length, step_size)})


def sliding_window(height: int, width: int, step_size: int, window_size: int) -> list[tuple]:
    """The (x, y) top-left corners of the sliding windows over a ``height`` x ``width`` image,
    row by row (``window_starts`` along each axis).

    Example:
        >>> sliding_window(4, 6, 2, 4)
        [(0, 0), (2, 0)]
    """
    ys = window_starts(height, step_size, window_size)
    xs = window_starts(width, step_size, window_size)
    return [(x, y) for y in ys for x in xs]


class SESS(ComposedCAM):
    """SESS (Tursun et al., "SESS: Saliency Enhancing with Scaling and Sliding", ECCV 2022,
    arXiv:2207.01769): a base method's maps on many windows of the image, at many scales, fused.

    1. **Scaling**: the image is resized (bilinear, antialiased) so that its short side is each
       of ``scales`` (default ``get_scales``: ``num_scales`` sizes from the window size up, in
       steps of ``round(window_size * scale_step_ratio)``).
    2. **Sliding**: windows of ``window_size`` (default: the short side) every ``step_size``
       (default: the window size) at each scale (``sliding_window``).
    3. **Pre-filtering**: each window's score s (the target's softmax probability, or its raw
       score without ``use_softmax_scores``); the ``int(N * pre_filter_ratio)`` lowest-scoring
       of the N windows are dropped.
    4. **Saliency**: the base method's map of every kept window, weighted by s / max(s).
    5. **Fusion**: each weighted map is pasted at its place in its scaled image, the canvas is
       resized back to the input, and the maps are pooled per pixel: ``pool="mean"`` averages
       the values above ``theta`` (0: the non-zero ones), ``"max"`` takes the largest;
       ``smooth`` applies an 11 x 11 Gaussian blur (sigma 5); the result is min-max normalised.

    All windows of all images go through the model, then through the base method, in batches
    of ``batch_size``; ``targets`` give one target per image (None: each image's top class).

    Args:
        model, target_layers, reshape_transform: passed to ``base_method``.
        base_method: the BaseCAM subclass computing the window maps.
        scales: the short sides of the scaled images (None: ``get_scales``).
        num_scales: how many scales ``get_scales`` makes.
        scale_step_ratio: the step between scales, as a share of the window size.
        window_size: the side of the sliding windows (None: the short side).
        step_size: the stride of the windows (None: the window size).
        pre_filter_ratio: the share of lowest-scoring windows dropped.
        theta: with ``pool="mean"``, only values above it are averaged (as in grad-cam, it
            does not apply to ``"max"``).
        pool: "mean" (of the non-zero values) or "max".
        smooth: blur the result (11 x 11 Gaussian, sigma 5).
        use_softmax_scores: score windows by softmax probability (else the raw score).
        batch_size: windows per forward pass.
        **kwargs: other options of ``base_method``.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import SESS
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model = load_demo_model()
        >>> sess = SESS(model, [model.target_layer], num_scales=2, window_size=48, step_size=16)
        >>> sess(torch.rand(2, 3, 64, 64), targets=[0, 1]).shape
        (2, 64, 64)
    """

    input_ndims = (4,)  # images only

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | Sequence[nn.Module] | None = None,
        reshape_transform: Callable[[Any], Any] | None = None,
        base_method: type[BaseCAM] = GradCAM,
        scales: Sequence[int] | None = None,
        num_scales: int = 12,
        scale_step_ratio: float = 2 / 7,
        window_size: int | None = None,
        step_size: int | None = None,
        pre_filter_ratio: float = 0.0,
        theta: float = 0.0,
        pool: str = "mean",
        smooth: bool = True,
        use_softmax_scores: bool = True,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, base_method, **kwargs)
        self.scales = None if scales is None else [int(s) for s in scales]
        self.num_scales = num_scales
        self.scale_step_ratio = scale_step_ratio
        self.window_size = window_size
        self.step_size = step_size
        self.pre_filter_ratio = pre_filter_ratio
        self.theta = theta
        self.pool = pool
        self.smooth = smooth
        self.use_softmax_scores = use_softmax_scores
        self.batch_size = batch_size
        _check_options(self)

    def get_scales(self, window_size: int) -> list[int]:
        """The short-side sizes the image is resized to: ``scales``, or ``num_scales`` sizes
        from ``window_size`` in steps of ``round(window_size * scale_step_ratio)``."""
        if self.scales is not None:
            return list(self.scales)
        step = round(window_size * self.scale_step_ratio)
        return [window_size + i * step for i in range(self.num_scales)]

    def forward(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Target] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """The fused maps, float32 (B, H, W) in [0, 1] (numpy of ``compute``).

        Args:
            input_tensor: (B, C, H, W) batch.
            targets: one target per image, a single one for all, or None (top class).
            eigen_smooth: passed to the base method.
        """
        return as_numpy(self.compute(input_tensor, targets, eigen_smooth=eigen_smooth))

    __call__ = forward

    def composed_maps(
        self,
        input_tensor: torch.Tensor,
        targets: Any,
        aug_smooth: bool,
        eigen_smooth: bool,
        keep_graph: bool,
    ) -> torch.Tensor:
        """The fused maps (B, H, W); ``aug_smooth`` and ``eigen_smooth`` reach the base method
        on every window, and with ``keep_graph`` the window scores and maps keep their graph."""
        _check_options(self)
        x = input_tensor
        batch, height, width = x.shape[0], x.shape[2], x.shape[3]
        window = self.window_size or min(height, width)
        step = self.step_size or window
        scales = self.get_scales(window)
        if min(scales) < window:
            raise ValueError(
                f"every scale must be at least the window size {window}; got scales {scales}"
            )
        per_image = self._targets(x, targets)
        patches, layout = windows(x, scales, window, step)  # (B, N, C, w, w), N x (x, y, W, H)
        count = patches.shape[1]
        inner = self.base_method.__name__
        relay = MessageRelay(inner, type(self).__name__, batch, "SESS (window maps): ")
        try:
            window_targets = [t for t in per_image for _ in layout]
            scores = self._scores(patches.flatten(0, 1), window_targets, keep_graph, relay)
            scores = scores.view(batch, count)
            check_finite_scores(scores, per_image, " (window {k})")
            keep = count - int(count * self.pre_filter_ratio)
            kept = scores.detach().argsort(dim=1, stable=True)[:, count - keep :]  # lowest first
            top = scores.amax(dim=1, keepdim=True)
            weights = scores.gather(1, kept) / torch.where(top == 0, torch.ones_like(top), top)
            chosen = patches[torch.arange(batch, device=x.device)[:, None], kept].flatten(0, 1)
            chosen_targets = [per_image[b] for b in range(batch) for _ in range(keep)]
            maps = self._window_maps(
                chosen, chosen_targets, aug_smooth, eigen_smooth, keep_graph, relay
            )
        finally:
            relay.emit()
        maps = maps.view(batch, keep, window, window) * weights[:, :, None, None].to(maps)
        fused = self._fuse(maps, kept, layout, (height, width))
        if self.smooth:
            fused = gaussian_blur(fused, SMOOTH_KERNEL, SMOOTH_SIGMA)
        result: torch.Tensor = scale_cam_image(fused)
        return result

    # ----------------------------------------------------------------- steps
    def _targets(self, x: torch.Tensor, targets: Any) -> list[Target]:
        """One target per image; None: each image's top class on the whole image."""
        targets = resolve_targets(targets)
        if targets is None:
            with eval_mode(self.model), torch.no_grad():
                chosen = top_class_targets(self.model(x), x.shape[0])
            if chosen is None:
                raise TypeError(
                    "targets=None explains each image's top class, which needs (B, num_classes) "
                    "logits; pass targets=[...] for this model's output"
                )
            return list(chosen)
        return broadcast_targets(targets, x.shape[0])

    def _scores(
        self,
        patches: torch.Tensor,
        targets: list[Target],
        keep_graph: bool = False,
        relay: MessageRelay | None = None,
    ) -> torch.Tensor:
        """(N,) score of each window for its target (softmax probabilities by default); with
        a ``relay``, messages name the images the windows come from."""
        relay = relay or MessageRelay(self.base_method.__name__, type(self).__name__)
        per_image = len(patches) // max(relay.batch, 1)
        scores = []
        with eval_mode(self.model), torch.set_grad_enabled(keep_graph):
            for i in range(0, len(patches), self.batch_size):
                part = targets[i : i + self.batch_size]
                images = [j // per_image for j in range(i, i + len(part))]
                with relay.part(images):
                    outputs = self.model(patches[i : i + self.batch_size])
                    if self.use_softmax_scores:
                        outputs = torch.softmax(logits_of(outputs).float(), dim=-1)
                    scores.append(target_scores(outputs, part).float().to(patches.device))
        return torch.cat(scores)

    def _window_maps(
        self,
        patches: torch.Tensor,
        targets: list[Target],
        aug_smooth: bool,
        eigen_smooth: bool,
        keep_graph: bool,
        relay: MessageRelay,
    ) -> torch.Tensor:
        """The base method's map (N, w, w) of every window, ``batch_size`` windows at a time;
        messages name the images the windows come from."""
        step = self.batch_size
        per_image = len(patches) // max(relay.batch, 1)
        maps = []
        for i in range(0, len(patches), step):
            part = patches[i : i + step]
            with relay.part([j // per_image for j in range(i, i + len(part))]):
                maps.append(
                    self.base_cam.compute(
                        part, targets[i : i + step], aug_smooth, eigen_smooth, keep_graph=keep_graph
                    )
                )
        return torch.cat(maps)

    def _fuse(
        self,
        maps: torch.Tensor,
        kept: torch.Tensor,
        layout: list[tuple[int, int, int, int]],
        size: tuple[int, int],
    ) -> torch.Tensor:
        """Paste every weighted window map (B, K, w, w) back into its scaled image, resize to
        ``size``, pool per pixel (the mean of the values above theta, or the max): (B, H, W)."""
        batch, keep, window = maps.shape[0], maps.shape[1], maps.shape[2]
        device = maps.device
        corners = torch.tensor(layout, device=device)[kept.flatten()]  # (B*K, 4): x, y, W, H
        image = torch.arange(batch, device=device).repeat_interleave(keep)
        flat = maps.flatten(0, 1)
        total = torch.zeros(batch, *size, device=device)
        count = torch.zeros(batch, *size, device=device)
        offsets = torch.arange(window, device=device)
        for scaled in sorted({(w, h) for _, _, w, h in layout}):
            rows = ((corners[:, 2] == scaled[0]) & (corners[:, 3] == scaled[1])).nonzero()[:, 0]
            for chunk in rows.split(max(self.batch_size, 1)):
                x0, y0 = corners[chunk, 0], corners[chunk, 1]
                index = (y0[:, None, None] + offsets[None, :, None]) * scaled[0] + (
                    x0[:, None, None] + offsets[None, None, :]
                )
                canvas = torch.zeros(len(chunk), scaled[0] * scaled[1], device=device)
                canvas.scatter_(1, index.flatten(1), flat[chunk].flatten(1))
                canvas = canvas.view(len(chunk), 1, scaled[1], scaled[0])
                pasted = F.interpolate(canvas, size=size, mode="bilinear", align_corners=False)
                pasted = pasted[:, 0]
                if self.pool == "max":
                    where = image[chunk, None].expand(-1, pasted[0].numel())
                    total.view(batch, -1).scatter_reduce_(0, where, pasted.flatten(1), "amax")
                else:
                    pasted = pasted * (pasted > self.theta)
                    total.index_add_(0, image[chunk], pasted)
                    count.index_add_(0, image[chunk], (pasted > 0).float())
        return total if self.pool == "max" else total / count.clamp_min(1)

    # ----------------------------------------------------------------- grad-cam's helpers
    def forward_single_image(
        self, input_tensor: torch.Tensor, target: Target | None, eigen_smooth: bool = False
    ) -> np.ndarray:
        """The fused map (H, W) of one image (1, C, H, W)."""
        return self.forward(input_tensor, None if target is None else [target], eigen_smooth)[0]

    def collect_patches(
        self, input_tensor: torch.Tensor, window_size: int, step_size: int
    ) -> tuple[list[torch.Tensor], list[tuple[int, int, int, int]]]:
        """The windows of one image (1, C, H, W) at every scale, each (1, C, w, w), with their
        (x, y, scaled width, scaled height)."""
        x = checked_batch(input_tensor, self.model, ndims=self.input_ndims)
        patches, layout = windows(x[:1], self.get_scales(window_size), window_size, step_size)
        return list(patches[0, :, None]), layout

    def get_target(self, input_tensor: torch.Tensor) -> ClassifierOutputTarget:
        """The top class of one image (1, C, H, W)."""
        x = checked_batch(input_tensor, self.model, ndims=self.input_ndims)
        target = self._targets(x[:1], None)[0]
        return ClassifierOutputTarget(target.category)  # type: ignore[attr-defined]

    def get_scores(self, patches: list[torch.Tensor], target: Target) -> np.ndarray:
        """(N,) float32 scores of windows (each (1, C, w, w)) for ``target``."""
        batch = torch.cat([p.to(self.device) for p in patches])
        return as_numpy(self._scores(batch, [target] * len(batch)))

    def paste_cam(
        self,
        cam: np.ndarray,
        coordinates: tuple[int, int, int, int],
        target_size: tuple[int, int],
    ) -> np.ndarray:
        """A window map pasted at (x, y) into a zero (scaled height, scaled width) canvas,
        resized (bilinear) to ``target_size`` = (H, W)."""
        x, y, width, height = (int(c) for c in coordinates)
        canvas = torch.zeros(height, width)
        window = torch.as_tensor(np.asarray(cam, dtype=np.float32))
        canvas[y : y + window.shape[0], x : x + window.shape[1]] = window
        resized = F.interpolate(
            canvas[None, None], size=tuple(target_size), mode="bilinear", align_corners=False
        )
        return as_numpy(resized[0, 0])


def windows(
    x: torch.Tensor, scales: Sequence[int], window: int, step: int
) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
    """Every sliding window of a batch at every scale.

    At scale s the image is resized (bilinear, antialiased) to short side s and long side
    ``floor(long * s / short)``.

    Returns:
        (B, N, C, window, window) windows and, for each, (x, y, scaled width, scaled height).
    """
    height, width = x.shape[2], x.shape[3]
    short = min(height, width)
    patches, layout = [], []
    for s in scales:
        size = (s, width * s // short) if height <= width else (height * s // short, s)
        scaled = x
        if size != (height, width):
            scaled = F.interpolate(x, size=size, mode="bilinear", antialias=True)
        ys = torch.tensor(window_starts(size[0], step, window), device=x.device)
        xs = torch.tensor(window_starts(size[1], step, window), device=x.device)
        grid = scaled.unfold(2, window, 1).unfold(3, window, 1)  # (B, C, rows, cols, w, w)
        grid = grid[:, :, ys][:, :, :, xs]  # (B, C, len(ys), len(xs), w, w)
        patches.append(grid.permute(0, 2, 3, 1, 4, 5).flatten(1, 2))
        layout += [(int(c), int(r), size[1], size[0]) for r in ys for c in xs]
    return torch.cat(patches, dim=1), layout


def gaussian_blur(maps: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of (B, H, W) maps, borders reflected as OpenCV's default (reflect-101)."""
    radius = kernel_size // 2
    taps = torch.arange(-radius, radius + 1, device=maps.device, dtype=torch.float64)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(maps.dtype)
    out = maps
    for dim in (1, 2):  # separable: rows, then columns
        n = out.shape[dim]
        index = torch.arange(-radius, n + radius, device=maps.device)
        period = max(2 * (n - 1), 1)
        index = index.remainder(period)
        index = torch.where(index >= n, period - index, index)
        padded = out.index_select(dim, index).movedim(dim, -1)
        blurred = padded.unfold(-1, kernel_size, 1) @ kernel
        out = blurred.movedim(-1, dim)
    return out


def _check_options(sess: SESS) -> None:
    """A clear error for an option out of range."""

    def positive(name: str, value: Any, optional: bool = False) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")

    positive("batch_size", sess.batch_size)
    positive("window_size", sess.window_size, optional=True)
    positive("step_size", sess.step_size, optional=True)
    if sess.scales is None:
        positive("num_scales", sess.num_scales)
    elif not sess.scales:
        raise ValueError("scales is empty; pass None for the default scales")
    ratio = sess.pre_filter_ratio
    if not isinstance(ratio, Real) or not 0 <= ratio < 1:
        raise ValueError(f"pre_filter_ratio must be in [0, 1); got {ratio!r}")
    if not isinstance(sess.scale_step_ratio, Real) or not math.isfinite(sess.scale_step_ratio):
        raise ValueError(f"scale_step_ratio must be a number; got {sess.scale_step_ratio!r}")
    if sess.pool not in POOLS:
        raise ValueError(f"pool must be 'mean' or 'max'; got {sess.pool!r}")
