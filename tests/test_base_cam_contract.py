"""grad-cam's extension contract: code written against grad-cam 1.5.7 runs unchanged.

Subclasses defined outside the package get numpy arrays in their overrides (as grad-cam passes
them), a replaced ``activations_and_grads`` object is driven through its own hooks, and
models that return one result object per image hand each target its own image's entry.
"""

import copy
import os
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import ttach as tta
from conftest import conv_net, make_probe_case, make_two_layer_case
from snapshot import ModelSnapshot
from torch import nn

import pytorch_grad_cam
from pytorch_grad_cam import (
    AblationCAM,
    ActivationsAndGradients,
    BaseCAM,
    EigenCAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    ScoreCAM,
)
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget as Target


def batch(n: int = 3, height: int = 12, width: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(n))


# ----------------------------------------------------------------------------- numpy overrides


class NumpyGradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ weights written the way grad-cam users write them: numpy in, numpy out."""

    seen: list = []

    def __init__(self, model, target_layers, reshape_transform=None):
        super().__init__(model, target_layers, reshape_transform)

    def get_cam_weights(self, input_tensor, target_layers, target_category, activations, grads):
        self.seen.append((type(activations), activations.dtype, type(grads), len(target_category)))
        grads_power_2 = grads**2
        grads_power_3 = grads_power_2 * grads
        sum_activations = np.sum(activations, axis=(2, 3))
        aij = grads_power_2 / (
            2 * grads_power_2 + sum_activations[:, :, None, None] * grads_power_3 + 1e-6
        )
        aij = np.where(grads != 0, aij, 0)
        weights = np.maximum(grads, 0) * aij
        return np.sum(weights, axis=(2, 3))


def test_a_numpy_get_cam_weights_gets_float32_arrays_and_matches_the_builtin():
    model, x = conv_net(), batch()
    targets = [Target(0), Target(2), Target(4)]
    NumpyGradCAMPlusPlus.seen = []
    got = NumpyGradCAMPlusPlus(model, [model.conv1, model.conv2])(x, targets)
    assert NumpyGradCAMPlusPlus.seen == [(np.ndarray, np.float32, np.ndarray, 3)] * 2
    expected = GradCAMPlusPlus(model, [model.conv1, model.conv2])(x, targets)
    np.testing.assert_allclose(got, expected, atol=1e-5)


class AbsHiResCAM(GradCAM):
    """Overrides get_cam_image in numpy; calls the built-in weights through super()."""

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
        assert isinstance(activations, np.ndarray) and isinstance(grads, np.ndarray)
        weights = self.get_cam_weights(input_tensor, target_layer, targets, activations, grads)
        assert isinstance(weights, np.ndarray) and weights.shape == activations.shape[:2]
        return np.abs(grads * activations).sum(axis=1)


def test_a_numpy_get_cam_image_override_and_super_calls_with_numpy():
    case = make_probe_case()
    got = AbsHiResCAM(case.model, case.layers)(case.x, case.targets)
    expected = case.expected([np.abs(g * a).sum(axis=1) for a, g in zip(case.acts, case.grads)])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(AssertionError):  # sanity: it is not plain HiResCAM
        np.testing.assert_allclose(got, HiResCAM(case.model, case.layers)(case.x, case.targets))


class MaxOverLayers(GradCAM):
    received: list = []

    def aggregate_multi_layers(self, cam_per_target_layer):
        self.received.append([(type(c), c.dtype, c.shape) for c in cam_per_target_layer])
        return scale_cam_image(np.max(np.concatenate(cam_per_target_layer, axis=1), axis=1))


def test_an_aggregate_multi_layers_override_gets_numpy_per_layer_maps():
    case = make_two_layer_case()
    MaxOverLayers.received = []
    cam = MaxOverLayers(case.model, case.layers)
    got = cam(case.x, case.targets)
    size = (2, 1, 8, 12)
    assert MaxOverLayers.received == [[(np.ndarray, np.float32, size)] * 2]
    plain = GradCAM(case.model, case.layers)
    mean_of_layers = plain(case.x, case.targets)
    per_layer = plain.compute_cam_per_layer(case.x, case.targets, False)  # of that call
    np.testing.assert_allclose(plain.aggregate_multi_layers(per_layer), mean_of_layers, atol=1e-6)
    expected = scale_cam_image(np.concatenate(per_layer, axis=1).max(axis=1))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(got - mean_of_layers).max() > 0.05


class SquaredPerLayer(GradCAM):
    def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
        cams = super().compute_cam_per_layer(input_tensor, targets, eigen_smooth)
        assert all(isinstance(c, np.ndarray) and c.shape[1] == 1 for c in cams)
        return [c**2 for c in cams]


def test_a_compute_cam_per_layer_override_calling_super():
    model, x = conv_net(), batch()
    got = SquaredPerLayer(model, [model.conv2])(x, [Target(1)])
    plain = GradCAM(model, [model.conv2])(x, [Target(1)])
    np.testing.assert_allclose(got, scale_cam_image(plain**2), atol=1e-5)


class HalfSize(GradCAM):
    def get_target_width_height(self, input_tensor):
        width, height = input_tensor.shape[-1], input_tensor.shape[-2]
        return width // 2, height // 2


def test_get_target_width_height_sets_the_output_size():
    model, x = conv_net(), batch(height=12, width=16)
    assert GradCAM(model, [model.conv2]).get_target_width_height(x) == (16, 12)
    assert HalfSize(model, [model.conv2])(x).shape == (3, 6, 8)


class CountingForward(GradCAM):
    """A forward override (numpy out): aug_smooth calls it once per augmented view."""

    calls = 0

    def forward(self, input_tensor, targets, eigen_smooth=False):
        CountingForward.calls += 1
        result = super().forward(input_tensor, targets, eigen_smooth)
        assert isinstance(result, np.ndarray)
        return result


def test_forward_and_forward_augmentation_smoothing_overrides():
    model, x = conv_net(), batch(2)
    CountingForward.calls = 0
    cam = CountingForward(model, [model.conv2])
    np.testing.assert_allclose(cam(x, [Target(3)]), GradCAM(model, [model.conv2])(x, [Target(3)]))
    assert CountingForward.calls == 1
    smooth = cam(x, [Target(3)], aug_smooth=True)
    assert CountingForward.calls == 1 + 6  # 2 flips x 3 scales
    expected = GradCAM(model, [model.conv2])(x, [Target(3)], aug_smooth=True)
    np.testing.assert_allclose(smooth, expected, atol=1e-5)
    direct = GradCAM(model, [model.conv2]).forward_augmentation_smoothing(x, [Target(3)])
    np.testing.assert_allclose(direct, expected, atol=1e-6)


class OriginalForward(GradCAM):
    """grad-cam 1.5.7's ``forward`` body, as user subclasses copy it: it drives
    ``activations_and_grads`` and the backward pass itself."""

    def forward(self, input_tensor, targets, eigen_smooth=False):
        input_tensor = input_tensor.to(self.device)
        self.outputs = outputs = self.activations_and_grads(input_tensor)
        if targets is None:
            targets = [Target(c) for c in np.argmax(outputs.cpu().data.numpy(), axis=-1)]
        if self.uses_gradients:
            self.model.zero_grad()
            loss = sum([target(output) for target, output in zip(targets, outputs)])
            loss.backward(retain_graph=True)
        cam_per_layer = self.compute_cam_per_layer(input_tensor, targets, eigen_smooth)
        return self.aggregate_multi_layers(cam_per_layer)


def test_a_forward_override_with_grad_cams_body_gives_the_plain_map():
    model, x = conv_net(), batch()
    layers, targets = [model.conv1, model.conv2], [Target(1), Target(3), Target(0)]
    expected = GradCAM(model, layers)(x, targets)
    cam = OriginalForward(model, layers)
    GradCAM(model, layers)(x[:1], [Target(4)])  # a stale call of another CAM changes nothing
    before = ModelSnapshot.of(model)
    np.testing.assert_allclose(cam(x, targets), expected, atol=1e-6)
    np.testing.assert_allclose(cam(x, targets), expected, atol=1e-6)  # and again
    assert ModelSnapshot.of(model).hooks == before.hooks  # nothing left on the model


def test_the_cams_recorder_called_directly_records_for_that_call():
    model, x = conv_net(), batch()
    cam = GradCAM(model, [model.conv2])
    before = ModelSnapshot.of(model)
    out = cam.activations_and_grads(x)
    assert ModelSnapshot.of(model).hooks == before.hooks  # the forward hooks are gone
    out[:, 1].sum().backward()
    recorder = cam.activations_and_grads
    assert len(recorder.activations) == 1 and len(recorder.gradients) == 1
    assert recorder.activations[0].shape == recorder.gradients[0].shape == (3, 8, 6, 8)
    maps = cam.aggregate_multi_layers(cam.compute_cam_per_layer(x, [Target(1)], False))
    np.testing.assert_allclose(maps, GradCAM(model, [model.conv2])(x, [Target(1)]), atol=1e-6)


class MedianSmoothing(GradCAM):
    """grad-cam 1.5.7's ``forward_augmentation_smoothing`` body, with the median."""

    def forward_augmentation_smoothing(self, input_tensor, targets, eigen_smooth=False):
        cams = []
        for transform in self.tta_transforms:
            augmented_tensor = transform.augment_image(input_tensor)
            cam = self.forward(augmented_tensor, targets, eigen_smooth)
            cam = torch.from_numpy(cam[:, None, :, :])
            cams.append(transform.deaugment_mask(cam).numpy()[:, 0])
        self.views = len(cams)
        return np.median(np.float32(cams), axis=0)


