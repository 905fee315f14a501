"""Model and layer outputs: walking nested structures, one image's part, the logits."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch


def flatten_tensors(obj: Any) -> tuple[list[torch.Tensor], Callable[[list[Any]], Any]]:
    """Split a (nested) output into its tensors and a function that rebuilds it.

    Tensors, lists, tuples (named tuples too) and mappings are walked; anything else is kept
    as it is. ``rebuild(new_tensors)`` returns the same structure with the tensors replaced
    (it keeps no reference to the original tensors).
    """
    if isinstance(obj, torch.Tensor):
        return [obj], _first
    if not isinstance(obj, (list, tuple, Mapping)):
        return [], lambda ts: obj
    kind: Any = type(obj)
    keys = list(obj.keys()) if isinstance(obj, Mapping) else None
    values = list(obj.values()) if isinstance(obj, Mapping) else list(obj)
    parts = [flatten_tensors(value) for value in values]
    builders = [build for _, build in parts]
    counts = [len(tensors) for tensors, _ in parts]
    named = isinstance(obj, tuple) and hasattr(obj, "_fields")

    def rebuild(ts: list[Any]) -> Any:
        values, start = [], 0
        for build, n in zip(builders, counts):
            values.append(build(ts[start : start + n]))
            start += n
        if keys is not None:
            return kind(zip(keys, values))
        return kind(*values) if named else kind(values)

    return [t for tensors, _ in parts for t in tensors], rebuild


def _first(ts: list[Any]) -> Any:
    return ts[0]


def select_image(outputs: Any, index: int, batch: int) -> Any:
    """Image ``index``'s part of a batched model output (what a target receives).

    * a tensor with a batch axis: its row ``index``;
    * a list of ``batch`` entries: entry ``index``, as iterating the output gives (detector
      results: dicts, other objects or per-image tensors, whatever their lengths); likewise a
      tuple of ``batch`` entries that are not all tensors;
    * other structures (tuples of batched tensors, dicts, objects with ``.logits``): the same
      structure with every batched tensor sliced.
    """
    if isinstance(outputs, torch.Tensor):
        return outputs[index] if outputs.ndim > 0 and outputs.shape[0] == batch else outputs
    if isinstance(outputs, (list, tuple)) and len(outputs) == batch and _per_image(outputs, batch):
        return outputs[index]
    tensors, rebuild = flatten_tensors(outputs)
    logits = getattr(outputs, "logits", None)
    if not tensors and isinstance(logits, torch.Tensor):  # e.g. a dataclass with .logits
        one = copy.copy(outputs)
        object.__setattr__(one, "logits", select_image(logits, index, batch))
        return one
    if not tensors:
        return outputs
    try:
        return rebuild([select_image(t, index, batch) for t in tensors])
    except TypeError:
        return {k: select_image(v, index, batch) for k, v in dict(outputs).items()}


def _per_image(entries: list | tuple, batch: int) -> bool:
    """Whether a list/tuple of ``batch`` entries holds one entry per image: any list (grad-cam
    iterates the output), or a tuple with a non-tensor entry, unless it starts with a batched
    tensor (a tuple of tensors, or one led by a batch of logits, is taken as batched outputs,
    e.g. ``(logits, aux)`` or ``(logits, 0)``)."""
    if isinstance(entries, list):
        return True
    first = entries[0]
    if isinstance(first, torch.Tensor) and first.ndim > 0 and first.shape[0] == batch:
        return False
    return not all(isinstance(e, torch.Tensor) for e in entries)


def describe_output(outputs: Any) -> str:
    """A short description of a model output for error messages."""
    if isinstance(outputs, torch.Tensor):
        return f"a tensor of shape {tuple(outputs.shape)}"
    return f"a {type(outputs).__name__}"


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor of a model output.

    Accepts a tensor, an object with a ``logits`` attribute (HuggingFace ``ModelOutput``),
    a mapping with a ``'logits'`` key, or a tuple/list whose first element is the logits.

    Raises:
        TypeError: if no tensor can be found.
    """
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(output, (tuple, list)) and output:
        return logits_of(output[0])
    raise TypeError(
        "expected the model output to be a tensor, an object with a 'logits' tensor attribute, "
        "a mapping with a 'logits' key, or a tuple/list starting with a tensor; "
        f"got {type(output)!r}"
    )
