"""End to end: on the trained demo model, every metric ranks Grad-CAM above RandomCAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytorch_grad_cam import GradCAM, RandomCAM
from pytorch_grad_cam.demo.model import load_demo_model
from pytorch_grad_cam.demo.shapes import make_shapes_batch
from pytorch_grad_cam.metrics import (
    DeletionCurve,
    DropInConfidence,
    InsertionCurve,
    ROADCombined,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The imputer runs many small ops: on a busy shared CPU, extra threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo_maps():
    """4 circle-only and 4 square-only images; Grad-CAM and RandomCAM maps of the shape."""
    model = load_demo_model()
    rng = np.random.default_rng(0)
    images = torch.cat([make_shapes_batch(rng, 4, classes=(k,))[0] for k in (0, 1)])
    targets = [ClassifierOutputTarget(k) for k in (0, 1) for _ in range(4)]
    torch.manual_seed(0)
    grad = GradCAM(model, [model.target_layer])(images, targets)
    random = RandomCAM(model, [model.target_layer])(images, targets)
    return model, images, targets, grad, random


@pytest.mark.parametrize(
    "metric, higher_is_better",
    [
        (DropInConfidence(), False),
        (DeletionCurve(n_steps=16), False),
        (InsertionCurve(n_steps=16), True),
        (ROADCombined(percentiles=[20, 50, 80]), True),
    ],
    ids=["drop", "deletion", "insertion", "road"],
)
def test_metric_ranks_random_cam_below_grad_cam(demo_maps, metric, higher_is_better):
    model, images, targets, grad, random = demo_maps
    grad_score = metric(images, grad, targets, model).mean()
    random_score = metric(images, random, targets, model).mean()
    sign = 1 if higher_is_better else -1
    assert sign * (grad_score - random_score) > 0
    assert not model.training
