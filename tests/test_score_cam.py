"""Score-CAM: w = softmax_k(score of the input masked by normalise(upsample(A_k)));
map = ReLU(sum_k w_k A_k)."""

import copy
import math

import numpy as np
import pytest
import torch
from conftest import ProbeNet, conv_net, make_probe_case, make_two_layer_case, postprocess
from snapshot import ModelSnapshot, expect_clean_error
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

# ----------------------------------------------------------------------------- numpy oracle


def align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation with the corner samples aligned."""
    matrix = np.zeros((n_out, n_in))
    for i in range(n_out):
        pos = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        j = min(int(math.floor(pos)), n_in - 1)
        frac = pos - j
        matrix[i, j] += 1 - frac
        if frac > 0:
            matrix[i, j + 1] += frac
    return matrix


def upsample(maps: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Multilinear, corners aligned, of (..., *grid) maps to ``size`` (separable)."""
    out = maps
    for axis, n_out in enumerate(size, start=maps.ndim - len(size)):
        matrix = align_corners_matrix(out.shape[axis], n_out)
        out = np.moveaxis(np.tensordot(matrix, np.moveaxis(out, axis, 0), axes=1), 0, axis)
    return out


def score_cam_weights(model: nn.Module, x: np.ndarray, acts: np.ndarray, classes) -> np.ndarray:
    """Softmax over channels of the scores of every masked input (masks in numpy, scores from
    a float64 copy of the model)."""
    model64 = copy.deepcopy(model).double()
    weights = []
    for img, a, c in zip(x, acts, classes):
        masks = upsample(a, x.shape[2:])  # (C, *spatial)
        axes = tuple(range(1, masks.ndim))
        low, high = masks.min(axis=axes, keepdims=True), masks.max(axis=axes, keepdims=True)
        masks = (masks - low) / (high - low + 1e-8)
        with torch.no_grad():
            scores = model64(torch.from_numpy(img[None] * masks[:, None]))[:, c].numpy()
        e = np.exp(scores - scores.max())
        weights.append(e / e.sum())
    return np.stack(weights)


def expected_maps(model: nn.Module, x: torch.Tensor, acts: list[np.ndarray], classes) -> np.ndarray:
    """The reference Score-CAM maps, from each target layer's activations (B, C, *grid)."""
    raw = []
    for a in acts:
        w = score_cam_weights(model, x.double().numpy(), a, classes)
        raw.append((w.reshape(*w.shape, *[1] * (a.ndim - 2)) * a).sum(axis=1))
    return postprocess(raw, tuple(x.shape[2:]))


def classes_of(case) -> list[int]:
    if case.targets is None:
        return case.model(case.x).argmax(dim=1).tolist()
    targets = case.targets * len(case.x) if len(case.targets) == 1 else case.targets
    return [t.category for t in targets]


# ----------------------------------------------------------------------------- oracles


@pytest.mark.parametrize(
    "case_factory",
    [
        make_probe_case,
        lambda: make_probe_case(targets=[ClassifierOutputTarget(4)]),
        lambda: make_probe_case(targets=None),
        lambda: make_probe_case(channels=2, grid=(2, 3, 2), stride=2),
        lambda: make_probe_case(batch=1, channels=1, grid=(4, 4), stride=2),
    ],
    ids=["per-image-targets", "one-target", "top-class", "volume-5d", "one-channel"],
)
def test_matches_numpy_oracle(case_factory):
    case = case_factory()
    cam = ScoreCAM(case.model, case.layers, progress=False, batch_size=2)
    got = cam(case.x, case.targets)
    assert got.dtype == np.float32 and got.shape == (len(case.x), *case.x.shape[2:])
    np.testing.assert_allclose(
        got, expected_maps(case.model, case.x, case.acts, classes_of(case)), atol=1e-5
    )


