"""Ablation-CAM."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
from torch import fx, nn

from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.activations_and_gradients import flatten_tensors
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.score_cam import (
    check_batch_size,
    check_targets,
    progress_bar,
)


class AblationCAM(BaseCAM):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020).

    w_k = (y - y_k) / y, with y the target score and y_k the score when channel k of the target
    layer's output is ablated (see ``AblationLayer``);  map = ReLU(sum_k w_k A_k).
    (When y = 0 the weights are y - y_k: only their sign and ratios matter to the map.)

    The layers before the target layer give the same result for every ablation. When the model
    can be split there with ``torch.fx``, they run once per call and the ablated batches go
    through the rest of the model only; otherwise every ablated batch is a full forward pass in
    which a hook replaces the target layer's output. Both give the same maps.

    Args:
        ablation_layer: builds the ablated batches (default ``AblationLayer()``; use
            ``AblationLayerVit()`` for channels-last token layouts).
        batch_size: ablated copies per forward pass (attribute).
        ratio_channels_to_ablate: below 1, only the channels chosen by
            ``ablation_layer.activations_to_be_ablated`` are ablated; the others get weight 0.
        progress: show a tqdm bar on stderr (attribute; ``TQDM_DISABLE=1`` also hides it).
        split_model: try the suffix-only path (attribute); ``last_path`` tells which one ran.
    """

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        ablation_layer: AblationLayer | None = None,
        batch_size: int = 32,
        ratio_channels_to_ablate: float = 1.0,
        *,
        progress: bool = True,
        split_model: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        if isinstance(ablation_layer, type):
            name = ablation_layer.__name__
            raise TypeError(f"ablation_layer must be an instance such as {name}(), not the class")
        self.ablation_layer = AblationLayer() if ablation_layer is None else ablation_layer
        self.batch_size = batch_size
        self.ratio_channels_to_ablate = ratio_channels_to_ablate
        self.progress = progress
        self.split_model = split_model
        self.last_path: str | None = None
        self._splits: dict[nn.Module, _Split | None] = {}

    def get_cam_weights(
        self, input_tensor, target_layer, targets, activations, grads
    ) -> torch.Tensor:
        batch_size = check_batch_size(self.batch_size)
        ratio = self.ratio_channels_to_ablate
        if isinstance(ratio, bool) or not isinstance(ratio, Real) or not 0 < ratio <= 1:
            raise ValueError(f"ratio_channels_to_ablate must be in (0, 1]; got {ratio!r}")
        targets = check_targets(self, targets)
        batch, channels = activations.shape[:2]
        device = activations.device
        layer = self.ablation_layer
        index = next(i for i, m in enumerate(self.target_layers) if m is target_layer)
        aag = self.activations_and_grads
        raw = aag.rebuild(index, [t.detach() for t in aag.layer_outputs[index]])
        with torch.no_grad():
            # (on the device even if a target returns Python numbers)
            original = self._target_scores(self.outputs, targets, batch).float().to(device)
            plans = [
                torch.as_tensor(layer.activations_to_be_ablated(activations[b], ratio)).long()
                for b in range(batch)
            ]
            chunks = [
                (b, start, min(start + batch_size, len(plan)))
                for b, plan in enumerate(plans)
                for start in range(0, len(plan), batch_size)
            ]
            ablated = original[:, None].repeat(1, channels)
            try:
                with self._ablated_forward(input_tensor, target_layer, raw, targets) as run:
                    for b, start, stop in progress_bar(self, chunks, "AblationCAM"):
                        count = stop - start
                        layer.indices = plans[b][start:]
                        layer.set_next_batch(
                            input_batch_index=b, activations=raw, num_channels_to_ablate=count
                        )
                        scores = self._target_scores(run(b, count), [targets[b]] * count, count)
                        ablated[b, plans[b][start:stop].to(device)] = scores.to(ablated)
            finally:
                layer.activations = None  # free the batch of copies of the layer output
        denominator = torch.where(original == 0, torch.ones_like(original), original)[:, None]
        return (original[:, None] - ablated) / denominator

    @contextmanager
    def _ablated_forward(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        raw: Any,
        targets: list,
    ) -> Iterator[Callable[[int, int], Any]]:
        """Yield ``run(b, n)``: the model outputs of the ablation layer's next batch of ``n``
        ablated copies of image ``b`` (suffix only when the model splits, else full passes)."""
        layer = self.ablation_layer
        live = None
        if self.split_model:
            if target_layer not in self._splits:
                self._splits[target_layer] = _Split.build(self.model, target_layer)
            split = self._splits[target_layer]
            live = None if split is None else self._split_inputs(split, input_tensor, raw, targets)
            if live is None and split is not None:
                del self._splits[target_layer]  # retrace next call: the model may have changed
        if live is not None:
            self.last_path = "split"
            yield lambda b, n: split.suffix(
                layer(None), *[_repeat(v, b, n) if d else v for v, d in zip(live, split.depends)]
            )
            return
        self.last_path = "full"
        handle = target_layer.register_forward_hook(lambda module, args, output: layer(None))
        try:
            yield lambda b, n: self.model(_repeat(input_tensor, b, n))
        finally:
            handle.remove()

    def _split_inputs(
        self, split: _Split, input_tensor: torch.Tensor, raw: Any, targets: list
    ) -> list[Any] | None:
        """The values the suffix needs besides the layer output (``raw``), from one run of the
        prefix if there are any; None if the split does not reproduce the model's scores on a
        re-batched input."""
        batch = input_tensor.shape[0]
        try:
            # With no other live values, the recorded layer output is all the suffix needs.
            layer_output, *live = split.prefix(input_tensor) if split.depends else (raw,)
            for value, depends in zip(live, split.depends):
                if depends and not (
                    isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch
                ):
                    return None
            # A batch of another size and order than the input's must give the same scores.
            order = torch.cat([torch.arange(batch), torch.zeros(1, dtype=torch.long)])
            order = order.to(input_tensor.device)
            tensors, rebuild = flatten_tensors(layer_output)
            outputs = split.suffix(
                rebuild([t[order] for t in tensors]),
                *[v[order] if d else v for v, d in zip(live, split.depends)],
            )
            scores = self._target_scores(outputs, [targets[i] for i in order.tolist()], batch + 1)
        except Exception:  # untraceable detail (shapes baked in, non-batched values...)
            return None
        reference = self._target_scores(self.outputs, targets, batch).float()[order]
        tolerance = 1e-3 * (float(reference.abs().max()) + 1e-6)
        if not torch.allclose(scores.float(), reference, rtol=1e-3, atol=tolerance):
            return None
        return live


