"""ROAD: RemOve And Debias (Rong et al., ICML 2022, arXiv:2202.00449).

"A Consistent and Efficient Evaluation Strategy for Attribution Methods": remove the pixels a
CAM ranks as most (MoRF) or least (LeRF) relevant, fill them with a *noisy linear imputation*
that leaks little of the removal mask's shape, and measure the change of the target score.
A faithful CAM makes the score drop a lot under MoRF and little under LeRF.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pytorch_grad_cam.metrics.perturbation_confidence import (
    AveragerAcrossThresholds,
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
    score_changes,
)

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
_SMALL_SOLVE = 1 << 18  # elements: below this the imputer runs on one CPU thread

# Neighbour weights of the ROAD paper: direct neighbours 1/6, diagonal ones 1/12.
NEIGHBOR_WEIGHTS = (
    ((-1, -1), 1 / 12),
    ((-1, 0), 1 / 6),
    ((-1, 1), 1 / 12),
    ((0, -1), 1 / 6),
    ((0, 1), 1 / 6),
    ((1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((1, 1), 1 / 12),
)
neighbors_weights = list(NEIGHBOR_WEIGHTS)  # grad-cam's name for them


class NoisyLinearImputer:
    """Fill removed pixels with the weighted mean of their neighbours, plus Gaussian noise.

    Every removed pixel i satisfies ``x_i = sum_j w_ij x_j / sum_j w_ij`` over its in-image
    neighbours j (removed neighbours are unknowns too): one sparse linear system per image and
    channel, ``D x - W x = W x_known`` on the removed pixels (D: each pixel's in-image neighbour
    weight sum), symmetric and positive definite when any pixel is kept. It is solved on the
    device by conjugate gradients, batched over images and channels, the neighbour sums being
    a 3x3 convolution. A system stops iterating (and leaves the batch) once its residual is
    below ``tol`` times its right-hand side's norm, or after ``max_iter`` steps (about 120
    iterations for 64x64 images, 300 for 224x224 ones with 90% removed; in float32 the result
    is then within ~1e-3 of the exact solve). A channel with every pixel removed becomes 0.
    Finally ``noise * N(0, 1)`` is added to the removed pixels; kept pixels are unchanged.
    Small CPU solves run on one thread (see ``_few_threads``).

    Args:
        noise: standard deviation of the noise, in the units of the input.
        weighting: neighbour weights: ``((dy, dx), weight)`` pairs, or a 3x3 kernel whose
            centre is ignored. Must be point-symmetric (w(d) = w(-d)).
        max_iter: most conjugate-gradient iterations.
        tol: relative residual at which to stop.

    Example:
        >>> import torch
        >>> img = torch.full((1, 3, 8, 8), 0.5)
        >>> keep = torch.ones(1, 8, 8)
        >>> keep[0, 2:5, 3:6] = 0  # remove a 3x3 block
        >>> filled = NoisyLinearImputer(noise=0.0)(img, keep)
        >>> bool(torch.allclose(filled, img, atol=1e-4))  # a flat image is filled with itself
        True
    """

    def __init__(
        self,
        noise: float = 0.01,
        weighting: Sequence = NEIGHBOR_WEIGHTS,
        max_iter: int = 1000,
        tol: float = 1e-5,
    ) -> None:
        self.noise = float(noise)
        self.kernel = _neighbor_kernel(weighting)
        self.max_iter = int(max_iter)
        self.tol = float(tol)

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Impute (B, C, H, W) images where the (B, H, W) mask is 0 ((C, H, W) with (H, W))."""
        single = img.ndim == 3
        if single:
            img, mask = img[None], torch.as_tensor(mask)[None]
        mask = torch.as_tensor(mask, device=img.device)
        if img.ndim != 4 or tuple(mask.shape) != (img.shape[0], *img.shape[2:]):
            raise ValueError(
                "img must be (B, C, H, W) with a (B, H, W) mask, or (C, H, W) with an (H, W) "
                f"mask; got img {tuple(img.shape)} and mask {tuple(mask.shape)}"
            )
        if not img.numel():  # nothing to impute
            return img.clone()[0] if single else img.clone()
        dtype = torch.promote_types(img.dtype, torch.float32)
        hole = (mask == 0).to(dtype)[:, None]
        filled = linear_imputation(img.to(dtype), 1 - hole, self.kernel, self.max_iter, self.tol)
        if self.noise:
            filled = filled + self.noise * torch.randn_like(filled) * hole
        result = filled.to(img.dtype)
        return result[0] if single else result


