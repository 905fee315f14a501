"""Every CAM class of the package: ``compute`` (tensors out, ``keep_graph``), empty batches; and
the methods built on another (ComposedCAM): their messages are in the caller's terms."""

import warnings

import numpy as np
import pytest
import torch
from conftest import conv_net
from snapshot import expect_clean_error
from torch import nn

import pytorch_grad_cam
from pytorch_grad_cam import SESS, BaseCAM, FinerCAM, RefineCAM
from pytorch_grad_cam._checks import collected_warnings, warn
from pytorch_grad_cam._composition import ComposedCAM, MessageRelay
from pytorch_grad_cam.ablation_cam_multilayer import AblationCAM as MultiLayerAblationCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

EXPORTED = [getattr(pytorch_grad_cam, name) for name in pytorch_grad_cam.__all__]
EVERY_CAM = [
    c
    for c in EXPORTED
    if isinstance(c, type) and issubclass(c, (BaseCAM, ComposedCAM)) and c is not BaseCAM
] + [MultiLayerAblationCAM]
TARGETS = [ClassifierOutputTarget(1), ClassifierOutputTarget(3)]


def method_name(method):
    return f"{method.__module__.rsplit('.', 1)[-1]}.{method.__name__}"


def make_cam(method, model):
    """The method on ``conv_net``'s layers, with small options."""
    layers = [model.conv2]
    options = {}
    if method.__name__ in ("ScoreCAM", "AblationCAM"):
        options["progress"] = False
    if method is RefineCAM:
        layers = [model.conv1, model.conv2]
    if method is MultiLayerAblationCAM:
        layers = [model.conv2, model.relu2]  # the same channels, ablated together
    if method is SESS:
        options.update(num_scales=2, window_size=16, step_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # FullGrad ignores target_layers
        return method(model, layers, **options)


def batch(n=2):
    return torch.rand(n, 3, 20, 28, generator=torch.Generator().manual_seed(n))


def test_the_table_holds_every_cam_class():
    names = {c.__name__ for c in EVERY_CAM}
    assert {"GradCAM", "FEM", "SegEigenCAM", "FinerCAM", "RefineCAM", "SESS"} <= names
    assert len(EVERY_CAM) == 20  # 19 exported, and the multi-layer AblationCAM


@pytest.mark.parametrize("method", EVERY_CAM, ids=method_name)
def test_compute_returns_the_maps_of_call_as_a_tensor(method):
    model, x = conv_net(), batch()
    cam = make_cam(method, model)
    torch.manual_seed(0)  # RandomCAM draws its weights
    maps = cam.compute(x, TARGETS)
    torch.manual_seed(0)
    expected = cam(x, TARGETS)
    assert isinstance(maps, torch.Tensor) and maps.dtype == torch.float32
    assert maps.shape == (2, 20, 28) and maps.device == x.device and not maps.requires_grad
    np.testing.assert_array_equal(maps.numpy(), expected)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("method", EVERY_CAM, ids=method_name)
def test_keep_graph_lets_gradients_reach_the_parameters(method):
    model, x = conv_net(), batch()
    cam = make_cam(method, model)
    torch.manual_seed(0)
    maps = cam.compute(x, TARGETS, keep_graph=True)
    torch.manual_seed(0)
    np.testing.assert_allclose(maps.detach().numpy(), cam(x, TARGETS), atol=1e-5)
    (grad,) = torch.autograd.grad(maps[:, 4:16, 4:20].sum(), [model.conv1.weight])
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", EVERY_CAM, ids=method_name)
def test_an_empty_batch_gives_empty_maps_without_running_the_model(method):
    model = conv_net()
    cam = make_cam(method, model)
    runs = []
    handle = model.register_forward_pre_hook(lambda module, args: runs.append(1))
    try:
        got = cam(batch()[:0], TARGETS[:1])
        tensor = cam.compute(batch()[:0])
    finally:
        handle.remove()
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (0, 20, 28)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (0, 20, 28)
    assert runs == []


# ----------------------------------------------------------------------------- bad inputs

COMPOSED = [FinerCAM, RefineCAM, SESS]


@pytest.mark.parametrize("method", COMPOSED, ids=method_name)
def test_integer_inputs_are_rejected_with_the_shared_message(method):
    model = conv_net()
    cam = make_cam(method, model)
    x = (batch() * 255).to(torch.uint8)
    expect_clean_error(model, lambda: cam(x, TARGETS), TypeError, "convert and normalise")


@pytest.mark.parametrize("method", COMPOSED, ids=method_name)
def test_nan_input_names_the_callers_image(method):
    model = conv_net()
    cam = make_cam(method, model)
    x = batch(3)
    x[1, 0, 5, 5] = float("nan")
    expect_clean_error(
        model,
        lambda: cam(x, [1]),
        ValueError,
        r"input_tensor contains NaN or Inf values \(image 1\)",
    )


def test_compute_takes_aug_smooth_third_as_base_cam_does():
    model, x = conv_net(), batch()
    cam = make_cam(RefineCAM, model)
    smoothed = cam.compute(x, TARGETS, True)
    np.testing.assert_array_equal(smoothed.numpy(), cam.compute(x, TARGETS, aug_smooth=True))
    assert not torch.equal(smoothed, cam.compute(x, TARGETS))


# ----------------------------------------------------------------------------- messages


class SharedNet(nn.Module):
    """``shared`` runs twice per forward pass (a warning names the method explaining it)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        return self.head(self.shared(self.shared(self.stem(x))).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "method, layers, options, index",
    [
        (FinerCAM, ["shared"], {}, 0),
        (RefineCAM, ["stem", "shared"], {}, 1),
        (RefineCAM, ["stem", "shared"], {"keep_graph": True}, 1),  # one base CAM per layer
        (SESS, ["shared"], {}, 0),
    ],
)
def test_warnings_name_the_outer_method_and_its_layers_once(method, layers, options, index):
    model = SharedNet().eval()
    kwargs = {"num_scales": 2, "window_size": 12, "step_size": 4, "batch_size": 3}
    cam = method(model, [getattr(model, n) for n in layers], **(kwargs if method is SESS else {}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cam.compute(torch.rand(2, 3, 16, 16), [1], **options)
    repeated = [str(w.message) for w in caught if "ran 2 times" in str(w.message)]
    assert len(repeated) == 1, repeated
    assert f"{method.__name__} explains its last call" in repeated[0]
    assert f"target_layers[{index}] (Conv2d 'shared')" in repeated[0]
    assert "GradCAM" not in repeated[0]


class ZeroForImage:
    """A target whose score does not depend on the output: a zero gradient."""

    def __call__(self, output):
        return output[..., 0] * 0


def test_sess_warnings_name_the_callers_images_once():
    model = conv_net()
    sess = SESS(model, [model.conv2], num_scales=2, window_size=16, step_size=4, batch_size=5)
    targets = [ClassifierOutputTarget(1), ZeroForImage(), ClassifierOutputTarget(2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = sess(batch(3), targets)
    zero = [str(w.message) for w in caught if "exactly zero" in str(w.message)]
    assert len(zero) == 1, zero  # not once per batch of windows
    assert zero[0].startswith("SESS (window maps): ") and "for image 1," in zero[0]
    assert maps[1].max() == 0 and maps[0].max() > 0.99


class NaNFor:
    def __call__(self, output):
        return output[..., 0] * float("nan")


def test_sess_non_finite_scores_name_the_callers_target():
    model = conv_net()
    sess = SESS(model, [model.conv2], num_scales=2, window_size=16, step_size=4, batch_size=5)
    targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(2), NaNFor()]
    expect_clean_error(
        model,
        lambda: sess(batch(3), targets),
        ValueError,
        r"targets\[2\] \(.*NaNFor.*\) gives a non-finite score \(nan\) for image 2 \(window 0\)",
    )


def test_relay_maps_inner_images_and_targets_to_the_callers():
    relay = MessageRelay("GradCAM", "SESS", batch=4, prefix="SESS: ")
    images = [0, 0, 2, 2, 3, 3]
    with pytest.raises(ValueError, match=r"^SESS: targets\[2\] is bad for image 2 in SESS$"):
        with relay.part(images):
            raise ValueError("targets[3] is bad for image 3 in GradCAM")
    with relay.part(images):
        warn("the maps of images 0, 1 peak at 0.1")
    with relay.part(images[1:]):
        warn("the maps of images 2, 3 peak at 0.2")
    with pytest.warns(RuntimeWarning) as caught:
        relay.emit()
    assert [str(w.message) for w in caught] == ["SESS: the maps of images 0, 2, 3 peak at 0.1"]


def test_collected_warnings_stay_in_their_thread():
    import threading

    seen: list[str] = []

    def other_thread() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn("from the other thread")
        seen.extend(str(w.message) for w in caught)

    with collected_warnings() as collected:
        warn("collected")
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert collected == [("collected", RuntimeWarning)]
    assert seen == ["from the other thread"]


def test_relay_keeps_the_warnings_of_different_layers_apart():
    relay = MessageRelay("GradCAM", "RefineCAM", batch=2)
    for layer, peak in ((0, 0.1), (1, 0.2)):
        with relay.part([0, 1], layer=layer):  # each inner CAM has one layer: its [0]
            warn(f"target_layers[0] of GradCAM: the maps of image 1 peak at {peak}")
    with pytest.warns(RuntimeWarning) as caught:
        relay.emit()
    assert sorted(str(w.message) for w in caught) == [
        "target_layers[0] of RefineCAM: the maps of image 1 peak at 0.1",
        "target_layers[1] of RefineCAM: the maps of image 1 peak at 0.2",
    ]


def test_image_lists_are_never_cut_short_for_a_relay():
    from pytorch_grad_cam._checks import describe_images

    assert describe_images([True] * 20).endswith(", ... (20 of 20)")
    with collected_warnings():
        assert describe_images([True] * 20) == "images " + ", ".join(map(str, range(20)))
    relay = MessageRelay("GradCAM", "SESS", batch=2)
    windows = [0] * 10 + [1] * 10  # inner items 0-9 come from image 0, 10-19 from image 1
    with relay.part(windows):
        warn(f"the maps of {describe_images([i < 9 for i in range(20)])} are all zero")
    with pytest.warns(RuntimeWarning) as caught:
        relay.emit()
    assert [str(w.message) for w in caught] == ["the maps of image 0 are all zero"]


def test_relay_keeps_the_cause_of_an_error():
    cause = KeyError("scores")
    relay = MessageRelay("GradCAM", "SESS", batch=3)
    with pytest.raises(ValueError, match=r"targets\[2\] cannot read image 2") as info:
        with relay.part([0, 2]):
            raise ValueError("targets[1] cannot read image 1") from cause
    assert info.value.__cause__ is cause
