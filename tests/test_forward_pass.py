"""pytorch_grad_cam._forward_pass: what a CAM's forward pass captures, and how."""

import threading

import torch
from conftest import conv_net
from torch import nn

from pytorch_grad_cam._forward_pass import ForwardPass


class Recorder:
    def __init__(self):
        self.seen, self.grads = [], []

    def hook(self, module, args, output):
        self.seen.append(output)
        if output.requires_grad:
            output.register_hook(self.grads.append)


def run(model, layers, x, *, truncate, detach=True, recorder=None):
    state = ForwardPass(x, truncate=truncate, detach=detach)
    hooks = [recorder.hook] if recorder else []
    with state.hooks(layers, hooks), torch.set_grad_enabled(not truncate):
        state.outputs = model(x)
    return state


def test_truncated_pass_starts_the_graph_at_the_first_target_layer():
    model, x = conv_net(inplace=True), torch.randn(2, 3, 8, 8)
    recorder = Recorder()
    state = run(model, [model.conv2], x, truncate=True, recorder=recorder)
    (capture,) = state.captures
    graph, recording = capture.graph[0], capture.recording[0]
    assert graph.is_leaf and graph.requires_grad and state.outputs.requires_grad
    assert recording is recorder.seen[0] and recording is not graph
    plain = model.conv2(model.relu1(model.conv1(x)))
    torch.testing.assert_close(capture.output(), plain)  # before the in-place ReLU after it
    assert capture.output().min() < 0
    torch.testing.assert_close(state.outputs, conv_net()(x))  # the model's output unchanged
    assert all(not m._forward_hooks for m in model.modules())


def test_gradients_reach_the_recorder_only_when_published():
    model, x = conv_net(), torch.randn(2, 3, 8, 8)
    recorder = Recorder()
    state = run(model, [model.conv1, model.conv2], x, truncate=False, recorder=recorder)
    tensors = [c.graph[0] for c in state.captures]
    grads = torch.autograd.grad(state.outputs[:, 1].sum(), tensors)
    assert recorder.grads == []  # the recordings are not in the model's graph
    state.publish_gradients([[g] for g in grads])
    # last capture first, as a backward pass would reach them
    assert [g.shape for g in recorder.grads] == [grads[1].shape, grads[0].shape]
    torch.testing.assert_close(recorder.grads[0], grads[1])


def test_detach_false_records_differentiable_clones():
    model, x = conv_net(), torch.randn(1, 3, 8, 8)
    state = run(model, [model.conv2], x, truncate=False, detach=False)
    recording = state.captures[0].recording[0]
    assert recording.grad_fn is not None and not recording.is_leaf


def test_hooks_act_only_in_the_thread_running_the_pass():
    model, x = conv_net(), torch.randn(1, 3, 8, 8)
    state = ForwardPass(x, truncate=True, detach=True)
    other_outputs = []
    with state.hooks([model.conv2], []):
        worker = threading.Thread(target=lambda: other_outputs.append(model(x)))
        worker.start()
        worker.join()
    assert state.captures == []
    torch.testing.assert_close(other_outputs[0], model(x))


def test_structured_layer_outputs_are_captured_per_tensor():
    class Pair(nn.Module):
        def forward(self, x):
            return x * 2, {"id": 3}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            doubled, extra = self.pair(x)
            return doubled.sum() + extra["id"]

    model, x = Net(), torch.randn(2, 3)
    state = run(model, [model.pair], x, truncate=True)
    doubled, extra = state.captures[0].output()
    torch.testing.assert_close(doubled, x * 2)
    assert extra == {"id": 3}
