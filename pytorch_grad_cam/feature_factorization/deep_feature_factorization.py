"""Deep Feature Factorization (Collins et al., "Deep Feature Factorization for Concept
Discovery", ECCV 2018, arXiv:1806.10206).

The activations of a layer over a batch of images, one row per channel and one column per
(image, position), are factorised into non-negative factors, A ~ W H: the k columns of W
(channels x k) are *concepts* shared by the batch, and the rows of H, laid back out as maps,
say where each concept is in each image. The factorisation (``nmf``) runs in torch on the
model's device, for the whole batch at once.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import torch
from torch import nn

from pytorch_grad_cam._arrays import as_numpy
from pytorch_grad_cam._checks import (
    all_finite,
    check_not_scripted,
    checked_batch,
    describe_images,
    per_image,
)
from pytorch_grad_cam._model_state import eval_mode
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.utils.image import (
    create_labels_legend,
    scale_cam_image,
    show_factorization_on_image,
)

if TYPE_CHECKING:
    from PIL import Image


def nmf(
    x: torch.Tensor, n_components: int, max_iter: int = 200, tol: float = 3e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative matrix factorisation x ~ W H, minimising ||x - W H||_F (no penalty).

    Initialised by NNDSVD (Boutsidis & Gallopoulos, 2008: the non-negative parts of the top
    singular vectors), then refined by HALS (Cichocki & Phan, 2009: exact non-negative
    least-squares updates of one column of W, or row of H, at a time; the coordinate descent
    of scikit-learn's ``NMF`` too). Stops when the relative error ||x - W H|| / ||x|| has
    improved by less than ``tol`` (relatively) over 10 iterations, or after ``max_iter``
    (0.3% by default: on ResNet-50 activations its error is then within 1% of scikit-learn's,
    at a fraction of the iterations; ``benchmarks/bench_dff.py``). Deterministic (the global
    random state untouched); runs on ``x``'s device in float32.

    Args:
        x: (M, N) non-negative matrix.
        n_components: k, at most min(M, N).

    Returns:
        W (M, k) and H (k, N).

    Example:
        >>> import torch
        >>> w, h = torch.rand(6, 2), torch.rand(2, 5)
        >>> W, H = nmf(w @ h, 2)
        >>> bool(torch.allclose(W @ H, w @ h, atol=1e-3))
        True
    """
    x = x.float()
    w, h = _nndsvd(x, n_components)
    wt = w.T.contiguous()  # both factors stored as (k, length) rows: fast on the CPU
    squared = x.square().sum()
    previous = float("inf")
    for iteration in range(max_iter):
        _hals_sweep(wt, h @ x.T, h @ h.T)  # W, H fixed: wt ~ argmin ||x^T - h^T wt||
        wx, ww = wt @ x, wt @ wt.T
        _hals_sweep(h, wx, ww)  # H, W fixed
        if iteration % 10 == 9:  # ||x - wh||^2 = ||x||^2 - 2 <h, w^T x> + <w^T w, h h^T>
            residual = squared - 2 * (h * wx).sum() + (ww * (h @ h.T)).sum()
            error = float(residual.clamp_min(0).sqrt() / squared.sqrt().clamp_min(1e-30))
            if previous - error < tol * previous:  # (never on the first check: inf - e = inf)
                break
            previous = error
    return wt.T.contiguous(), h


