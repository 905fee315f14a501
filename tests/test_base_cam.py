"""BaseCAM machinery: targets, batches, smoothing, model hygiene, errors, structured outputs."""

import copy
import gc
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import ttach as tta
from conftest import Conv3dNet, conv_net, make_probe_case
from snapshot import ModelSnapshot
from torch import nn

import pytorch_grad_cam
from pytorch_grad_cam import (
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam._composition import ComposedCAM
from pytorch_grad_cam.ablation_cam_multilayer import AblationCAM as MultiLayerAblationCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget as Target
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

GRADIENT_METHODS = [
    GradCAM,
    HiResCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    XGradCAM,
    LayerCAM,
    EigenGradCAM,
]
ALL_METHODS = [*GRADIENT_METHODS, EigenCAM]


def batch(n: int = 3, channels: int = 3, height: int = 20, width: int = 28) -> torch.Tensor:
    return torch.randn(n, channels, height, width, generator=torch.Generator().manual_seed(n)) * 2


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def assert_valid_cam(cam: np.ndarray, shape: tuple[int, ...]) -> None:
    assert isinstance(cam, np.ndarray) and cam.dtype == np.float32
    assert cam.shape == shape
    assert cam.min() >= 0 and cam.max() <= 1
    axes = tuple(range(1, cam.ndim))
    peaks = cam.max(axis=axes)
    assert np.all((peaks > 0.99) | (peaks == 0)), "every map is min-max normalised (or all 0)"


# ----------------------------------------------------------------------------- targets, batches


@pytest.mark.parametrize("method", ALL_METHODS)
def test_batch_with_per_image_targets_equals_one_image_at_a_time(method):
    model, x = conv_net(), batch()
    targets = [Target(0), Target(2), Target(4)]
    with method(model, [model.conv2]) as cam:
        got = cam(x, targets)
        singles = [cam(x[i : i + 1], [t])[0] for i, t in enumerate(targets)]
    assert_valid_cam(got, (3, 20, 28))
    np.testing.assert_allclose(got, np.stack(singles), atol=1e-5)


def test_one_target_is_used_for_every_image():
    model, x = conv_net(), batch()
    cam = GradCAM(model, [model.conv2])
    np.testing.assert_allclose(cam(x, [Target(2)]), cam(x, [Target(2)] * 3), atol=1e-6)
    assert not np.allclose(cam(x, [Target(2)]), cam(x, [Target(3)]), atol=1e-3)


def test_targets_none_explains_each_images_top_class():
    model, pool = conv_net(), batch(64)
    classes = model(pool).argmax(dim=1)
    first = {int(c): i for i, c in reversed(list(enumerate(classes)))}
    assert len(first) > 1, "the test batch should have different top classes"
    x, top = pool[list(first.values())], list(first)
    cam = GradCAM(model, [model.conv2])
    np.testing.assert_allclose(cam(x), cam(x, [Target(c) for c in top]), atol=1e-6)


def test_target_layers_may_be_a_single_module_and_forward_equals_call():
    model, x = conv_net(), batch()
    got = GradCAM(model, model.conv2)(x, [Target(1)])
    np.testing.assert_array_equal(got, GradCAM(model, [model.conv2]).forward(x, [Target(1)]))


def test_deprecated_target_category_spellings():
    model, x = conv_net(), batch()
    cam = GradCAM(model, [model.conv2])
    with pytest.warns(DeprecationWarning, match="target_category"):
        as_int = cam(x, target_category=3)
    np.testing.assert_array_equal(as_int, cam(x, [Target(3)]))
    with pytest.warns(DeprecationWarning, match="target_category"):
        as_list = cam(x, target_category=[0, 1, 4])
    np.testing.assert_array_equal(as_list, cam(x, [Target(0), Target(1), Target(4)]))
    with pytest.warns(DeprecationWarning, match="target_category"):
        as_none = cam(x, target_category=None)
    np.testing.assert_array_equal(as_none, cam(x))
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="target_category"):
        cam(x, [Target(0)], target_category=1)


def test_old_positional_call_with_a_class_index():
    model = conv_net(classes=300)
    x = batch(2)
    cam = GradCAM(model, [model.conv2])
    np.testing.assert_array_equal(cam(x, 281), cam(x, [Target(281)]))
    np.testing.assert_array_equal(cam(x, [281, 7]), cam(x, [Target(281), Target(7)]))