def test_tta_transforms_default_to_grad_cams_and_an_override_can_iterate_them():
    model, x = conv_net(), batch(2)
    cam = MedianSmoothing(model, [model.conv2])
    assert isinstance(cam.tta_transforms, tta.Compose) and len(cam.tta_transforms) == 6
    got = cam(x, [Target(1)], aug_smooth=True)
    assert cam.views == 6 and got.shape == (2, 12, 16)
    plain = GradCAM(model, [model.conv2])
    per_view = []
    for view in plain.tta_transforms:
        maps = plain(view.augment_image(x), [Target(1)])
        per_view.append(view.deaugment_mask(torch.from_numpy(maps)[:, None])[:, 0].numpy())
    np.testing.assert_allclose(got, np.median(per_view, axis=0), atol=1e-6)


class InputTimesGradient(BaseCAM):
    """FullGrad-style: reads ``input_tensor.grad`` in its ``get_cam_image``."""

    def __init__(self, model, target_layers):
        super().__init__(model, target_layers, compute_input_gradient=True)

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
        assert input_tensor.is_leaf and input_tensor.requires_grad
        gradient = input_tensor.grad.data.cpu().numpy()
        return np.abs(gradient * input_tensor.data.cpu().numpy()).sum(axis=1)


def test_with_compute_input_gradient_overrides_get_the_input_with_its_grad():
    model, x = conv_net(), batch()
    got = InputTimesGradient(model, [model.conv2])(x, [Target(1), Target(3), Target(0)])
    leaf = x.clone().requires_grad_()
    model(leaf)[[0, 1, 2], [1, 3, 0]].sum().backward()
    model.zero_grad()
    layer_map = scale_cam_image((leaf.grad * x).abs().sum(dim=1).numpy())
    expected = scale_cam_image(layer_map)  # (normalised again after the mean over layers)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert x.grad is None  # the caller's tensor is left alone


