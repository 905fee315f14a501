"""BaseCAM: hooks, forward/backward, targets, post-processing and smoothing for every method."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import ttach as tta
from torch import nn

from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients, flatten_tensors
from pytorch_grad_cam.utils.find_layers import find_target_layer
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, _logits
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

_MISSING: Any = object()
Target = Callable[[Any], torch.Tensor]


class BaseCAM:
    """Common machinery of the CAM methods; a method overrides only its weighting step.

    A method implements one of:
      * ``get_cam_weights`` -> (B, C) channel weights; the map is ``sum_k w_k * A_k``;
      * ``get_weighted_activations`` -> (B, C, *spatial) terms whose channel sum is the map;
      * ``get_cam_image`` -> the (B, *spatial) map itself.

    Args:
        model: the network. Its device (first parameter's) is where everything runs.
        target_layers: the layers whose outputs are explained (a module or a list of modules).
            None (with no reshape_transform): chosen, with their transform, by
            ``pytorch_grad_cam.utils.find_layers.find_target_layer``.
        reshape_transform: turns a layer output into (B, C, *spatial), e.g. for token layouts.
        compute_input_gradient: also back-propagate to the input (full backward pass).
        uses_gradients: whether the method needs gradients (class attribute by default).
        tta_transforms: ttach transforms for ``aug_smooth`` (default: flip x scale 0.9/1/1.1).
        target_layer: deprecated 2021 spelling of ``target_layers=[target_layer]``.
        use_cuda: deprecated; moves the model to CUDA when True and CUDA is available.
    """

    uses_gradients: bool = True

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | Sequence[nn.Module] | None = None,
        reshape_transform: Callable[[Any], torch.Tensor] | None = None,
        compute_input_gradient: bool = False,
        uses_gradients: bool | None = None,
        tta_transforms: tta.Compose | None = None,
        *,
        target_layer: nn.Module | None = None,
        use_cuda: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if isinstance(reshape_transform, bool):  # 2021 positional order: (model, layer, use_cuda)
            use_cuda, reshape_transform = reshape_transform, None
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError("reshape_transform must be a callable or None")
        if target_layer is not None:
            warnings.warn(
                "target_layer= is deprecated; use target_layers=[layer]",
                DeprecationWarning,
                stacklevel=2,
            )
            if target_layers is not None:
                raise ValueError("pass either target_layers or target_layer, not both")
            target_layers = [target_layer]
        if use_cuda is not None:
            warnings.warn(
                "use_cuda= is deprecated; move the model to the device you want instead "
                "(the CAM runs on the model's device)",
                DeprecationWarning,
                stacklevel=2,
            )
            if use_cuda:
                if torch.cuda.is_available():
                    model = model.cuda()
                else:
                    warnings.warn(
                        "use_cuda=True but CUDA is not available; using the CPU", stacklevel=2
                    )
        self.model = model
        if target_layers is None and reshape_transform is None:
            target_layers, reshape_transform = find_target_layer(model)
        self.target_layers = _check_target_layers(model, target_layers)
        self.reshape_transform = reshape_transform
        self.compute_input_gradient = compute_input_gradient
        if uses_gradients is not None:
            self.uses_gradients = uses_gradients
        self.tta_transforms = tta_transforms
        self.outputs: Any = None
        self.activations_and_grads = ActivationsAndGradients(
            model, self.target_layers, reshape_transform
        )
        self.activations_and_grads.capture_gradients = False
        self.activations_and_grads.enabled = False  # the user's own forward passes are left alone

    # ----------------------------------------------------------------- method hooks
    def get_cam_weights(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: torch.Tensor,
        grads: torch.Tensor | None,
    ) -> torch.Tensor:
        """Channel weights (B, C) of the method."""
        raise NotImplementedError(f"{type(self).__name__} does not define get_cam_weights")

    def get_weighted_activations(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: torch.Tensor,
        grads: torch.Tensor | None,
    ) -> torch.Tensor:
        """Per-channel terms (B, C, *spatial) whose channel sum is the raw map."""
        weights = torch.as_tensor(
            self.get_cam_weights(input_tensor, target_layer, targets, activations, grads),
            device=activations.device,
        ).float()
        return weights.reshape(*weights.shape, *[1] * (activations.ndim - 2)) * activations

    def get_cam_image(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: torch.Tensor,
        grads: torch.Tensor | None,
        eigen_smooth: bool = False,
    ) -> torch.Tensor:
        """Raw map (B, *spatial): channel sum, or first principal component if eigen_smooth."""
        weighted = self.get_weighted_activations(
            input_tensor, target_layer, targets, activations, grads
        )
        return get_2d_projection(weighted) if eigen_smooth else weighted.sum(dim=1)

    # ----------------------------------------------------------------- public API
    def __call__(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Target] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        *,
        target_category: Any = _MISSING,
    ) -> np.ndarray:
        """Compute the maps.

        Args:
            input_tensor: (B, C, H, W) or (B, C, D, H, W) batch.
            targets: one target per image, or a single one for all; None = top class.
            aug_smooth: average over flips and scalings of the input (test-time augmentation).
            eigen_smooth: use the first principal component instead of the channel sum.
            target_category: deprecated: int for all images, list of ints, or None.

        Returns:
            float32 array (B, H, W) (or (B, D, H, W)) with values in [0, 1].
        """
        self.activations_and_grads.register()
        try:  # any error, bad arguments included, leaves no hooks on the model
            targets = _resolve_targets(targets, target_category)
            input_tensor = self._check_input(input_tensor)
            if targets is not None and len(targets) not in (1, input_tensor.shape[0]):
                raise ValueError(
                    f"targets has {len(targets)} entries but the batch has "
                    f"{input_tensor.shape[0]} images: pass one target per image, or a single "
                    "target for every image"
                )
            with _eval_mode(self.model), torch.inference_mode(False):
                if input_tensor.is_inference():
                    input_tensor = input_tensor.clone()
                if aug_smooth:
                    cam = self._augmented_cam(input_tensor, targets, eigen_smooth)
                else:
                    cam = self._cam(input_tensor, targets, eigen_smooth)
        except BaseException:
            self.release()
            raise
        finally:
            self._input_leaf = None  # FullGrad-style methods keep it during the call only
        return cam.detach().float().cpu().numpy()

    def forward(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Target] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """One pass without test-time augmentation (same as ``__call__`` with aug_smooth off)."""
        return self(input_tensor, targets, eigen_smooth=eigen_smooth)

    def release(self) -> None:
        """Remove the hooks from the model (a later call attaches them again)."""
        if hasattr(self, "activations_and_grads"):
            self.activations_and_grads.release()

    def __enter__(self) -> BaseCAM:
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, exc_tb: Any) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()

    # ----------------------------------------------------------------- machinery
    def _check_input(self, input_tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_tensor, torch.Tensor):
            raise TypeError(
                f"input_tensor must be a torch.Tensor; got {type(input_tensor).__name__}"
            )
        if input_tensor.ndim not in (4, 5):
            hint = (
                " (add a batch dimension: input_tensor.unsqueeze(0))"
                if input_tensor.ndim == 3
                else ""
            )
            raise ValueError(
                "input_tensor must be a batch of shape (B, C, H, W) or (B, C, D, H, W); "
                f"got shape {tuple(input_tensor.shape)}{hint}"
            )
        param = next(self.model.parameters(), None)
        return input_tensor if param is None else input_tensor.to(param.device)

    def _run_model(self, input_tensor: torch.Tensor) -> Any:
        """Forward pass that records the target layers' outputs."""
        aag = self.activations_and_grads
        aag.truncate = self.uses_gradients and not self.compute_input_gradient
        aag.enabled = True
        try:
            if self.compute_input_gradient:
                input_tensor = input_tensor.detach().requires_grad_()
                self._input_leaf = input_tensor
                with torch.enable_grad():
                    outputs = aag(input_tensor)
            else:
                with torch.no_grad():
                    outputs = aag(input_tensor)
        finally:
            aag.enabled = False
        for i, act in enumerate(aag.activations):
            if act is None:
                raise RuntimeError(
                    f"target_layers[{i}] ({type(self.target_layers[i]).__name__}) was not "
                    "called during the model's forward pass; pick a layer the model runs"
                )
        tensors, rebuild = flatten_tensors(outputs)
        self.outputs = rebuild([t.detach() for t in tensors])  # keep no autograd graph alive
        return outputs

    def _default_targets(self, outputs: Any, batch: int) -> list[Target] | None:
        try:
            logits = _logits(outputs)
        except TypeError:
            logits = None
        if logits is None or logits.ndim != 2 or logits.shape[0] != batch:
            if not self.uses_gradients:
                return None
            raise TypeError(
                "targets=None explains each image's top class, which needs a model output of "
                f"shape (B, num_classes); the model returned {_describe(outputs)}. Pass "
                "targets=[...] whose targets read this output"
            )
        return [ClassifierOutputTarget(int(c)) for c in logits.argmax(dim=-1).tolist()]

    def _target_scores(self, outputs: Any, targets: list[Target], batch: int) -> torch.Tensor:
        """Per-image target scores (B,), differentiable."""
        if len(targets) == 1 and batch > 1:
            targets = list(targets) * batch
        logits = outputs if isinstance(outputs, torch.Tensor) else None
        if (
            logits is not None
            and logits.ndim == 2
            and all(type(t) is ClassifierOutputTarget for t in targets)
        ):
            categories = [t.category for t in targets]
            bad = [i for i, c in enumerate(categories) if not 0 <= c < logits.shape[1]]
            if bad:
                targets[bad[0]](logits[bad[0]])  # raises its out-of-range error
            index = torch.tensor(categories, device=logits.device)
            return logits.gather(1, index[:, None])[:, 0]
        scores = []
        for i, target in enumerate(targets):
            try:
                score = target(_select_image(outputs, i, batch))
            except (TypeError, KeyError, AttributeError) as error:
                raise TypeError(
                    f"targets[{i}] ({target!r}) could not read the model output "
                    f"({_describe(outputs)}): {error}"
                ) from error
            scores.append(torch.as_tensor(score).sum())
        return torch.stack(scores)

    def _raw_gradients(
        self, scores: torch.Tensor, tensors: list[torch.Tensor]
    ) -> Sequence[torch.Tensor | None]:
        """Gradients of the summed scores w.r.t. ``tensors`` (the target layers' outputs).

        With ``compute_input_gradient`` the input's gradient is also computed and kept in
        ``self.input_gradient``. Methods needing more (second derivatives) override this.
        """
        leaf = getattr(self, "_input_leaf", None) if self.compute_input_gradient else None
        inputs = tensors + ([leaf] if leaf is not None and leaf.requires_grad else [])
        grads = torch.autograd.grad(scores.sum(), inputs, allow_unused=True)
        if len(inputs) > len(tensors):
            self.input_gradient = torch.zeros_like(leaf) if grads[-1] is None else grads[-1]
        return grads[: len(tensors)]

    def _gradients(self, scores: torch.Tensor) -> list[Any]:
        aag = self.activations_and_grads
        tensors = [t for outs in aag.layer_outputs for t in outs if t.requires_grad]
        if not scores.requires_grad or not tensors:
            raise RuntimeError(
                "the target scores do not depend on the target layers' outputs, so there is no "
                "gradient to use; check the targets and that target_layers feed the output"
            )
        grads = iter(self._raw_gradients(scores, tensors))
        result = []
        for i, outs in enumerate(aag.layer_outputs):
            layer_grads = [next(grads) if t.requires_grad else None for t in outs]
            if all(g is None for g in layer_grads):
                raise RuntimeError(
                    f"the gradient of the targets never reaches target_layers[{i}] "
                    f"({type(self.target_layers[i]).__name__}): the output does not depend on "
                    "this layer (unused, detached or frozen branch); choose another layer"
                )
            layer_grads = [
                torch.zeros_like(t) if g is None else g for t, g in zip(outs, layer_grads)
            ]
            if not any(bool(g.any()) for g in layer_grads):
                warnings.warn(
                    f"the gradient at target_layers[{i}] ({type(self.target_layers[i]).__name__}) "
                    "is zero everywhere, so its map is empty; pick a layer the target depends on "
                    "(for ViT: a layer before the last block's attention, e.g. blocks[-1].norm1)",
                    RuntimeWarning,
                    stacklevel=4,
                )
            with torch.no_grad():
                result.append(aag.apply_reshape(aag.rebuild(i, layer_grads)))
        aag.gradients = result
        return result

    def _cam(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Target] | None,
        eigen_smooth: bool,
    ) -> torch.Tensor:
        """Maps (B, *spatial) as a torch tensor on the model's device."""
        batch = input_tensor.shape[0]
        outputs = self._run_model(input_tensor)
        try:
            if targets is None:
                targets = self._default_targets(outputs, batch)
            grads: list[Any] = [None] * len(self.target_layers)
            if self.uses_gradients:
                with torch.enable_grad():
                    grads = self._gradients(self._target_scores(outputs, targets, batch))
            if targets is not None and len(targets) == 1 and batch > 1:
                targets = list(targets) * batch
            target_size = tuple(input_tensor.shape[2:])[::-1]
            cams = []
            for i, layer in enumerate(self.target_layers):
                activations = _as_spatial(
                    self.activations_and_grads.activations[i], input_tensor, i
                )
                layer_grads = None if grads[i] is None else _as_spatial(grads[i], input_tensor, i)
                with torch.no_grad():
                    cam = self.get_cam_image(
                        input_tensor, layer, targets, activations, layer_grads, eigen_smooth
                    )
                    cam = torch.as_tensor(cam, device=activations.device).float().clamp_min(0)
                    cams.append(self.scale_layer_cam(cam, target_size))
        finally:  # drop the autograd graph
            self.activations_and_grads.layer_outputs = [None] * len(self.target_layers)
        return self.aggregate_multi_layers(cams)

    def scale_layer_cam(self, cam: torch.Tensor, target_size: tuple[int, ...]) -> torch.Tensor:
        """Post-process one layer's ReLU'd map (B, *spatial): min-max normalise, resize."""
        return scale_cam_image(cam, target_size)

    def aggregate_multi_layers(self, cams: Sequence[torch.Tensor]) -> torch.Tensor:
        """Combine per-layer maps: ReLU, mean over layers, min-max normalise."""
        stacked = torch.stack(list(cams), dim=1).clamp_min(0)
        return scale_cam_image(stacked.mean(dim=1))

    def _augmented_cam(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Target] | None,
        eigen_smooth: bool,
    ) -> torch.Tensor:
        """Average of the maps of every augmented view, mapped back to the input's frame."""
        transforms = self.tta_transforms
        if transforms is None:
            transforms = tta.Compose([tta.HorizontalFlip(), tta.Multiply(factors=[0.9, 1, 1.1])])
        views = list(transforms)
        batch = input_tensor.shape[0]
        if targets is not None and len(targets) == 1:
            targets = list(targets) * batch
        oom = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
        try:
            stacked = torch.cat([view.augment_image(input_tensor) for view in views])
            cams = self._cam(
                stacked, None if targets is None else list(targets) * len(views), eigen_smooth
            )
            per_view = cams.split(batch)
        except oom:
            per_view = [
                self._cam(view.augment_image(input_tensor), targets, eigen_smooth) for view in views
            ]
        maps = [view.deaugment_mask(cam[:, None])[:, 0] for view, cam in zip(views, per_view)]
        return torch.stack(maps).mean(dim=0)