def test_deprecated_constructor_spellings():
    model, x = conv_net(), batch()
    expected = GradCAM(model, [model.conv2])(x)
    with pytest.warns(DeprecationWarning, match="target_layer"):
        old = GradCAM(model=model, target_layer=model.conv2)
    np.testing.assert_array_equal(old(x), expected)
    with pytest.warns(DeprecationWarning, match="use_cuda"):
        old = GradCAM(model=model, target_layers=[model.conv2], use_cuda=False)
    np.testing.assert_array_equal(old(x), expected)
    with pytest.warns(DeprecationWarning, match="use_cuda"):
        old = GradCAM(model, model.conv2, False)  # 2021 positional (model, layer, use_cuda)
    np.testing.assert_array_equal(old(x), expected)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="target_layer"):
        GradCAM(model, [model.conv2], target_layer=model.conv2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_use_cuda_true_without_cuda_falls_back_to_the_cpu():
    model, x = conv_net(), batch()
    with (
        pytest.warns(DeprecationWarning, match="use_cuda"),
        pytest.warns(UserWarning, match="CUDA is not available"),
    ):
        cam = GradCAM(model, [model.conv2], use_cuda=True)
    np.testing.assert_array_equal(cam(x), GradCAM(model, [model.conv2])(x))


# ----------------------------------------------------------------------------- input layouts


@pytest.mark.parametrize("method", ALL_METHODS)
def test_non_square_and_one_channel_inputs(method):
    model = conv_net(in_channels=1)
    x = batch(2, channels=1, height=13, width=30)
    assert_valid_cam(method(model, [model.conv2])(x, [Target(1)]), (2, 13, 30))


@pytest.mark.parametrize("method", ALL_METHODS)
def test_volumes_give_one_map_per_voxel(method):
    torch.manual_seed(0)
    model = Conv3dNet().eval()
    x = torch.rand(2, 1, 6, 10, 8, generator=torch.Generator().manual_seed(0))
    targets = [Target(1), Target(3)]
    with method(model, [model.conv]) as cam:
        got = cam(x, targets)
        singles = [cam(x[i : i + 1], [t])[0] for i, t in enumerate(targets)]
    assert_valid_cam(got, (2, 6, 10, 8))
    np.testing.assert_allclose(got, np.stack(singles), atol=1e-5)


def test_multi_layer_cam_differs_from_each_layer():
    model, x = conv_net(), batch()
    both = GradCAM(model, [model.conv1, model.conv2])(x, [Target(2)])
    assert_valid_cam(both, (3, 20, 28))
    for layer in (model.conv1, model.conv2):
        assert np.abs(both - GradCAM(model, [layer])(x, [Target(2)])).max() > 0.01


# ----------------------------------------------------------------------------- smoothing


def test_eigen_smooth_replaces_the_channel_sum_by_the_projection():
    case = make_probe_case()
    plain = GradCAM(case.model, case.layers)(case.x, case.targets)
    smooth = GradCAM(case.model, case.layers)(case.x, case.targets, eigen_smooth=True)
    assert_valid_cam(smooth, plain.shape)
    assert np.abs(plain - smooth).max() > 0.05  # exact values: test_<method>.py oracles


@pytest.mark.parametrize("targets", [[Target(1), Target(3)], None])
def test_aug_smooth_is_the_mean_of_the_deaugmented_views(targets):
    model, x = conv_net(), batch(2, height=16, width=18)
    cam = GradCAM(model, [model.conv2])
    got = cam(x, targets, aug_smooth=True)
    views = []
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            view = x * factor
            if flip:
                view = view.flip(-1)
            maps = cam(view, targets)
            views.append(maps[..., ::-1] if flip else maps)
    assert got.dtype == np.float32 and got.shape == (2, 16, 18)
    np.testing.assert_allclose(got, np.mean(views, axis=0), atol=1e-5)
    assert np.abs(got - cam(x, targets)).max() > 1e-3


def test_tta_transforms_replace_the_default_augmentations():
    model, x = conv_net(), batch(2, height=16, width=18)
    cam = GradCAM(model, [model.conv2], tta_transforms=tta.Compose([tta.VerticalFlip()]))
    got = cam(x, [Target(2)], aug_smooth=True)
    expected = (cam(x, [Target(2)]) + cam(x.flip(-2), [Target(2)])[:, ::-1]) / 2
    np.testing.assert_allclose(got, expected, atol=1e-5)


# ----------------------------------------------------------------------------- model hygiene


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode, torch.enable_grad])
def test_works_under_grad_modes(context):
    model, x = conv_net(), batch()
    expected = GradCAM(model, [model.conv2])(x, [Target(1)])
    with context():
        inner_x = batch()  # an inference tensor under inference_mode
        got = GradCAM(model, [model.conv2])(inner_x, [Target(1)])
        assert torch.is_grad_enabled() == (context is torch.enable_grad)
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(
    "method, compute_input_gradient",
    [*[(m, False) for m in GRADIENT_METHODS], (GradCAM, True), (GradCAMPlusPlus, True)],
)
def test_leaves_no_gradients_and_keeps_requires_grad_flags(method, compute_input_gradient):
    model, x = conv_net(), batch().requires_grad_()
    model.conv1.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    got = method(model, [model.conv2], compute_input_gradient=compute_input_gradient)(x)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert x.grad is None and x.requires_grad
    np.testing.assert_allclose(got, method(model, [model.conv2])(x.detach()), atol=1e-6)


