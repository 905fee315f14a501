"""A snapshot of everything a CAM call could change on a model, for the error tests: every
error must leave the model exactly as it was.

``prime(model)`` first puts the model in a state where changes show: mixed train/eval flags, a
frozen parameter, and a ``.grad`` on the others. ``expect_clean_error`` checks a bad call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_globals

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)
GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


@dataclass
class ModelSnapshot:
    """Hooks (module, tensor and global), train flags, parameters, buffers, ``requires_grad``
    and ``.grad`` of a model, as they were when taken."""

    hooks: dict[str, list]
    global_hooks: dict[str, list]
    training: dict[str, bool]
    requires_grad: dict[str, bool]
    params: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor | None]
    buffers: dict[str, torch.Tensor]
    tensor_hooks: dict[str, int]

    @classmethod
    def of(cls, model: nn.Module) -> ModelSnapshot:
        return cls(
            hooks={
                f"{name}.{kind}": list(getattr(m, kind, {}).keys())
                for name, m in model.named_modules()
                for kind in HOOK_DICTS
            },
            global_hooks={
                k: list(getattr(module_globals, k, {}).keys()) for k in GLOBAL_HOOK_DICTS
            },
            training={name: m.training for name, m in model.named_modules()},
            requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
            params={n: p.detach().clone() for n, p in model.named_parameters()},
            grads={
                n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
            },
            buffers={n: b.clone() for n, b in model.named_buffers()},
            tensor_hooks={n: len(p._backward_hooks or {}) for n, p in model.named_parameters()},
        )

    def assert_unchanged(self, model: nn.Module) -> None:
        now = ModelSnapshot.of(model)
        assert now.hooks == self.hooks, "module hooks changed"
        assert now.global_hooks == self.global_hooks, "global module hooks changed"
        assert now.tensor_hooks == self.tensor_hooks, "parameter hooks changed"
        assert now.training == self.training, "train/eval flags changed"
        assert now.requires_grad == self.requires_grad, "requires_grad changed"
        assert now.params.keys() == self.params.keys() and now.buffers.keys() == self.buffers.keys()
        for name, value in self.params.items():
            assert torch.equal(now.params[name], value), f"parameter {name} changed"
        for name, value in self.buffers.items():
            assert torch.equal(now.buffers[name], value), f"buffer {name} changed"
        for name, grad in self.grads.items():
            got = now.grads[name]
            assert (got is None) == (grad is None), f"{name}.grad appeared or vanished"
            assert grad is None or torch.equal(got, grad), f"{name}.grad changed"


def prime(model: nn.Module) -> nn.Module:
    """Mixed train/eval flags, the first parameter frozen, a ``.grad`` on every other."""
    model.train()
    modules = list(model.modules())
    for module in modules[1::2]:
        module.eval()
    params = list(model.parameters())
    for i, p in enumerate(params):
        if i == 0:
            p.requires_grad_(False)
        else:
            p.grad = torch.full_like(p, 0.5)
    return model


def expect_clean_error(
    model: nn.Module,
    call: Callable[[], Any],
    error: type[BaseException],
    match: str,
    *,
    primed: bool = True,
) -> pytest.ExceptionInfo:
    """``call()`` raises ``error`` matching ``match`` and leaves ``model`` exactly as it was."""
    if primed:
        prime(model)
    before = ModelSnapshot.of(model)
    with pytest.raises(error, match=match) as info:
        call()
    before.assert_unchanged(model)
    return info


def expect_clean_warning(
    model: nn.Module, call: Callable[[], Any], match: str, *, primed: bool = True
) -> Any:
    """``call()`` warns (RuntimeWarning) matching ``match``, leaves ``model`` as it was, and
    returns what it returned."""
    if primed:
        prime(model)
    before = ModelSnapshot.of(model)
    with pytest.warns(RuntimeWarning, match=match):
        result = call()
    before.assert_unchanged(model)
    return result