def test_hand_computed_example():
    # Stride 1, 2 channels on a 2x2 grid: the upsampling is the identity and A = x.
    # A_0 = [[0, 1], [2, 3]] -> M_0 = A_0 / 3;  A_1 = [[1, 0], [0, 0]] -> M_1 = A_1.
    # The head reads channel 0 only: s_k = sum(A_0 * M_k), s_0 = (1 + 4 + 9) / 3 = 14/3, s_1 = 0.
    model = ProbeNet(channels=2, grid=(2, 2), classes=1, stride=1)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0]] * 2]]))
        model.head.bias.zero_()
    a0, a1 = np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[1.0, 0.0], [0.0, 0.0]])
    x = torch.tensor(np.stack([a0, a1])[None], dtype=torch.float32)
    w0 = math.exp(14 / 3) / (math.exp(14 / 3) + 1)
    raw = w0 * a0 + (1 - w0) * a1
    expected = (raw - raw.min()) / (raw.max() - raw.min() + 1e-7)
    got = ScoreCAM(model, [model.probe], progress=False)(x, [ClassifierOutputTarget(0)])
    np.testing.assert_allclose(got[0], expected, atol=1e-5)


@pytest.mark.parametrize("targets", ["per-image", None])
def test_two_layers_match_numpy_oracle(targets):
    case = make_two_layer_case(targets=targets)
    got = ScoreCAM(case.model, case.layers, progress=False)(case.x, case.targets)
    expected = expected_maps(case.model, case.x, case.acts, classes_of(case))
    np.testing.assert_allclose(got, expected, atol=1e-5)


# ----------------------------------------------------------------------------- streaming


class WideNet(nn.Module):
    """x (3, 32, 32) -> avg-pool 8 -> 1x1 conv to ``channels`` (the target, 4x4) -> linear."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pool = nn.AvgPool2d(8)
        self.conv = nn.Conv2d(3, channels, 1)
        self.fc = nn.Linear(channels, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(self.pool(x)).mean(dim=(2, 3)))


class LargestStorage(TorchDispatchMode):
    """Tracks the largest storage (bytes) that any operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batches_never_exceed_batch_size_and_do_not_change_the_result(batch_size):
    model = WideNet(10).eval()
    x = torch.rand(2, 3, 32, 32)
    reference = ScoreCAM(model, [model.conv], progress=False, batch_size=7)(x, [1, 2])
    batches = []
    model.pool.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])))
    cam = ScoreCAM(model, [model.conv], progress=False, batch_size=batch_size, fast_scoring=False)
    got = cam(x, [1, 2])
    assert batches[0] == 2 and max(batches[1:]) == min(batch_size, 2 * 10)
    np.testing.assert_allclose(got, reference, atol=1e-6)


def test_memory_does_not_grow_with_the_channel_count():
    x = torch.rand(2, 3, 32, 32)
    largest = {}
    for channels in (8, 64):
        model = WideNet(channels).eval()
        cam = ScoreCAM(model, [model.conv], progress=False, batch_size=4, fast_scoring=False)
        with LargestStorage() as tracker:
            cam(x, [0, 3])
        largest[channels] = tracker.largest
    per_image = 3 * 32 * 32 * 4  # bytes of one float32 input image
    assert largest[64] == largest[8]
    assert largest[64] <= 4 * per_image  # one batch of masked inputs, not 2 x 64 of them


def test_identical_activation_maps_are_scored_once():
    # Input channels 1 and 2 are zero: their maps (and masks) are equal, so each image needs
    # 2 masked inputs (channel 0 and the shared zero map), not 3.
    model = ProbeNet(channels=3, grid=(2, 2), stride=2)
    batches = []
    model.sub.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])))
    x = torch.rand(2, 3, 4, 4)
    x[:, 1:] = 0
    cam = ScoreCAM(model, [model.probe], progress=False, fast_scoring=False)
    got = cam(x, [0, 1])
    assert sum(batches) == 2 + 2 * 2  # the plain forward pass + 2 masked inputs per image
    np.testing.assert_allclose(
        got, expected_maps(model, x, [model.sub(x).double().numpy()], [0, 1]), atol=1e-5
    )