def test_frozen_model_gives_the_same_maps():
    model, x = conv_net(), batch()
    expected = LayerCAM(model, [model.conv1, model.conv2])(x, [Target(3)])
    model.requires_grad_(False)
    got = LayerCAM(model, [model.conv1, model.conv2])(x, [Target(3)])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not any(p.requires_grad for p in model.parameters())


def test_computes_in_eval_mode_and_restores_every_train_flag():
    model, x = conv_net(batchnorm=True, dropout=True), batch()
    with torch.no_grad():
        model.train()(x)  # give BatchNorm non-trivial running statistics
    eval_twin = copy.deepcopy(model).eval()
    model.train()
    model.fc.eval()  # a mixed state must come back exactly
    flags = {name: m.training for name, m in model.named_modules()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    got = GradCAM(model, [model.conv2])(x, [Target(1)])
    assert {name: m.training for name, m in model.named_modules()} == flags
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), f"{name} changed"
    np.testing.assert_allclose(got, GradCAM(eval_twin, [eval_twin.conv2])(x, [Target(1)]))


@pytest.mark.parametrize("method", [GradCAM, HiResCAM, EigenCAM])
def test_inplace_relu_after_the_target_layer_does_not_corrupt_activations(method):
    x = batch()
    inplace, plain = conv_net(inplace=True), conv_net(inplace=False)
    cam = method(inplace, [inplace.conv2])
    got = cam(x, [Target(2)])
    np.testing.assert_allclose(got, method(plain, [plain.conv2])(x, [Target(2)]), atol=1e-6)
    recorded = cam.activations_and_grads.activations[0]
    assert recorded.min() < 0, "the recorded activations are the conv output, before the ReLU"
    torch.testing.assert_close(recorded, plain.conv2(plain.relu1(plain.conv1(x))))


def test_outputs_holds_the_model_outputs_of_the_last_call():
    model, x = conv_net(), batch()
    cam = GradCAM(model, [model.conv2])
    cam(x)
    torch.testing.assert_close(cam.outputs, model(x))
    cam(x[:1])
    assert cam.outputs.shape == (1, 5)


class CountingHooks:
    """Counts the forward hooks on a model's modules while its forward pass runs."""

    def __init__(self, model: nn.Module) -> None:
        self.seen: list[int] = []
        model.register_forward_pre_hook(self)
        self.model = model

    def __call__(self, module, args):
        self.seen.append(hook_count(self.model) - 1)  # (not counting this pre-hook)


def test_hooks_are_attached_only_while_the_model_runs():
    model, x = conv_net(), batch()
    counter = CountingHooks(model)
    cam = GradCAM(model, [model.conv1, model.conv2])
    assert hook_count(model) == 1  # only the counter: constructing attaches nothing
    cam(x)
    assert counter.seen == [2 * 4]  # per layer: capture, two recorder hooks, continue
    assert hook_count(model) == 1  # gone after the call, without release()
    np.testing.assert_array_equal(cam(x), GradCAM(model, [model.conv1, model.conv2])(x))
    with GradCAM(model, [model.conv2]) as cam:
        cam(x)
    assert hook_count(model) == 1


