"""ROAD: the noisy linear imputer against an exact dense solve, percentile masks, averaging."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from snapshot import expect_clean_error
from torch import nn

from pytorch_grad_cam.metrics import road
from pytorch_grad_cam.metrics.perturbation_confidence import (
    AveragerAcrossThresholds,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
    otsu_threshold,
    percentile,
)
from pytorch_grad_cam.metrics.road import (
    NoisyLinearImputer,
    ROADCombined,
    ROADLeastRelevantFirst,
    ROADLeastRelevantFirstAverage,
    ROADMostRelevantFirst,
    ROADMostRelevantFirstAverage,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

PAPER_WEIGHTS = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]]) / 12


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The imputer runs many small ops: on a busy shared CPU, extra threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dense_imputation(img: np.ndarray, keep: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Exact solve: each removed pixel = weighted mean of its in-image neighbours (float64)."""
    channels, height, width = img.shape
    removed = [(i, j) for i in range(height) for j in range(width) if not keep[i, j]]
    index = {p: k for k, p in enumerate(removed)}
    a = np.zeros((len(removed), len(removed)))
    b = np.zeros((len(removed), channels))
    for k, (i, j) in enumerate(removed):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                y, x, w = i + dy, j + dx, weights[dy + 1, dx + 1]
                if (dy, dx) == (0, 0) or not (0 <= y < height and 0 <= x < width):
                    continue
                a[k, k] += w
                if keep[y, x]:
                    b[k] += w * img[:, y, x]
                else:
                    a[k, index[(y, x)]] -= w
    out = img.astype(np.float64).copy()
    if removed:
        solution = np.linalg.solve(a, b)
        for k, (i, j) in enumerate(removed):
            out[:, i, j] = solution[k]
    return out


def masks_8x8() -> np.ndarray:
    rng = np.random.default_rng(3)
    random = rng.random((8, 8)) < 0.6
    block = np.ones((8, 8), bool)
    block[0:5, 2:8] = False  # a big hole touching two borders
    ring = np.zeros((8, 8), bool)
    ring[3:5, 3:5] = True  # only a 2x2 island kept
    return np.stack([random, block, ring])


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-4), (torch.float64, 1e-9)])
def test_imputation_matches_dense_solve(dtype, atol):
    keep = masks_8x8()
    img = np.random.default_rng(0).random((3, 2, 8, 8))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    imputer = NoisyLinearImputer(noise=0.0, tol=tol)
    out = imputer(torch.tensor(img, dtype=dtype), torch.from_numpy(keep))
    assert out.dtype == dtype
    for b in range(3):
        expected = dense_imputation(img[b], keep[b], PAPER_WEIGHTS)
        np.testing.assert_allclose(out[b].numpy(), expected, atol=atol)
        np.testing.assert_array_equal(
            out[b].numpy()[:, keep[b]], img[b][:, keep[b]].astype(out[b].numpy().dtype)
        )


def test_each_system_stops_on_its_own_and_max_iter_keeps_the_iterate():
    """Converged systems leave the batch: batched results equal one-by-one solves."""
    keep = torch.from_numpy(np.concatenate([masks_8x8(), np.ones((1, 8, 8), bool)]))
    img = torch.rand(4, 2, 8, 8, dtype=torch.float64)
    imputer = NoisyLinearImputer(noise=0.0, tol=1e-8)
    together = imputer(img, keep)
    for b in range(4):
        alone = imputer(img[b : b + 1], keep[b : b + 1])
        torch.testing.assert_close(together[b : b + 1], alone, atol=1e-12, rtol=0)
    assert torch.equal(together[3], img[3])  # nothing removed: converged at once
    exact = torch.from_numpy(dense_imputation(img[0].numpy(), keep[0].numpy(), PAPER_WEIGHTS))
    start = NoisyLinearImputer(noise=0.0, max_iter=0)(img[:1], keep[:1])[0]
    capped = NoisyLinearImputer(noise=0.0, max_iter=3)(img[:1], keep[:1])[0]
    assert (capped - exact).abs().max() < 0.5 * (start - exact).abs().max()
    assert torch.equal(capped[:, keep[0]], img[0][:, keep[0]])


def test_small_cpu_solves_run_on_one_thread(monkeypatch):
    seen = []
    solve = road._conjugate_gradients

    def spy(*args):
        seen.append(torch.get_num_threads())
        return solve(*args)

    monkeypatch.setattr(road, "_conjugate_gradients", spy)
    img, keep = torch.rand(2, 3, 8, 8), torch.from_numpy(masks_8x8()[:2])
    torch.set_num_threads(2)  # the module fixture restores the count afterwards
    NoisyLinearImputer()(img, keep)
    monkeypatch.setattr(road, "_SMALL_SOLVE", 100)  # 384 elements: a "large" solve
    NoisyLinearImputer()(img, keep)
    assert seen == [1, 2]
    assert torch.get_num_threads() == 2