def _nndsvd(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NNDSVD initial factors of x (M, N): W (M, k), H (k, N), from its top k singular
    triplets (``_top_singular_triplets``)."""
    u, s, v = _top_singular_triplets(x, k)
    up, un, vp, vn = u.clamp_min(0), (-u).clamp_min(0), v.clamp_min(0), (-v).clamp_min(0)
    pos = up.norm(dim=0) * vp.norm(dim=0)
    neg = un.norm(dim=0) * vn.norm(dim=0)
    use_pos = pos >= neg
    uu, vv = torch.where(use_pos, up, un), torch.where(use_pos, vp, vn)
    sigma = torch.where(use_pos, pos, neg)
    uu = uu / uu.norm(dim=0).clamp_min(1e-30)
    vv = vv / vv.norm(dim=0).clamp_min(1e-30)
    scale = (s * sigma).sqrt()
    return uu * scale, (vv * scale).T.contiguous()


def _top_singular_triplets(
    x: torch.Tensor, k: int, oversampling: int = 8, power_iterations: int = 4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top k singular vectors and values of x (M, N): U (M, k), S (k,), V (N, k).

    A randomised range finder with power iterations (Halko, Martinsson & Tropp, 2011): far
    cheaper than a full SVD for the few components an initialisation needs. Its random start
    comes from a generator of its own with a fixed seed: deterministic, and the global random
    state is left alone.
    """
    size = min(k + oversampling, *x.shape)
    generator = torch.Generator(device=x.device).manual_seed(0)
    start = torch.randn(x.shape[1], size, generator=generator, device=x.device, dtype=x.dtype)
    basis = torch.linalg.qr(x @ start).Q
    for _ in range(power_iterations):
        basis = torch.linalg.qr(x @ torch.linalg.qr(x.T @ basis).Q).Q
    u, s, vh = torch.linalg.svd(basis.T @ x, full_matrices=False)
    return basis @ u[:, :k], s[:k], vh[:k].T


def _hals_sweep(f: torch.Tensor, target: torch.Tensor, gram: torch.Tensor) -> None:
    """One HALS sweep over the rows of the factor ``f`` (k, n), in place, for the problem
    min ||y - g^T f|| with ``target`` = g y (k, n) and ``gram`` = g g^T (k, k): row j becomes
    max(tiny, (target_j - sum_{l != j} gram_jl f_l) / gram_jj), the exact minimiser over that
    row with the others fixed."""
    tiny = torch.finfo(f.dtype).tiny
    diagonal = gram.diagonal().clamp_min(tiny)
    target = target / diagonal[:, None]  # the rows scaled by 1 / gram_jj
    off = (gram / diagonal[:, None]).fill_diagonal_(0)
    for row, goal, weight in zip(f.unbind(0), target.unbind(0), off.unbind(0)):
        torch.clamp_min(torch.addmv(goal, f.T, weight, alpha=-1), tiny, out=row)


@overload
def dff(activations: np.ndarray, n_components: int = 5) -> tuple[np.ndarray, np.ndarray]: ...
@overload
def dff(activations: torch.Tensor, n_components: int = 5) -> tuple[torch.Tensor, torch.Tensor]: ...
def dff(activations: Any, n_components: int = 5) -> tuple[Any, Any]:
    """Deep Feature Factorization of a batch of activations.

    A (C x B*positions, one row per channel) is shifted to be non-negative (each channel's
    minimum subtracted), factorised by ``nmf`` into W (C, k) H (k, B*positions), and the
    shift is added back to the concepts: concepts = W + per-channel minimum.

    Args:
        activations: (B, C, *spatial) numpy array or tensor.
        n_components: number of concepts k.

    Returns:
        concepts (C, k) and explanations (B, k, *spatial), float32, numpy or torch like the
        input.

    Example:
        >>> import numpy as np
        >>> concepts, explanations = dff(np.random.rand(2, 8, 4, 4), n_components=3)
        >>> concepts.shape, explanations.shape
        ((8, 3), (2, 3, 4, 4))
    """
    is_numpy = not isinstance(activations, torch.Tensor)
    a = torch.as_tensor(np.asarray(activations) if is_numpy else activations).detach().float()
    if a.ndim < 3:
        raise ValueError(f"activations must have shape (B, C, *spatial); got {tuple(a.shape)}")
    batch, channels, spatial = a.shape[0], a.shape[1], a.shape[2:]
    rows = a.transpose(0, 1).reshape(channels, -1)
    if isinstance(n_components, bool) or not isinstance(n_components, Integral):
        raise TypeError(f"n_components must be an int; got {n_components!r}")
    if batch == 0:
        raise ValueError(
            "activations are an empty batch (0 images): the concepts are factorised from the "
            "images' activations; pass at least one image"
        )
    if not bool(all_finite(rows)):
        images = describe_images((~per_image("finite", a)).tolist())
        raise ValueError(f"activations contain NaN or Inf ({images}); they cannot be factorised")
    if not 1 <= n_components <= min(rows.shape):
        raise ValueError(
            f"n_components must be between 1 and min(channels, images x positions) = "
            f"{min(rows.shape)}; got {n_components}"
        )
    shift = rows.amin(dim=1, keepdim=True)
    w, h = nmf(rows - shift, int(n_components))
    concepts = w + shift
    explanations = h.reshape(n_components, batch, *spatial).transpose(0, 1)
    if is_numpy:
        return as_numpy(concepts), as_numpy(explanations)
    return concepts, explanations


class DeepFeatureFactorization:
    """Concepts of a layer over a batch of images, and where each one is (Collins et al.,
    ECCV 2018): ``dff`` on ``target_layer``'s activations.

    Args:
        model: the network.
        target_layer: the layer whose output is factorised.
        reshape_transform: turns the layer output into (B, C, *spatial) (e.g. ViT tokens).
        computation_on_concepts: a module applied to the concepts (k, C), e.g. the model's
            classifier, to score what each concept stands for.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import DeepFeatureFactorization
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model = load_demo_model()
        >>> dff_ = DeepFeatureFactorization(model, model.target_layer, None, model.classifier)
        >>> concepts, explanations, scores = dff_(torch.rand(2, 3, 64, 64), n_components=3)
        >>> concepts.shape, len(explanations), explanations[0].shape, scores.shape
        ((64, 3), 2, (3, 64, 64), (3, 2))
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module,
        reshape_transform: Callable[[Any], Any] | None = None,
        computation_on_concepts: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if not isinstance(target_layer, nn.Module) or not any(
            m is target_layer for m in model.modules()
        ):
            raise ValueError(
                "target_layer must be a submodule of the model, e.g. model.layer4[-1]; got "
                f"{type(target_layer).__name__}"
            )
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError("reshape_transform must be a callable or None")
        check_not_scripted(model, [target_layer])
        self.model = model
        self.target_layer = target_layer
        self.reshape_transform = reshape_transform
        self.computation_on_concepts = computation_on_concepts

    def __call__(self, input_tensor: torch.Tensor, n_components: int = 16) -> tuple:
        """Factorise the layer's activations on ``input_tensor`` (B, C, H, W).

        Returns:
            concepts (C, k) float32, a list of B explanations (k, H, W) (each concept's map,
            min-max normalised and resized to the input), and with ``computation_on_concepts``
            its output on the concepts, (k, ...) float32.
        """
        x = checked_batch(input_tensor, self.model, ndims=(4,))
        if not len(x):
            raise ValueError(
                "input_tensor is an empty batch (0 images): Deep Feature Factorization finds "
                "the concepts of the images given; pass at least one image"
            )
        recorder = ActivationsAndGradients(self.model, [self.target_layer], self.reshape_transform)
        try:  # hooks only for this forward pass
            with eval_mode(self.model), torch.no_grad():
                recorder(x)
        finally:
            recorder.release()
        if not recorder.activations:
            raise RuntimeError("target_layer was not called during the model's forward pass")
        activations = torch.as_tensor(recorder.activations[-1])
        if activations.ndim != 4:
            raise ValueError(
                f"target_layer gives activations of shape {tuple(activations.shape)}, not "
                "(B, C, h, w); pass a reshape_transform (e.g. vit_reshape_transform)"
            )
        if not bool(all_finite(activations)):
            images = describe_images((~per_image("finite", activations)).tolist())
            raise RuntimeError(
                f"the output of target_layer contains NaN or Inf for {images}, although the "
                "input is finite: the model overflows or divides by zero before this layer"
            )
        concepts, explanations = dff(activations, n_components)
        size = (x.shape[3], x.shape[2])
        maps = [as_numpy(scale_cam_image(e, size)) for e in explanations]
        if self.computation_on_concepts is None:
            return as_numpy(concepts), maps
        with eval_mode(self.model), torch.no_grad():
            scores = self.computation_on_concepts(concepts.T.contiguous())
        return as_numpy(concepts), maps, as_numpy(scores)


def run_dff_on_image(
    model: nn.Module,
    target_layer: nn.Module,
    classifier: nn.Module,
    img_pil: Image.Image,
    img_tensor: torch.Tensor,
    reshape_transform: Callable[[Any], Any] | None = None,
    n_components: int = 5,
    top_k: int = 2,
) -> np.ndarray:
    """Deep Feature Factorization of one image, drawn: the image, then its concepts in colour
    with a legend of each concept's ``top_k`` classes (softmax of ``classifier`` on it).

    Class names come from ``model.config.id2label`` (HuggingFace models), else the indices.

    Args:
        img_pil: the RGB image (PIL).
        img_tensor: its (C, H, W) model input.

    Returns:
        uint8 RGB image: the image and the visualisation side by side (H x 3W x 3).
    """
    rgb = np.asarray(img_pil.convert("RGB") if hasattr(img_pil, "convert") else img_pil)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"img_pil must be an RGB image; got an array of shape {rgb.shape}")
    rgb = rgb.astype(np.uint8)
    factorize = DeepFeatureFactorization(model, target_layer, reshape_transform, classifier)
    _, explanations, scores = factorize(img_tensor[None], n_components)
    probabilities = as_numpy(torch.softmax(torch.as_tensor(scores), dim=-1))
    config = getattr(model, "config", None)
    labels = getattr(config, "id2label", None) or {i: str(i) for i in range(scores.shape[-1])}
    legend = create_labels_legend(probabilities, labels, top_k=top_k)
    maps = explanations[0]
    if maps.shape[1:] != rgb.shape[:2]:  # an input tensor of another size than the image
        maps = scale_cam_image(maps, (rgb.shape[1], rgb.shape[0]))
    picture = show_factorization_on_image(
        np.float32(rgb) / 255, maps, image_weight=0.3, concept_labels=legend
    )
    return np.hstack([rgb, picture])
