"""The tutorial examples in usage_examples/ run offline and produce real maps.

Each example runs in this process (its ``main(argv)``) with downloads off and empty weight
caches, so it takes its offline path: random weights (or, for the volume and metrics examples,
models trained or shipped offline). Small inputs and settings keep them fast; one example runs
as a subprocess, as a user starts it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

import pytorch_grad_cam

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "usage_examples"
RANDOM = "random weights: the map has no meaning"
WIDE = (120, 200)  # height, width of a non-square input: the pictures keep it
TUTORIALS = [
    "detection_example",
    "segmentation_example",
    "embeddings_example",
    "huggingface_example",
    "clip_example",
    "volume_example",
    "metrics_example",
    "dff_example",
]


def load(name: str) -> ModuleType:
    """Import ``usage_examples/{name}.py`` (it puts its directory on ``sys.path`` itself)."""
    spec = importlib.util.spec_from_file_location(f"tutorial_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """No downloads, empty weight caches, no progress bars; the working directory is a fresh
    folder (so that anything written outside ``--output-dir`` shows)."""
    caches = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("PYTORCH_GRAD_CAM_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(caches / "torch"))
    monkeypatch.setenv("HF_HOME", str(caches / "hf"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    workdir = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(workdir)
    return workdir


def written(workdir: Path) -> set[str]:
    """The paths under ``workdir``, relative to it."""
    return {str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file()}


def assert_real_map(grayscale_cam: np.ndarray, shape: tuple[int, ...]) -> None:
    assert grayscale_cam.shape == shape and grayscale_cam.dtype == np.float32
    assert np.isfinite(grayscale_cam).all()
    assert grayscale_cam.min() >= 0 and grayscale_cam.max() <= 1
    assert grayscale_cam.max() - grayscale_cam.min() > 0.5  # not a constant map


def read(path: Path) -> np.ndarray:
    picture = cv2.imread(str(path))
    assert picture is not None, f"{path} missing or unreadable"
    return picture


@pytest.fixture
def wide_image(tmp_path) -> str:
    """A 200 x 120 picture of the generated disc and square, stretched (outside the working
    directory, so that it is not among the files written)."""
    from pytorch_grad_cam.demo.shapes import make_shapes_image

    rgb = make_shapes_image(np.random.default_rng(0), classes=(0, 1), size=64)[0]
    wide = cv2.resize(np.uint8(255 * rgb), WIDE[::-1], interpolation=cv2.INTER_NEAREST)
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), cv2.cvtColor(wide, cv2.COLOR_RGB2BGR))
    return str(path)


def assert_pictures_at(directory: Path, shape: tuple[int, int]) -> None:
    """Every picture in ``directory`` is ``shape`` (height, width) pixels."""
    pictures = sorted(directory.glob("*.jpg"))
    assert pictures
    for path in pictures:
        assert read(path).shape == (*shape, 3), path.name


# ------------------------------------------------------------------------------- detection


def test_detection_eigencam_and_ablationcam_on_a_random_faster_rcnn(offline, capsys, wide_image):
    example = load("detection_example")
    maps = example.main(
        [*("--method", "eigencam,ablationcam", "--max-boxes", "2", "--device", "cpu")]
        + [*("--ratio-channels-to-ablate", "0.01", "--output-dir", "out")]
        + ["--image-path", wide_image]
    )
    captured = capsys.readouterr()
    assert "weights are not cached" in captured.err and RANDOM in captured.err
    assert "explaining the 2 highest-scoring ones" in captured.err
    assert len(re.findall(r"^detected: .+ score 0\.\d+, box \(", captured.out, re.M)) == 2
    assert set(maps) == {"eigencam", "ablationcam"}
    for grayscale_cam in maps.values():
        assert_real_map(grayscale_cam, WIDE)
    assert not np.allclose(maps["eigencam"], maps["ablationcam"], atol=0.05)
    expected = {"detections.jpg"} | {
        f"{m}_{kind}.jpg" for m in maps for kind in ("cam", "in_boxes")
    }
    assert written(offline) == {f"out/{name}" for name in expected}
    assert_pictures_at(offline / "out", WIDE)


def test_detection_map_in_boxes_is_rescaled_inside_and_zero_outside():
    example = load("detection_example")
    grayscale_cam = np.linspace(0, 1, 40 * 50, dtype=np.float32).reshape(40, 50)
    boxes = np.array([[5.0, 5.0, 20.0, 15.0], [30.0, 20.0, 45.0, 35.0]])
    inside = example.map_in_boxes(grayscale_cam, boxes)
    outside = np.ones_like(inside, dtype=bool)
    for x1, y1, x2, y2 in boxes.astype(int):
        region = inside[y1:y2, x1:x2]
        assert region.min() == 0 and region.max() == pytest.approx(1)
        outside[y1:y2, x1:x2] = False
    assert (inside[outside] == 0).all()


# ---------------------------------------------------------------------------- segmentation


def test_segmentation_explains_the_predicted_mask(offline, capsys, wide_image):
    example = load("segmentation_example")
    argv = ["--size", "96", "--device", "cpu", "--output-dir", "out", "--image-path", wide_image]
    maps = example.main(argv)
    captured = capsys.readouterr()
    assert RANDOM in captured.err
    assert re.search(r"^explaining: \w+ \(\d+\), \d+% of the pixels$", captured.out, re.M)
    assert_real_map(maps["gradcam"], (96, 160))  # the model's input: shorter side 96
    assert written(offline) == {"out/segmentation.jpg", "out/gradcam_cam.jpg"}
    assert_pictures_at(offline / "out", WIDE)


def test_segmentation_output_wrapper_returns_the_scores():
    import torch

    example = load("segmentation_example")

    class DictModel(torch.nn.Module):
        def forward(self, x):
            return {"out": x * 2, "aux": x}

    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(example.SegmentationModelOutputWrapper(DictModel())(x), x * 2)
    names = ["__background__", "cat", "dog"]
    predicted = np.array([[0, 0, 2], [2, 1, 0]])
    assert example.pick_category(None, predicted, names) == 2  # the largest besides background
    assert example.pick_category("CAT", predicted, names) == 1
    assert example.pick_category(None, np.zeros((2, 2), int), names) == 0


# ------------------------------------------------------------------------------ embeddings


def test_embeddings_one_map_per_concept(offline, capsys, wide_image):
    example = load("embeddings_example")
    maps = example.main(
        ["--model", "resnet18", "--no-pretrained", "--device", "cpu", "--output-dir", "out"]
        + ["--image-path", wide_image]
    )
    captured = capsys.readouterr()
    out = captured.out
    assert RANDOM in captured.err
    assert len(re.findall(r"^similarity to (circle|square): -?[01]\.\d{3}$", out, re.M)) == 2
    assert set(maps) == {"circle", "square"}
    for grayscale_cam in maps.values():
        assert_real_map(grayscale_cam, (224, 224))
    assert not np.allclose(maps["circle"], maps["square"], atol=1e-3)  # per-image targets
    assert written(offline) == {"out/gradcam_circle.jpg", "out/gradcam_square.jpg"}
    assert_pictures_at(offline / "out", WIDE)


# ---------------------------------------------------------------------------- transformers


@pytest.mark.parametrize(
    ("model", "method"),
    [("google/vit-base-patch16-224", "gradcam"), ("facebook/convnext-tiny-224", "layercam")],
)
def test_huggingface_classifier_with_logits_output(offline, capsys, model, method, wide_image):
    pytest.importorskip("transformers")
    example = load("huggingface_example")
    argv = ["--model", model, "--method", method, "--no-pretrained", "--device", "cpu"]
    maps = example.main([*argv, "--output-dir", "out", "--image-path", wide_image])
    captured = capsys.readouterr()
    assert RANDOM in captured.err
    assert re.search(r"^predicted class: (\d+) \(LABEL_\1\)$", captured.out, re.M)
    assert_real_map(maps[method], (224, 224))
    assert written(offline) == {f"out/{method}_cam.jpg"}
    assert_pictures_at(offline / "out", WIDE)


def test_clip_script_offline_builds_a_small_clip(tmp_path, wide_image):
    pytest.importorskip("transformers")
    env = {
        **os.environ,
        "PYTORCH_GRAD_CAM_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),  # an empty cache
        "TQDM_DISABLE": "1",
    }
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "clip_example.py"), "--output-dir", "out"]
        + ["--labels", "a red disc", "a square", "--device", "cpu", "--image-path", wide_image],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "openai/clip-vit-base-patch32 is not cached" in result.stderr and RANDOM in result.stderr
    probabilities = re.findall(
        r"^(a red disc|a square): probability (\d\.\d{3})$", result.stdout, re.M
    )
    assert [label for label, _ in probabilities] == ["a red disc", "a square"]
    assert sum(float(p) for _, p in probabilities) == pytest.approx(1, abs=0.002)
    assert written(workdir) == {"out/gradcam_0_a_red_disc.jpg", "out/gradcam_1_a_square.jpg"}
    pictures = [read(workdir / name) for name in sorted(written(workdir))]
    assert all(p.shape == (*WIDE, 3) for p in pictures)
    assert not np.array_equal(*pictures)  # one map per prompt


def test_clip_word_ids_without_a_tokenizer():
    example = load("clip_example")
    inputs = example.word_ids(["a dog", "A big, red dog"])
    ids, attention = inputs["input_ids"], inputs["attention_mask"]
    assert ids.shape == (2, 6)
    assert (ids[:, 0] == example.BOS).all()
    assert ids[0, 3] == example.EOS and (ids[0, 4:] == example.PAD).all()
    assert ids[1, 5] == example.EOS
    assert ids[0, 2] == ids[1, 4]  # "dog" is one id wherever it appears
    assert ids.max() < example.VOCAB
    assert attention.tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]


# ---------------------------------------------------------------------------------- volume


def test_volume_maps_of_a_trained_conv3d_sit_on_their_shapes(offline, capsys):
    example = load("volume_example")
    result = example.main(["--train-steps", "300", "--device", "cpu", "--output-dir", "out"])
    out = capsys.readouterr().out
    assert len(re.findall(r"^(ball|cube): probability .+ of its mass", out, re.M)) == 2
    maps, masks = result["maps"], result["masks"]
    assert maps.shape == (2, 24, 24, 24) and maps.dtype == np.float32
    for k in (0, 1):
        own = maps[k][masks[k]].sum() / maps[k].sum()
        other = maps[k][masks[1 - k]].sum() / maps[k].sum()
        assert own > 5 * masks[k].mean(), f"class {k}: {own:.3f} of the map on its shape"
        assert own > 3 * other
    assert written(offline) == {"out/gradcam_volume.jpg", "out/gradcam_maps.npy"}
    np.testing.assert_array_equal(np.load(offline / "out" / "gradcam_maps.npy"), maps)


def test_volume_without_training_says_the_weights_are_random(offline, capsys):
    example = load("volume_example")
    result = example.main(
        ["--train-steps", "0", "--size", "16", "--method", "eigencam", "--output-dir", "out"]
    )
    assert RANDOM in capsys.readouterr().err
    assert result["maps"].shape == (2, 16, 16, 16)


# --------------------------------------------------------------------------------- metrics


def test_metrics_tutorial_ranks_gradcam_above_the_random_baseline(offline, capsys, wide_image):
    example = load("metrics_example")
    argv = ["--model", "demo", "--device", "cpu", "--output-dir", "out", "--image-path", wide_image]
    scores = example.main(argv)
    out = capsys.readouterr().out
    methods = ["gradcam", "gradcam++", "eigencam", "layercam", "randomcam"]
    assert list(scores)[: len(methods)] == methods
    columns = ["confidence change", "ROAD MoRF 90", "ROAD LeRF 10", "ROAD combined"]
    for name in methods:
        assert set(columns) <= set(scores[name])
        assert all(np.isfinite(v) for v in scores[name].values())
        assert re.search(rf"^{re.escape(name)} +(-?\d\.\d{{4}} +)+", out, re.M)
    # The demo model is trained: Grad-CAM must be more faithful than random channel weights.
    assert scores["gradcam"]["ROAD combined"] > scores["randomcam"]["ROAD combined"] + 0.1
    assert scores["gradcam"]["ROAD MoRF 90"] < scores["randomcam"]["ROAD MoRF 90"]
    assert all(0 < scores[name]["ARCC"] <= 1 for name in methods)
    assert "ARCC" not in scores["sobel"] and set(columns) <= set(scores["sobel"])
    assert written(offline) == {"out/metrics.jpg", "out/road_perturbations.jpg"}
    # One panel per map (per picture), PANEL high with the image's aspect ratio, under a title.
    panel_width = round(example.PANEL * WIDE[1] / WIDE[0])
    assert read(offline / "out" / "metrics.jpg").shape == (
        example.PANEL + 22,
        len(scores) * panel_width,
        3,
    )
    assert read(offline / "out" / "road_perturbations.jpg").shape[1] == 3 * panel_width


def test_metrics_with_random_weights_says_so(offline, capsys):
    # A class out of range stops the run right after the model is built (ROAD on a ResNet is slow).
    argv = ["--model", "resnet18", "--no-pretrained", "--target-category", "1000"]
    with pytest.raises(SystemExit):
        load("metrics_example").main([*argv, "--device", "cpu", "--output-dir", "out"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == f"note: --no-pretrained; using {RANDOM}"
    assert "out of range" in lines[-1]


# ------------------------------------------------------------------------------------- DFF


def test_dff_example_factorises_into_named_concepts(offline, capsys, wide_image):
    example = load("dff_example")
    argv = ["--model", "resnet18", "--no-pretrained", "--n-components", "3", "--device", "cpu"]
    explanations = example.main([*argv, "--output-dir", "out", "--image-path", wide_image])
    captured = capsys.readouterr()
    out = captured.out
    assert RANDOM in captured.err
    assert len(re.findall(r"^concept \d: .+:\d\.\d\d", out, re.M)) == 3
    assert explanations.shape == (3, 224, 224)
    assert np.isfinite(explanations).all() and explanations.min() >= 0
    assert written(offline) == {"out/dff.jpg"}
    # The image at its own size, then the legend on a panel of the same size.
    assert read(offline / "out" / "dff.jpg").shape == (WIDE[0], 2 * WIDE[1], 3)


# ------------------------------------------------------------------------ the conventions


@pytest.mark.parametrize("name", TUTORIALS)
def test_help_lists_the_conventions(name, capsys):
    example = load(name)
    from example_utils import cam_methods

    with pytest.raises(SystemExit) as info:
        example.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--output-dir" in text and "--device" in text
    if name not in ("dff_example",):  # no --method: it explains no class
        assert "--method" in text
        assert all(method in text for method in cam_methods()), text


@pytest.mark.parametrize(
    ("name", "argv", "fragment"),
    [
        ("detection_example", ["--method", "gradcam,nosuchcam"], "unknown --method 'nosuchcam'"),
        ("detection_example", ["--ratio-channels-to-ablate", "0"], "--ratio-channels-to-ablate"),
        ("segmentation_example", ["--category", "unicorn"], "unknown --category 'unicorn'"),
        ("segmentation_example", ["--image-path", "/no/such.png"], "'/no/such.png': no such"),
        ("embeddings_example", ["--method", "fullgrad"], "unknown --method 'fullgrad'"),
        ("embeddings_example", ["--method", "gradcam,eigencam"], "--method takes one method"),
        ("volume_example", ["--size", "8"], "--size at least 16"),
        ("metrics_example", ["--model", "not_a_model"], "unknown --model 'not_a_model'"),
        ("metrics_example", ["--model", "demo", "--target-category", "7"], "out of range"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(offline, capsys, name, argv, fragment):
    with pytest.raises(SystemExit) as info:
        load(name).main([*argv, "--device", "cpu", "--output-dir", "out"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and fragment in lines[-1], lines
    assert all(line.startswith("note: ") for line in lines[:-1])
    assert written(offline) == set()


def test_unreadable_image_is_reported(offline, capsys):
    (offline / "bad.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit) as info:
        load("segmentation_example").main(["--image-path", "bad.png", "--output-dir", "out"])
    assert info.value.code == 2
    assert "OpenCV cannot read it" in capsys.readouterr().err


def test_method_list_is_the_package_cams():
    load("detection_example")  # puts usage_examples/ on sys.path
    from example_utils import cam_methods

    methods = cam_methods()
    assert methods["gradcam"] is pytorch_grad_cam.GradCAM
    assert methods["gradcam++"] is pytorch_grad_cam.GradCAMPlusPlus
    assert methods["kpcacam"] is pytorch_grad_cam.KPCA_CAM
    assert methods["finercam"] is pytorch_grad_cam.FinerCAM  # built on another method
    assert "fullgrad" not in methods
    subclasses = {
        getattr(pytorch_grad_cam, n)
        for n in pytorch_grad_cam.__all__
        if isinstance(getattr(pytorch_grad_cam, n), type)
        and issubclass(getattr(pytorch_grad_cam, n), pytorch_grad_cam.BaseCAM)
    }
    expected = subclasses - {pytorch_grad_cam.BaseCAM, pytorch_grad_cam.FullGrad}
    assert expected <= set(methods.values())
    assert pytorch_grad_cam.AblationLayer not in methods.values()
    assert "gradcam" not in cam_methods(exclude=("GradCAM",))


def test_images_load_at_their_size_or_generated(offline):
    load("detection_example")
    from example_utils import load_rgb

    image = np.zeros((30, 40, 3), np.uint8)
    image[..., 2] = 255  # red in OpenCV's BGR order
    cv2.imwrite(str(offline / "red.png"), image)
    rgb = load_rgb("red.png")
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[0, 0], [1, 0, 0])
    assert load_rgb("red.png", 16).shape == (16, 16, 3)
    assert load_rgb("red.png", (20, 10)).shape == (10, 20, 3)
    generated = load_rgb(None, 96)
    assert generated.shape == (96, 96, 3) and 0 <= generated.min() and generated.max() <= 1
