"""Tests for pytorch_grad_cam.utils.model_targets."""

import math
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pytorch_grad_cam.utils.model_targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    FasterRCNNBoxScoreTarget,
    FinerWeightedTarget,
    RawScoresOutputTarget,
    SemanticSegmentationTarget,
    SoftmaxOutputTarget,
)

LOGITS = torch.tensor([1.0, 2.0, 3.0])


def _softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def _log_softmax(values, index):
    return values[index] - math.log(sum(math.exp(v) for v in values))


# ---------------------------------------------------------------- classification targets


def test_classifier_output_target_1d_and_2d():
    assert ClassifierOutputTarget(1)(LOGITS).item() == 2.0
    batch = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert ClassifierOutputTarget(2)(batch).tolist() == [3.0, 6.0]


@pytest.mark.parametrize(
    "cls", [ClassifierOutputTarget, ClassifierOutputSoftmaxTarget, ClassifierOutputReST]
)
@pytest.mark.parametrize("category", [3, -1, 100])
def test_category_out_of_range_raises(cls, category):
    with pytest.raises(IndexError, match=f"category {category}"):
        cls(category)(LOGITS)


def test_softmax_target_values():
    probs = _softmax([1.0, 2.0, 3.0])
    out = ClassifierOutputSoftmaxTarget(0)(LOGITS)
    assert out.item() == pytest.approx(probs[0], rel=1e-6)
    batch = torch.stack([LOGITS, torch.zeros(3)])
    assert ClassifierOutputSoftmaxTarget(2)(batch).tolist() == pytest.approx(
        [probs[2], 1 / 3], rel=1e-6
    )


def test_rest_target_single_image():
    expected = 1.0 + _log_softmax([1.0, 2.0, 3.0], 0)
    assert ClassifierOutputReST(0)(LOGITS).item() == pytest.approx(expected, rel=1e-6)


def test_rest_target_is_per_sample_on_a_batch():
    rows = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, -1.0, 2.0]]
    out = ClassifierOutputReST(1)(torch.tensor(rows))
    assert out.shape == (3,)
    expected = [r[1] + _log_softmax(r, 1) for r in rows]
    assert out.tolist() == pytest.approx(expected, rel=1e-6)
    # Each row's score depends only on that row (no batch-mean cross-entropy).
    assert out[1].item() == pytest.approx(math.log(1 / 3), rel=1e-6)


def test_binary_target():
    out = torch.tensor([2.5])
    assert BinaryClassifierOutputTarget(1)(out).item() == 2.5
    assert BinaryClassifierOutputTarget(0)(out).item() == -2.5


def test_softmax_and_raw_scores_targets():
    probs = SoftmaxOutputTarget()(LOGITS)
    assert probs.tolist() == pytest.approx(_softmax([1.0, 2.0, 3.0]), rel=1e-6)
    assert RawScoresOutputTarget()(LOGITS) is LOGITS


@pytest.mark.parametrize(
    "wrap",
    [
        lambda t: {"logits": t},
        lambda t: OrderedDict(loss=None, logits=t),
        lambda t: SimpleNamespace(logits=t),
        lambda t: (t, torch.zeros(1)),
        lambda t: [t],
    ],
    ids=["dict", "ordered_dict", "attribute", "tuple", "list"],
)
def test_targets_read_hf_style_outputs(wrap):
    wrapped = wrap(LOGITS)
    assert ClassifierOutputTarget(2)(wrapped).item() == 3.0
    assert ClassifierOutputSoftmaxTarget(2)(wrapped).item() == pytest.approx(
        _softmax([1.0, 2.0, 3.0])[2], rel=1e-6
    )
    assert ClassifierOutputReST(2)(wrapped).item() == pytest.approx(
        3.0 + _log_softmax([1.0, 2.0, 3.0], 2), rel=1e-6
    )


@pytest.mark.parametrize("bad", ["text", {"scores": LOGITS}, (), SimpleNamespace(x=1)])
def test_unreadable_output_raises_type_error(bad):
    with pytest.raises(TypeError, match="logits"):
        ClassifierOutputTarget(0)(bad)


def test_targets_keep_gradients():
    logits = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    ClassifierOutputReST(0)(logits).backward()
    probs = torch.tensor(_softmax([1.0, 2.0, 3.0]))
    # d/dz [z_0 + z_0 - logsumexp(z)] = 2 * e_0 - softmax(z)
    expected = torch.tensor([2.0, 0.0, 0.0]) - probs
    torch.testing.assert_close(logits.grad, expected)


def test_reprs_show_parameters():
    assert "category=3" in repr(ClassifierOutputTarget(3))
    assert repr(ClassifierOutputSoftmaxTarget(4)) == "ClassifierOutputSoftmaxTarget(category=4)"
    assert "ClassifierOutputReST" in repr(ClassifierOutputReST(1))
    assert "category=0" in repr(BinaryClassifierOutputTarget(0))
    assert repr(SoftmaxOutputTarget()) == "SoftmaxOutputTarget()"
    assert repr(RawScoresOutputTarget()) == "RawScoresOutputTarget()"
    seg = repr(SemanticSegmentationTarget(2, np.ones((3, 4))))
    assert "category=2" in seg and "(3, 4)" in seg
    det = repr(FasterRCNNBoxScoreTarget([1, 7], [[0, 0, 1, 1], [0, 0, 2, 2]], 0.3))
    assert "[1, 7]" in det and "0.3" in det


