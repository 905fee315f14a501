"""Ablation-CAM: w_k = (y - y_k) / y with y_k the score when channel k is ablated;
map = ReLU(sum_k w_k A_k)."""

import warnings

import numpy as np
import pytest
import torch
from conftest import ProbeNet, conv_net, make_probe_case, make_two_layer_case, postprocess
from snapshot import ModelSnapshot, expect_clean_error
from torch import nn

from pytorch_grad_cam import AblationCAM, AblationLayer, AblationLayerVit
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

# ----------------------------------------------------------------------------- models


class StridedLinearNet(nn.Module):
    """``x -> x[:, :, ::2, ::2] -> probe (target) -> linear``: traceable, so the split path
    applies; y_c = sum(W[c] * A) + b_c."""

    def __init__(self, channels: int = 3, grid: tuple[int, int] = (3, 4), classes: int = 5):
        super().__init__()
        gen = torch.Generator().manual_seed(7)
        self.probe = nn.Identity()
        self.head = nn.Linear(channels * grid[0] * grid[1], classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=gen))
            self.head.bias.copy_(torch.randn(classes, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.probe(x[:, :, ::2, ::2]).flatten(1))


class Block(nn.Module):
    """A residual block: relu(bn2(conv2(relu(bn1(conv1(x))))) + x); ``relu`` runs twice."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU())
        self.block1, self.block2 = Block(6), Block(6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 4)
        gen = torch.Generator().manual_seed(4)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                with torch.no_grad():
                    m.running_mean.copy_(torch.randn(6, generator=gen) * 0.2)
                    m.running_var.copy_(torch.rand(6, generator=gen) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block2(self.block1(self.stem(x)))).flatten(1))


# ----------------------------------------------------------------------------- oracle


def ablation_weights(weight: np.ndarray, bias: np.ndarray, acts: np.ndarray, classes, rest=0.0):
    """(y - y_k) / y for a linear head y_c = sum(W[c] * A) + b_c (+ ``rest``, per image: the
    part of the score from other layers), float64; A is (B, C, *grid)."""
    out = []
    for a, c, other in zip(acts, classes, np.broadcast_to(rest, len(acts))):
        w = weight[c].reshape(a.shape)
        axes = tuple(range(1, a.ndim))
        y = (w * a).sum() + bias[c] + other
        value = 0.0 if a.min() >= 0 else a.min() - 1e7
        y_k = y - (w * a).sum(axis=axes) + value * w.sum(axis=axes)
        out.append((y - y_k) / y)
    return np.stack(out)


def expected_maps(acts, weights, size) -> np.ndarray:
    """Post-processed maps from one (acts, weights) array or one list of them per layer."""
    acts, weights = (acts, weights) if isinstance(acts, list) else ([acts], [weights])
    raw = [
        (w.reshape(*w.shape, *[1] * (a.ndim - 2)) * a).sum(axis=1) for a, w in zip(acts, weights)
    ]
    return postprocess(raw, size)


def numpy_head(head: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    return head.weight.detach().double().numpy(), head.bias.detach().double().numpy()


@pytest.mark.parametrize("negative", [False, True], ids=["non-negative", "negative"])
@pytest.mark.parametrize("model_kind", ["split", "full"])
def test_matches_numpy_oracle(model_kind, negative):
    x = torch.rand(2, 3, 6, 8) + 0.1
    if negative:
        x = x - 0.6
    if model_kind == "split":
        model = StridedLinearNet()
        acts = x[:, :, ::2, ::2].double().numpy()
        weight, bias = model.head.weight, model.head.bias
    else:
        model = ProbeNet(channels=3, grid=(3, 4), stride=2)
        acts = model.sub(x).double().numpy()
        weight, bias = model.head.weight, model.head.bias
    classes = [1, 4]
    split = model_kind == "split"
    cam = AblationCAM(model, [model.probe], batch_size=2, progress=False, split_model=split)
    got = cam(x, classes)
    assert cam.last_path == model_kind
    weight, bias = weight.detach().double().numpy(), bias.detach().double().numpy()
    w = ablation_weights(weight, bias, acts, classes)
    np.testing.assert_allclose(got, expected_maps(acts, w, (6, 8)), atol=1e-4)


@pytest.mark.parametrize("split", [True, False])
def test_volumes_match_numpy_oracle(split):
    case = make_probe_case(channels=2, grid=(2, 3, 2), stride=2)  # (B, C, D, H, W), signed
    classes = [t.category for t in case.targets]
    cam = AblationCAM(case.model, case.layers, progress=False, split_model=split)
    got = cam(case.x, case.targets)
    assert cam.last_path == ("split" if split else "full") and got.shape == (2, 4, 6, 4)
    w = ablation_weights(*numpy_head(case.model.head), case.acts[0], classes)
    np.testing.assert_allclose(got, expected_maps(case.acts[0], w, (4, 6, 4)), atol=1e-4)


@pytest.mark.parametrize("split", [True, False])
def test_two_layers_match_numpy_oracle(split):
    # y = head1(A1) + head2(A2): ablating a channel of one layer leaves the other's part as is.
    case = make_two_layer_case()
    model, classes = case.model, [t.category for t in case.targets]
    heads = [numpy_head(model.head1), numpy_head(model.head2)]
    parts = [  # each layer's part of the target scores
        np.array([(a[i].ravel() * w[c].ravel()).sum() + b[c] for i, c in enumerate(classes)])
        for a, (w, b) in zip(case.acts, heads)
    ]
    weights = [
        ablation_weights(*heads[i], case.acts[i], classes, rest=parts[1 - i]) for i in range(2)
    ]
    cam = AblationCAM(model, case.layers, batch_size=3, progress=False, split_model=split)
    got = cam(case.x, case.targets)
    # the other branch, computed before the target layer, is broadcast over the copies
    assert cam.last_path == ("broadcast" if split else "full")
    np.testing.assert_allclose(got, expected_maps(case.acts, weights, (8, 12)), atol=1e-4)


def test_hand_computed_example():
    # One image, 2 channels of 1x2: A_0 = [1, 2], A_1 = [3, 0]; y = 2 * A_0[1] + A_1[0] + 1 = 8.
    # Ablating channel 0 gives 4, channel 1 gives 5: w = [(8-4)/8, (8-5)/8] = [0.5, 0.375];
    # map = 0.5 * A_0 + 0.375 * A_1 = [1.625, 1], min-max -> [1, 0].
    model = StridedLinearNet(channels=2, grid=(1, 2), classes=1)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[0.0, 2.0, 1.0, 0.0]]))
        model.head.bias.fill_(1.0)
    x = torch.zeros(1, 2, 1, 4)
    x[0, :, 0, ::2] = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    got = AblationCAM(model, [model.probe], progress=False)(x, [0])
    # The 1x2 map is resized to 1x4 (half-pixel centres): [1, 0] -> [1, 0.75, 0.25, 0].
    np.testing.assert_allclose(got[0, 0], [1, 0.75, 0.25, 0], atol=1e-6)


# ----------------------------------------------------------------------------- split vs full


@pytest.mark.parametrize(
    "layer_name", ["block1.conv2", "block1.bn1", "block2", "stem", "block1.relu"]
)
def test_split_and_full_forward_paths_give_the_same_maps(layer_name):
    model = TinyResNet().eval()
    layer = model.get_submodule(layer_name)
    x = torch.rand(3, 3, 16, 16)
    targets = [ClassifierOutputTarget(c) for c in (0, 3, 1)]
    maps, paths = [], []
    for split in (True, False):
        cam = AblationCAM(model, [layer], batch_size=4, progress=False, split_model=split)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            maps.append(cam(x, targets))
        ran_twice = [w for w in record if "ran 2 times" in str(w.message)]
        assert len(ran_twice) == (layer_name == "block1.relu")
        paths.append(cam.last_path)
    # Inside block1 the residual input (computed before the target) is broadcast over the
    # ablated copies; block1.relu runs twice per forward pass and its last call is explained.
    cheapest = "broadcast" if layer_name in ("block1.conv2", "block1.bn1") else "split"
    assert paths == [cheapest, "full"]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-5)


def test_split_path_runs_only_the_layers_after_the_target():
    model = TinyResNet().eval()
    rows = {"stem": 0, "fc": 0}  # images each layer processed

    def count(name):
        return lambda module, args: rows.__setitem__(name, rows[name] + len(args[0]))

    model.stem.register_forward_pre_hook(count("stem"))
    model.fc.register_forward_pre_hook(count("fc"))
    cam = AblationCAM(model, [model.block2], batch_size=2, progress=False)
    cam(torch.rand(1, 3, 16, 16), [2])
    assert cam.last_path == "split"
    # the plain pass, then the check: 2 ablations as full passes and on the split path
    assert rows["stem"] == 1 + 2
    assert rows["fc"] == 1 + 2 + 2 + 6  # ... and the 6 channels (in batches of 2)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.block2.modules())


def test_batch_statistics_before_the_target_are_checked():
    class BatchStatNet(nn.Module):  # a value without a batch axis crosses the cut
        def __init__(self) -> None:
            super().__init__()
            self.net = conv_net()

        def forward(self, x):
            centre = x.mean(dim=(0, 2, 3))  # (3,)
            h = self.net.conv2(self.net.relu1(self.net.conv1(x)))
            return self.net.fc(self.net.pool(h).flatten(1)) + centre.sum()

    model = BatchStatNet().eval()
    x = torch.rand(2, 3, 16, 16)
    cam = AblationCAM(model, [model.net.conv2], progress=False)
    got = cam(x, [0, 1])
    # An empty batch has no mean; one image has the mean of its copies, so broadcasting
    # gives what full passes give.
    assert cam.last_path == "broadcast"
    full = AblationCAM(model, [model.net.conv2], progress=False, split_model=False)(x, [0, 1])
    np.testing.assert_allclose(got, full, atol=1e-5)


def test_vit_split_and_full_paths_agree():
    timm = pytest.importorskip("timm")
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=4
    ).eval()
    x = torch.rand(2, 3, 32, 32)
    maps = []
    for split in (True, False):
        cam = AblationCAM(
            model,
            [model.blocks[-1].norm1],
            reshape_transform=vit_reshape_transform,
            ablation_layer=AblationLayerVit(),
            progress=False,
            split_model=split,
        )
        maps.append(cam(x, [0, 3]))
        # the block's residual input is computed before norm1: broadcast over the copies
        assert cam.last_path == ("broadcast" if split else "full")
    assert maps[0].shape == (2, 32, 32)
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-5)


class ChannelsLast(nn.Module):
    """A conv layer whose output is laid out (B, H, W, C), as Swin blocks return theirs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.block = nn.Identity()
        self.head = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.block(self.conv(x).permute(0, 2, 3, 1))  # (B, H, W, 5)
        return self.head(tokens.mean(dim=(1, 2)))


def channels_last_transform(tokens: torch.Tensor) -> torch.Tensor:
    return tokens.permute(0, 3, 1, 2)


def test_channels_last_outputs_need_the_vit_ablation_layer():
    model = ChannelsLast().eval()
    x, targets = torch.rand(2, 3, 6, 6), [ClassifierOutputTarget(1)]
    cam = AblationCAM(
        model, [model.block], reshape_transform=channels_last_transform, progress=False
    )
    expect_clean_error(
        model,
        lambda: cam(x, targets),
        ValueError,
        r"ablation_layer AblationLayer\(\) ablates axis 1 of target_layers\[0\]'s output of "
        r"shape \(2, 6, 6, 5\).*pass ablation_layer=AblationLayerVit\(\)",
    )
    vit_layer = AblationCAM(
        model,
        [model.block],
        reshape_transform=channels_last_transform,
        ablation_layer=AblationLayerVit(),
        progress=False,
    )
    maps = vit_layer(x, targets)
    assert maps.shape == (2, 6, 6) and np.all(maps.max(axis=(1, 2)) > 0.99)


# ----------------------------------------------------------------------------- options


class SpyCAM(AblationCAM):
    """Keeps the last weights."""

    def get_cam_weights(self, *args):
        self.weights = super().get_cam_weights(*args)
        return self.weights


def test_partial_ablation_gives_the_unablated_channels_weight_zero():
    model = TinyResNet().eval()
    x = torch.rand(2, 3, 16, 16)
    full = SpyCAM(model, [model.block2], progress=False)
    full(x, [0, 1])
    part = SpyCAM(model, [model.block2], progress=False, ratio_channels_to_ablate=0.2)
    part(x, [0, 1])
    with torch.no_grad():
        acts = model.block2(model.block1(model.stem(x)))
    for b in range(2):
        chosen = AblationLayer().activations_to_be_ablated(acts[b], 0.2)
        assert len(chosen) == 2  # int(6 * 0.2) = 1 highest- and 1 lowest-scoring channel
        mask = torch.zeros(6, dtype=torch.bool)
        mask[chosen] = True
        assert isinstance(part.weights, np.ndarray)  # a subclass gets grad-cam's numpy
        mask = mask.numpy()
        assert np.all(part.weights[b, ~mask] == 0)
        np.testing.assert_allclose(part.weights[b, mask], full.weights[b, mask], rtol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_batch_size_does_not_change_the_maps(batch_size):
    model = TinyResNet().eval()
    x = torch.rand(2, 3, 16, 16)
    reference = AblationCAM(model, [model.block1], progress=False)(x, [1, 2])
    got = AblationCAM(model, [model.block1], batch_size=batch_size, progress=False)(x, [1, 2])
    np.testing.assert_allclose(got, reference, atol=1e-6)


def test_top_class_by_default():
    model = TinyResNet().eval()
    x = torch.rand(2, 3, 16, 16)
    top = model(x).argmax(dim=1).tolist()
    np.testing.assert_array_equal(
        AblationCAM(model, [model.block2], progress=False)(x),
        AblationCAM(model, [model.block2], progress=False)(x, top),
    )


def test_progress_goes_to_stderr_and_can_be_silenced(capsys, monkeypatch):
    model = TinyResNet().eval()
    x = torch.rand(1, 3, 16, 16)
    AblationCAM(model, [model.block2])(x, [0])
    out, err = capsys.readouterr()
    assert out == "" and "AblationCAM" in err
    cam = AblationCAM(model, [model.block2])
    cam.progress = False
    cam(x, [0])
    assert capsys.readouterr() == ("", "")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    AblationCAM(model, [model.block2])(x, [0])
    assert capsys.readouterr() == ("", "")


# ----------------------------------------------------------------------------- model safety


class FailingTarget:
    """Class 0's score; raises from the ``fail_at``-th call on."""

    def __init__(self, fail_at: int) -> None:
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, output):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("target failed")
        return output[0]


@pytest.mark.parametrize("split", [True, False])
def test_model_is_unchanged_even_on_error(split):
    model = TinyResNet().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cam = AblationCAM(model, [model.block1.conv2], progress=False, split_model=split)
    with pytest.raises(RuntimeError, match="target failed"):
        cam(torch.rand(1, 3, 16, 16), [FailingTarget(fail_at=5)])
    cam(torch.rand(1, 3, 16, 16), [1])
    cam.release()
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert model.block1.conv2 is model.get_submodule("block1.conv2")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


@pytest.mark.parametrize(
    "option, value",
    [("batch_size", 0), ("batch_size", 2.5), ("ratio_channels_to_ablate", 0.0)]
    + [("ratio_channels_to_ablate", 1.5)],
)
def test_bad_options_are_reported(option, value):
    model = TinyResNet().eval()
    cam = AblationCAM(model, [model.block2], progress=False)
    setattr(cam, option, value)
    with pytest.raises(ValueError, match=option):
        cam(torch.rand(1, 3, 16, 16), [0])
    assert all(not m._forward_hooks for m in model.modules())


def test_ablation_layer_class_instead_of_instance_is_reported():
    model = TinyResNet().eval()
    with pytest.raises(TypeError, match=r"instance such as AblationLayer\(\)"):
        AblationCAM(model, [model.block2], ablation_layer=AblationLayer)


@pytest.mark.parametrize("split", [True, False])
def test_python_number_targets_and_no_copies_kept(split):
    # A target may return a Python float (the original library called .item() on every score).
    model = TinyResNet().eval()
    x = torch.rand(2, 3, 16, 16)
    cam = AblationCAM(model, [model.block1], batch_size=4, progress=False, split_model=split)
    got = cam(x, [lambda out: float(out[2]), lambda out: float(out[1])])
    np.testing.assert_allclose(got, cam(x, [2, 1]), atol=1e-6)
    assert cam.ablation_layer.activations is None  # the ablated copies are not kept alive


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("split", [True, False])
def test_cuda_matches_cpu(split):
    model = TinyResNet().eval()
    x = torch.rand(2, 3, 16, 16)
    cpu = AblationCAM(model, [model.block1.conv2], progress=False, split_model=split)(x, [0, 3])
    model.cuda()
    try:
        cam = AblationCAM(model, [model.block1.conv2], progress=False, split_model=split)
        gpu = cam(x.cuda(), [0, 3])
    finally:
        model.cpu()
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)


