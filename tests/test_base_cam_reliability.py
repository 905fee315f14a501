"""BaseCAM (with its per-call checks, pytorch_grad_cam._call_checks) never returns a map it
cannot stand behind: bad inputs raise a clear error (and leave the model exactly as it was),
degenerate results warn (with the numerics unchanged)."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torchvision
from conftest import ProbeNet, TwoProbeNet, conv_net
from snapshot import expect_clean_error, expect_clean_warning
from torch import nn

from pytorch_grad_cam import (
    KPCA_CAM,
    AblationCAM,
    BaseCAM,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    RandomCAM,
    ScoreCAM,
    ShapleyCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)
from pytorch_grad_cam.utils.reshape_transforms import (
    swinT_reshape_transform,
    vit_reshape_transform,
)

EVERY_METHOD = [
    GradCAM,
    HiResCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    XGradCAM,
    LayerCAM,
    EigenGradCAM,
    ShapleyCAM,
    EigenCAM,
    KPCA_CAM,
    RandomCAM,
    ScoreCAM,
    AblationCAM,
    FullGrad,
    FinerCAM,
]


def method_name(method):
    return method.__name__


def make_cam(method, model, layers):
    options = {"progress": False} if method in (ScoreCAM, AblationCAM) else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # FullGrad ignores target_layers
        return method(model, layers, **options)


def batch(n=2, height=20, width=28):
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(n))


class RunCounter:
    """Counts the model's forward passes (a forward pre-hook, removed by ``remove``)."""

    def __init__(self, model):
        self.runs = 0
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.runs += 1

    def remove(self):
        self.handle.remove()


def never_runs(model, call):
    counter = RunCounter(model)
    try:
        return call()
    finally:
        counter.remove()
        assert counter.runs == 0, "the model ran before the error"


# ----------------------------------------------------------------------------- empty batch


@pytest.mark.parametrize("method", EVERY_METHOD, ids=method_name)
def test_an_empty_batch_gives_empty_maps_without_running_the_model(method):
    model = conv_net()
    cam = make_cam(method, model, [model.conv2])
    x = batch()[:0]
    got = never_runs(model, lambda: cam(x, [ClassifierOutputTarget(1)]))
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (0, 20, 28)
    if isinstance(cam, BaseCAM):
        assert never_runs(model, lambda: cam(x, aug_smooth=True)).shape == (0, 20, 28)
        tensor = never_runs(model, lambda: cam.compute(x))
        assert isinstance(tensor, torch.Tensor) and tensor.shape == (0, 20, 28)


# ----------------------------------------------------------------------------- the input


@pytest.mark.parametrize("method", [GradCAM, EigenCAM, ScoreCAM, FullGrad], ids=method_name)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_in_the_input_raises_before_the_model_runs(method, bad):
    model = conv_net()
    x = batch(3)
    x[1, 0, 2, 3] = bad
    cam = make_cam(method, model, [model.conv2])
    expect_clean_error(
        model,
        lambda: never_runs(model, lambda: cam(x, [1])),
        ValueError,
        r"input_tensor contains NaN or Inf values \(image 1\)",
    )


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_inputs_are_rejected_with_a_hint_to_convert_and_normalise(dtype):
    model = conv_net()
    cam = GradCAM(model, [model.conv2])
    x = (batch() * 255).to(dtype)
    expect_clean_error(
        model,
        lambda: never_runs(model, lambda: cam(x)),
        TypeError,
        rf"input_tensor has dtype {dtype}.*convert and normalise",
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_floating_inputs_are_cast_to_the_models_dtype(dtype):
    model, x = conv_net(), batch()
    cam = GradCAM(model, [model.conv2])
    as_given = x.to(dtype)
    np.testing.assert_array_equal(cam(as_given, [1]), cam(as_given.float(), [1]))


def test_a_float64_model_takes_a_float32_input():
    model, x = conv_net().double(), batch()
    got = GradCAM(model, [model.conv2])(x, [1])
    np.testing.assert_array_equal(got, GradCAM(model, [model.conv2])(x.double(), [1]))


# ----------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    "targets, error, match",
    [
        (2.5, TypeError, "targets must be an integer class index; got the float 2.5"),
        ([0, 2.5], TypeError, r"targets\[1\] must be an integer class index"),
        ([ClassifierOutputTarget(0), "cat"], TypeError, r"targets\[1\] must be a callable"),
        ("cat", TypeError, "targets must be None"),
        ([0, 1, 2], ValueError, "targets has 3 entries but the batch has 2 images"),
        (np.array([0.0, 1.0]), TypeError, r"targets\[0\] must be an integer"),
        (torch.tensor([[0, 1]]), ValueError, "one class index per image"),
    ],
)
def test_bad_targets_are_named_before_the_model_runs(targets, error, match):
    model = conv_net()
    cam = GradCAM(model, [model.conv2])
    expect_clean_error(
        model, lambda: never_runs(model, lambda: cam(batch(), targets)), error, match
    )


