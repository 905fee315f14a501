"""pytorch_grad_cam._targets: what callers pass as targets, one per image, their scores."""

import numpy as np
import pytest
import torch

from pytorch_grad_cam._targets import (
    TargetsFromOutputs,
    broadcast_targets,
    resolve_targets,
    target_scores,
    top_class_targets,
)
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)


def categories(targets):
    return [t.category for t in targets]


def test_resolve_targets_accepts_every_spelling():
    assert resolve_targets(None) is None
    assert categories(resolve_targets(3)) == [3]
    assert categories(resolve_targets(np.int64(2))) == [2]
    assert categories(resolve_targets([1, np.int32(4)])) == [1, 4]
    target = ClassifierOutputTarget(0)
    assert resolve_targets(target) == [target]
    deferred = TargetsFromOutputs(lambda outputs, batch: [target] * batch)
    assert resolve_targets(deferred) is deferred
    with pytest.warns(DeprecationWarning, match="target_category"):
        assert categories(resolve_targets(None, [5, 6])) == [5, 6]


@pytest.mark.parametrize(
    "targets, error, match",
    [([], ValueError, "targets is empty"), (["cat"], TypeError, r"targets\[0\] must be")],
)
def test_resolve_targets_errors(targets, error, match):
    with pytest.raises(error, match=match):
        resolve_targets(targets)


def test_broadcast_and_top_class():
    one = ClassifierOutputTarget(1)
    assert broadcast_targets([one], 3) == [one] * 3
    with pytest.raises(ValueError, match="targets has 2 entries but the batch has 3"):
        broadcast_targets([one, one], 3)
    logits = torch.tensor([[0.0, 2.0, 1.0], [5.0, 0.0, 1.0]])
    assert categories(top_class_targets(logits, 2)) == [1, 0]
    assert top_class_targets({"boxes": logits}, 2) is None
    assert top_class_targets(logits[:, :, None], 2) is None


@pytest.mark.parametrize(
    "cls", [ClassifierOutputTarget, ClassifierOutputSoftmaxTarget, ClassifierOutputReST]
)
def test_batched_class_scores_equal_per_image_scores(cls):
    logits = torch.randn(5, 4, requires_grad=True)
    targets = [cls(k) for k in (3, 0, 3, 1, 2)]
    batched = target_scores(logits, targets)
    per_image = target_scores(logits, [lambda out, t=t: t(out) for t in targets])
    torch.testing.assert_close(batched, per_image)
    assert batched.requires_grad
    with pytest.raises(IndexError, match="out of range"):
        target_scores(logits, [cls(4)] * 5)


def test_scores_of_structured_outputs_and_python_numbers():
    outputs = [{"score": torch.tensor(float(i))} for i in range(3)]
    got = target_scores(outputs, [lambda out: out["score"] * 2] * 3)
    torch.testing.assert_close(got, torch.tensor([0.0, 2.0, 4.0]))
    torch.testing.assert_close(target_scores(outputs, [lambda out: 1.5] * 3), torch.full((3,), 1.5))
    with pytest.raises(TypeError, match=r"targets\[1\].*could not read"):
        target_scores(outputs, [lambda out: out["score"], lambda out: out["missing"], None])


def test_resolve_targets_takes_integer_arrays_and_mixed_lists():
    assert categories(resolve_targets(torch.tensor([2, 0]))) == [2, 0]
    assert categories(resolve_targets(np.array([1, 3]))) == [1, 3]
    assert categories(resolve_targets(torch.tensor(4))) == [4]
    mixed = resolve_targets([1, ClassifierOutputSoftmaxTarget(2)])
    assert type(mixed[0]) is ClassifierOutputTarget and mixed[0].category == 1
    assert type(mixed[1]) is ClassifierOutputSoftmaxTarget


@pytest.mark.parametrize(
    "targets, error, match",
    [
        (2.5, TypeError, "targets must be an integer class index; got the float 2.5"),
        (np.float64(1.0), TypeError, "targets must be an integer class index"),
        ([1, 2.7], TypeError, r"targets\[1\] must be an integer class index; got the float 2.7"),
        (torch.tensor([1.0, 2.0]), TypeError, r"targets\[0\] must be an integer class index"),
        (torch.zeros(2, 2, dtype=torch.long), ValueError, "one class index per image"),
        ("cat", TypeError, "targets must be None .* got str"),
        (object(), TypeError, "targets must be None .* got object"),
    ],
)
def test_resolve_targets_rejects_floats_and_other_things(targets, error, match):
    with pytest.raises(error, match=match):
        resolve_targets(targets)


@pytest.mark.parametrize(
    "returned, kind",
    [(None, "NoneType"), ("x", "str"), (True, "bool"), (torch.tensor(True), "Tensor of dtype")],
)
def test_target_scores_name_a_target_that_returns_no_numbers(returned, kind):
    logits = torch.rand(2, 3)
    targets = [ClassifierOutputSoftmaxTarget(0), lambda output: returned]
    with pytest.raises(TypeError, match=rf"targets\[1\] \(.*\) returned {kind}"):
        target_scores(logits, targets)


def test_target_scores_take_numpy_and_python_numbers():
    logits = torch.rand(2, 3)
    got = target_scores(logits, [lambda output: np.float32(1.5), lambda output: 2])
    assert got.tolist() == [1.5, 2.0]
