"""A tiny fully-convolutional CNN that tells discs from squares, with shipped weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pytorch_grad_cam.demo.shapes import DEMO_CLASSES

__all__ = ["DEMO_CLASSES", "WEIGHTS_PATH", "DemoCNN", "load_demo_model"]

WEIGHTS_PATH = Path(__file__).with_name("demo_cnn.pt")
"""Where :func:`load_demo_model` reads the trained ``state_dict`` from."""


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class DemoCNN(nn.Module):
    """Conv/BN/ReLU blocks, global average pooling and a linear layer with 2 outputs.

    Takes RGB images in [0, 1] of shape (B, 3, H, W) as they come from
    :func:`~pytorch_grad_cam.demo.shapes.make_shapes_batch` (no mean/std normalisation)
    and returns (B, 2) multi-label logits: logit k > 0 means "shape k is in the image".
    ``features`` downsamples by 4; its last block (:attr:`target_layer`) is the natural
    layer to explain with a CAM.
    """

    def __init__(self, num_classes: int = len(DEMO_CLASSES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(3, 16, stride=2),
            _block(16, 32),
            _block(32, 48, stride=2),
            _block(48, 48),
            _block(48, 64),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    @property
    def target_layer(self) -> nn.Module:
        """The last convolutional block, ``features[-1]``."""
        return self.features[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def load_demo_model(device: str | torch.device = "cpu") -> DemoCNN:
    """Build a :class:`DemoCNN` with the shipped trained weights, in eval mode.

    Args:
        device: where to put the model.

    Returns:
        The trained model.
    """
    model = DemoCNN()
    state = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()