def test_integer_targets_of_numpy_and_torch_are_class_indices():
    model, x = conv_net(), batch()
    cam = GradCAM(model, [model.conv2])
    expected = cam(x, [ClassifierOutputTarget(0), ClassifierOutputTarget(3)])
    for targets in ([0, 3], np.array([0, 3]), torch.tensor([0, 3]), [np.int64(0), torch.tensor(3)]):
        np.testing.assert_array_equal(cam(x, targets), expected)
    np.testing.assert_array_equal(cam(x, torch.tensor(3)), cam(x, 3))


@pytest.mark.parametrize(
    "returned, name", [(None, "NoneType"), ("high", "str"), (True, "bool"), ([1.0], "list")]
)
def test_a_target_returning_no_tensor_is_named(returned, name):
    model = conv_net()
    cam = GradCAM(model, [model.conv2])
    targets = [ClassifierOutputTarget(0), lambda output: returned]
    expect_clean_error(
        model, lambda: cam(batch(), targets), TypeError, rf"targets\[1\] .*returned {name}"
    )


@pytest.mark.parametrize(
    "score, kind",
    [
        (lambda output: 1.0, r"a float \(1\.0\)"),
        (lambda output: float(output[1]), "a float"),
        (lambda output: np.float32(2.0), "a float32"),
        (lambda output: output.argmax(), "a tensor of dtype torch.int64"),
    ],
)
@pytest.mark.parametrize("method", [GradCAM, ShapleyCAM], ids=method_name)
def test_a_target_score_no_gradient_can_flow_through_is_named(method, score, kind):
    model = conv_net()
    cam = method(model, [model.conv2])
    expect_clean_error(
        model,
        lambda: cam(batch(), [ClassifierOutputTarget(0), score]),
        TypeError,
        rf"targets\[1\] \(.*\) returned {kind}.*, through which no gradient can flow",
    )


def test_python_number_scores_still_serve_the_gradient_free_methods():
    model = conv_net()
    got = ScoreCAM(model, [model.conv2], progress=False)(batch(), [lambda o: float(o[1])])
    expected = ScoreCAM(model, [model.conv2], progress=False)(batch(), [ClassifierOutputTarget(1)])
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("method", [GradCAM, LayerCAM, ShapleyCAM], ids=method_name)
def test_a_non_finite_target_score_names_the_target_and_image(method):
    model = conv_net()
    cam = method(model, [model.conv2])
    targets = [ClassifierOutputTarget(0), lambda output: output[1] / 0 * 0]
    expect_clean_error(
        model,
        lambda: cam(batch(), targets),
        ValueError,
        r"targets\[1\] \(.*\) gives a non-finite score \(nan\) for image 1",
    )


# ----------------------------------------------------------------------------- NaN inside


