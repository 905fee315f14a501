"""One forward pass of a CAM call: what the target layers output, and hooks that capture it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pytorch_grad_cam._checks import CallHealth
from pytorch_grad_cam._outputs import flatten_tensors


@dataclass
class Capture:
    """One call of a target layer during the pass."""

    layer: int  # index into the CAM's target_layers
    graph: list[torch.Tensor]  # the output's tensors, as the model's autograd graph uses them
    recording: list[torch.Tensor]  # the copies the recorder was shown (values as returned)
    rebuild: Callable[[list[Any]], Any]  # puts tensors back into the output's structure

    def output(self) -> Any:
        """The layer output as it returned it (detached copies)."""
        return self.rebuild([t.detach() for t in self.recording])


class ForwardPass:
    """The state of one forward pass of a CAM call.

    While ``hooks(...)`` is active, every call of a target layer shows the recorder
    (``ActivationsAndGradients`` or a replacement with its contract) a *recording* of the
    output, while the model goes on with the output itself:

    * with ``detach`` the recording is a copy that is its own autograd leaf; otherwise a
      differentiable clone. Either way later in-place ops of the model cannot change it, and
      the recorder's gradient hooks fire once, when ``publish_gradients`` hands them the
      gradients the CAM computed (however many backward passes that took);
    * with ``truncate`` the pass runs without autograd until the first target layer, whose
      output becomes the leaf the backward pass stops at: nothing before it is kept for, or
      reached by, the backward pass.

    The hooks act only in the thread that runs the pass.
    """

    def __init__(self, input_tensor: torch.Tensor, *, truncate: bool, detach: bool) -> None:
        self.input_tensor = input_tensor
        self.truncate = truncate
        self.detach = detach
        self.thread = threading.get_ident()
        self.captures: list[Capture] = []
        self.outputs: Any = None  # the model output, with its autograd graph
        self.input_leaf: torch.Tensor | None = None  # set when the input gradient is wanted
        self.input_gradient: torch.Tensor | None = None
        self.health: CallHealth | None = None  # per-image checks of the call (BaseCAM)
        self.shared: dict[str, Any] = {}  # what a method computes once for every layer
        self._shown: Any = None  # the recording structure handed on to the recorder's hooks
        self._continued: Any = None  # the output structure the model goes on with

    @contextmanager
    def hooks(
        self, layers: Sequence[nn.Module], recorder_hooks: Sequence[Callable]
    ) -> Iterator[list[RemovableHandle]]:
        """Attach the capture hooks (and ``recorder_hooks``, run on the recording) to
        ``layers`` until the block ends; yields the handles of the recorder hooks."""
        handles, recorder_handles = [], []
        try:
            for index, layer in enumerate(layers):
                handles.append(layer.register_forward_hook(self._capture_hook(index), prepend=True))
                recorder_handles += [
                    layer.register_forward_hook(self._guard(h)) for h in recorder_hooks
                ]
                handles.append(layer.register_forward_hook(self._continue))
            yield recorder_handles
        finally:
            for handle in handles + recorder_handles:
                handle.remove()
            self._shown = self._continued = None

    def captures_of(self, layer: int) -> list[Capture]:
        """The captures of target layer ``layer``, in call order."""
        return [c for c in self.captures if c.layer == layer]

    def publish_gradients(self, gradients: Sequence[Sequence[torch.Tensor | None]]) -> None:
        """Hand each capture's gradients (one per tensor of its output) to the recorder's
        gradient hooks, last capture first (as a backward pass reaches them)."""
        for capture, grads in reversed(list(zip(self.captures, gradients))):
            pairs = [(r, g) for r, g in zip(capture.recording, grads) if r.requires_grad]
            if pairs:
                recordings = [r for r, _ in pairs]
                torch.autograd.grad(
                    [r.view_as(r) for r in recordings],
                    recordings,
                    grad_outputs=[g if g is not None else torch.zeros_like(r) for r, g in pairs],
                    create_graph=not self.detach,
                )

    def drop_graph(self) -> None:
        """Forget the autograd graph (the recorder keeps its records)."""
        self.captures = [Capture(c.layer, [], [], c.rebuild) for c in self.captures]
        self.outputs = None
        self.input_leaf = None
        self.health = None  # (it refers to the call's gradients and maps)
        self.shared = {}

    # ----------------------------------------------------------------- the hooks
    def _capture_hook(self, index: int) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if threading.get_ident() != self.thread:
                return None
            return self._capture(index, output)

        return hook

    def _capture(self, index: int, output: Any) -> Any:
        tensors, rebuild = flatten_tensors(output)
        graph, recording, continued = [], [], []
        for t in tensors:
            if not t.is_floating_point():
                graph.append(t)
                recording.append(t)
                continued.append(t)
            elif self.truncate and not t.requires_grad:  # the graph starts here
                torch.set_grad_enabled(True)
                leaf = t.detach().requires_grad_()
                graph.append(leaf)
                # the model goes on with a copy, so the leaf keeps the recorded values
                continued.append(leaf.clone())
                recording.append(leaf.detach().requires_grad_())
            else:
                graph.append(t)
                continued.append(t)
                if not t.requires_grad:
                    recording.append(t.detach().clone())
                elif self.detach:
                    recording.append(t.detach().clone().requires_grad_())
                else:
                    recording.append(t.clone())
        self.captures.append(Capture(index, graph, recording, rebuild))
        self._shown, self._continued = rebuild(recording), rebuild(continued)
        return self._shown

    def _continue(self, module: nn.Module, args: Any, output: Any) -> Any:
        if threading.get_ident() != self.thread or output is not self._shown:
            return None  # another thread's forward, or a hook replaced the recording
        return self._continued

    def _guard(self, hook: Callable) -> Callable:
        def guarded(module: nn.Module, args: Any, output: Any) -> Any:
            if threading.get_ident() == self.thread:
                return hook(module, args, output)
            return None

        return guarded