def test_imputation_custom_weighting_orientation():
    """Horizontal neighbours weigh 3, vertical 1: checks (dy, dx) and the 3x3 form agree."""
    weights = np.array([[0, 1, 0], [3, 0, 3], [0, 1, 0]], dtype=float)
    pairs = [((0, 1), 3), ((0, -1), 3), ((1, 0), 1), ((-1, 0), 1)]
    keep = masks_8x8()[0]
    img = np.random.default_rng(1).random((1, 8, 8))
    expected = dense_imputation(img, keep, weights)
    for weighting in (weights, pairs):
        imputer = NoisyLinearImputer(noise=0.0, weighting=weighting, tol=1e-12)
        out = imputer(torch.tensor(img), torch.from_numpy(keep))  # unbatched (C, H, W)
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-9)


def test_imputation_all_removed_is_zero_and_noise_only_on_removed():
    img = torch.rand(2, 3, 8, 8)
    keep = torch.ones(2, 8, 8)
    keep[0] = 0
    keep[1, :4] = 0
    out = NoisyLinearImputer(noise=0.0)(img, keep)
    assert torch.equal(out[0], torch.zeros(3, 8, 8))
    torch.manual_seed(0)
    noisy = NoisyLinearImputer(noise=0.5)(img, keep)
    assert torch.equal(noisy[1, :, 4:], img[1, :, 4:])
    diff = (noisy - out)[1, :, :4]
    assert 0.3 < diff.std() < 0.7


@pytest.mark.parametrize(
    "weighting", [[1 / 6] * 8, [[0, 1, 0], [1, 0, 2], [0, 1, 0]], [((2, 0), 1)]]
)
def test_imputer_rejects_bad_weighting(weighting):
    with pytest.raises(ValueError, match="weighting"):
        NoisyLinearImputer(weighting=weighting)


def test_imputer_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="mask"):
        NoisyLinearImputer()(torch.rand(2, 3, 8, 8), torch.ones(2, 8, 7))


def test_percentile_matches_numpy():
    values = torch.rand(3, 37)
    for q in (0, 10, 33.3, 50, 80, 100):
        np.testing.assert_allclose(
            percentile(values, q).numpy(), np.percentile(values.numpy(), q, axis=1), rtol=1e-6
        )


def zero_removed(img: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return img * keep[:, None]


def test_percentile_masks_select_the_right_pixels():
    cam = (torch.arange(16.0) / 15).reshape(1, 4, 4)
    img = torch.ones(1, 1, 4, 4)
    morf = RemoveMostRelevantFirst(75, zero_removed)(img, cam)[0, 0]
    lerf = RemoveLeastRelevantFirst(75, zero_removed)(img, cam)[0, 0]
    # 75th percentile of 0..15 is 11.25: MoRF removes 12..15, LeRF removes 0..3.
    assert torch.equal(morf.flatten() == 0, torch.arange(16) >= 12)
    assert torch.equal(lerf.flatten() == 0, torch.arange(16) <= 3)


def test_auto_percentile_is_otsu_like_opencv():
    rng = np.random.default_rng(0)
    cams = np.clip(np.stack([rng.normal(0.3, 0.1, (16, 16)), rng.normal(0.7, 0.2, (16, 16))]), 0, 1)
    cams[:, :6] += 0.4
    cams = np.float32(np.clip(cams, 0, 1))
    removed = RemoveMostRelevantFirst("auto", zero_removed)(
        torch.ones(2, 1, 16, 16), torch.from_numpy(cams)
    )
    for b in range(2):
        _, foreground = cv2.threshold(
            np.uint8(cams[b] * 255), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU
        )
        np.testing.assert_array_equal(removed[b, 0].numpy() == 0, foreground > 0)
    assert otsu_threshold(torch.from_numpy(cams).flatten(1)).shape == (2,)


def test_percentile_must_be_valid():
    with pytest.raises(ValueError, match="percentile"):
        RemoveMostRelevantFirst(120, zero_removed)


def linear_model(height: int = 8, width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * height * width, 3)).eval()