class LogLayer(nn.Module):
    def forward(self, x):
        return torch.log(x)  # NaN where the input is negative


class LogNet(nn.Module):
    """A finite input gives NaN activations at ``log`` (the target layer)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.log = LogLayer()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.log(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", [GradCAM, EigenCAM, KPCA_CAM, ScoreCAM], ids=method_name)
def test_nan_activations_raise_and_eigen_cam_does_not_hide_them(method):
    model = LogNet()
    cam = make_cam(method, model, [model.log])
    expect_clean_error(
        model,
        lambda: cam(batch(), [0]),
        RuntimeError,
        r"the output of target_layers\[0\] \(LogLayer 'log'\) contains NaN or Inf for images 0, 1",
    )


class SqrtNet(nn.Module):
    """Finite forward, NaN backward: ``where`` routes a zero gradient through sqrt of a
    negative number (0 / NaN)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = self.conv(x)
        return self.fc(torch.where(a > 0, torch.sqrt(a), 0.0).mean(dim=(2, 3)))


def test_nan_gradients_raise():
    model = SqrtNet()
    cam = GradCAM(model, [model.conv])
    expect_clean_error(
        model,
        lambda: cam(batch(), [0]),
        RuntimeError,
        r"the gradient at target_layers\[0\] \(Conv2d 'conv'\) is NaN or Inf for images 0, 1",
    )


class NanWeights(GradCAM):
    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
        weights = np.ones(activations.shape[:2], dtype=np.float32)
        weights[1] = np.nan
        return weights


class NanAggregate(GradCAM):
    def aggregate_multi_layers(self, cam_per_target_layer):
        return np.full(cam_per_target_layer[0][:, 0].shape, np.nan, dtype=np.float32)


@pytest.mark.parametrize(
    "method, match",
    [
        (NanWeights, r"the map of target_layers\[0\] .* is NaN or Inf for image 1: the weighting"),
        (NanAggregate, "the maps are NaN or Inf for images 0, 1 .*aggregate_multi_layers"),
    ],
)
def test_nan_maps_raise(method, match):
    model = conv_net()
    cam = method(model, [model.conv2])
    expect_clean_error(model, lambda: cam(batch(), [0]), RuntimeError, match)


@pytest.mark.parametrize("method", [GradCAM, ScoreCAM, AblationCAM], ids=method_name)
def test_a_target_layer_listed_twice_is_named(method):
    model = conv_net()
    expect_clean_error(
        model,
        lambda: make_cam(method, model, [model.conv1, model.conv2, model.conv2]),
        ValueError,
        r"target_layers\[1\] and target_layers\[2\] are the same module \(Conv2d\); list "
        "each layer once",
    )


# ----------------------------------------------------------------------------- layouts


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[1, 1],
        num_heads=[1, 1],
        window_size=[4, 4],
        num_classes=5,
    ).eval()


@pytest.mark.parametrize("method", [GradCAM, EigenCAM, ScoreCAM], ids=method_name)
@pytest.mark.parametrize(
    "path, channels",
    [
        ("features.3.0.norm1", 32),
        ("features.3.0.mlp", 32),
        ("features.3.0", 32),
        ("features.3.0.mlp.1", 128),  # GELU, Dropout: no channel count of their own
        ("features.3.0.mlp.2", 128),
        ("features.3.0.mlp.4", 32),
        ("features.2", 32),  # PatchMerging: its last registered module is LayerNorm(4 C)
    ],
)
def test_channels_last_swin_layers_without_a_transform_raise(swin, method, path, channels):
    layer = swin.get_submodule(path)
    cam = make_cam(method, swin, [layer])
    expect_clean_error(
        swin,
        lambda: cam(torch.rand(1, 3, 32, 32), [1]),
        ValueError,
        rf"outputs shape \(1, 4, 4, {channels}\), a channels-last \(B, H, W, C\) map.*"
        "reshape_transform=pytorch_grad_cam.utils.reshape_transforms.swinT_reshape_transform",
    )
    with_transform = make_cam(method, swin, [layer])
    with_transform.reshape_transform = swinT_reshape_transform
    with_transform.activations_and_grads.reshape_transform = swinT_reshape_transform
    assert with_transform(torch.rand(1, 3, 32, 32), [1]).shape == (1, 32, 32)


