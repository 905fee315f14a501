"""Tests for SimilarityToConceptTarget: explaining an embedding model's output."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import SimilarityToConceptTarget


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 4),  # a 4-d embedding, no classes
    )


def test_cosine_similarity_by_hand():
    target = SimilarityToConceptTarget(np.array([1.0, 0.0, 1.0]))  # float64 numpy concept
    embedding = torch.tensor([2.0, 2.0, 0.0])
    assert target(embedding).item() == pytest.approx(2 / (math.sqrt(2) * math.sqrt(8)))
    batch = torch.tensor([[1.0, 0.0, 1.0], [-3.0, 1.0, -3.0]])
    assert target(batch).tolist() == pytest.approx([1.0, -6 / (math.sqrt(2) * math.sqrt(19))])
    assert target(embedding).dtype == torch.float32  # the concept follows the output's dtype


def test_concept_with_a_graph_is_detached():
    concept = torch.ones(3, requires_grad=True) * 2  # e.g. another model's embedding
    target = SimilarityToConceptTarget(concept)
    embedding = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    target(embedding).backward()
    assert embedding.grad is not None and not target.features.requires_grad


def test_bad_shapes():
    with pytest.raises(ValueError, match="features"):
        SimilarityToConceptTarget(torch.ones(2, 3))
    with pytest.raises(ValueError, match="embedding of size 3"):
        SimilarityToConceptTarget(torch.ones(3))(torch.ones(4))


def test_grad_cam_of_the_similarity(model):
    x = torch.randn(2, 3, 6, 6)
    concepts = torch.randn(2, 4)
    targets = [SimilarityToConceptTarget(c) for c in concepts]
    maps = GradCAM(model, [model[0]])(x, targets=targets)

    acts = model[0](x).detach().requires_grad_()
    embedding = model[1:](acts)
    score = torch.nn.functional.cosine_similarity(embedding, concepts, dim=1).sum()
    grads = torch.autograd.grad(score, acts)[0]
    cam = (grads.mean(dim=(2, 3))[:, :, None, None] * acts).sum(dim=1).clamp_min(0).detach()
    cam = cam - cam.amin(dim=(1, 2), keepdim=True)
    cam = cam / cam.amax(dim=(1, 2), keepdim=True)
    assert np.allclose(maps, cam.numpy(), atol=1e-5)


def test_opposite_concept_flips_the_gradient(model):
    x = torch.randn(1, 3, 6, 6)
    concept = torch.randn(4)
    grads = []
    for c in (concept, -concept):
        cam = GradCAM(model, [model[0]])
        cam(x, targets=[SimilarityToConceptTarget(c)])
        grads.append(cam.activations_and_grads.gradients[0])
    assert bool(grads[0].any())
    assert torch.allclose(grads[0], -grads[1], atol=1e-6)