# ----------------------------------------------------------------------------- fast scoring


def with_batchnorm_statistics(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model


@pytest.mark.parametrize("fast", [True, False])
def test_fast_scoring_feeds_channels_last_batches_and_leaves_the_model_alone(fast):
    model = with_batchnorm_statistics(conv_net(batchnorm=True))
    layouts = []
    model.conv1.register_forward_pre_hook(
        lambda module, args: layouts.append(
            args[0].is_contiguous(memory_format=torch.channels_last) and args[0].shape[0] > 2
        )
    )
    ScoreCAM(model, [model.conv2], progress=False, fast_scoring=fast)(torch.rand(2, 3, 8, 8))
    masked_batches = layouts[-2:]  # 2 images x 8 channels in batches of 16: one batch
    assert masked_batches[-1] == fast
    assert all(p.is_contiguous() for p in model.parameters())


def test_fast_scoring_gives_the_plain_model_maps():
    model = with_batchnorm_statistics(conv_net(batchnorm=True))
    x = torch.rand(2, 3, 16, 16)
    maps = [
        ScoreCAM(model, [model.conv2], progress=False, fast_scoring=fast)(x, [1, 3])
        for fast in (True, False)
    ]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-5)


def test_fast_scoring_falls_back_when_channels_last_breaks_the_model():
    class ViewNet(nn.Module):  # view() needs a contiguous input
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            return self.fc(self.conv(x.view(x.shape[0], 3, 8, 8)).view(x.shape[0], -1))

    torch.manual_seed(0)
    model = ViewNet().eval()
    x = torch.rand(2, 3, 8, 8)
    maps = [
        ScoreCAM(model, [model.conv], progress=False, fast_scoring=fast)(x, [0, 2])
        for fast in (True, False)
    ]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-6)


# ----------------------------------------------------------------------------- API, errors


def test_vit_with_reshape_transform_is_independent_of_batch_size():
    timm = pytest.importorskip("timm")
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=4
    ).eval()
    x = torch.rand(2, 3, 32, 32)
    layer = model.blocks[-1].norm1
    maps = [
        ScoreCAM(model, [layer], vit_reshape_transform, batch_size=bs, progress=False)(x)
        for bs in (5, 32)
    ]
    assert maps[0].shape == (2, 32, 32) and 0 <= maps[0].min() and maps[0].max() <= 1
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-5)


def test_top_class_by_default():
    model = conv_net()
    x = torch.rand(2, 3, 16, 16)
    top = model(x).argmax(dim=1).tolist()
    np.testing.assert_array_equal(
        ScoreCAM(model, [model.conv2], progress=False)(x),
        ScoreCAM(model, [model.conv2], progress=False)(x, top),
    )


def test_progress_goes_to_stderr_and_can_be_silenced(capsys, monkeypatch):
    model = conv_net()
    x = torch.rand(1, 3, 16, 16)
    ScoreCAM(model, [model.conv2])(x, [0])
    out, err = capsys.readouterr()
    assert out == "" and "ScoreCAM" in err
    ScoreCAM(model, [model.conv2], progress=False)(x, [0])
    assert capsys.readouterr() == ("", "")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    ScoreCAM(model, [model.conv2])(x, [0])
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("fail", [False, True], ids=["success", "error-while-scoring"])
def test_model_is_unchanged_and_hooks_are_gone(fail):
    model = with_batchnorm_statistics(conv_net(batchnorm=True, dropout=True)).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cam = ScoreCAM(model, [model.conv2], progress=False, batch_size=4)
    x = torch.rand(2, 3, 16, 16)
    if fail:  # without fast scoring, the target first reads the scores of masked inputs
        cam.fast_scoring = False

        def failing_target(output):
            raise RuntimeError("target failed")

        with pytest.raises(RuntimeError, match="target failed"):
            cam(x, [failing_target])
        assert all(not m._forward_hooks for m in model.modules())
        cam.fast_scoring = True
    cam(x, [0, 1])
    cam.release()
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