def test_a_channels_last_layer_run_twice_raises_too(swin):
    cam = GradCAM(swin, [swin.features[3][0].stochastic_depth])  # run after attn and mlp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "ran 2 times"
        expect_clean_error(
            swin,
            lambda: cam(torch.rand(1, 3, 32, 32), [1]),
            ValueError,
            r"\(StochasticDepth\) outputs shape \(1, 4, 4, 32\), a channels-last",
        )


@pytest.mark.parametrize("index, channels", [(1, 96), (4, 384)])
def test_channels_last_convnext_block_layers_raise_and_its_last_permute_does_not(index, channels):
    model = torchvision.models.convnext_tiny(weights=None, num_classes=5).eval()
    block = model.features[1][0].block  # Conv2d Permute LayerNorm Linear GELU Linear Permute
    expect_clean_error(
        model,
        lambda: GradCAM(model, [block[index]])(torch.rand(1, 3, 32, 32), [1]),
        ValueError,
        rf"outputs shape \(1, 8, 8, {channels}\), a channels-last \(B, H, W, C\) map .*"
        r"its 8x8 grid before the last axis is what fits the 32x32 input",
    )
    got = GradCAM(model, [block[6]])(torch.rand(1, 3, 32, 32), [1])  # back to (B, C, H, W)
    assert got.shape == (1, 32, 32) and got.max() > 0.99


class WideFilm(nn.Module):
    """A channels-first block (B, 16, H, W) whose last registered module, unused here, is a
    Linear with W outputs: the layer's channel count alone would call it channels-last."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.film = nn.Linear(4, 32)

    def forward(self, x):
        return self.conv(x)


def test_a_channels_first_block_ending_in_a_linear_of_the_width_is_not_rejected():
    torch.manual_seed(0)
    model = nn.Sequential(WideFilm(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
    got = GradCAM(model, [model[0]])(torch.rand(2, 3, 32, 32), [1])
    assert got.shape == (2, 32, 32) and got.max() > 0.99


class TokenModel(nn.Module):
    """A 4x4-patch stem giving (B, tokens, C) at ``tokens`` (no class token)."""

    class Tokens(nn.Module):
        def forward(self, x):
            return x.flatten(2).transpose(1, 2)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.tokens = self.Tokens()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.tokens(self.stem(x)).relu().mean(dim=1))


def test_an_inferred_token_grid_must_fit_the_inputs_aspect_ratio():
    model = TokenModel()
    x = torch.rand(2, 3, 16, 64)  # a 4x16 grid: 64 tokens, which vit_reshape_transform
    cam = GradCAM(model, [model.tokens], vit_reshape_transform)  # lays out as 8x8
    expect_clean_error(
        model,
        lambda: cam(x, [1]),
        ValueError,
        r"into a 8x8 grid, which does not fit the 16x64 input.*height=\.\.\., width=\.\.\.",
    )

    def grid(t):
        return vit_reshape_transform(t, height=4, width=16)

    assert GradCAM(model, [model.tokens], grid)(x, [1]).shape == (2, 16, 64)


@pytest.mark.parametrize(
    "transform, shape",
    [(lambda t: t[:1], r"\(1, 8, 10, 14\)"), (lambda t: t.transpose(0, 1), r"\(8, 2, 10, 14\)")],
    ids=["keeps-one-image", "batch-and-channels-swapped"],
)
def test_a_reshape_transform_must_keep_the_batch_axis(transform, shape):
    model = conv_net()
    cam = GradCAM(model, [model.conv2], transform)
    expect_clean_error(
        model,
        lambda: cam(batch(), [1]),
        ValueError,
        rf"reshape_transform turned the output of target_layers\[0\] \(Conv2d\) into "
        rf"activations of shape {shape} for a batch of 2 images",
    )


# ----------------------------------------------------------------------------- layers run twice


class Twice(nn.Module):
    """``conv`` runs twice: y = fc(mean(conv(relu(conv(x)))))."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(self.conv(self.conv(x).relu()).mean(dim=(2, 3)))