# every CAM method the package exports (the multi-layer AblationCAM too)
CAM_METHODS = {
    name: getattr(pytorch_grad_cam, name)
    for name in pytorch_grad_cam.__all__
    if isinstance(getattr(pytorch_grad_cam, name), type)
    and issubclass(getattr(pytorch_grad_cam, name), (BaseCAM, ComposedCAM))
    and name != "BaseCAM"
} | {"MultiLayerAblationCAM": MultiLayerAblationCAM}


def test_model_and_cam_can_be_pickled_copied_and_saved_while_the_cam_exists(tmp_path):
    import pickle

    model, x = conv_net(), batch()
    cam = GradCAM(model, [model.conv2])
    expected = cam(x, [Target(1)])
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model)), loaded):
        np.testing.assert_allclose(GradCAM(twin, [twin.conv2])(x, [Target(1)]), expected)
    cam_twin = copy.deepcopy(cam)
    assert cam_twin.model is not model and cam_twin.target_layers[0] is cam_twin.model.conv2
    np.testing.assert_allclose(cam_twin(x, [Target(1)]), expected)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(cam))(x, [Target(1)]), expected)


@pytest.mark.parametrize("name", sorted(CAM_METHODS))
def test_every_method_can_be_pickled_copied_and_saved_after_a_call(name, tmp_path):
    import pickle

    assert len(CAM_METHODS) == 20  # the 19 of grad-cam's package namespace, and this one
    model, x = conv_net(), batch(2, height=16, width=16)
    kwargs = {"progress": False} if "Ablation" in name or name == "ScoreCAM" else {}
    if name == "SESS":
        kwargs = {"scales": [16], "window_size": 16, "step_size": 8}
    cam = CAM_METHODS[name](model, [model.conv2], **kwargs)
    torch.manual_seed(0)
    expected = cam(x, [Target(1)])
    torch.save(cam, tmp_path / "cam.pt")
    twins = [
        copy.deepcopy(cam),
        pickle.loads(pickle.dumps(cam)),
        torch.load(tmp_path / "cam.pt", weights_only=False),
    ]
    assert hook_count(model) == 0
    for twin in twins:
        assert twin.model is not model
        torch.manual_seed(0)  # (RandomCAM)
        np.testing.assert_allclose(twin(x, [Target(1)]), expected, atol=1e-6)


def test_hooks_and_memory_do_not_accumulate_without_release():
    case = make_probe_case(batch=1)
    model, x = case.model, case.x
    GradCAM(model, [model.probe])(x)  # warm-up
    gc.collect()
    live_tensors = sum(issubclass(type(o), torch.Tensor) for o in gc.get_objects())
    refs = []
    for _ in range(100):
        cam = GradCAM(model, [model.probe])
        cam(x)
        refs.append(weakref.ref(cam))
        assert hook_count(model) == 0
    del cam
    assert all(ref() is None for ref in refs), "CAM objects are freed without gc"
    gc.collect()
    assert sum(issubclass(type(o), torch.Tensor) for o in gc.get_objects()) <= live_tensors


# ----------------------------------------------------------------------------- errors


def check_error_is_clean(model, cam, call, error, match, then=None):
    """``call`` raises ``error`` matching ``match``, the model keeps no hooks and is unchanged
    (``snapshot.ModelSnapshot``: flags, parameters, buffers, ``requires_grad``, ``.grad``), and
    (if ``then`` is given) the same CAM object works on the correct call ``then``."""
    model.train()
    before = ModelSnapshot.of(model)
    with pytest.raises(error, match=match):
        call()
    assert hook_count(model) == 0
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    before.assert_unchanged(model)
    if then is not None:
        result = then()
        assert_valid_cam(result, result.shape)


def test_error_for_a_layer_outside_the_model():
    model, other = conv_net(), conv_net()
    with pytest.raises(ValueError, match=r"target_layers\[1\].*not a submodule"):
        GradCAM(model, [model.conv2, other.conv2])
    assert hook_count(model) == 0 and hook_count(other) == 0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"target_layers": []}, ValueError, "target_layers is empty"),
        ({"target_layers": ["conv2"]}, TypeError, r"target_layers\[0\] must be"),
    ],
)
def test_errors_for_bad_target_layers(kwargs, error, match):
    with pytest.raises(error, match=match):
        GradCAM(conv_net(), **kwargs)


