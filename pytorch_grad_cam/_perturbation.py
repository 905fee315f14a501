"""Shared by the perturbation methods (ScoreCAM, AblationCAM): options and progress."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from numbers import Integral
from typing import Any

from tqdm import tqdm


def check_batch_size(batch_size: Any) -> int:
    """The ``batch_size`` attribute as a positive int, or a clear error."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    return int(batch_size)


def require_targets(method: str, targets: list | None) -> list:
    """The per-image targets; an error if there are none (the top class could not be read)."""
    if targets is None:
        raise ValueError(
            f"{method} scores perturbed inputs with the targets, but targets=None and the model "
            "output is not (B, num_classes) logits whose top class could be used; pass "
            "targets=[...] that read this model's output"
        )
    return list(targets)


def progress_bar(show: bool, iterable: Iterable, desc: str) -> Iterator:
    """A tqdm bar (stderr) over the perturbation batches.

    Hidden when ``show`` is False or the environment variable ``TQDM_DISABLE`` is set to
    anything but ``""``, ``"0"``, ``"false"`` or ``"no"`` (read at every call).
    """
    disable = not show or progress_disabled()
    return iter(tqdm(iterable, desc=desc, disable=disable, file=sys.stderr))


def progress_disabled() -> bool:
    """Whether the environment variable ``TQDM_DISABLE`` asks for no progress bars."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")