def linear_imputation(
    images: torch.Tensor,
    keep: torch.Tensor,
    kernel: torch.Tensor,
    max_iter: int = 1000,
    tol: float = 1e-5,
) -> torch.Tensor:
    """Linear imputation of (B, C, H, W) images where the (B, 1, H, W) ``keep`` mask is 0.

    Conjugate gradients on ``hole * (degree * u - conv(u)) = hole * conv(known)``, one system
    per image and channel, with ``u`` zero on kept pixels; see :class:`NoisyLinearImputer`.
    """
    with _few_threads(images):
        return _conjugate_gradients(images, keep, kernel, max_iter, tol)


def _conjugate_gradients(
    images: torch.Tensor, keep: torch.Tensor, kernel: torch.Tensor, max_iter: int, tol: float
) -> torch.Tensor:
    # Every image-channel system is a channel of one (1, B*C, H, W) batch in channels-last
    # layout, where the neighbour sums (a depthwise convolution) are several times faster
    # than on the planar layout. Every 8 steps the systems that have converged are written
    # to the solution and dropped from the batch.
    shape = images.shape
    layout = torch.channels_last

    def as_systems(t: torch.Tensor) -> torch.Tensor:
        t = t.expand(shape).reshape(1, shape[0] * shape[1], *shape[2:])
        return t.contiguous(memory_format=layout)

    def select(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return t[:, index].contiguous(memory_format=layout)

    weights = kernel.to(images)[None, None]
    degree = F.conv2d(torch.ones_like(images[:1, :1]), weights, padding=1)  # in-image weights

    def neighbour_sum(u: torch.Tensor) -> torch.Tensor:
        systems = u.shape[1]
        return F.conv2d(u, weights.expand(systems, 1, 3, 3), padding=1, groups=systems)

    def apply(u: torch.Tensor) -> torch.Tensor:  # hole * (degree * u - neighbour_sum(u))
        return torch.addcmul(neighbour_sum(u), degree, u, value=-1).mul_(minus_hole)

    ones = images.new_ones(1, shape[2] * shape[3])

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # per system, (1, S, 1, 1)
        product = (a * b).permute(0, 2, 3, 1).reshape(-1, a.shape[1])  # (H*W, S): a view
        # column sums: on the CPU a matrix product is ~3x faster than sum(0); elsewhere a
        # matrix product could run in reduced precision (TF32), which CG cannot afford
        sums = ones @ product if product.device.type == "cpu" else product.sum(0)
        return sums.reshape(1, -1, 1, 1)

    keep = as_systems(keep)
    hole = 1 - keep
    minus_hole = -hole
    known = as_systems(images) * keep
    rhs = hole * neighbour_sum(known)
    fill = known.sum((2, 3), keepdim=True) / keep.sum((2, 3), keepdim=True).clamp_min(1)
    u = hole * fill
    solution = u.clone()
    active = torch.arange(u.shape[1], device=u.device)  # systems still iterating
    r = rhs - apply(u)
    p = r.clone()
    rr = dot(r, r)
    stop = tol**2 * dot(rhs, rhs)
    tiny = 1e-30  # r = 0 makes p = 0: the divisions below then give 0, not NaN
    for step in range(max_iter):
        if step % 8 == 0:
            running = (rr > stop).flatten()
            if not bool(running.all()):
                solution[:, active[~running]] = u[:, ~running]
                if not bool(running.any()):
                    break
                index = running.nonzero()[:, 0]
                active = active[index]
                u, r, p, minus_hole = (select(t, index) for t in (u, r, p, minus_hole))
                rr, stop = rr[:, index], stop[:, index]
        ap = apply(p)
        alpha = rr / dot(p, ap).clamp_min(tiny)
        u.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        rr_next = dot(r, r)
        torch.addcmul(r, p, rr_next / rr.clamp_min(tiny), out=p)
        rr = rr_next
    else:
        solution[:, active] = u
    return (known + solution).reshape(shape).contiguous()


@contextmanager
def _few_threads(images: torch.Tensor) -> Iterator[None]:
    """One intra-op thread for small CPU solves.

    The solve is hundreds of small element-wise steps: with several threads each one waits
    for all of them, which on a busy machine costs far more than the work (seconds instead of
    a tenth of one for a 64x64 image). Large problems keep the configured threads.
    """
    threads = torch.get_num_threads()
    if images.device.type != "cpu" or threads == 1 or images.numel() > _SMALL_SOLVE:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _neighbor_kernel(weighting: Sequence) -> torch.Tensor:
    """3x3 float64 kernel from ((dy, dx), w) pairs or a 3x3 array; centre set to 0."""
    try:
        kernel = torch.as_tensor(np.asarray(weighting, dtype=np.float64))
    except (TypeError, ValueError):
        kernel = None
    if kernel is None or kernel.shape != (3, 3):
        kernel = torch.zeros(3, 3, dtype=torch.float64)
        try:
            for (dy, dx), weight in weighting:
                if max(abs(int(dy)), abs(int(dx))) != 1:
                    raise ValueError
                kernel[1 + int(dy), 1 + int(dx)] = float(weight)
        except (TypeError, ValueError) as error:
            raise ValueError(
                "weighting must be ((dy, dx), weight) pairs with dy, dx in {-1, 0, 1}, or a "
                f"3x3 kernel; got {weighting!r}"
            ) from error
    kernel[1, 1] = 0
    if (kernel < 0).any() or kernel.sum() <= 0:
        raise ValueError(f"weighting must be non-negative and not all zero; got {kernel.tolist()}")
    if not torch.equal(kernel, kernel.flip(0, 1)):
        raise ValueError(
            "weighting must be point-symmetric (the weight of offset d equals that of -d); "
            f"got {kernel.tolist()}"
        )
    return kernel


class ROADMostRelevantFirst(PerturbationConfidenceMetric):
    """ROAD MoRF: impute the (100 - percentile)% most relevant pixels; score change.

    A faithful CAM gives a large drop (more negative is better).

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import GradCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> targets = [ClassifierOutputSoftmaxTarget(0)]
        >>> maps = GradCAM(model, [model.target_layer])(x, targets)
        >>> ROADMostRelevantFirst(percentile=80)(x, maps, targets, model).shape
        (2,)
    """

    def __init__(
        self,
        percentile: float | str = 80,
        imputer: NoisyLinearImputer | None = None,
        batch_size: int | None = None,
    ) -> None:
        imputer = imputer if imputer is not None else NoisyLinearImputer()
        super().__init__(RemoveMostRelevantFirst(percentile, imputer), batch_size)


class ROADLeastRelevantFirst(PerturbationConfidenceMetric):
    """ROAD LeRF: impute the (100 - percentile)% least relevant pixels; score change.

    A faithful CAM gives a small drop (higher is better).

    Example:
        >>> import torch
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> model, x = load_demo_model(), torch.rand(1, 3, 64, 64)
        >>> maps = torch.zeros(1, 64, 64)
        >>> maps[0, :32] = 1  # the top half is "relevant": LeRF imputes the bottom half
        >>> metric = ROADLeastRelevantFirst(percentile=50)
        >>> _, imputed = metric(x, maps, [ClassifierOutputTarget(0)], model, True)
        >>> bool(torch.equal(imputed[0, :, :32], x[0, :, :32]))  # the relevant half is kept
        True
    """

    def __init__(
        self,
        percentile: float | str = 20,
        imputer: NoisyLinearImputer | None = None,
        batch_size: int | None = None,
    ) -> None:
        imputer = imputer if imputer is not None else NoisyLinearImputer()
        super().__init__(RemoveLeastRelevantFirst(percentile, imputer), batch_size)


class ROADMostRelevantFirstAverage(AveragerAcrossThresholds):
    """ROAD MoRF averaged over ``percentiles`` (lower is better).

    Example:
        >>> import torch
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> metric = ROADMostRelevantFirstAverage(percentiles=[20, 80])
        >>> metric(x, torch.rand(2, 64, 64), [ClassifierOutputTarget(1)], model).shape
        (2,)
    """

    def __init__(
        self,
        percentiles: Sequence[float] = PERCENTILES,
        imputer: NoisyLinearImputer | None = None,
        batch_size: int | None = None,
    ) -> None:
        imputer = imputer if imputer is not None else NoisyLinearImputer()
        metric = partial(ROADMostRelevantFirst, imputer=imputer, batch_size=batch_size)
        super().__init__(metric, percentiles)


class ROADLeastRelevantFirstAverage(AveragerAcrossThresholds):
    """ROAD LeRF averaged over ``percentiles`` (higher is better).

    Example:
        >>> import torch
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> metric = ROADLeastRelevantFirstAverage(percentiles=[20, 80])
        >>> metric(x, torch.rand(2, 64, 64), [ClassifierOutputTarget(1)], model).shape
        (2,)
    """

    def __init__(
        self,
        percentiles: Sequence[float] = PERCENTILES,
        imputer: NoisyLinearImputer | None = None,
        batch_size: int | None = None,
    ) -> None:
        imputer = imputer if imputer is not None else NoisyLinearImputer()
        metric = partial(ROADLeastRelevantFirst, imputer=imputer, batch_size=batch_size)
        super().__init__(metric, percentiles)


class ROADCombined:
    """(LeRF average - MoRF average) / 2 over ``percentiles``: higher is more faithful.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import GradCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> targets = [ClassifierOutputSoftmaxTarget(0)]
        >>> maps = GradCAM(model, [model.target_layer])(x, targets)
        >>> scores = ROADCombined(percentiles=[20, 80])(x, maps, targets, model)
        >>> scores.shape, bool(((-1 <= scores) & (scores <= 1)).all())  # probabilities
        ((2,), True)
    """

    def __init__(
        self,
        percentiles: Sequence[float] = PERCENTILES,
        imputer: NoisyLinearImputer | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.percentiles = list(percentiles)
        imputer = imputer if imputer is not None else NoisyLinearImputer()
        self.morf_averager = ROADMostRelevantFirstAverage(percentiles, imputer, batch_size)
        self.lerf_averager = ROADLeastRelevantFirstAverage(percentiles, imputer, batch_size)

    def __call__(
        self,
        input_tensor: torch.Tensor,
        cams: np.ndarray | torch.Tensor,
        targets: object,
        model: nn.Module,
    ) -> np.ndarray:
        """The (B,) combined score."""
        morf, lerf = self.morf_averager, self.lerf_averager
        metrics = [morf.imputer(p) for p in morf.percentiles]
        metrics += [lerf.imputer(p) for p in lerf.percentiles]
        # MoRF and LeRF in one imputer call (2P times the memory of a batch), one base score
        changes = score_changes(metrics, input_tensor, cams, targets, model)
        split = len(morf.percentiles)
        return (changes[split:].mean(axis=0) - changes[:split].mean(axis=0)) / 2
