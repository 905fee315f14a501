"""Tests of the ViT and Swin usage examples, offline with random weights."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("timm")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "usage_examples"
PREDICTED = re.compile(r"^predicted class: \d+ \(.+\)$", re.M)
RANDOM = "random weights: the map has no meaning"
WIDE = (120, 200)  # height, width of a non-square input: the overlays keep it


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def vit():
    return _load("vit_example")


@pytest.fixture(scope="module")
def swin():
    return _load("swinT_example")


@pytest.fixture
def small_models(monkeypatch):
    """In-process runs build shallow, narrow models of the same timm families (fast on a CPU)."""
    import timm

    create = timm.create_model
    sizes = {
        "deit": {"depth": 2},
        "swin": {"embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 2, 4)},
    }

    def create_small(name: str, pretrained: bool = False, **kwargs):
        kwargs.update(next((v for k, v in sizes.items() if name.startswith(k)), {}))
        return create(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_small)


@pytest.fixture
def wide_image(tmp_path) -> Path:
    """A 200 x 120 picture (a rectangle on black), outside the output directories."""
    img = np.zeros((*WIDE, 3), np.uint8)
    cv2.rectangle(img, (20, 20), (120, 90), (0, 200, 255), -1)
    path = tmp_path / "inputs" / "wide.png"
    path.parent.mkdir()
    cv2.imwrite(str(path), img)
    return path


def assert_overlay(path: Path, shape: tuple[int, int] = (224, 224)) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, f"{path} missing or unreadable"
    assert img.shape == (*shape, 3)
    return img


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_vit_script_offline_falls_back_to_random_weights(tmp_path, wide_image):
    env = {
        **os.environ,
        "PYTORCH_GRAD_CAM_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),  # an empty cache
        "TORCH_HOME": str(tmp_path / "torch"),
    }
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "vit_example.py"), "--output-dir", "out"]
        + ["--image-path", str(wide_image)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "note: pretrained weights for deit_tiny_patch16_224" in result.stderr
    assert RANDOM in result.stderr
    assert PREDICTED.search(result.stdout), result.stdout
    assert files(workdir) == ["out/vit_gradcam_cam.jpg"]
    assert_overlay(workdir / "out" / "vit_gradcam_cam.jpg", WIDE)


def test_vit_example_with_an_image_and_eigen_smooth(vit, small_models, capsys, tmp_path):
    img = np.zeros((100, 150, 3), np.uint8)
    cv2.rectangle(img, (20, 20), (80, 70), (0, 200, 255), -1)
    image_path = tmp_path / "in.png"
    cv2.imwrite(str(image_path), img)
    vit.main(
        [*("--image-path", str(image_path), "--no-pretrained", "--device", "cpu")]
        + [*("--method", "EigenGradCAM", "--eigen-smooth", "--output-dir", str(tmp_path))]
    )
    captured = capsys.readouterr()
    assert PREDICTED.search(captured.out)
    assert RANDOM in captured.err
    overlay = assert_overlay(tmp_path / "vit_eigengradcam_cam.jpg", (100, 150))
    assert overlay.std() > 0


def test_swin_example_with_random_weights(swin, small_models, capsys, tmp_path):
    swin.main(["--no-pretrained", "--device", "cpu", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert PREDICTED.search(out)
    output = tmp_path / "swinT_gradcam_cam.jpg"
    assert f"wrote {output}" in out
    assert_overlay(output)  # the generated image is 224 x 224


def test_swin_example_writes_into_the_output_dir_at_the_image_size(
    swin, small_models, capsys, tmp_path, wide_image
):
    out = tmp_path / "out"
    swin.main(
        ["--no-pretrained", "--device", "cpu", "--image-path", str(wide_image)]
        + ["--output-dir", str(out)]
    )
    captured = capsys.readouterr()
    assert RANDOM in captured.err
    assert files(tmp_path) == ["inputs/wide.png", "out/swinT_gradcam_cam.jpg"]
    assert_overlay(out / "swinT_gradcam_cam.jpg", WIDE)


def test_swin_example_ablationcam_on_channels_last_tokens(swin, small_models, capsys, tmp_path):
    swin.main(
        ["--no-pretrained", "--device", "cpu", "--method", "AblationCAM"]
        + ["--output-dir", str(tmp_path)]
    )
    output = tmp_path / "swinT_ablationcam_cam.jpg"
    assert f"wrote {output}" in capsys.readouterr().out
    assert assert_overlay(output).std() > 0


@pytest.mark.parametrize("method", ["finercam", "refinecam"])
def test_vit_example_with_composed_methods(vit, small_models, capsys, tmp_path, method, wide_image):
    vit.main(
        ["--no-pretrained", "--device", "cpu", "--method", method, "--image-path", str(wide_image)]
        + ["--output-dir", str(tmp_path / "out")]
    )
    assert f"wrote {tmp_path / 'out' / f'vit_{method}_cam.jpg'}" in capsys.readouterr().out
    assert assert_overlay(tmp_path / "out" / f"vit_{method}_cam.jpg", WIDE).std() > 0


@pytest.mark.parametrize("example", ["vit", "swin"])
def test_help_lists_every_method(request, capsys, example):
    module = request.getfixturevalue(example)  # puts usage_examples/ on sys.path
    from example_utils import cam_methods

    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--output-dir" in text and "--output " not in text
    methods = list(cam_methods())
    assert {"finercam", "refinecam", "sess", "shapleycam"} <= set(methods)
    assert all(name in text for name in methods), text
    assert "fullgrad" not in text


def test_a_failing_method_is_one_line_and_exit_2(vit, small_models, monkeypatch, capsys, tmp_path):
    import timm_example_utils

    class Failing:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("derivative for aten::something\nis not implemented")

    monkeypatch.setattr(timm_example_utils, "cam_methods", lambda: {"gradcam": Failing})
    with pytest.raises(SystemExit) as info:
        vit.main(["--no-pretrained", "--device", "cpu", "--output-dir", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if not line.startswith("note: ")]  # notes may come first
    assert lines == [
        "error: --method gradcam failed on deit_tiny_patch16_224: derivative for "
        "aten::something is not implemented"
    ]
    assert files(tmp_path) == []


@pytest.mark.parametrize(
    ("example", "argv", "fragment"),
    [
        ("vit", ["--method", "nosuchcam"], "unknown --method 'nosuchcam'"),
        ("swin", ["--method", "fullgrad"], "unknown --method 'fullgrad'"),
        ("vit", ["--model", "not_a_timm_model"], "unknown --model 'not_a_timm_model'"),
        ("vit", ["--image-path", "/no/such.png"], "--image-path '/no/such.png'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(request, capsys, tmp_path, example, argv, fragment):
    module = request.getfixturevalue(example)
    with pytest.raises(SystemExit) as info:
        module.main([*argv, "--no-pretrained", "--device", "cpu", "--output-dir", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if not line.startswith("note: ")]  # notes may come first
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]
    assert files(tmp_path) == []
