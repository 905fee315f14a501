"""Multi-layer Ablation-CAM: channel k ablated in every target layer in the same pass;
w_k = (y - y_k) / y shared by the layers' maps."""

import numpy as np
import pytest
import torch
from conftest import LinearHead, Probe, postprocess
from snapshot import expect_clean_error
from torch import nn

from pytorch_grad_cam import AblationCAM as OneLayerAblationCAM
from pytorch_grad_cam.ablation_cam_multilayer import AblationCAM, AblationLayer


def chain(channels=3, grid=(3, 4), classes=4):
    """x -> probe1 -> probe2 -> linear head: both target layers output x."""
    gen = torch.Generator().manual_seed(5)
    head = LinearHead(torch.randn(classes, channels, *grid, generator=gen), torch.ones(classes))
    return nn.Sequential(Probe(), Probe(), head).eval()


def test_matches_numpy_oracle():
    model = chain()
    x = torch.rand(2, 3, 3, 4, generator=torch.Generator().manual_seed(6))  # >= 0: ablated -> 0
    targets = [1, 3]
    a = x.double().numpy()
    w = model[2].weight.detach().double().numpy()[targets]  # (B, C, H, W)
    y = (w * a).sum(axis=(1, 2, 3)) + 1.0
    # ablating channel k in both layers removes its term from y (the second layer sees the
    # first one's zeros): y - y_k = sum(W_k A_k)
    drops = (w * a).sum(axis=(2, 3))
    weights = drops / y[:, None]
    raw = (weights[:, :, None, None] * a).sum(axis=1)
    cam = AblationCAM(model, [model[0], model[1]], progress=False, batch_size=2)
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    try:
        got = cam(x, targets)
    finally:
        handle.remove()
    np.testing.assert_allclose(got, postprocess([raw, raw], (3, 4)), atol=1e-5)
    # the layers are ablated together: per image 3 ablated copies (one per channel, not per
    # layer) in batches of 2, after the forward pass of the batch
    assert calls == [2, 2, 1, 2, 1]


def test_one_layer_is_plain_ablation_cam():
    model = chain()
    x = torch.rand(2, 3, 3, 4, generator=torch.Generator().manual_seed(7))
    got = AblationCAM(model, [model[1]], progress=False)(x, [0, 2])
    expected = OneLayerAblationCAM(model, [model[1]], progress=False)(x, [0, 2])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_layers_with_other_channel_counts_are_an_error_and_leave_no_hooks():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 5, 1), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(1, 3, 4, 4))
    cam = AblationCAM(model, [model[0], model[1]], progress=False)
    expect_clean_error(
        model,
        lambda: cam(torch.rand(1, 3, 4, 4), [0]),
        ValueError,
        "must have the same number of channels",
    )
    assert not any(m._forward_hooks for m in model.modules())


class NanAfter:
    """A target that scores logit 1 for its first ``calls`` calls, then NaN."""

    def __init__(self, calls):
        self.calls = calls

    def __call__(self, output):
        self.calls -= 1
        return output[1] * (1.0 if self.calls >= 0 else float("nan"))


@pytest.mark.parametrize(
    "score, where",
    [
        (NanAfter(0), r"\(nothing ablated\)"),
        (lambda output: output[1] / (output[1] - output[1]), r"\(nothing ablated\)"),
        (NanAfter(1), "with channel 0 ablated in every target layer"),
    ],
)
def test_a_non_finite_target_score_names_the_target(score, where):
    model = chain()
    x = torch.rand(2, 3, 3, 4, generator=torch.Generator().manual_seed(6))
    cam = AblationCAM(model, [model[0], model[1]], progress=False)
    expect_clean_error(
        model,
        lambda: cam(x, [1, score]),
        ValueError,
        rf"targets\[1\] \(.*\) gives a non-finite score .* for image 1 {where}",
    )


def test_the_wrapper_layer_ablates_copy_i_at_channel_i():
    wrapped = AblationLayer(nn.Identity(), None, torch.tensor([2, 0]))
    out = wrapped(torch.ones(2, 3, 1, 1))
    np.testing.assert_array_equal(out[:, :, 0, 0].numpy(), [[1, 1, 0], [0, 1, 1]])