class TwiceUnshared(nn.Module):
    """The same function with a separate copy for each call."""

    def __init__(self, twice):
        super().__init__()
        self.first, self.second = copy.deepcopy(twice.conv), copy.deepcopy(twice.conv)
        self.fc = copy.deepcopy(twice.fc)

    def forward(self, x):
        return self.fc(self.second(self.first(x).relu()).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", [GradCAM, GradCAMPlusPlus, EigenCAM, ScoreCAM, AblationCAM])
def test_a_layer_run_twice_warns_and_its_last_call_is_explained(method):
    model = Twice()
    unshared = TwiceUnshared(model)
    x = batch()
    got = expect_clean_warning(
        model,
        lambda: make_cam(method, model, [model.conv])(x, [1, 2]),
        rf"target_layers\[0\] \(Conv2d 'conv'\) ran 2 times in one forward pass.*"
        rf"{method.__name__} explains its last call only",
        primed=False,
    )
    expected = make_cam(method, unshared, [unshared.second])(x, [1, 2])
    np.testing.assert_allclose(got, expected, atol=1e-5)


# ----------------------------------------------------------------------------- warnings


class Gate(nn.Module):
    """y = fc(mean(relu(probe(x)))): an image whose probe output is all negative gets no
    gradient at the probe."""

    def __init__(self):
        super().__init__()
        self.probe = nn.Conv2d(3, 4, 1)
        nn.init.constant_(self.probe.weight, 1.0)
        nn.init.zeros_(self.probe.bias)
        self.fc = nn.Linear(4, 2)
        nn.init.constant_(self.fc.weight, 1.0)

    def forward(self, x):
        return self.fc(self.probe(x).relu().mean(dim=(2, 3)))


def test_a_zero_gradient_for_some_images_warns_nothing_to_explain():
    model, x = Gate(), batch(3)
    x[1] = -x[1] - 0.1  # the probe's output is negative everywhere for image 1
    cam = GradCAM(model, [model.probe])
    got = expect_clean_warning(
        model,
        lambda: cam(x, [0]),
        r"gradient of the targets at target_layers\[0\] \(Conv2d 'probe'\) is exactly zero for "
        "image 1, so the map is empty: .*nothing to explain",
    )
    assert got[1].max() == 0 and got[0].max() > 0.99 and got[2].max() > 0.99


def tiny_vit(zero_head: bool) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=16
    ).eval()
    if not zero_head:
        nn.init.normal_(model.heads.head.weight)  # torchvision initialises the head to zero
    return model


def vit_grid(tokens):
    return vit_reshape_transform(tokens, height=4, width=4)


def test_an_all_zero_vit_head_is_nothing_to_explain():
    model = tiny_vit(zero_head=True)
    cam = GradCAM(model, [model.encoder.layers[-1].ln_1], vit_grid)
    got = expect_clean_warning(
        model,
        lambda: cam(torch.rand(2, 3, 32, 32), [3]),
        "is exactly zero for images 0, 1, so the map is empty: .*nothing to explain; here the "
        "model's last linear layer 'heads.head' has all-zero weights",
    )
    assert got.max() == 0  # numerics unchanged


