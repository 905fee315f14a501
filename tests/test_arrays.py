"""pytorch_grad_cam._arrays: numpy at the boundary and for grad-cam-style overrides."""

import numpy as np
import torch

from pytorch_grad_cam import GradCAM
from pytorch_grad_cam._arrays import (
    as_numpy,
    as_tensor,
    defined_outside_package,
    like,
    numpy_compatible,
)


def test_conversions():
    t = torch.arange(3, dtype=torch.float64, requires_grad=True)
    a = as_numpy(t)
    assert a.dtype == np.float32 and a.tolist() == [0, 1, 2]
    assert as_numpy(None) is None
    back = as_tensor(np.arange(3.0))
    assert back.dtype == torch.float32
    assert as_tensor(np.arange(3)).dtype == torch.int64
    assert isinstance(like(np.ones(2), t), torch.Tensor) and isinstance(like(t, a), np.ndarray)


class Method:
    calls: list = []

    @numpy_compatible
    def weights(self, input_tensor, activations, grads=None):
        self.calls.append((type(activations), type(grads)))
        return activations.sum(dim=1)


def test_numpy_compatible_converts_numpy_and_passes_tensors_through():
    x = torch.zeros(1)
    acts = np.ones((2, 3, 4), dtype=np.float32)
    got = Method().weights(x, acts, grads=acts)
    assert isinstance(got, np.ndarray) and got.shape == (2, 4) and got[0, 0] == 3
    tensor_result = Method().weights(x, torch.from_numpy(acts))
    assert isinstance(tensor_result, torch.Tensor)
    assert Method.calls == [(torch.Tensor, torch.Tensor), (torch.Tensor, type(None))]


def test_defined_outside_package():
    class Mine(GradCAM):
        def get_cam_image(self, *args):
            return None

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1))
    mine, builtin = Mine(model, [model[0]]), GradCAM(model, [model[0]])
    assert defined_outside_package(mine, "get_cam_image")
    assert not defined_outside_package(mine, "get_cam_weights")  # inherited from GradCAM
    assert not defined_outside_package(builtin, "get_cam_image")
    assert not defined_outside_package(builtin, "no_such_method")