# --------------------------------------------------------------------- helpers
def _check_target_layers(model: nn.Module, target_layers: Any) -> list[nn.Module]:
    if target_layers is None:
        raise ValueError(
            "target_layers is required with a reshape_transform, e.g. "
            "target_layers=[model.blocks[-1].norm1]"
        )
    if isinstance(target_layers, nn.Module):
        target_layers = [target_layers]
    layers = list(target_layers)
    if not layers:
        raise ValueError("target_layers is empty; pass at least one layer of the model")
    in_model = {id(m) for m in model.modules()}
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Module):
            raise TypeError(
                f"target_layers[{i}] must be a torch.nn.Module; got {type(layer).__name__}"
            )
        if id(layer) not in in_model:
            raise ValueError(
                f"target_layers[{i}] ({type(layer).__name__}) is not a submodule of the model; "
                "take the layer from the model itself, e.g. target_layers=[model.layer4[-1]]"
            )
    return layers


def _resolve_targets(targets: Any, target_category: Any) -> list[Target] | None:
    """Normalise ``targets`` (and the deprecated ``target_category``) to a list or None."""
    if target_category is not _MISSING:
        warnings.warn(
            "target_category= is deprecated; use targets=[ClassifierOutputTarget(k)]",
            DeprecationWarning,
            stacklevel=3,
        )
        if targets is not None:
            raise ValueError("pass either targets or target_category, not both")
        targets = target_category
    if targets is None:
        return None
    if isinstance(targets, (int, np.integer)) or (
        isinstance(targets, (list, tuple, np.ndarray))
        and len(targets) > 0
        and all(isinstance(t, (int, np.integer)) for t in targets)
    ):
        categories = [targets] if isinstance(targets, (int, np.integer)) else list(targets)
        return [ClassifierOutputTarget(int(c)) for c in categories]
    if callable(targets):
        return [targets]
    targets = list(targets)
    if not targets:
        raise ValueError("targets is empty; pass None for the top class, or one target per image")
    for i, target in enumerate(targets):
        if not callable(target):
            raise TypeError(
                f"targets[{i}] must be a callable target such as ClassifierOutputTarget(k); "
                f"got {type(target).__name__}"
            )
    return targets