def test_a_vit_layer_whose_patch_tokens_get_no_gradient_names_the_models_layer():
    model = tiny_vit(zero_head=False)
    cam = GradCAM(model, [model.encoder.layers[-1]], vit_grid)
    expect_clean_warning(
        model,
        lambda: cam(torch.rand(2, 3, 32, 32), [3]),
        r"reaches target_layers\[0\] \(EncoderBlock 'encoder.layers.encoder_layer_0'\) only in "
        r"parts of its output that the map does not use .*class token.*so the map is empty for "
        r"images 0, 1; pick this model's layer model.encoder.layers\[-1\].ln_1",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        GradCAM(model, [model.encoder.layers[-1].ln_1], vit_grid)(torch.rand(2, 3, 32, 32), [3])


def test_a_1x1_target_layer_warns():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    ).eval()
    cam = GradCAM(model, [model[1]])
    got = expect_clean_warning(
        model,
        lambda: cam(batch(), [1]),
        r"target_layers\[0\] \(AdaptiveAvgPool2d '1'\) gives one position per map \(activations "
        r"of shape \(2, 4, 1, 1\)\): a 1x1 map says nothing about where",
    )
    assert got.max() == 0


def test_a_saturated_softmax_target_warns_and_keeps_the_numerics():
    model = ProbeNet()
    with torch.no_grad():
        model.head.bias[1] = 60.0  # a confident prediction: softmax(1) is exactly 1
    x = torch.rand(2, 3, 9, 12, generator=torch.Generator().manual_seed(0))
    assert torch.softmax(model(x), dim=1)[:, 1].eq(1).all()
    cam = GradCAM(model, [model.probe])
    got = expect_clean_warning(
        model,
        lambda: cam(x, [ClassifierOutputSoftmaxTarget(1)]),
        r"the maps of image 0 peak at .* instead of 1: their raw values \(span .*\) are tiny "
        r"next to the \+1e-7 of min-max normalisation.*explain the logit",
    )
    assert 0 < got[0].max() < 1e-6  # numerics unchanged (not silently re-normalised)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert cam(x, [ClassifierOutputTarget(1)]).max() > 0.99  # the logit is fine


def saturated_probe_net() -> nn.Module:
    model = ProbeNet()
    with torch.no_grad():
        model.head.bias[1] = 80.0  # softmax(1) is exactly 1, its gradient underflows
    return model


@pytest.mark.parametrize("method", [GradCAMPlusPlus, AblationCAM], ids=method_name)
def test_all_zero_maps_of_a_saturated_softmax_warn_nothing_to_explain(method):
    model = saturated_probe_net()
    x = torch.rand(2, 3, 9, 12, generator=torch.Generator().manual_seed(0))
    cam = make_cam(method, model, [model.probe])
    got = expect_clean_warning(
        model,
        lambda: cam(x, [ClassifierOutputSoftmaxTarget(1)]),
        r"the maps of images 0, 1 are all zero: .*nothing to explain; e\.g\. a saturated "
        r"target .*explain the logit with ClassifierOutputTarget",
    )
    assert got.max() == 0  # numerics unchanged
    with pytest.warns(RuntimeWarning) as record:
        cam(x, [ClassifierOutputSoftmaxTarget(1)])
    assert len(record) == 1  # one warning, not one per layer or per image
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert cam(x, [ClassifierOutputTarget(1)]).max() > 0.99  # the logit is fine


@pytest.mark.parametrize("method", [GradCAM, EigenCAM], ids=method_name)
def test_all_zero_activations_warn_nothing_to_explain(method):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 2),
    ).eval()  # fmt: skip
    got = expect_clean_warning(
        model,
        lambda: make_cam(method, model, [model[1]])(torch.zeros(2, 3, 12, 12), [1]),
        r"the maps of images 0, 1 are all zero: .*the layer's activations are all zero",
    )
    assert got.max() == 0


def test_a_1x1_layer_warns_once_for_its_all_zero_maps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with pytest.warns(RuntimeWarning) as record:
        got = EigenCAM(model, [model[1]])(batch(), [1])
    assert got.max() == 0
    assert [str(w.message)[:30] for w in record] == ["target_layers[0] (AdaptiveAvgP"]