def test_detach_false_hands_torch_tensors_with_their_graph():
    seen = []

    class SecondOrder(BaseCAM):
        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            seen.append((type(activations), activations.requires_grad, grads.requires_grad))
            return grads.mean(dim=(2, 3))

    model, x = conv_net(), batch()
    got = SecondOrder(model, [model.conv2], detach=False)(x, [Target(2)])
    assert seen == [(torch.Tensor, True, True)]
    np.testing.assert_allclose(got, GradCAM(model, [model.conv2])(x, [Target(2)]), atol=1e-6)


def test_grad_cam_attributes():
    model = conv_net()
    cam = GradCAM(model, [model.conv2])
    assert cam.device == torch.device("cpu") and cam.detach is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cam.device = "cpu"  # as grad-cam code does: accepted (it is the model's device)
        cam.device = torch.device("cpu")
    assert cam.device == torch.device("cpu")
    with pytest.warns(RuntimeWarning, match="does not move anything.*model.to"):
        cam.device = "meta"
    assert cam.device == torch.device("cpu")  # the model's device is what is used
    assert cam.uses_gradients and not cam.compute_input_gradient
    assert BaseCAM(model, [model.conv2], None, False, True, None, False).detach is False


# ----------------------------------------------------------------------------- replaced hook object


class OriginalStyleRecorder:
    """An ``activations_and_grads`` replacement written against grad-cam's contract: its own
    forward hooks, CPU copies, gradients put in front as they arrive."""

    def __init__(self, model, target_layers, reshape_transform):
        self.model = model
        self.gradients = []
        self.activations = []
        self.reshape_transform = reshape_transform
        self.handles = []
        for target_layer in target_layers:
            self.handles.append(target_layer.register_forward_hook(self.save_activation))
            self.handles.append(target_layer.register_forward_hook(self.save_gradient))

    def save_activation(self, module, input, output):
        self.activations.append(output.cpu().detach())

    def save_gradient(self, module, input, output):
        if not hasattr(output, "requires_grad") or not output.requires_grad:
            return

        def _store_grad(grad):
            self.gradients = [grad.cpu().detach()] + self.gradients

        output.register_hook(_store_grad)

    def __call__(self, x):
        self.gradients = []
        self.activations = []
        return self.model(x)

    def release(self):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("method", [GradCAM, GradCAMPlusPlus, EigenCAM])
