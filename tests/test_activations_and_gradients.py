"""ActivationsAndGradients used on its own, with grad-cam's contract: hooks attached at
construction record each target layer's output as it runs and, in a backward pass, its gradient
(each new one put in front)."""

import torch
from conftest import conv_net, make_two_layer_case
from torch import nn

from pytorch_grad_cam import ActivationsAndGradients


def test_records_activations_in_the_order_the_layers_run():
    case = make_two_layer_case()
    model = case.model
    aag = ActivationsAndGradients(model, [model.probe2, model.probe1], None)
    out = aag(case.x)
    assert len(aag.activations) == 2 and aag.gradients == []
    torch.testing.assert_close(aag.activations[0].double(), torch.from_numpy(case.acts[0]))
    torch.testing.assert_close(aag.activations[1].double(), torch.from_numpy(case.acts[1]))
    assert not aag.activations[0].requires_grad
    aag.release()
    torch.testing.assert_close(out, model(case.x))


def test_detach_false_keeps_the_graph():
    model = conv_net()
    aag = ActivationsAndGradients(model, [model.conv2], None, detach=False)
    aag(torch.randn(1, 3, 8, 8))
    assert aag.activations[0].grad_fn is not None
    aag.release()


def test_backward_fills_the_gradients_in_front():
    case = make_two_layer_case()
    model = case.model
    aag = ActivationsAndGradients(model, [model.probe1, model.probe2], None)
    assert aag.gradients == []
    out = aag(case.x.clone().requires_grad_())  # the probes have no parameters before them
    out[0, 2].backward()
    # y = head1(A1) + head2(A2): dy_2/dA_i = W_i[2] for image 0, nothing for image 1.
    assert len(aag.gradients) == 2
    for grad, head in zip(aag.gradients, [model.head1, model.head2]):
        torch.testing.assert_close(grad[0], head.weight[2].detach())
        assert torch.count_nonzero(grad[1]) == 0
    model.zero_grad(set_to_none=True)
    aag.release()


def test_reshape_transform_is_applied_to_activations_and_gradients():
    model = conv_net()
    x = torch.randn(2, 3, 8, 8)
    flip = lambda t: t.flip(-1)  # noqa: E731
    aag = ActivationsAndGradients(model, [model.conv2], flip)
    out = aag(x)
    out[:, 1].sum().backward()
    plain = model.conv2(model.relu1(model.conv1(x)))
    torch.testing.assert_close(aag.activations[0], plain.flip(-1))
    assert aag.gradients[0].shape == plain.shape
    aag.release()
    model.zero_grad(set_to_none=True)


def test_a_new_forward_pass_and_clear_reset_the_records():
    model = conv_net()
    aag = ActivationsAndGradients(model, [model.conv2], None)
    aag(torch.randn(2, 3, 8, 8))[:, 0].sum().backward()
    assert len(aag.gradients) == 1
    aag(torch.randn(1, 3, 8, 8))
    assert aag.activations[0].shape[0] == 1 and aag.gradients == []
    aag.clear()
    assert aag.activations == [] and aag.gradients == []
    aag.release()
    model.zero_grad(set_to_none=True)


def test_release_and_dropping_remove_the_hooks():
    model = conv_net()
    aag = ActivationsAndGradients(model, [model.conv1, model.conv2], None)
    assert len(model.conv1._forward_hooks) == len(model.conv2._forward_hooks) == 2
    aag.release()
    assert not model.conv1._forward_hooks and not model.conv2._forward_hooks
    aag = ActivationsAndGradients(model, [model.conv2], None)
    del aag  # the hooks hold only a weak reference
    assert not model.conv2._forward_hooks


def test_save_methods_can_be_overridden():
    class FirstOnly(ActivationsAndGradients):
        def save_activation(self, module, input, output):
            self.activations.append(output[:, :1].detach())

    model = conv_net()
    aag = FirstOnly(model, [model.conv2], None)
    aag(torch.randn(2, 3, 8, 8))
    assert aag.activations[0].shape[1] == 1
    aag.release()


def test_model_output_is_unchanged_by_the_hooks_with_inplace_ops():
    inplace = conv_net(inplace=True)
    x = torch.randn(2, 3, 8, 8)
    aag = ActivationsAndGradients(inplace, [inplace.conv2], None)
    torch.testing.assert_close(aag(x), conv_net()(x))
    aag.release()


def test_layers_with_structured_outputs_are_recorded():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x * 2

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            a, b = self.pair(x)
            return a + b

    model = Net()
    aag = ActivationsAndGradients(model, [model.pair], None)
    x = torch.randn(2, 3)
    torch.testing.assert_close(aag(x), 3 * x)
    first, second = aag.activations[0]
    torch.testing.assert_close(second, 2 * x)
    aag.release()