def test_a_1x1_layer_does_not_hide_another_layers_all_zero_maps():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    ).eval()
    with pytest.warns(RuntimeWarning) as record:  # zero input: the ReLU's maps are all zero
        got = EigenCAM(model, [model[1], model[2]])(torch.zeros(2, 3, 12, 12), [1])
    assert got.max() == 0
    messages = [str(w.message) for w in record]
    assert messages[0].startswith("target_layers[1] (AdaptiveAvgPool2d")
    assert any("are all zero" in m and "activations are all zero" in m for m in messages[1:])


def test_aug_smooth_warnings_name_the_callers_images():
    model = saturated_probe_net()
    x = torch.rand(2, 3, 9, 12, generator=torch.Generator().manual_seed(0))
    expect_clean_warning(
        model,
        lambda: GradCAM(model, [model.probe])(
            x, [ClassifierOutputSoftmaxTarget(1)], aug_smooth=True
        ),
        r"the maps of image 0 peak at ",  # not "images 0, 2, 4, 6, 8, 10" (views of image 0)
    )
    gate, x = Gate(), batch(3)
    x[1] = -x[1] - 0.1  # no gradient at the probe for image 1, in every view
    got = expect_clean_warning(
        gate,
        lambda: GradCAM(gate, [gate.probe])(x, [0], aug_smooth=True),
        r"is exactly zero for image 1, so the map is empty",
    )
    assert got[1].max() == 0 and got[0].max() > 0.9


def test_a_vanishing_layer_among_several_warns_that_it_weighs_nothing():
    model = TwoProbeNet()
    with torch.no_grad():
        model.head2.weight.mul_(1e-9)
    x = torch.rand(2, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    cam = GradCAM(model, [model.probe1, model.probe2])
    got = expect_clean_warning(
        model,
        lambda: cam(x, [2]),
        r"the map of target_layers\[1\] \(Probe 'probe2'\) is degenerate for images 0, 1: its raw "
        r"values span only .* weighs next to nothing in the mean over the target layers",
    )
    assert got.max(axis=(1, 2)).min() > 0.99


def test_warnings_point_at_the_callers_line():
    model = Twice()
    cam = GradCAM(model, [model.conv])
    with pytest.warns(RuntimeWarning, match="ran 2 times") as record:
        cam(batch(), [1])
    assert record[0].filename == __file__


# ----------------------------------------------------------------------------- TorchScript


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated
@pytest.mark.parametrize("how", ["trace", "script"])
@pytest.mark.parametrize("method", [GradCAM, ScoreCAM, FullGrad], ids=method_name)
def test_torchscript_models_are_reported_as_unsupported(method, how):
    model = conv_net()
    scripted = torch.jit.trace(model, batch()) if how == "trace" else torch.jit.script(model)
    expect_clean_error(
        scripted,
        lambda: make_cam(method, scripted, [scripted.conv2]),
        TypeError,
        "model is a TorchScript module .*hooks do not run",
    )


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_a_target_layer_inside_a_torchscript_part_is_reported():
    torch.manual_seed(0)
    stem = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    model = nn.Sequential(stem, nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for layer in (stem, model.get_submodule("0.0")):
        expect_clean_error(
            model,
            lambda layer=layer: GradCAM(model, [layer]),
            TypeError,
            r"target_layers\[0\] is inside a TorchScript module",
        )
    assert GradCAM(model, [model[1]])(batch(), [1]).shape == (2, 20, 28)  # outside it: fine


def test_eigen_smooth_does_not_hide_nan_weights():
    model = conv_net()
    cam = NanWeights(model, [model.conv2])
    expect_clean_error(
        model,
        lambda: cam(batch(), [0], eigen_smooth=True),
        RuntimeError,
        r"the map of target_layers\[0\] .* is NaN or Inf for image 1",
    )
