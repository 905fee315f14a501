"""ROAD: RemOve And Debias (Rong et al., ICML 2022, arXiv:2202.00449).

"A Consistent and Efficient Evaluation Strategy for Attribution Methods": remove the pixels a
CAM ranks as most (MoRF) or least (LeRF) relevant, fill them with a *noisy linear imputation*
that leaks little of the removal mask's shape, and measure the change of the target score.
A faithful CAM makes the score drop a lot under MoRF and little under LeRF.
"""

from __future__ import annotations

from collections.abc import Sequence
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
)

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)

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


class NoisyLinearImputer:
    """Fill removed pixels with the weighted mean of their neighbours, plus Gaussian noise.

    Every removed pixel i satisfies ``x_i = sum_j w_ij x_j / sum_j w_ij`` over its in-image
    neighbours j (removed neighbours are unknowns too): one sparse linear system per image and
    channel, ``D x - W x = W x_known`` on the removed pixels (D: each pixel's in-image neighbour
    weight sum), symmetric and positive definite when any pixel is kept. It is solved on the
    device by conjugate gradients, batched over images and channels, the neighbour sums being
    a 3x3 convolution. Iteration stops when every system's residual is below ``tol`` times its
    right-hand side's norm, or after ``max_iter`` steps (about 150 iterations for 64x64 images,
    600 for 224x224 ones with 90% removed; in float32 the result is then within ~1e-3 of the
    exact solve). A channel with every pixel removed becomes 0. Finally ``noise * N(0, 1)`` is
    added to the removed pixels; kept pixels are unchanged.

    Args:
        noise: standard deviation of the noise, in the units of the input.
        weighting: neighbour weights: ``((dy, dx), weight)`` pairs, or a 3x3 kernel whose
            centre is ignored. Must be point-symmetric (w(d) = w(-d)).
        max_iter: most conjugate-gradient iterations.
        tol: relative residual at which to stop.
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
    batch, channels, height, width = images.shape
    systems = batch * channels
    weights = kernel.to(images)[None, None]
    per_system = weights.expand(systems, 1, 3, 3).contiguous()

    def neighbour_sum(u: torch.Tensor) -> torch.Tensor:  # depthwise: fast for many systems
        flat = u.reshape(1, systems, height, width)
        return F.conv2d(flat, per_system, padding=1, groups=systems).reshape(u.shape)

    hole = 1 - keep
    degree = F.conv2d(torch.ones_like(images[:1, :1]), weights, padding=1)  # in-image weights

    def apply(u: torch.Tensor) -> torch.Tensor:
        return hole * (degree * u - neighbour_sum(u))

    dims = (2, 3)
    known = images * keep
    rhs = hole * neighbour_sum(known)
    fill = known.sum(dims, keepdim=True) / keep.sum(dims, keepdim=True).clamp_min(1)
    u = hole * fill
    r = rhs - apply(u)
    p = r.clone()
    rr = (r * r).sum(dims, keepdim=True)
    stop = tol**2 * (rhs * rhs).sum(dims, keepdim=True)
    for step in range(max_iter):
        if step % 8 == 0 and bool((rr <= stop).all()):
            break
        ap = apply(p)
        pap = (p * ap).sum(dims, keepdim=True)
        alpha = torch.where(pap > 0, rr / pap.clamp_min(1e-30), 0.0)
        u.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        rr_next = (r * r).sum(dims, keepdim=True)
        beta = torch.where(rr > 0, rr_next / rr.clamp_min(1e-30), 0.0)
        p.mul_(beta).add_(r)
        rr = rr_next
    return known + u


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
    """ROAD MoRF averaged over ``percentiles`` (lower is better)."""

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
    """ROAD LeRF averaged over ``percentiles`` (higher is better)."""

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
    """(LeRF average - MoRF average) / 2 over ``percentiles``: higher is more faithful."""

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
        lerf = self.lerf_averager(input_tensor, cams, targets, model)
        morf = self.morf_averager(input_tensor, cams, targets, model)
        return (lerf - morf) / 2
