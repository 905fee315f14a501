"""BaseCAM: the pipeline every method shares; a method supplies only its weighting step."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from importlib import import_module
from typing import Any

import numpy as np
import torch
import ttach as tta
from torch import nn

from pytorch_grad_cam._arrays import Array, as_numpy, as_tensor, defined_outside_package, like
from pytorch_grad_cam._call_checks import (
    check_forward,
    check_maps,
    layer_name,
    reached_images,
    warn_repeated_calls,
    warn_single_position,
)
from pytorch_grad_cam._checks import (
    CallHealth,
    caller_images,
    check_not_scripted,
    checked_batch,
    per_image,
    spatial_record,
)
from pytorch_grad_cam._forward_pass import ForwardPass
from pytorch_grad_cam._legacy import legacy_constructor_args
from pytorch_grad_cam._model_state import eval_mode, model_device
from pytorch_grad_cam._outputs import describe_output, flatten_tensors
from pytorch_grad_cam._targets import (
    MISSING,
    Target,
    TargetsFromOutputs,
    broadcast_targets,
    resolve_targets,
    target_scores,
    top_class_targets,
)
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.utils.find_layers import find_target_layer
from pytorch_grad_cam.utils.image import scale_cam_image

# names grad-cam 1.5.7 also exposes from this module
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget as ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection


class BaseCAM:
    """The machinery of every CAM method; a method overrides only its weighting step.

    One call, ``cam(input_tensor, targets)``, runs these stages (in the order of this file):

    1. **forward**: the model runs with hooks on ``target_layers``, and
       ``activations_and_grads`` records their outputs (``reshape_transform`` applied);
    2. **targets**: None explains each image's top class; a single target serves every image;
    3. **gradients** of the target scores with respect to the recorded outputs, also recorded
       by ``activations_and_grads``: a backward pass that stops at the first target layer
       and never computes parameter gradients;
    4. **per-layer map**: ``get_cam_image`` (by default the channel sum of
       ``get_cam_weights`` times the activations), a ReLU, then ``scale_layer_cam``
       (min-max normalisation, resizing to the input);
    5. **aggregate**: ``aggregate_multi_layers`` (ReLU, mean over layers, min-max).

    Override points (grad-cam's extension contract): ``get_cam_weights``, ``get_cam_image``,
    ``compute_cam_per_layer``, ``aggregate_multi_layers``, ``forward``,
    ``forward_augmentation_smoothing`` and ``get_target_width_height``. An override in a class
    defined outside this package receives what grad-cam passes: numpy float32 activations and
    gradients (torch tensors keeping their graph when ``detach=False``), per-layer numpy maps,
    and may return numpy or torch. The package's own methods compute in torch on the model's
    device, with these declared hooks: ``forward_context``, ``get_weighted_activations``,
    ``layer_gradients``, ``scale_layer_cam`` and the class attributes ``uses_gradients`` and
    ``require_every_layer``.

    Hooks are attached to the model only while it runs for a call: between calls it carries
    nothing of the CAM, so it can be saved, pickled or copied. A CAM object computes one call
    at a time (another thread gets a clear error).

    Args:
        model: the network. Its device (first parameter's) is where everything runs.
        target_layers: the layers whose outputs are explained (a module or a list of modules).
            None (with no reshape_transform): chosen, with their transform, by
            ``pytorch_grad_cam.utils.find_layers.find_target_layer``.
        reshape_transform: turns a layer output into (B, C, *spatial), e.g. for token layouts.
        compute_input_gradient: also back-propagate to the input (a full backward pass).
        uses_gradients: whether the method needs gradients (class attribute by default).
        tta_transforms: ttach transforms for ``aug_smooth`` (attribute; default: horizontal
            flip x multiply by 0.9/1/1.1).
        detach: hand the weighting step detached activations and gradients (False keeps
            their graph, for second derivatives or a differentiable map).
        target_layer: deprecated 2021 spelling of ``target_layers=[target_layer]``.
        use_cuda: deprecated; moves the model to CUDA when True and CUDA is available.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import GradCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model = load_demo_model()
        >>> with GradCAM(model, [model.target_layer]) as cam:
        ...     maps = cam(torch.rand(2, 3, 64, 64), targets=[0, 1])
        >>> maps.shape
        (2, 64, 64)
    """

    uses_gradients: bool = True
    # False (FullGrad): a target layer the forward pass skips, or that the target does not
    # depend on, adds nothing to this call's map instead of being an error.
    require_every_layer: bool = True

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | Sequence[nn.Module] | None = None,
        reshape_transform: Callable[[Any], Any] | None = None,
        compute_input_gradient: bool = False,
        uses_gradients: bool | None = None,
        tta_transforms: tta.Compose | None = None,
        detach: bool = True,
        *,
        target_layer: nn.Module | None = None,
        use_cuda: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        check_not_scripted(model)
        model, target_layers, reshape_transform = legacy_constructor_args(
            model, target_layers, reshape_transform, target_layer, use_cuda
        )
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError("reshape_transform must be a callable or None")
        if target_layers is None and reshape_transform is None:
            target_layers, reshape_transform = find_target_layer(model)
        self.model = model
        self.target_layers = _check_target_layers(model, target_layers)
        check_not_scripted(model, self.target_layers)
        self.reshape_transform = reshape_transform
        self.compute_input_gradient = compute_input_gradient
        if uses_gradients is not None:
            self.uses_gradients = uses_gradients
        self.tta_transforms = default_tta_transforms() if tta_transforms is None else tta_transforms
        self.detach = detach
        self.outputs: Any = None  # the model outputs of the last call (detached)
        self.state: ForwardPass | None = None  # the last forward pass
        self._lock = threading.RLock()
        # attached for each forward pass only
        self.activations_and_grads = ActivationsAndGradients(
            model, self.target_layers, reshape_transform, detach, attach=False
        )

    @classmethod
    def __subclasses__(cls) -> list[type]:
        """The direct subclasses, with every method of the package among them: grad-cam
        imports all its methods with the package; here they load on first use, and asking
        for the subclasses is one."""
        package = import_module(__name__.rpartition(".")[0])
        for name in package.__all__:  # (importing base_cam alone loads none of them)
            getattr(package, name)
        return type.__subclasses__(cls)

    @property
    def device(self) -> torch.device:
        """The device the CAM runs on: the model's (inputs are moved there).

        Assigning it is accepted, as grad-cam code does after moving the model; the model's
        device stays the one used, with a warning if the assigned one differs (move the model
        instead: ``model.to(device)``).
        """
        return model_device(self.model)

    @device.setter
    def device(self, device: torch.device | str) -> None:
        wanted, used = torch.device(device), model_device(self.model)
        if wanted.type != used.type or wanted.index not in (None, used.index):
            warnings.warn(
                f"cam.device = {str(wanted)!r} does not move anything: the CAM runs on the "
                f"model's device ({used}); move the model instead (model.to(device))",
                RuntimeWarning,
                stacklevel=2,
            )

    @property
    def input_gradient(self) -> torch.Tensor | None:
        """The gradient of the targets with respect to the input in the last call (with
        ``compute_input_gradient``)."""
        return None if self.state is None else self.state.input_gradient

    # ================================================================= entry points
    def __call__(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Target] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        *,
        target_category: Any = MISSING,
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
        targets = resolve_targets(targets, target_category)
        return as_numpy(self._maps(input_tensor, targets, aug_smooth, eigen_smooth))

    def compute(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Target] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        *,
        keep_graph: bool = False,
    ) -> torch.Tensor:
        """The maps as a float32 tensor (B, *spatial) on the model's device.

        Same arguments as ``__call__``. With ``keep_graph`` the maps stay differentiable with
        respect to the model's parameters and the input (a full forward pass with autograd,
        e.g. to put a CAM in a training loss).
        """
        return self._maps(
            input_tensor, resolve_targets(targets), aug_smooth, eigen_smooth, keep_graph
        )

    def _maps(
        self,
        input_tensor: torch.Tensor,
        targets: Any,
        aug_smooth: bool,
        eigen_smooth: bool,
        keep_graph: bool = False,
    ) -> torch.Tensor:
        with self._call_context():
            input_tensor = self._checked_input(input_tensor, targets)
            if not len(input_tensor):
                return self._empty_maps(input_tensor)
            stage = "forward_augmentation_smoothing" if aug_smooth else "forward"
            if self._foreign(stage):  # grad-cam-style override: numpy in and out
                if keep_graph:
                    raise ValueError(f"keep_graph=True cannot pass through the numpy {stage}")
                self.state = None  # (it may record through activations_and_grads itself)
                maps = getattr(self, stage)(input_tensor, targets, eigen_smooth)
            elif aug_smooth:
                maps = self._augmented(input_tensor, targets, eigen_smooth, keep_graph)
            else:
                maps = self._forward(input_tensor, targets, eigen_smooth, keep_graph)
        maps = as_tensor(maps, input_tensor.device).float()
        return maps if keep_graph else maps.detach()  # (detach=False methods build a graph)

    def per_layer_maps(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Target] | None = None,
        eigen_smooth: bool = False,
    ) -> torch.Tensor:
        """Stages 1-4 only: every target layer's map, before ``aggregate_multi_layers``.

        One forward (and backward) pass for all layers. Same arguments as ``__call__``.

        Returns:
            float32 tensor (B, L, *input size) on the model's device, one ReLU'd, min-max
            normalised and resized map per target layer (in ``target_layers`` order).
        """
        with self._call_context():
            input_tensor = self._checked_input(input_tensor)
            targets = resolve_targets(targets)
            maps = self._forward(input_tensor, targets, eigen_smooth, layers_only=True)
        return maps.float()

    # ================================================================= the pipeline
    def _forward(
        self,
        input_tensor: torch.Tensor,
        targets: Any,
        eigen_smooth: bool,
        keep_graph: bool = False,
        layers_only: bool = False,
    ) -> torch.Tensor:
        """Stages 1-5 on one batch; the maps as a tensor (stages 1-4, (B, L, *size), with
        ``layers_only``)."""
        batch = input_tensor.shape[0]
        state = self._record(input_tensor, keep_graph)  # 1. forward
        try:
            targets = self._explained_targets(state.outputs, targets, batch)  # 2. targets
            if self.uses_gradients:
                self._backpropagate(state, targets)  # 3. gradients
            else:
                check_forward(self, state)
            if state.input_leaf is not None:  # with compute_input_gradient: .grad is filled
                input_tensor = state.input_leaf
            per_layer: list[Any]
            if self._foreign("compute_cam_per_layer"):  # 4. per-layer maps
                per_layer = self.compute_cam_per_layer(input_tensor, targets, eigen_smooth)
            else:
                per_layer = self._cam_per_layer(input_tensor, targets, eigen_smooth)
            normalised_layers = type(self).scale_layer_cam is BaseCAM.scale_layer_cam
            if layers_only:
                layer_maps = torch.cat([as_tensor(m, input_tensor.device) for m in per_layer], 1)
                # checked like an output: each image's largest map over the layers
                check_maps(
                    self,
                    state,
                    layer_maps.amax(dim=1),
                    normalised_layers=normalised_layers,
                    normalised_output=normalised_layers,
                )
                return layer_maps
            if self._foreign("aggregate_multi_layers"):
                per_layer = [as_numpy(cam) for cam in per_layer]
            maps = self.aggregate_multi_layers(per_layer)  # 5. aggregate
            maps = as_tensor(maps, input_tensor.device)
            check_maps(
                self,
                state,
                maps,
                normalised_layers=normalised_layers,
                normalised_output=not self._foreign("aggregate_multi_layers"),
            )
            return maps
        finally:
            state.drop_graph()  # the maps keep the graph they need (keep_graph)

    # ----------------------------------------------------------------- 1. forward
    def _record(self, input_tensor: torch.Tensor, keep_graph: bool) -> ForwardPass:
        """Run the model, recording the target layers' outputs."""
        detach = self.detach and not keep_graph
        truncate = self.uses_gradients and not (self.compute_input_gradient or keep_graph)
        state = self.state = ForwardPass(input_tensor, truncate=truncate, detach=detach)
        aag = self.activations_and_grads
        own = isinstance(aag, ActivationsAndGradients) and not aag.handles
        recorder_hooks: list[Callable] = []
        if own:  # its hooks go on with the pipeline's, for this pass only
            aag.detach = detach
            recorder_hooks = [aag.save_activation, aag.save_gradient]
        aag.activations, aag.gradients = [], []
        model_input = input_tensor
        if self.compute_input_gradient:
            model_input = state.input_leaf = input_tensor.detach().requires_grad_()
        with_grad = (self.uses_gradients and not truncate) or keep_graph
        with (
            state.hooks(self.target_layers, recorder_hooks) as recorder_handles,
            torch.set_grad_enabled(with_grad),
            self.forward_context(),
        ):
            if own:  # (so that it does not attach them a second time)
                aag.handles = recorder_handles
            try:
                state.outputs = aag(model_input)
            finally:
                if own:
                    aag.handles = []
        tensors, rebuild = flatten_tensors(state.outputs)
        self.outputs = rebuild([t.detach() for t in tensors])  # keep no autograd graph alive
        for i, layer in enumerate(self.target_layers):
            if self.require_every_layer and not state.captures_of(i):
                raise RuntimeError(
                    f"target_layers[{i}] ({type(layer).__name__}) was not called during the "
                    "model's forward pass; pick a layer the model runs"
                )
        if not state.captures:
            raise RuntimeError("none of the target layers was called during the forward pass")
        warn_repeated_calls(self, state)
        state.health = CallHealth(len(input_tensor))
        return state

    def forward_context(self) -> AbstractContextManager:
        """Declared hook: a context the model's forward pass runs in (default: none)."""
        return nullcontext()

    # ----------------------------------------------------------------- 2. targets
    def _explained_targets(self, outputs: Any, targets: Any, batch: int) -> list[Target] | None:
        """One target per image (None only for a gradient-free method on an output without
        logits)."""
        if isinstance(targets, TargetsFromOutputs):
            targets = targets.choose(outputs, batch)
        elif targets is None:
            targets = top_class_targets(outputs, batch)
            if targets is None:
                if not self.uses_gradients:
                    return None
                raise TypeError(
                    "targets=None explains each image's top class, which needs a model output "
                    f"of shape (B, num_classes); the model returned {describe_output(outputs)}."
                    " Pass targets=[...] whose targets read this output"
                )
        return broadcast_targets(targets, batch)

    # ----------------------------------------------------------------- 3. gradients
    def _backpropagate(self, state: ForwardPass, targets: list[Target]) -> None:
        """Gradients of the target scores with respect to every captured layer output (and
        the input with ``compute_input_gradient``), handed to ``activations_and_grads``."""
        scores = target_scores(state.outputs, targets)
        check_forward(self, state, scores, targets)
        tensors = [t for c in state.captures for t in c.graph if t.requires_grad]
        if not scores.requires_grad or not tensors:
            raise RuntimeError(
                "the target scores do not depend on the target layers' outputs, so there is no "
                "gradient to use; check the targets and that target_layers feed the output"
            )
        inputs = tensors + ([state.input_leaf] if state.input_leaf is not None else [])
        grads = list(self.layer_gradients(scores, inputs))
        if state.input_leaf is not None:
            grad = grads.pop()
            state.input_gradient = torch.zeros_like(state.input_leaf) if grad is None else grad
            state.input_leaf.grad = state.input_gradient  # as a backward pass would leave it
        flow = iter(grads)
        per_capture = [
            [next(flow) if t.requires_grad else None for t in c.graph] for c in state.captures
        ]
        for i in range(len(self.target_layers)):
            calls = [gs for c, gs in zip(state.captures, per_capture) if c.layer == i]
            if not self.require_every_layer or not calls:
                continue
            if all(g is None for gs in calls for g in gs):
                raise RuntimeError(
                    f"the gradient of the targets never reaches {layer_name(self, i)}: the "
                    "output does not depend on this layer (unused, detached or frozen branch); "
                    "choose another layer"
                )
            if state.health is not None:  # the images the explained call's gradient reaches
                reached = reached_images(calls[-1], len(targets), scores.device)
                state.health.add("raw gradient", i, reached)
        state.publish_gradients(per_capture)

    def layer_gradients(
        self, scores: torch.Tensor, tensors: list[torch.Tensor]
    ) -> Sequence[torch.Tensor | None]:
        """Declared hook: the gradients (None where unused) of the (B,) target scores with
        respect to ``tensors`` (the captured layer outputs, then the input if asked for).

        Methods needing more than first derivatives (ShapleyCAM) override it. The graph is kept
        (``create_graph``) when the pass does not detach.
        """
        create_graph = self.state is not None and not self.state.detach
        return torch.autograd.grad(
            scores.sum(), tensors, allow_unused=True, create_graph=create_graph
        )

    # ----------------------------------------------------------------- 4. per-layer maps
    def _cam_per_layer(
        self, input_tensor: torch.Tensor, targets: list[Target] | None, eigen_smooth: bool
    ) -> list[torch.Tensor]:
        """Each target layer's map, ReLU'd and scaled: a list of (B, 1, *input size)."""
        size = self.get_target_width_height(input_tensor)
        detach = self.state.detach if self.state is not None else self.detach
        # grad-cam-style weighting overrides receive numpy (one copy to the host per layer)
        numpy = detach and any(self._foreign(n) for n in ("get_cam_image", "get_cam_weights"))
        health = self.state.health if self.state is not None else None
        transformed = self.reshape_transform is not None
        maps = []
        for index, activations, grads in self._layer_records():
            layer = self.target_layers[index]
            activations = spatial_record(
                activations, input_tensor, index, layer, "activations", transformed
            )
            if grads is not None:
                grads = spatial_record(grads, input_tensor, index, layer, "gradients", transformed)
            if activations[0, 0].numel() == 1:
                warn_single_position(self, index, activations)
            if health is not None and grads is not None:
                health.add_finite("gradient finite", index, grads)
                health.add("gradient", index, per_image("nonzero", grads))
            if numpy:
                activations, grads = as_numpy(activations), as_numpy(grads)
            with torch.no_grad() if detach else nullcontext():
                cam = self.get_cam_image(
                    input_tensor, layer, targets, activations, grads, eigen_smooth
                )
                cam = as_tensor(cam, input_tensor.device).float().clamp_min(0)
                if health is not None and cam.ndim > 1 and len(cam) == len(input_tensor):
                    health.add_finite("map finite", index, cam)
                    health.add("map range", index, per_image("range", cam))
                maps.append(self.scale_layer_cam(cam, size)[:, None])
        return maps

    def _layer_records(self) -> list[tuple[int, Any, Any]]:
        """(target layer index, activations, gradients) of each explained layer call, from
        what ``activations_and_grads`` recorded (the last call of a layer run twice)."""
        aag = self.activations_and_grads
        activations, gradients = list(aag.activations), list(aag.gradients)
        order = [c.layer for c in self.state.captures] if self.state is not None else []
        if len(activations) != len(order):
            if len(activations) != len(self.target_layers):
                raise RuntimeError(
                    f"activations_and_grads recorded {len(activations)} activations for "
                    f"{len(order)} calls of the {len(self.target_layers)} target layers"
                )
            order = list(range(len(activations)))
        if not gradients:
            if self.uses_gradients:
                raise RuntimeError(
                    "activations_and_grads recorded no gradients; a replacement must fill "
                    ".gradients during the backward pass (see ActivationsAndGradients)"
                )
            gradients = [None] * len(activations)
        elif len(gradients) != len(activations):
            raise RuntimeError(
                f"activations_and_grads recorded {len(gradients)} gradients for "
                f"{len(activations)} activations"
            )
        last = {layer: j for j, layer in enumerate(order)}
        return [(layer, activations[j], gradients[j]) for layer, j in sorted(last.items())]

    def get_cam_image(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: Any,
        grads: Any,
        eigen_smooth: bool = False,
    ) -> Array:
        """Raw map (B, *spatial) of one layer: the channel sum of the weighted activations,
        or their first principal component with ``eigen_smooth``. numpy in, numpy out."""
        weighted = self.get_weighted_activations(
            input_tensor, target_layer, targets, activations, grads
        )
        if eigen_smooth:
            health = self.state.health if self.state is not None else None
            index = next((i for i, m in enumerate(self.target_layers) if m is target_layer), None)
            if health is not None and index is not None and len(weighted) == health.batch:
                # the projection turns NaN into 0: check what it is given
                health.add_finite("weighted finite", index, as_tensor(weighted))
            return get_2d_projection(weighted)
        return weighted.sum(axis=1) if isinstance(weighted, np.ndarray) else weighted.sum(dim=1)

    def get_weighted_activations(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: Any,
        grads: Any,
    ) -> Array:
        """Declared hook: the per-channel terms (B, C, *spatial) whose channel sum is the raw
        map; by default ``get_cam_weights`` (B, C) times the activations."""
        weights = like(
            self.get_cam_weights(input_tensor, target_layer, targets, activations, grads),
            activations,
        )
        return weights.reshape(*weights.shape, *[1] * (activations.ndim - 2)) * activations

    def get_cam_weights(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: Any,
        grads: Any,
    ) -> Array:
        """The method's channel weights (B, C)."""
        raise NotImplementedError(f"{type(self).__name__} does not define get_cam_weights")

    def scale_layer_cam(self, cam: torch.Tensor, target_size: tuple[int, ...]) -> torch.Tensor:
        """Declared hook: post-process one layer's ReLU'd map (B, *spatial): min-max
        normalise each image's map and resize it to ``target_size`` (OpenCV order)."""
        scaled: torch.Tensor = scale_cam_image(cam, target_size)
        return scaled

    # ----------------------------------------------------------------- 5. aggregate
    def aggregate_multi_layers(self, cam_per_target_layer: Sequence[Array]) -> Array:
        """Combine the per-layer maps (each (B, 1, *size)): ReLU, mean over the layers,
        min-max normalisation. numpy in, numpy out."""
        if isinstance(cam_per_target_layer[0], torch.Tensor):
            layers = [torch.as_tensor(c) for c in cam_per_target_layer]
            return scale_cam_image(torch.cat(layers, dim=1).clamp_min(0).mean(dim=1))
        stacked = np.maximum(np.concatenate([np.asarray(c) for c in cam_per_target_layer], 1), 0)
        return scale_cam_image(stacked.mean(axis=1))

    # ================================================================= smoothing
    def _augmented(
        self,
        input_tensor: torch.Tensor,
        targets: Any,
        eigen_smooth: bool,
        keep_graph: bool = False,
    ) -> torch.Tensor:
        """Mean of the maps of every augmented view, mapped back to the input's frame."""
        views = list(self.tta_transforms)
        batch = input_tensor.shape[0]
        per_view: list[torch.Tensor]
        if self._foreign("forward"):  # as grad-cam does: one forward call per view
            per_view = [
                as_tensor(self.forward(v.augment_image(input_tensor), targets, eigen_smooth))
                for v in views
            ]
        else:  # every view in one batch (one view at a time if that runs out of memory)
            if isinstance(targets, list):
                targets = broadcast_targets(targets, batch)
            stacked_targets = targets * len(views) if isinstance(targets, list) else targets
            oom = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
            try:
                stacked = torch.cat([v.augment_image(input_tensor) for v in views])
                with caller_images(batch):  # messages name the caller's images
                    maps = self._forward(stacked, stacked_targets, eigen_smooth, keep_graph)
                per_view = list(maps.split(batch))
            except oom:
                per_view = [
                    self._forward(v.augment_image(input_tensor), targets, eigen_smooth, keep_graph)
                    for v in views
                ]
        deaugmented = [
            v.deaugment_mask(m.to(input_tensor.device)[:, None])[:, 0]
            for v, m in zip(views, per_view)
        ]
        return torch.stack(deaugmented).mean(dim=0)

    # ================================================================= grad-cam's numpy stages
    def forward(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Target] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """Stages 1-5 without test-time augmentation; float32 maps (B, *spatial)."""
        return self._numpy_stage(self._forward, input_tensor, targets, eigen_smooth)

    def forward_augmentation_smoothing(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Target] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """The maps averaged over the test-time augmentations (``aug_smooth=True``)."""
        return self._numpy_stage(self._augmented, input_tensor, targets, eigen_smooth)

    def _numpy_stage(
        self, stage: Callable, input_tensor: torch.Tensor, targets: Any, eigen_smooth: bool
    ) -> np.ndarray:
        with self._call_context():
            targets = resolve_targets(targets)
            input_tensor = self._checked_input(input_tensor, targets)
            if not len(input_tensor):
                return as_numpy(self._empty_maps(input_tensor))
            return as_numpy(stage(input_tensor, targets, eigen_smooth))

    def compute_cam_per_layer(
        self, input_tensor: torch.Tensor, targets: list[Target] | None, eigen_smooth: bool
    ) -> list[np.ndarray]:
        """Stage 4 on what ``activations_and_grads`` recorded: one float32 (B, 1, *size) map
        per target layer, ReLU'd, min-max normalised and resized to the input."""
        return [as_numpy(cam) for cam in self._cam_per_layer(input_tensor, targets, eigen_smooth)]

    def get_target_width_height(self, input_tensor: torch.Tensor) -> tuple[int, ...]:
        """The size maps are resized to, in OpenCV order: (W, H), or (W, H, D) for volumes."""
        return tuple(int(s) for s in input_tensor.shape[2:])[::-1]

    # ================================================================= life cycle
    def release(self) -> None:
        """Remove hooks a replacement ``activations_and_grads`` attached (the CAM's own are
        attached only while the model runs for a call)."""
        aag = self.__dict__.get("activations_and_grads")
        if aag is not None and hasattr(aag, "release"):
            aag.release()

    def __enter__(self) -> BaseCAM:
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, exc_tb: Any) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_lock"] = None
        state["state"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ================================================================= helpers
    def _foreign(self, name: str) -> bool:
        """Whether stage ``name`` is overridden outside this package (grad-cam's contract)."""
        return defined_outside_package(self, name)

    @contextmanager
    def _call_context(self) -> Iterator[None]:
        """One call at a time; eval mode with every flag restored; autograd usable."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(
                f"this {type(self).__name__} object is already computing in another thread; a "
                "CAM object computes one call at a time: create one CAM object per thread"
            )
        try:
            with eval_mode(self.model), torch.inference_mode(False):
                yield
        finally:
            self._lock.release()

    def _checked_input(self, input_tensor: Any, targets: Any = None) -> torch.Tensor:
        """The input batch on the model's device and dtype (see ``checked_batch``); a list of
        targets is checked against its size before the model runs."""
        input_tensor = checked_batch(input_tensor, self.model)
        if isinstance(targets, list) and len(input_tensor):
            broadcast_targets(targets, len(input_tensor))
        return input_tensor

    def _empty_maps(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """The (0, *size) maps of an empty batch (the model does not run)."""
        self.outputs, self.state = None, None
        size = tuple(int(s) for s in self.get_target_width_height(input_tensor))[::-1]
        return torch.zeros((0, *size), device=input_tensor.device)


# --------------------------------------------------------------------- helpers
def default_tta_transforms() -> tta.Compose:
    """grad-cam's test-time augmentations: horizontal flip x multiply by 0.9, 1, 1.1."""
    return tta.Compose([tta.HorizontalFlip(), tta.Multiply(factors=[0.9, 1, 1.1])])


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
    seen: dict[int, int] = {}
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Module):
            raise TypeError(
                f"target_layers[{i}] must be a torch.nn.Module; got {type(layer).__name__}"
            )
        first = seen.setdefault(id(layer), i)
        if first != i:
            raise ValueError(
                f"target_layers[{first}] and target_layers[{i}] are the same module "
                f"({type(layer).__name__}); list each layer once (a repeated layer would only "
                "repeat its map in the mean over the layers)"
            )
        if id(layer) not in in_model:
            raise ValueError(
                f"target_layers[{i}] ({type(layer).__name__}) is not a submodule of the model; "
                "take the layer from the model itself, e.g. target_layers=[model.layer4[-1]]"
            )
    return layers
