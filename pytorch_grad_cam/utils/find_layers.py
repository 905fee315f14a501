"""Search for and replace submodules of a model by identity, type or predicate."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

LayerTypes = type | tuple[type, ...] | list[type]


def replace_layer_recursive(model: nn.Module, old_layer: nn.Module, new_layer: nn.Module) -> bool:
    """Replace the first submodule that *is* ``old_layer`` (identity) with ``new_layer``.

    Args:
        model: module to search (its descendants, depth first).
        old_layer: the module instance to replace.
        new_layer: the module to put in its place.

    Returns:
        True if a replacement was made, False otherwise.
    """
    for name, child in model._modules.items():
        if child is None:
            continue
        if child is old_layer:
            model._modules[name] = new_layer
            return True
        if replace_layer_recursive(child, old_layer, new_layer):
            return True
    return False


def replace_all_layer_type_recursive(
    model: nn.Module, old_layer_type: LayerTypes, new_layer: nn.Module
) -> None:
    """Replace every descendant that is an instance of ``old_layer_type`` with ``new_layer``.

    The same ``new_layer`` instance is used for every replacement; the replaced modules'
    own children are not searched.

    Args:
        model: module whose descendants are searched.
        old_layer_type: type (or tuple/list of types) to replace.
        new_layer: the module to put in place of each match.
    """
    types = tuple(old_layer_type) if isinstance(old_layer_type, list) else old_layer_type
    for name, child in model._modules.items():
        if child is None:
            continue
        if isinstance(child, types):
            model._modules[name] = new_layer
        else:
            replace_all_layer_type_recursive(child, types, new_layer)


def find_layer_predicate_recursive(
    model: nn.Module, predicate: Callable[[nn.Module], bool]
) -> list[nn.Module]:
    """Return all descendants of ``model`` (depth-first, pre-order) for which ``predicate`` holds.

    ``model`` itself is not tested.

    Args:
        model: module whose descendants are searched.
        predicate: function of a module returning whether to keep it.

    Returns:
        list of matching modules.
    """
    found = []
    for child in model._modules.values():
        if child is None:
            continue
        if predicate(child):
            found.append(child)
        found.extend(find_layer_predicate_recursive(child, predicate))
    return found


def find_layer_types_recursive(model: nn.Module, layer_types: LayerTypes) -> list[nn.Module]:
    """Return all descendants of ``model`` whose exact type is one of ``layer_types``.

    Subclasses do not match (use :func:`find_layer_predicate_recursive` with ``isinstance``
    for that).

    Args:
        model: module whose descendants are searched.
        layer_types: type or iterable of types.

    Returns:
        list of matching modules, depth-first pre-order.
    """
    types = (layer_types,) if isinstance(layer_types, type) else tuple(layer_types)
    return find_layer_predicate_recursive(model, lambda layer: type(layer) in types)