def _select_image(outputs: Any, index: int, batch: int) -> Any:
    """One image's part of a (possibly structured) batched model output."""
    if isinstance(outputs, torch.Tensor):
        return outputs[index] if outputs.ndim > 0 and outputs.shape[0] == batch else outputs
    if (
        isinstance(outputs, (list, tuple))
        and len(outputs) == batch
        and all(isinstance(o, Mapping) for o in outputs)
    ):
        return outputs[index]  # detection-style list of per-image dicts
    tensors, rebuild = flatten_tensors(outputs)
    logits = getattr(outputs, "logits", None)
    if not tensors and isinstance(logits, torch.Tensor):  # e.g. a dataclass with .logits
        one = copy.copy(outputs)
        object.__setattr__(one, "logits", _select_image(logits, index, batch))
        return one
    if not tensors:
        return outputs
    try:
        return rebuild([_select_image(t, index, batch) for t in tensors])
    except TypeError:
        return {k: _select_image(v, index, batch) for k, v in dict(outputs).items()}


def _describe(outputs: Any) -> str:
    if isinstance(outputs, torch.Tensor):
        return f"a tensor of shape {tuple(outputs.shape)}"
    return f"a {type(outputs).__name__}"


def _as_spatial(value: Any, input_tensor: torch.Tensor, index: int) -> torch.Tensor:
    """Check a (reshaped) activation/gradient is (B, C, *spatial) like the input; as float32."""
    if not isinstance(value, torch.Tensor) or value.ndim != input_tensor.ndim:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"target_layers[{index}] gives {shape}, which is not (B, C, *spatial) with "
            f"{input_tensor.ndim - 2} spatial dims like the input; token layouts (ViT, Swin) "
            "need a reshape_transform, e.g. pytorch_grad_cam.utils.reshape_transforms."
            "vit_reshape_transform"
        )
    return value.float()


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode, then restore every submodule's train/eval flag."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