@dataclass
class _Split:
    """A model cut at a target layer: ``prefix(x) -> (layer output, *live)`` and
    ``suffix(layer output, *live) -> model output``, where ``live`` are the other values computed
    before the layer that the rest of the model uses (e.g. a residual branch); ``depends[i]``
    says whether ``live[i]`` depends on the input (and so must be repeated per ablated copy)."""

    prefix: fx.GraphModule
    suffix: fx.GraphModule
    depends: list[bool]

    @staticmethod
    def build(model: nn.Module, target_layer: nn.Module) -> _Split | None:
        """Trace ``model`` with ``target_layer`` as a leaf and cut it there (None if impossible:
        untraceable model, layer not called exactly once)."""
        name = next((n for n, m in model.named_modules() if m is target_layer), "")
        if not name:
            return None

        class Tracer(fx.Tracer):
            def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
                return module is target_layer or super().is_leaf_module(module, qualified_name)

        try:
            traced = fx.GraphModule(model, Tracer().trace(model))
        except Exception:  # data-dependent control flow, unsupported ops, ...
            return None
        nodes = list(traced.graph.nodes)
        cuts = [n for n in nodes if n.op == "call_module" and n.target == name]
        if len(cuts) != 1:
            return None
        cut = nodes.index(cuts[0])
        before = set(nodes[:cut])
        live = []
        for node in nodes[cut + 1 :]:
            for arg in node.all_input_nodes:
                if arg in before and arg.op != "get_attr" and arg not in live:
                    live.append(arg)
        dependent = {nodes[0]} if nodes[0].op == "placeholder" else set()  # the input image
        for node in nodes[:cut]:
            if any(a in dependent for a in node.all_input_nodes):
                dependent.add(node)

        prefix, env = fx.Graph(), {}
        for node in nodes[: cut + 1]:
            env[node] = prefix.node_copy(node, env.__getitem__)
        prefix.output((env[cuts[0]], *[env[n] for n in live]))

        suffix = fx.Graph()
        env = {cuts[0]: suffix.placeholder("layer_output")}
        env.update({n: suffix.placeholder(f"live_{i}") for i, n in enumerate(live)})
        for node in nodes[cut + 1 :]:
            for arg in node.all_input_nodes:
                if arg not in env:  # a parameter or buffer read before the cut
                    env[arg] = suffix.node_copy(arg)
            env[node] = suffix.node_copy(node, env.__getitem__)
        return _Split(
            fx.GraphModule(traced, prefix),
            fx.GraphModule(traced, suffix),
            [n in dependent for n in live],
        )


def _repeat(value: torch.Tensor, index: int, count: int) -> torch.Tensor:
    """``count`` copies of entry ``index`` of a batched tensor, as a new batch."""
    return value[index : index + 1].repeat(count, *[1] * (value.ndim - 1))
