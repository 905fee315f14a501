"""The base of methods built on another CAM method (FinerCAM, RefineCAM, SESS)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from pytorch_grad_cam._checks import checked_batch, collected_warnings, describe_images, warn
from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM

# what ``describe_images`` writes: "image 3", "images 0, 2, 5", "images 0, ..., 7, ... (9 of 12)"
IMAGES = re.compile(r"\bimages? (\d+(?:, \d+)*)")  # (never cut short while collected)
TARGET_INDEX = re.compile(r"\btargets\[(\d+)\]")
LAYER_INDEX = re.compile(r"\btarget_layers\[(\d+)\]")
NUMBER = re.compile(r"\d[\d.e+-]*")
PLACEHOLDER = "\0"


class ComposedCAM:
    """A method that computes its maps with another CAM method, ``base_method``.

    It builds the base method's CAM object (``self.base_cam``) from the same arguments and
    exposes what callers read from a CAM object. ``compute`` (BaseCAM's signature) checks the
    input, answers an empty batch with empty maps, and calls the subclass's
    ``composed_maps``; warnings and errors of the base method are told in the caller's terms
    (the outer method's name, each warning once). ``forward``/``__call__`` are numpy of it.

    Args:
        model, target_layers, reshape_transform: passed to ``base_method``.
        base_method: a BaseCAM subclass (GradCAM, ScoreCAM, ...).
        **kwargs: other options of ``base_method``.
    """

    input_ndims: tuple[int, ...] = (4, 5)  # (B, C, H, W) images, (B, C, D, H, W) volumes

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any,
        reshape_transform: Any,
        base_method: type[BaseCAM],
        **kwargs: Any,
    ) -> None:
        if not (isinstance(base_method, type) and issubclass(base_method, BaseCAM)):
            raise TypeError(f"base_method must be a BaseCAM subclass; got {base_method!r}")
        self.base_method = base_method
        self.base_options = dict(kwargs)
        self.base_cam = base_method(model, target_layers, reshape_transform, **kwargs)

    def compute(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Target] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        *,
        keep_graph: bool = False,
        **options: Any,
    ) -> torch.Tensor:
        """The maps as a float32 tensor (B, *spatial) on the model's device.

        Same arguments as ``BaseCAM.compute`` (``options``: the method's own, e.g. FinerCAM's
        ``alpha``). With ``keep_graph`` the maps stay differentiable with respect to the
        model's parameters.
        """
        x = checked_batch(input_tensor, self.model, ndims=self.input_ndims)
        if not len(x):
            return torch.zeros(x.shape[:1] + x.shape[2:], device=x.device)
        relay = MessageRelay(self.base_method.__name__, type(self).__name__)
        try:
            with torch.inference_mode(False), relay.part():
                maps = self.composed_maps(
                    x, targets, aug_smooth, eigen_smooth, keep_graph, **options
                )
        finally:
            relay.emit()
        return maps.float()

    def composed_maps(
        self,
        input_tensor: torch.Tensor,
        targets: Any,
        aug_smooth: bool,
        eigen_smooth: bool,
        keep_graph: bool,
    ) -> torch.Tensor:
        """The method: maps (B, *spatial) of a checked, non-empty batch on the model's device."""
        raise NotImplementedError(f"{type(self).__name__} does not define composed_maps")

    @property
    def model(self) -> nn.Module:
        return self.base_cam.model

    @property
    def target_layers(self) -> list[nn.Module]:
        return self.base_cam.target_layers

    @property
    def reshape_transform(self) -> Any:
        return self.base_cam.reshape_transform

    @property
    def device(self) -> torch.device:
        return self.base_cam.device

    @property
    def outputs(self) -> Any:
        """The model outputs of the base method's last call."""
        return self.base_cam.outputs

    @property
    def activations_and_grads(self) -> Any:
        return self.base_cam.activations_and_grads

    def release(self) -> None:
        """Remove hooks the base method holds (see BaseCAM.release)."""
        self.base_cam.release()

    def __enter__(self) -> ComposedCAM:
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, exc_tb: Any) -> None:
        self.release()


class MessageRelay:
    """Tells the warnings and errors of a base method's calls in the caller's terms.

    Inside ``part(images, layer)``: the base method's name becomes the outer method's, image
    numbers and ``targets[i]`` of the inner batch become the caller's (``images[i]``: the
    caller's image of inner image i), ``target_layers[0]`` of a one-layer inner CAM becomes
    ``target_layers[layer]``, and ``prefix`` leads. Errors are re-raised at once; warnings
    are kept, merged when they differ only in their numbers (their images united), and
    issued once each by ``emit``.

    Args:
        inner, outer: the base and the outer method's class names.
        batch: the caller's number of images (to describe them).
        prefix: text put before every message told with an image mapping.
    """

    def __init__(self, inner: str, outer: str, batch: int = 0, prefix: str = "") -> None:
        self.name = re.compile(rf"\b{re.escape(inner)}\b")
        self.outer = outer
        self.batch = batch
        self.prefix = prefix
        self.pending: dict[tuple[Any, ...], tuple[str, set[int]]] = {}

    @contextmanager
    def part(self, images: Sequence[int] | None = None, layer: int | None = None) -> Iterator[None]:
        with collected_warnings() as caught:
            try:
                yield
            except (ValueError, TypeError, RuntimeError, IndexError) as error:
                text, found = self._told(str(error), images, layer)
                text = text.replace(PLACEHOLDER, self._describe(found))
                if text == str(error) or type(error) not in (
                    ValueError,
                    TypeError,
                    RuntimeError,
                    IndexError,
                ):
                    raise
                raise type(error)(text).with_traceback(error.__traceback__) from error.__cause__
        for message, category in caught:
            text, found = self._told(message, images, layer)
            # merged when they differ only in numbers (peaks, counts), never across layers
            key = (category, NUMBER.sub("#", text), tuple(LAYER_INDEX.findall(text)))
            _, known = self.pending.setdefault(key, (text, set()))
            known |= found

    def emit(self) -> None:
        """Issue the warnings kept, once each."""
        for (category, *_), (text, found) in self.pending.items():
            warn(text.replace(PLACEHOLDER, self._describe(found)), category)
        self.pending.clear()

    def _told(
        self, message: str, images: Sequence[int] | None, layer: int | None
    ) -> tuple[str, set[int]]:
        """The message in the caller's terms, its image list replaced by PLACEHOLDER, and the
        caller's images it named."""
        text = self.name.sub(self.outer, message)
        if layer is not None:
            text = LAYER_INDEX.sub(f"target_layers[{layer}]", text)
        found: set[int] = set()
        if images is None:
            return text, found

        def caller_images(match: re.Match) -> str:
            listed = [int(i) for i in match.group(1).split(", ")]
            found.update(images[i] for i in listed if i < len(images))
            return PLACEHOLDER

        text = IMAGES.sub(caller_images, text)
        text = TARGET_INDEX.sub(
            lambda m: (
                f"targets[{images[int(m.group(1))]}]"
                if int(m.group(1)) < len(images)
                else m.group(0)
            ),
            text,
        )
        return self.prefix + text, found

    def _describe(self, images: set[int]) -> str:
        size = max(self.batch, max(images, default=-1) + 1)
        return describe_images(i in images for i in range(size))
