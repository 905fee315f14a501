"""pytorch_grad_cam._outputs: nested outputs, one image's part, the logits."""

from collections import OrderedDict, namedtuple

import pytest
import torch

from pytorch_grad_cam._outputs import describe_output, flatten_tensors, logits_of, select_image


def test_flatten_tensors_round_trip():
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    nested = {"x": a, "y": [b, ("label", c)]}
    tensors, rebuild = flatten_tensors(nested)
    assert [t.shape for t in tensors] == [a.shape, b.shape, c.shape]
    rebuilt = rebuild([t + 1 for t in tensors])
    assert rebuilt["y"][1][0] == "label"
    torch.testing.assert_close(rebuilt["y"][1][1], c + 1)
    assert isinstance(rebuilt["y"], list) and isinstance(rebuilt["y"][1], tuple)


def test_flatten_tensors_keeps_named_tuples_and_ordered_dicts():
    Pair = namedtuple("Pair", "left right")
    tensors, rebuild = flatten_tensors(OrderedDict(p=Pair(torch.zeros(1), torch.ones(1))))
    rebuilt = rebuild([t * 0 + 7 for t in tensors])
    assert isinstance(rebuilt, OrderedDict) and isinstance(rebuilt["p"], Pair)
    assert rebuilt["p"].right.item() == 7


def test_rebuild_keeps_no_reference_to_the_tensors():
    import gc
    import weakref

    big = torch.zeros(10)
    ref = weakref.ref(big)
    rebuild = flatten_tensors({"a": [big, "x"]})[1]
    del big
    gc.collect()
    assert ref() is None and rebuild([torch.ones(1)])["a"][1] == "x"


class Result:
    def __init__(self, score):
        self.score = score


@pytest.mark.parametrize(
    "outputs, expected",
    [
        (torch.arange(6.0).reshape(3, 2), torch.tensor([2.0, 3.0])),  # a row
        ([{"s": 0}, {"s": 1}, {"s": 2}], {"s": 1}),  # per-image dicts
        ([torch.zeros(5, 4), torch.ones(2, 4), torch.zeros(1, 4)], torch.ones(2, 4)),  # per-image
    ],
    ids=["tensor", "dicts", "per-image-tensors"],
)
def test_select_image_entries(outputs, expected):
    got = select_image(outputs, 1, 3)
    if isinstance(expected, torch.Tensor):
        torch.testing.assert_close(got, expected)
    else:
        assert got == expected


def test_a_list_as_long_as_the_batch_is_one_entry_per_image():
    # per-image tensors whose first dimension happens to be the batch size
    detections = [torch.full((2, 5), float(i)) for i in range(2)]
    assert select_image(detections, 1, 2) is detections[1]
    # a tuple of tensors stays a structure of batched tensors
    first, second = select_image(tuple(detections), 1, 2)
    torch.testing.assert_close(first, detections[0][1])
    torch.testing.assert_close(second, detections[1][1])


def test_select_image_of_result_objects_and_structures():
    results = [Result(i) for i in range(3)]
    assert select_image(results, 2, 3) is results[2]
    logits, aux = torch.arange(6.0).reshape(3, 2), torch.arange(3.0)
    first, second = select_image((logits, aux), 1, 3)  # a tuple of batched tensors: sliced
    torch.testing.assert_close(first, logits[1])
    assert second.item() == 1.0
    # batched logits with a non-tensor extra, as long as the batch: still batched outputs
    first, extra = select_image((logits[:2], 0), 1, 2)
    torch.testing.assert_close(first, logits[1])
    assert extra == 0
    # per-image results in a tuple (not led by a batched tensor): one entry per image
    assert select_image((Result(0), Result(1)), 1, 2).score == 1
    sliced = select_image({"logits": logits, "n": 3}, 0, 3)
    torch.testing.assert_close(sliced["logits"], logits[0])


def test_logits_of_and_describe():
    t = torch.zeros(2, 3)
    assert logits_of(t) is t and logits_of({"logits": t}) is t and logits_of((t, 1)) is t
    with pytest.raises(TypeError, match="logits"):
        logits_of("nothing")
    assert describe_output(t) == "a tensor of shape (2, 3)" and describe_output([]) == "a list"
