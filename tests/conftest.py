"""Shared tiny models, synthetic images and numpy/OpenCV oracles for the CAM tests.

The oracle model is ``ProbeNet``: ``x -> Subsample -> Probe -> LinearHead``. The probe (the
target layer) outputs A = x subsampled, and the head computes y_k = sum(W[k] * A) + b_k, so
dy_k/dA = W[k] exactly. Every CAM formula can then be evaluated in numpy from A and W and
compared with the library.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

# ----------------------------------------------------------------------------- tiny models


class Subsample(nn.Module):
    """Keeps every ``stride``-th position along each spatial axis (a known, linear map)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[(slice(None), slice(None)) + (slice(None, None, self.stride),) * (x.ndim - 2)]


class Probe(nn.Identity):
    """The target layer of the oracle models: passes its input through unchanged."""


class LinearHead(nn.Module):
    """y_k = sum(W[k] * A) + b_k over channels and positions, so dy_k/dA = W[k]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a.flatten(1) @ self.weight.flatten(1).T + self.bias


class ProbeNet(nn.Module):
    """``x -> Subsample(stride) -> Probe -> LinearHead``, with a seeded random head.

    Some head weights are exactly 0 (zero gradients, for Grad-CAM++'s alpha rule).
    """

    def __init__(
        self, channels: int = 3, grid: tuple[int, ...] = (3, 4), classes: int = 5, stride: int = 3
    ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1234)
        weight = torch.randn(classes, channels, *grid, generator=gen)
        weight[torch.rand(weight.shape, generator=gen) < 0.15] = 0.0
        self.sub = Subsample(stride)
        self.probe = Probe()
        self.head = LinearHead(weight, torch.randn(classes, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.probe(self.sub(x)))


class TwoProbeNet(nn.Module):
    """Two independent branches at different resolutions: y = head1(A1) + head2(A2).

    A1 = first ``split`` channels subsampled by 2, A2 = the other channels subsampled by 4.
    """

    def __init__(self, channels: int = 4, split: int = 2, size: tuple[int, int] = (8, 12)):
        super().__init__()
        gen = torch.Generator().manual_seed(99)
        self.split = split
        self.sub1, self.sub2 = Subsample(2), Subsample(4)
        self.probe1, self.probe2 = Probe(), Probe()
        grid1 = [(s + 1) // 2 for s in size]
        grid2 = [(s + 3) // 4 for s in size]
        self.head1 = LinearHead(torch.randn(5, split, *grid1, generator=gen), torch.zeros(5))
        self.head2 = LinearHead(
            torch.randn(5, channels - split, *grid2, generator=gen), torch.randn(5, generator=gen)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a1 = self.probe1(self.sub1(x[:, : self.split]))
        a2 = self.probe2(self.sub2(x[:, self.split :]))
        return self.head1(a1) + self.head2(a2)


class ConvNet(nn.Module):
    """A small CNN: conv1 -> [bn] -> relu -> conv2 (target) -> relu2 -> pool 2x2 -> [drop] -> fc."""

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 5,
        *,
        batchnorm: bool = False,
        dropout: bool = False,
        inplace: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6) if batchnorm else nn.Identity()
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.drop = nn.Dropout(0.5) if dropout else nn.Identity()
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.bn(self.conv1(x)))))
        return self.fc(self.drop(self.pool(x).flatten(1)))


class Conv3dNet(nn.Module):
    """A tiny volumetric CNN for (B, C, D, H, W) inputs; ``conv`` is the target layer."""

    def __init__(self, in_channels: int = 1, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, 4, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool3d(2)
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def conv_net(seed: int = 0, **kwargs) -> ConvNet:
    """A seeded ``ConvNet`` in eval mode."""
    torch.manual_seed(seed)
    return ConvNet(**kwargs).eval()


def synthetic_image(height: int = 64, width: int = 64) -> np.ndarray:
    """A float32 RGB image in [0, 1]: a bright disc on a colour gradient."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    disc = ((yy - height / 3) ** 2 + (xx - width / 3) ** 2 < (min(height, width) / 5) ** 2) * 0.6
    img = np.stack([xx / width * 0.4 + disc, yy / height * 0.4, 0.3 + 0.2 * disc], axis=-1)
    return np.clip(img, 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------- numpy oracles


def minmax(maps: np.ndarray) -> np.ndarray:
    """Per-image min-max: subtract the min, divide by (max + 1e-7)."""
    axes = tuple(range(1, maps.ndim))
    maps = maps - maps.min(axis=axes, keepdims=True)
    return maps / (maps.max(axis=axes, keepdims=True) + 1e-7)


def resize(image: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """cv2.resize(INTER_LINEAR) of an (h, w) map to ``size`` = (H, W); (d, h, w) -> (D, H, W)
    by resizing every slice in-plane, then along depth (trilinear interpolation is separable)."""
    image = image.astype(np.float64)
    if image.ndim == 2:
        return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    depth, height, width = size
    planes = np.stack([resize(plane, (height, width)) for plane in image])
    flat = cv2.resize(
        planes.reshape(len(image), -1), (height * width, depth), interpolation=cv2.INTER_LINEAR
    )
    return flat.reshape(depth, height, width)


def postprocess(raw_maps: list[np.ndarray], size: tuple[int, ...]) -> np.ndarray:
    """BaseCAM's post-processing of per-layer raw maps (B, *grid) to (B, *size).

    Per layer: ReLU, min-max, resize. Across layers: stack, ReLU, mean, min-max.
    """
    layers = []
    for raw in raw_maps:
        scaled = minmax(np.maximum(raw, 0))
        layers.append(np.stack([resize(m, size) for m in scaled]))
    return minmax(np.maximum(np.stack(layers, axis=1), 0).mean(axis=1))


def project(maps: np.ndarray) -> np.ndarray:
    """First principal component of (B, C, *grid) per image: rows = positions, cols = channels.

    NaN -> 0, channel means subtracted, projection on the top right-singular vector, whose sign
    makes its entries sum to >= 0.
    """
    out = []
    for m in maps:
        x = np.nan_to_num(m.reshape(m.shape[0], -1).T.astype(np.float64), nan=0.0)
        x = x - x.mean(axis=0)
        v = np.linalg.svd(x, full_matrices=False)[2][0]
        out.append((x @ (v if v.sum() >= 0 else -v)).reshape(m.shape[1:]))
    return np.stack(out)


# ----------------------------------------------------------------------------- oracle cases


@dataclass
class ProbeCase:
    """A model whose target-layer activations and gradients are known in numpy (float64).

    ``acts[i]`` / ``grads[i]``: (B, C, *grid) of layer ``layers[i]`` for ``targets`` (one per
    image; with ``targets=None`` the grads are those of each image's top class).
    """

    model: nn.Module
    layers: list[nn.Module]
    x: torch.Tensor
    targets: list | None
    acts: list[np.ndarray] = field(default_factory=list)
    grads: list[np.ndarray] = field(default_factory=list)

    def expected(self, raw_maps: list[np.ndarray]) -> np.ndarray:
        """The post-processed reference for one raw map (B, *grid) per layer."""
        return postprocess(raw_maps, tuple(self.x.shape[2:]))


def _case_from_heads(model, layers, x, targets, acts, heads) -> ProbeCase:
    logits = sum(
        a.reshape(len(a), -1) @ h.weight.detach().double().numpy().reshape(len(h.weight), -1).T
        + h.bias.detach().double().numpy()
        for a, h in zip(acts, heads)
    )
    classes = (
        logits.argmax(axis=1)
        if targets is None
        else [t.category for t in (targets * len(x) if len(targets) == 1 else targets)]
    )
    grads = [np.stack([h.weight.detach().double().numpy()[c] for c in classes]) for h in heads]
    return ProbeCase(model, layers, x, targets, acts, grads)


def make_probe_case(
    batch: int = 2,
    channels: int = 3,
    grid: tuple[int, ...] = (3, 4),
    stride: int = 3,
    targets: list | str | None = "per-image",
    seed: int = 0,
) -> ProbeCase:
    """A one-layer ``ProbeNet`` case; input size = grid * stride (non-square by default)."""
    if targets == "per-image":
        targets = [ClassifierOutputTarget((1 + 2 * i) % 5) for i in range(batch)]
    model = ProbeNet(channels, grid, stride=stride)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, *[g * stride for g in grid], generator=gen) * 2 - 0.5
    acts = [model.sub(x).double().numpy()]
    return _case_from_heads(model, [model.probe], x, targets, acts, [model.head])


def make_two_layer_case(targets: list | str | None = "per-image", seed: int = 0) -> ProbeCase:
    """A ``TwoProbeNet`` case with a 4x6 and a 2x3 target layer on an 8x12 input."""
    if targets == "per-image":
        targets = [ClassifierOutputTarget(2), ClassifierOutputTarget(4)]
    model = TwoProbeNet()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 4, 8, 12, generator=gen) * 2 - 0.5
    acts = [model.sub1(x[:, :2]).double().numpy(), model.sub2(x[:, 2:]).double().numpy()]
    return _case_from_heads(
        model, [model.probe1, model.probe2], x, targets, acts, [model.head1, model.head2]
    )


ORACLE_CASES = {
    "per-image-targets": make_probe_case,
    "one-target-for-all": lambda: make_probe_case(targets=[ClassifierOutputTarget(4)]),
    "top-class": lambda: make_probe_case(targets=None),
    "two-layers": make_two_layer_case,
    "two-layers-top-class": lambda: make_two_layer_case(targets=None),
    "volume-5d": lambda: make_probe_case(channels=2, grid=(2, 3, 2), stride=2),
    "one-channel": lambda: make_probe_case(batch=1, channels=1, grid=(4, 4), stride=2),
}


def check_against_oracle(cam_class, case: ProbeCase, raw_map, **call_kwargs) -> np.ndarray:
    """Run ``cam_class`` on ``case`` and compare with the numpy reference.

    ``raw_map(acts, grads)`` gives one layer's raw map (B, *grid) from numpy arrays.
    """
    with cam_class(case.model, case.layers) as cam:
        got = cam(case.x, case.targets, **call_kwargs)
    expected = case.expected([raw_map(a, g) for a, g in zip(case.acts, case.grads)])
    assert got.dtype == np.float32
    assert got.shape == (len(case.x), *case.x.shape[2:])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    return got


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Run the tests on one intra-op thread: the small test models gain nothing from more, and
    on a shared machine thread contention makes them many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def probe_case() -> ProbeCase:
    return make_probe_case()