@pytest.mark.parametrize("batch_size", [0, -2, 1.5, "16"])
def test_bad_batch_size_is_reported(batch_size):
    model = conv_net()
    cam = ScoreCAM(model, [model.conv2], progress=False)
    cam.batch_size = batch_size
    with pytest.raises(ValueError, match="batch_size"):
        cam(torch.rand(1, 3, 16, 16), [0])


def test_missing_targets_on_a_non_classifier_output_are_reported():
    class DictNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = conv_net()

        def forward(self, x):
            return {"scores": self.net(x)[:, :, None]}

    model = DictNet().eval()
    cam = ScoreCAM(model, [model.net.conv2], progress=False)
    with pytest.raises(ValueError, match="targets"):
        cam(torch.rand(1, 3, 16, 16))
    assert all(not m._forward_hooks for m in model.modules())


def test_numpy_integer_batch_size_is_accepted():
    model = conv_net()
    x = torch.rand(1, 3, 16, 16)
    cam = ScoreCAM(model, [model.conv2], progress=False, batch_size=np.int64(3))
    np.testing.assert_array_equal(
        cam(x, [0]), ScoreCAM(model, [model.conv2], progress=False, batch_size=3)(x, [0])
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_model(dtype):
    # The masks are computed in float32 but must reach the model in its own dtype.
    x = torch.rand(2, 3, 16, 16)
    model = conv_net()
    reference = ScoreCAM(model, [model.conv2], progress=False)(x, [0, 1])
    model = model.to(dtype)
    got = ScoreCAM(model, [model.conv2], progress=False)(x.to(dtype), [0, 1])
    assert got.dtype == np.float32 and got.shape == (2, 16, 16)
    np.testing.assert_allclose(got, reference, atol=0.02)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = with_batchnorm_statistics(conv_net(batchnorm=True))
    x = torch.rand(2, 3, 16, 16)
    cpu = ScoreCAM(model, [model.conv2], progress=False)(x, [0, 4])
    model.cuda()
    try:
        gpu = ScoreCAM(model, [model.conv2], progress=False)(x.cuda(), [0, 4])
    finally:
        model.cpu()
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)


# ----------------------------------------------------------------------------- reliability


class NanAfter:
    """The logit of class 0, then NaN from the ``after``-th image scored on."""

    def __init__(self, after: int) -> None:
        self.after, self.calls = after, 0

    def __call__(self, output):
        self.calls += 1
        return output[0] if self.calls <= self.after else output[0] * float("nan")

    def __repr__(self) -> str:
        return "NanAfter()"


def test_a_non_finite_score_of_a_masked_input_names_the_target_and_channel():
    model = conv_net()
    cam = ScoreCAM(model, [model.conv2], progress=False, fast_scoring=False)
    targets = [ClassifierOutputTarget(1), NanAfter(after=1)]  # image 1's masked inputs
    expect_clean_error(
        model,
        lambda: cam(torch.rand(2, 3, 16, 16), targets),
        ValueError,
        r"targets\[1\] \(NanAfter\(\)\) gives a non-finite score \(nan\) for image 1 masked by "
        r"the activation map of channel \d",
    )
    with pytest.raises(ValueError, match=r"targets\[0\] .* for image 0 \(the unmasked input\)"):
        cam(torch.rand(2, 3, 16, 16), [NanAfter(after=0)])


@pytest.mark.parametrize("batch_size", [0, 2.5])
def test_a_bad_batch_size_is_reported_at_construction(batch_size):
    model = conv_net()
    before = ModelSnapshot.of(model)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        ScoreCAM(model, [model.conv2], batch_size=batch_size)
    before.assert_unchanged(model)