# ---------------------------------------------------------------- segmentation


def test_semantic_segmentation_target():
    output = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 3)
    mask = np.zeros((2, 3))
    mask[0, 1] = mask[1, 2] = 1
    # class 1 map is [[6, 7, 8], [9, 10, 11]] -> 7 + 11
    assert SemanticSegmentationTarget(1, mask)(output).item() == 18.0
    bool_mask = torch.from_numpy(mask.astype(bool))
    assert SemanticSegmentationTarget(0, bool_mask)(output).item() == 1.0 + 5.0


def test_semantic_segmentation_target_errors():
    output = torch.zeros(2, 2, 3)
    with pytest.raises(IndexError, match="category 2"):
        SemanticSegmentationTarget(2, np.ones((2, 3)))(output)
    with pytest.raises(ValueError, match="mask"):
        SemanticSegmentationTarget(0, np.ones((3, 3)))(output)


def test_semantic_segmentation_mask_is_not_moved_in_constructor():
    target = SemanticSegmentationTarget(0, np.ones((2, 2), dtype=np.float64))
    assert target.mask.device.type == "cpu"
    out = target(torch.ones(1, 2, 2, dtype=torch.float16))
    assert out.dtype == torch.float16 and out.item() == 4.0


# ---------------------------------------------------------------- detection


@pytest.fixture
def detections():
    scores = torch.tensor([0.9, 0.8], requires_grad=True)
    return {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]]),
        "labels": torch.tensor([1, 2]),
        "scores": scores,
    }


@pytest.mark.parametrize(
    "labels, boxes, threshold, expected",
    [
        ([1], [[0, 0, 10, 10]], 0.5, 1.0 + 0.9),  # exact match with prediction 0
        ([2], [[0, 0, 10, 5]], 0.5, 1.0 + 0.8),  # exact match with prediction 1
        ([2], [[0, 0, 10, 6]], 0.5, 50 / 60 + 0.8),  # IoU 0.6 vs 0.833: prediction 1 wins
        ([1, 2], [[0, 0, 10, 10], [0, 0, 10, 5]], 0.5, 1.9 + 1.8),  # two references add up
        ([2], [[0, 0, 10, 10]], 0.5, 0.0),  # best box has another label
        ([1], [[0, 0, 5, 10]], 0.5, 0.0),  # best IoU is exactly 0.5: not above threshold
        ([1], [[0, 0, 5, 10]], 0.4, 0.5 + 0.9),
        ([1], [[20, 20, 30, 30]], 0.5, 0.0),  # no overlap at all
    ],
)
def test_faster_rcnn_box_score_target(detections, labels, boxes, threshold, expected):
    target = FasterRCNNBoxScoreTarget(labels, np.array(boxes, dtype=np.float32), threshold)
    out = target(detections)
    assert out.ndim == 0
    assert out.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    out.backward()  # always connected to the graph, even when nothing matched
    assert detections["scores"].grad is not None


def test_faster_rcnn_gradient_flows_to_matched_score(detections):
    FasterRCNNBoxScoreTarget([2], [[0, 0, 10, 5]])(detections).backward()
    assert detections["scores"].grad.tolist() == [0.0, 1.0]


def test_faster_rcnn_no_predictions():
    scores = torch.zeros(0, requires_grad=True)
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": scores,
    }
    out = FasterRCNNBoxScoreTarget([1], [[0, 0, 1, 1]])(empty)
    assert out.ndim == 0 and out.item() == 0.0 and out.requires_grad


def test_faster_rcnn_accepts_tensor_labels_and_boxes(detections):
    target = FasterRCNNBoxScoreTarget(torch.tensor([1]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert target(detections).item() == pytest.approx(1.9, rel=1e-6)


# ---------------------------------------------------------------- class indices


@pytest.mark.parametrize(
    "make",
    [
        ClassifierOutputTarget,
        ClassifierOutputSoftmaxTarget,
        ClassifierOutputReST,
        BinaryClassifierOutputTarget,
        lambda c: SemanticSegmentationTarget(c, np.ones((2, 2))),
        lambda c: FinerWeightedTarget(c, [1]),
        lambda c: FinerWeightedTarget(0, [1, c]),
    ],
)
@pytest.mark.parametrize("category", [2.7, 2.0, np.float32(1.0), torch.tensor(2.0)])
def test_float_class_indices_are_rejected_not_truncated(make, category):
    with pytest.raises(TypeError, match="must be an integer class index; got the float"):
        make(category)


@pytest.mark.parametrize("category", [2, np.int64(2), np.uint8(2), torch.tensor(2)])
def test_numpy_and_torch_integer_class_indices_are_accepted(category):
    target = ClassifierOutputTarget(category)
    assert target.category == 2 and type(target.category) is int
    assert target(LOGITS).item() == 3.0


def test_finer_weighted_target_rejects_a_non_finite_alpha():
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        FinerWeightedTarget(0, [1], alpha=float("nan"))
