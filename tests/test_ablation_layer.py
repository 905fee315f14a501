"""Ablation layers: copies of one image's layer output, copy i with channel indices[i] ablated."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from conftest import project

from pytorch_grad_cam import AblationLayer, AblationLayerFasterRCNN, AblationLayerVit


def test_copies_of_one_image_with_one_channel_each_set_to_zero():
    acts = torch.rand(2, 3, 2, 2) + 0.1
    original = acts.clone()
    layer = AblationLayer()
    layer.indices = torch.tensor([2, 0, 1])
    layer.set_next_batch(input_batch_index=1, activations=acts, num_channels_to_ablate=2)
    out = layer(None)
    assert out.shape == (2, 3, 2, 2)
    expected = original[1:2].repeat(2, 1, 1, 1)
    expected[0, 2] = 0
    expected[1, 0] = 0
    torch.testing.assert_close(out, expected)
    assert torch.equal(acts, original)  # the stored activations are copies


def test_negative_activations_are_ablated_far_below_their_minimum():
    acts = torch.tensor([[[[-2.0, 1.0]], [[0.5, 3.0]]]])  # (1, 2, 1, 2), min -2
    layer = AblationLayer()
    layer.indices = torch.tensor([1])
    layer.set_next_batch(0, acts, 1)
    out = layer(None)
    assert torch.equal(out[0, 0], acts[0, 0])
    assert torch.all(out[0, 1] == -2.0 - 1e7)


def test_vit_layer_ablates_the_last_axis_at_every_token():
    tokens = torch.rand(2, 5, 4)  # (B, tokens, C)
    layer = AblationLayerVit()
    layer.indices = np.array([3, 1])  # numpy indices, as the original library stored them
    layer.set_next_batch(0, tokens, 2)
    out = layer(None)
    expected = tokens[:1].repeat(2, 1, 1)
    expected[0, :, 3] = 0
    expected[1, :, 1] = 0
    torch.testing.assert_close(out, expected)


def test_faster_rcnn_layer_counts_channels_through_the_pyramid_levels():
    levels = OrderedDict([("0", torch.rand(2, 2, 4, 4)), ("pool", torch.rand(2, 3, 2, 2))])
    layer = AblationLayerFasterRCNN()
    layer.indices = torch.tensor([1, 3])  # level "0" channel 1; level "pool" channel 1
    layer.set_next_batch(1, levels, 2)
    out = layer(None)
    assert list(out) == ["0", "pool"] and out["0"].shape == (2, 2, 4, 4)
    expected_0 = levels["0"][1:2].repeat(2, 1, 1, 1)
    expected_pool = levels["pool"][1:2].repeat(2, 1, 1, 1)
    expected_0[0, 1] = -1000
    expected_pool[1, 1] = -1000
    torch.testing.assert_close(out["0"], expected_0)
    torch.testing.assert_close(out["pool"], expected_pool)


def test_all_channels_are_ablated_at_ratio_one():
    layer = AblationLayer()
    indices = layer.activations_to_be_ablated(torch.rand(7, 3, 3), 1.0)
    assert indices.tolist() == list(range(7)) and layer.indices is indices


def channel_scores(acts: np.ndarray) -> np.ndarray:
    """Share of each channel's normalised |map| inside the objectiveness mask (numpy)."""
    p = np.abs(project(acts[None])[0])
    inside = (p - p.min()) / (p - p.min()).max() > 0.01
    norm = np.abs(acts).reshape(len(acts), -1)
    norm = norm - norm.min(axis=1, keepdims=True)
    norm = norm / norm.max(axis=1, keepdims=True)
    return (norm * inside.reshape(-1)).sum(axis=1) / norm.sum(axis=1)


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.4])
def test_partial_ratio_picks_the_highest_and_lowest_scoring_channels(ratio):
    gen = torch.Generator().manual_seed(2)
    acts = torch.rand(10, 4, 4, generator=gen) ** 3
    acts[:, :2, :2] += 2 * torch.rand(10, 1, 1, generator=gen)  # an "object" in one corner
    scores = channel_scores(acts.double().numpy())
    order = np.argsort(scores, kind="stable")
    count = int(10 * ratio)
    expected = sorted(set(order[:count]) | set(order[10 - count :]))
    got = AblationLayer().activations_to_be_ablated(acts.numpy(), ratio)
    assert got.tolist() == expected


def test_all_zero_channels_score_lowest():
    gen = torch.Generator().manual_seed(3)
    acts = torch.rand(4, 3, 3, generator=gen) + 0.1
    acts[2] = 0  # its score is 0/0: counted as 0 (least likely to matter), not as NaN
    with np.errstate(invalid="ignore"):
        scores = channel_scores(acts.double().numpy())
    top = int(np.nanargmax(scores))
    got = AblationLayer().activations_to_be_ablated(acts, 0.25)
    assert got.tolist() == sorted({2, top})