def test_error_for_a_model_that_is_not_a_module():
    with pytest.raises(TypeError, match="model must be"):
        GradCAM(lambda x: x, [nn.ReLU()])


@pytest.mark.parametrize(
    "bad_call, error, match",
    [
        (lambda cam, x: cam(x, [Target(5)]), IndexError, "category 5 is out of range"),
        (lambda cam, x: cam(x, [Target(0), Target(1)]), ValueError, "targets has 2 entries"),
        (lambda cam, x: cam(x[0]), ValueError, r"input_tensor.*unsqueeze\(0\)"),
        (lambda cam, x: cam(x.numpy()), TypeError, "input_tensor must be a torch.Tensor"),
        (lambda cam, x: cam(x, ["cat"]), TypeError, r"targets\[0\] must be a callable"),
        (lambda cam, x: cam(x, []), ValueError, "targets is empty"),
    ],
    ids=["class-out-of-range", "targets-length", "3d-input", "numpy-input", "bad-target", "empty"],
)
def test_bad_calls_raise_clear_errors_and_leave_the_model_clean(bad_call, error, match):
    model, x = conv_net(), batch()
    cam = GradCAM(model, [model.conv1, model.conv2])
    check_error_is_clean(
        model, cam, lambda: bad_call(cam, x), error, match, then=lambda: cam(x, [Target(1)])
    )


class DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = conv_net()

    def forward(self, x):
        return {"scores": self.net(x)}


def test_error_for_targets_none_on_an_output_without_logits():
    model, x = DictModel(), batch()
    cam = GradCAM(model, [model.net.conv2])
    check_error_is_clean(
        model,
        cam,
        lambda: cam(x),
        TypeError,
        r"targets=None.*dict.*targets=\[",
        then=lambda: cam(x, [lambda out: out["scores"][2]]),
    )


class SideBranch(nn.Module):
    """``side`` runs but its output is not used; ``extra`` runs only on inputs wider than 16."""

    def __init__(self):
        super().__init__()
        self.net = conv_net()
        self.side = nn.Conv2d(3, 2, 1)
        self.extra = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        self.side(x)
        if x.shape[-1] > 16:
            x = self.extra(x)
        return self.net(x)


def test_error_for_a_layer_the_gradient_never_reaches():
    model, x = SideBranch(), batch()
    cam = GradCAM(model, [model.net.conv2, model.side])
    check_error_is_clean(
        model, cam, lambda: cam(x), RuntimeError, r"never reaches target_layers\[1\]"
    )


def test_error_for_a_layer_that_is_not_called():
    model = SideBranch()
    cam = GradCAM(model, [model.extra])
    check_error_is_clean(
        model,
        cam,
        lambda: cam(batch(width=12)),
        RuntimeError,
        r"target_layers\[0\] \(Conv2d\) was not called",
        then=lambda: cam(batch(width=20)),
    )


class TokenModel(nn.Module):
    """A conv stem whose output is turned into (B, tokens, C) by ``tokens`` (the target)."""

    class Tokens(nn.Module):
        def forward(self, x):
            return x.flatten(2).transpose(1, 2)

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.tokens = self.Tokens()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.tokens(self.stem(x)).relu().mean(dim=1))


def test_error_for_token_layouts_without_reshape_transform():
    torch.manual_seed(0)
    model, x = TokenModel(), batch(height=16, width=16)
    cam = GradCAM(model, [model.tokens])
    check_error_is_clean(model, cam, lambda: cam(x), ValueError, "reshape_transform")
    reshape = lambda t: vit_reshape_transform(t, 4, 4, num_prefix_tokens=0)  # noqa: E731
    assert_valid_cam(GradCAM(model, [model.tokens], reshape)(x), (3, 16, 16))


# ----------------------------------------------------------------------------- structured outputs