def test_a_replaced_recorder_with_grad_cams_contract(method):
    model, x = conv_net(), batch()
    layers = [model.conv1, model.conv2]
    expected = method(model, layers)(x, [Target(1)])
    cam = method(model, layers)
    cam.activations_and_grads = OriginalStyleRecorder(model, layers, None)
    np.testing.assert_allclose(cam(x, [Target(1)]), expected, atol=1e-6)
    assert len(cam.activations_and_grads.activations) == 2
    assert len(cam.activations_and_grads.gradients) == (2 if method.uses_gradients else 0)
    cam.release()
    assert all(not m._forward_hooks for m in model.modules())


class Detections(nn.Module):
    """A YOLO-style model: the raw output is post-processed by the recorder's ``__call__``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = conv_net()

    def forward(self, x):
        return (self.net(x), "raw extras")


class PostProcessingRecorder(ActivationsAndGradients):
    """A subclass overriding __call__ to post-process, as detection explainers do."""

    def __call__(self, x):
        self.gradients = []
        self.activations = []
        logits, _ = self.model(x)
        return [[logits[i], logits[i].argmax()] for i in range(len(x))]


def yolo_style_target(data):
    scores, best = data  # one image's [scores, best class] from the recorder's output
    return scores[best]


@pytest.mark.parametrize("method", [GradCAM, EigenCAM])
def test_a_recorder_subclass_overriding_call(method):
    model, x = Detections(), batch()
    layers = [model.net.conv2]
    cam = method(model, layers)
    cam.activations_and_grads = PostProcessingRecorder(model, layers, None)
    got = cam(x, [yolo_style_target] * 3)
    expected = method(model.net, layers)(x)  # the top class of each image
    np.testing.assert_allclose(got, expected, atol=1e-6)
    cam.release()
    assert all(not m._forward_hooks for m in model.modules())


# ----------------------------------------------------------------------------- per-image results


@dataclass
class Result:
    """A detector's result for one image."""

    scores: torch.Tensor
    label: str


class ResultDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = conv_net()

    def forward(self, x):
        return [Result(scores=row, label="thing") for row in self.net(x)]


def score_of(category):
    def target(result):
        assert isinstance(result, Result)  # its own image's result object
        return result.scores[category]

    return target


@pytest.mark.parametrize("method", [GradCAM, AblationCAM])
def test_models_returning_one_result_object_per_image(method):
    model, x = ResultDetector().eval(), batch()
    kwargs = {"progress": False} if method is AblationCAM else {}
    got = method(model, [model.net.conv2], **kwargs)(x, [score_of(c) for c in (0, 3, 1)])
    expected = method(model.net, [model.net.conv2], **kwargs)(x, [0, 3, 1])
    np.testing.assert_allclose(got, expected, atol=1e-5)