# ----------------------------------------------------------------------------- reliability


class NanAfter:
    """The logit of class 0, then NaN from the ``after``-th image scored on."""

    def __init__(self, after):
        self.after, self.calls = after, 0

    def __call__(self, output):
        self.calls += 1
        return output[0] if self.calls <= self.after else output[0] * float("nan")

    def __repr__(self):
        return "NanAfter()"


@pytest.mark.parametrize("split", [True, False])
def test_a_non_finite_score_of_an_ablated_copy_names_the_target_and_channel(split):
    model = TinyResNet().eval()
    cam = AblationCAM(model, [model.block2], progress=False, split_model=split)
    expect_clean_error(
        model,
        lambda: cam(torch.rand(2, 3, 16, 16), [ClassifierOutputTarget(0), NanAfter(after=1)]),
        ValueError,
        r"targets\[1\] \(NanAfter\(\)\) gives a non-finite score \(nan\) for image 1 with "
        r"channel 0 .*ablated",
    )
    with pytest.raises(ValueError, match=r"targets\[0\] .* for image 0 \(nothing ablated\)"):
        cam(torch.rand(1, 3, 16, 16), [NanAfter(after=0)])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"ablation_layer": "vit"}, TypeError, "ablation_layer must be an AblationLayer .*got str"),
        ({"ablation_layer": nn.ReLU()}, TypeError, "ablation_layer must be an AblationLayer"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
        ({"ratio_channels_to_ablate": 1.5}, ValueError, r"ratio_channels_to_ablate .*\(0, 1\]"),
    ],
)
def test_bad_options_are_reported_at_construction(kwargs, error, match):
    model = TinyResNet().eval()
    before = ModelSnapshot.of(model)
    with pytest.raises(error, match=match):
        AblationCAM(model, [model.block2], **kwargs)
    before.assert_unchanged(model)