class HFOutput(OrderedDict):
    """Like transformers' ModelOutput: a dict whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error


@dataclass
class LogitsObject:
    logits: torch.Tensor
    hidden: torch.Tensor


class Wrapped(nn.Module):
    def __init__(self, wrap):
        super().__init__()
        self.net = conv_net()
        self.wrap = wrap

    def forward(self, x):
        logits = self.net(x)
        return self.wrap(logits, logits.detach() * 0)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda y, h: HFOutput(logits=y, hidden=h),
        lambda y, h: {"hidden": h, "logits": y},
        lambda y, h: LogitsObject(logits=y, hidden=h),
    ],
    ids=["hf-model-output", "dict", "object-with-logits"],
)
def test_outputs_with_logits(wrap):
    model, plain, x = Wrapped(wrap), conv_net(), batch()
    targets = [Target(0), Target(2), Target(4)]
    with GradCAM(model, [model.net.conv2]) as cam, GradCAM(plain, [plain.conv2]) as ref:
        np.testing.assert_allclose(cam(x, targets), ref(x, targets), atol=1e-6)
        np.testing.assert_allclose(cam(x), ref(x), atol=1e-6)
        assert isinstance(cam.outputs, type(model(x)))


def test_tuple_outputs_with_a_custom_target():
    model, plain, x = Wrapped(lambda y, h: (y, h)), conv_net(), batch()
    seen = []

    def margin(output):  # called on ONE image's output
        seen.append(tuple(output[0].shape))
        return output[0][2] - output[0][1]

    got = GradCAM(model, [model.net.conv2])(x, [margin])
    expected = GradCAM(plain, [plain.conv2])(x, [lambda out: out[2] - out[1]])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert seen == [(5,)] * 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_models_device_and_returns_numpy():
    model, x = conv_net(), batch()
    expected = GradCAMPlusPlus(model, [model.conv2])(x, [Target(1)])
    model.cuda()
    got = GradCAMPlusPlus(model, [model.conv2])(x, [Target(1)])  # a CPU input is moved
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    model.cpu()


def test_user_forward_passes_between_calls_are_left_alone():
    """Between calls nothing records, copies outputs or switches autograd on."""
    model = conv_net()
    cam = GradCAM(model=model, target_layers=[model.conv2])
    x = torch.rand(2, 3, 16, 16)
    cam(x, targets=[Target(1)])
    recorded = cam.activations_and_grads.activations[0]
    weight = torch.ones(1, requires_grad=True)
    with torch.no_grad():
        y = model(x)
        still_off = not torch.is_grad_enabled()
        z = y * weight
    assert still_off and not y.requires_grad and not z.requires_grad
    assert cam.activations_and_grads.activations[0] is recorded


# ----------------------------------------------------------------------------- tensors out


@pytest.mark.parametrize("method", [GradCAM, LayerCAM, EigenCAM])
def test_compute_returns_the_maps_as_a_tensor(method):
    model, x = conv_net(), batch()
    cam = method(model, [model.conv2])
    maps = cam.compute(x, [Target(1)])
    assert isinstance(maps, torch.Tensor) and maps.dtype == torch.float32
    assert not maps.requires_grad
    np.testing.assert_array_equal(maps.numpy(), cam(x, [Target(1)]))


@pytest.mark.parametrize("method", [GradCAM, GradCAMPlusPlus, EigenCAM])
def test_keep_graph_makes_the_maps_differentiable(method):
    model, x = conv_net(), batch()
    cam = method(model, [model.conv2])
    maps = cam.compute(x, [Target(1)], keep_graph=True)
    np.testing.assert_allclose(maps.detach().numpy(), cam(x, [Target(1)]), atol=1e-6)
    (grad,) = torch.autograd.grad(maps[:, 5:15, 5:15].sum(), [model.conv1.weight])
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()  # through the earlier layers
    assert all(p.grad is None for p in model.parameters())


def test_keep_graph_gradient_equals_a_differentiable_grad_cam_written_out():
    model, x = conv_net(), batch()
    maps = GradCAM(model, [model.conv2]).compute(x, [Target(1)], keep_graph=True)
    # the same map, written with autograd by hand
    a = model.conv2(model.relu1(model.conv1(x)))
    score = model.fc(model.pool(model.relu2(a)).flatten(1))[:, 1].sum()
    (g,) = torch.autograd.grad(score, a, create_graph=True)
    raw = (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1).clamp_min(0)
    expected = scale_cam_image(scale_cam_image(raw, (28, 20)))
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-5)
    weights = [model.conv1.weight, model.conv2.weight, model.fc.weight]
    got = torch.autograd.grad(maps[:, 5:15, 5:15].sum(), weights)
    want = torch.autograd.grad(expected[:, 5:15, 5:15].sum(), weights)
    for g_got, g_want in zip(got, want):
        torch.testing.assert_close(g_got, g_want, atol=1e-4, rtol=1e-4)
