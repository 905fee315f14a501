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

import pytorch_grad_cam

pytest.importorskip("timm")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "usage_examples"
PREDICTED = re.compile(r"^predicted class: \d+ \(.+\)$", re.M)


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


def assert_overlay(path: Path, size: int = 224) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, f"{path} missing or unreadable"
    assert img.shape == (size, size, 3)
    return img


def test_vit_script_offline_falls_back_to_random_weights(tmp_path):
    env = {
        **os.environ,
        "PYTORCH_GRAD_CAM_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),  # an empty cache
        "TORCH_HOME": str(tmp_path / "torch"),
    }
    output = tmp_path / "vit.jpg"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "vit_example.py"), "--output", str(output)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "note: pretrained weights for deit_tiny_patch16_224" in result.stderr
    assert "random weights" in result.stderr
    assert PREDICTED.search(result.stdout), result.stdout
    assert_overlay(output)


def test_vit_example_with_an_image_and_eigen_smooth(vit, small_models, capsys, tmp_path):
    img = np.zeros((100, 150, 3), np.uint8)
    cv2.rectangle(img, (20, 20), (80, 70), (0, 200, 255), -1)
    image_path = tmp_path / "in.png"
    cv2.imwrite(str(image_path), img)
    output = tmp_path / "vit_eigen.jpg"
    vit.main(
        [*("--image-path", str(image_path), "--no-pretrained", "--device", "cpu")]
        + [*("--method", "EigenGradCAM", "--eigen-smooth", "--output", str(output))]
    )
    assert PREDICTED.search(capsys.readouterr().out)
    overlay = assert_overlay(output)
    assert overlay.std() > 0


def test_swin_example_with_random_weights(swin, small_models, capsys, tmp_path):
    output = tmp_path / "swin.jpg"
    swin.main(["--no-pretrained", "--device", "cpu", "--output", str(output)])
    out = capsys.readouterr().out
    assert PREDICTED.search(out)
    assert f"wrote {output}" in out
    assert_overlay(output)


def test_swin_example_writes_into_the_output_dir(swin, small_models, capsys, tmp_path):
    swin.main(["--no-pretrained", "--device", "cpu", "--output-dir", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert "random weights: the map has no meaning" in captured.err
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["swinT_gradcam_cam.jpg"]
    assert_overlay(tmp_path / "out" / "swinT_gradcam_cam.jpg")


def test_swin_example_ablationcam_on_channels_last_tokens(swin, small_models, capsys, tmp_path):
    output = tmp_path / "swin_ablation.jpg"
    swin.main(
        ["--no-pretrained", "--device", "cpu", "--method", "AblationCAM", "--output", str(output)]
    )
    assert f"wrote {output}" in capsys.readouterr().out
    assert assert_overlay(output).std() > 0


def test_methods_are_the_package_cams_but_fullgrad(vit):
    from timm_example_utils import available_methods

    methods = available_methods()
    assert methods["gradcam"] is pytorch_grad_cam.GradCAM
    assert methods["gradcam++"] is pytorch_grad_cam.GradCAMPlusPlus
    assert methods["kpcacam"] is pytorch_grad_cam.KPCA_CAM
    assert pytorch_grad_cam.FullGrad not in methods.values()
    assert {"scorecam", "ablationcam", "eigencam", "layercam", "hirescam"} <= set(methods)


def test_a_failing_method_is_one_line_and_exit_2(vit, small_models, monkeypatch, capsys, tmp_path):
    import timm_example_utils

    class Failing:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("derivative for aten::something\nis not implemented")

    monkeypatch.setattr(timm_example_utils, "available_methods", lambda: {"gradcam": Failing})
    output = tmp_path / "never.jpg"
    with pytest.raises(SystemExit) as info:
        vit.main(["--no-pretrained", "--device", "cpu", "--output", str(output)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if not line.startswith("note: ")]  # notes may come first
    assert lines == [
        "error: --method gradcam failed on deit_tiny_patch16_224: derivative for "
        "aten::something is not implemented"
    ]
    assert not output.exists()


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
    output = tmp_path / "never.jpg"
    with pytest.raises(SystemExit) as info:
        module.main([*argv, "--no-pretrained", "--device", "cpu", "--output", str(output)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if not line.startswith("note: ")]  # notes may come first
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]
    assert not output.exists()