class RowsDetector(nn.Module):
    """Per-image detections as tensors: image i's (2, 5) rows are its logits reshaped (so a
    batch of 2 images gives entries whose first dimension is the batch size)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = conv_net(classes=10)

    def forward(self, x):
        return [row.reshape(2, 5) for row in self.net(x)]


def detection_score(row, column):
    def target(detections):
        assert detections.shape == (2, 5)  # its own image's rows, not the batch's
        return detections[row, column]

    return target


@pytest.mark.parametrize("method", [GradCAM, AblationCAM])
def test_per_image_tensors_as_long_as_the_batch_are_not_sliced(method):
    model, x = RowsDetector().eval(), batch(2)
    # AblationCAM: a chunk of 2 ablated copies gives 2 entries of 2 rows
    kwargs = {"progress": False, "batch_size": 2} if method is AblationCAM else {}
    got = method(model, [model.net.conv2], **kwargs)(
        x, [detection_score(1, 3), detection_score(0, 2)]
    )
    expected = method(model.net, [model.net.conv2], **kwargs)(x, [8, 2])
    np.testing.assert_allclose(got, expected, atol=1e-5)


# ----------------------------------------------------------------------------- threads


class Slow(nn.Module):
    """Waits for ``go`` before running (to hold a CAM call open in another thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = conv_net()
        self.entered, self.go = threading.Event(), threading.Event()

    def forward(self, x):
        self.entered.set()
        self.go.wait(10)
        return self.net(x)


def test_one_cam_object_called_from_two_threads_gives_a_clear_error():
    model, x = Slow(), batch()
    cam = GradCAM(model, [model.net.conv2])
    results = {}
    worker = threading.Thread(target=lambda: results.setdefault("maps", cam(x, [Target(1)])))
    worker.start()
    assert model.entered.wait(10)
    with pytest.raises(RuntimeError, match="another thread.*one CAM object per thread"):
        cam(x, [Target(1)])
    model.go.set()
    worker.join()
    np.testing.assert_allclose(results["maps"], GradCAM(model, [model.net.conv2])(x, [1]))


@pytest.mark.parametrize("method", [ScoreCAM, AblationCAM])
def test_an_unrelated_model_in_another_thread_is_undisturbed(method):
    torch.manual_seed(0)
    other = conv_net(seed=5, batchnorm=True)
    other_input = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        reference = other(other_input)
    stop, running, errors, mismatches, runs = threading.Event(), threading.Event(), [], [], [0]

    def run_other():
        while not stop.is_set():
            try:
                with torch.no_grad():
                    out = other(other_input)
                if not torch.allclose(out, reference):
                    mismatches.append(out)
                runs[0] += 1
                running.set()
            except Exception as error:  # noqa: BLE001 - counted, then asserted
                errors.append(error)

    model, x = conv_net(), batch(2, 16, 16)
    twin = copy.deepcopy(model)  # never run while the other thread does
    worker = threading.Thread(target=run_other)
    worker.start()
    try:
        assert running.wait(10)
        before = runs[0]
        # every call overlaps the other thread, the first call of this test included
        maps = [method(model, [model.conv2], progress=False)(x, [0, 4]) for _ in range(3)]
        during = runs[0] - before
    finally:
        stop.set()
        worker.join()
    assert during > 0 and errors == [] and mismatches == []
    expected = method(twin, [twin.conv2], progress=False)(x, [0, 4])
    for got in maps:
        np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not any(m._forward_hooks for m in [*model.modules(), *other.modules()])


# ----------------------------------------------------------------------------- names


def test_method_classes_are_discoverable():
    subclasses = {cls.__name__ for cls in BaseCAM.__subclasses__()}
    for name in ("GradCAM", "ScoreCAM", "AblationCAM", "EigenCAM", "FullGrad", "ShapleyCAM"):
        assert name in subclasses
        assert getattr(pytorch_grad_cam, name).__name__ == name


def test_importing_base_cam_alone_lists_every_method_as_a_subclass():
    script = (
        "from pytorch_grad_cam.base_cam import BaseCAM\n"
        "print(' '.join(sorted(c.__name__ for c in BaseCAM.__subclasses__())))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [
        "AblationCAM", "EigenCAM", "EigenGradCAM", "FEM", "FullGrad", "GradCAM",
        "GradCAMElementWise", "GradCAMPlusPlus", "HiResCAM", "KPCA_CAM", "LayerCAM",
        "RandomCAM", "ScoreCAM", "SegEigenCAM", "ShapleyCAM", "XGradCAM",
    ]  # fmt: skip

    class Mine(GradCAM):
        pass

    assert Mine in GradCAM.__subclasses__()  # a method's own subclasses, as type lists them
    assert Mine not in BaseCAM.__subclasses__()


def test_names_grad_cam_code_reaches_for():
    from pytorch_grad_cam import finer_cam
    from pytorch_grad_cam.metrics import road

    assert finer_cam.DEFAULT_COMPARISON_CATEGORIES == (1, 2, 3)
    diagonal, side = 1 / 12, 1 / 6
    assert dict(road.neighbors_weights) == {
        (dy, dx): diagonal if dy and dx else side
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if dy or dx
    }


def test_version_and_type_marker_come_from_pyproject():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert pytorch_grad_cam.__version__ == pyproject["project"]["version"]
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["pytorch_grad_cam"]
    assert (Path(pytorch_grad_cam.__file__).parent / "py.typed").is_file()


def test_fullgrad_2021_target_layer_spelling_warns_that_layers_are_ignored():
    model = conv_net()
    with pytest.warns(UserWarning, match="target_layers is ignored"):
        cam = FullGrad(model, target_layer=model.conv2)
    assert cam.target_layers == [model.conv1, model.conv2]  # every biased conv
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert cam(batch(), [1]).shape == (3, 12, 16)