def test_road_scores_are_the_change_on_the_imputed_image():
    model = linear_model()
    img = torch.rand(2, 3, 8, 8)
    cams = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    targets = [ClassifierOutputTarget(2), ClassifierOutputTarget(0)]
    imputer = NoisyLinearImputer(noise=0.0, tol=1e-7)
    w = model[1].weight.detach().double().numpy()
    for metric, remove in [
        (ROADMostRelevantFirst(70, imputer), lambda c: c >= np.percentile(c, 70)),
        (ROADLeastRelevantFirst(30, imputer), lambda c: c <= np.percentile(c, 70)),
    ]:
        scores, imputed = metric(img, cams, targets, model, return_visualization=True)
        for b, k in enumerate([2, 0]):
            keep = ~remove(cams[b])
            assert keep.sum() in (19, 45)  # 30% / 70% of the 64 pixels kept
            expected = dense_imputation(img[b].double().numpy(), keep, PAPER_WEIGHTS)
            np.testing.assert_allclose(imputed[b].numpy(), expected, atol=1e-4)
            change = w[k] @ (expected - img[b].double().numpy()).ravel()
            assert scores[b] == pytest.approx(change, abs=1e-3)


def test_averages_and_combined():
    model = linear_model()
    img = torch.rand(2, 3, 8, 8)
    cams = np.random.default_rng(1).random((2, 8, 8)).astype(np.float32)
    targets = [ClassifierOutputTarget(1)]
    imputer = NoisyLinearImputer(noise=0.0)
    percentiles = [20, 50, 90]
    morf = ROADMostRelevantFirstAverage(percentiles, imputer)(img, cams, targets, model)
    lerf = ROADLeastRelevantFirstAverage(percentiles, imputer)(img, cams, targets, model)
    each_morf = [ROADMostRelevantFirst(p, imputer)(img, cams, targets, model) for p in percentiles]
    each_lerf = [ROADLeastRelevantFirst(p, imputer)(img, cams, targets, model) for p in percentiles]
    np.testing.assert_allclose(morf, np.mean(each_morf, axis=0), atol=1e-5)
    np.testing.assert_allclose(lerf, np.mean(each_lerf, axis=0), atol=1e-5)
    separate = AveragerAcrossThresholds(  # one imputer per percentile: imputed one by one
        lambda p: ROADMostRelevantFirst(p, NoisyLinearImputer(noise=0.0)), percentiles
    )(img, cams, targets, model)
    np.testing.assert_allclose(separate, morf, atol=1e-5)
    combined = ROADCombined(percentiles, imputer)(img, cams, targets, model)
    np.testing.assert_allclose(combined, (lerf - morf) / 2, atol=1e-5)
    assert combined.shape == (2,) and combined.dtype == np.float32


def test_combined_imputes_morf_and_lerf_in_one_call():
    calls = []

    class CountingImputer(NoisyLinearImputer):
        def __call__(self, img, mask):
            calls.append(img.shape[0])
            return super().__call__(img, mask)

    model = linear_model()
    img = torch.rand(2, 3, 8, 8)
    cams = np.random.default_rng(2).random((2, 8, 8)).astype(np.float32)
    ROADCombined([20, 50, 90], CountingImputer(noise=0.0))(img, cams, [1], model)
    assert calls == [2 * 3 * 2]  # (MoRF + LeRF) x 3 percentiles x 2 images


def test_averager_with_a_generic_metric():
    calls = []

    def metric_for(p):
        def metric(input_tensor, cams, targets, model):
            calls.append(p)
            return np.full(len(input_tensor), float(p), dtype=np.float32)

        return metric

    result = AveragerAcrossThresholds(metric_for, [10, 30])(
        torch.rand(2, 1, 4, 4), None, None, None
    )
    np.testing.assert_allclose(result, [20, 20])
    assert calls == [10, 30]


# ---------------------------------------------------------------- reliability


def road_metrics():
    return [
        ROADMostRelevantFirst(50),
        ROADLeastRelevantFirst(50),
        ROADMostRelevantFirstAverage([30, 70]),
        ROADLeastRelevantFirstAverage([30, 70]),
        ROADCombined([30, 70]),
    ]


@pytest.mark.parametrize("index", range(5))
def test_an_empty_batch_gives_empty_scores(index):
    metric = road_metrics()[index]
    model = linear_model()
    got = metric(torch.rand(0, 3, 8, 8), np.zeros((0, 8, 8), np.float32), [0], model)
    assert np.asarray(got).shape == (0,)
    empty = NoisyLinearImputer()(torch.rand(0, 1, 8, 8), torch.ones(0, 8, 8))
    assert empty.shape == (0, 1, 8, 8)


@pytest.mark.parametrize("index", range(5))
def test_nan_maps_raise_instead_of_scoring_nonsense(index):
    metric = road_metrics()[index]
    cams = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    cams[0, 3, 3] = np.nan
    model = linear_model()
    expect_clean_error(
        model,
        lambda: metric(torch.rand(2, 3, 8, 8), cams, [ClassifierOutputTarget(0)], model),
        ValueError,
        r"cams contain NaN or Inf values \(image 0\)",
    )
