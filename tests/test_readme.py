"""README.md: its Python examples run and say what they show; its commands and pictures are real.

The ```python blocks run in order in one namespace (like a reader going down the page), in a
temporary directory holding the repository's ``docs/images``. A block whose first line is
``# readme: skip`` is not run (for examples needing a download or a GPU). To keep the test
fast, the large models of the examples (ResNet-50, DeiT, Swin) are built with fewer blocks:
same families, same layer names and token layouts, same code paths.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import warnings
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torchvision
from torchvision.models.resnet import Bottleneck, ResNet

import pytorch_grad_cam
from pytorch_grad_cam import BaseCAM

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
IMAGES = ROOT / "docs" / "images"
SCRIPT = ROOT / "usage_examples" / "make_readme_images.py"
SKIP_MARK = "# readme: skip"


def fenced_blocks(language: str) -> list[tuple[int, str]]:
    """(first code line number, code) of every fenced block of ``language`` in the README."""
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(rf"^```{language}\n(.*?)^```", re.MULTILINE | re.DOTALL)
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in pattern.finditer(text)]


def small_resnet50(weights=None, **kwargs) -> ResNet:
    """A ResNet with ResNet-50's bottleneck blocks, one per stage."""
    assert weights is None, "README examples must not download weights"
    return ResNet(Bottleneck, [1, 1, 1, 1], **kwargs)


def small_timm_model(create, name: str, pretrained: bool = False, **kwargs):
    """``timm.create_model`` with fewer transformer blocks."""
    assert not pretrained, "README examples must not download weights"
    if name.startswith("swin"):
        kwargs = {"depths": (1, 1, 1, 1), "embed_dim": 32, "num_heads": (1, 1, 2, 4), **kwargs}
    elif name.startswith(("vit", "deit")):
        kwargs = {"depth": 2, **kwargs}
    return create(name, pretrained=False, **kwargs)


@pytest.fixture(scope="module")
def readme_namespace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run every README Python block; return the namespace and the warnings they raised."""
    workdir = tmp_path_factory.mktemp("readme")
    shutil.copytree(IMAGES, workdir / "docs" / "images")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp.chdir(workdir)
        mp.setenv("TQDM_DISABLE", "1")
        mp.setattr(torchvision.models, "resnet50", small_resnet50)
        mp.setattr(timm, "create_model", partial(small_timm_model, timm.create_model))
        namespace: dict = {"__name__": "readme"}
        for line, code in fenced_blocks("python"):
            if code.startswith(SKIP_MARK):
                continue
            # Pad so that tracebacks give README line numbers.
            compiled = compile("\n" * (line - 1) + code, str(README), "exec")
            try:
                exec(compiled, namespace)
            except Exception as error:
                pytest.fail(f"README.md Python block at line {line} failed: {error!r}")
    namespace["_warnings"] = caught
    namespace["_workdir"] = workdir
    return namespace


def test_python_blocks_exist_and_few_are_skipped() -> None:
    blocks = fenced_blocks("python")
    assert len(blocks) >= 8
    assert sum(code.startswith(SKIP_MARK) for _, code in blocks) <= 1


def test_quick_start_writes_the_overlay(readme_namespace: dict) -> None:
    maps = readme_namespace["grayscale_cam"]
    assert maps.dtype == np.float32 and maps.min() >= 0 and maps.max() <= 1
    written = cv2.imread(str(readme_namespace["_workdir"] / "gradcam.jpg"))
    assert written is not None and written.shape == (224, 224, 3)


def test_batch_example_localises_each_class(readme_namespace: dict) -> None:
    per_image, masks = readme_namespace["per_image"], readme_namespace["masks"]
    assert per_image.shape == (2, 64, 64)
    for k in (0, 1):  # the map of class k is hotter on shape k than on the other shape
        assert per_image[k][masks[k]].mean() > 2 * per_image[k][masks[1 - k]].mean()
    # One target for the batch gives what the same target given per image gives.
    np.testing.assert_allclose(readme_namespace["same_target"][1], per_image[1], atol=1e-6)


def test_legacy_api_matches_new_api_and_warns(readme_namespace: dict) -> None:
    np.testing.assert_allclose(readme_namespace["legacy"], readme_namespace["per_image"], atol=1e-6)
    messages = [
        str(w.message) for w in readme_namespace["_warnings"] if w.category is DeprecationWarning
    ]
    for old in ("target_layer=", "use_cuda=", "target_category="):
        assert any(old in m for m in messages), f"no DeprecationWarning for {old}"


def test_transformer_and_other_examples_give_maps(readme_namespace: dict) -> None:
    assert readme_namespace["vit_map"].shape == (1, 224, 224)
    assert readme_namespace["swin_map"].shape == (1, 224, 224)
    for name in ("smooth", "on_device", "square_map"):
        assert readme_namespace[name].shape == (1, 64, 64)
    assert readme_namespace["road"].shape == readme_namespace["drop"].shape == (1,)
    layers, transform = readme_namespace["layers"], readme_namespace["reshape_transform"]
    assert layers[0] is readme_namespace["mobilenet"].features[-1] and transform is None


def test_install_and_test_commands_are_the_ci_ones() -> None:
    lines = {line.strip() for _, code in fenced_blocks("bash") for line in code.splitlines()}
    full = 'pip install -e ".[test,lint,examples,docs]"'
    assert 'pip install -e ".[test]"' in lines and full in lines
    assert "python -m pytest -q tests" in lines
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert f"python -m {full.replace('install', 'install -q')}" in ci
    prefixes = ("ruff", "mypy", "mkdocs", "python -m pytest")
    checks = [line.split("  #")[0] for line in ci if line.startswith(prefixes)]
    assert len(checks) == 5 and all(line in lines for line in checks)


def test_every_exported_method_is_in_the_table() -> None:
    text = README.read_text(encoding="utf-8")
    methods = [
        name
        for name, obj in ((n, getattr(pytorch_grad_cam, n)) for n in pytorch_grad_cam.__all__)
        if isinstance(obj, type) and issubclass(obj, BaseCAM) and obj is not BaseCAM
    ]
    assert "GradCAM" in methods
    missing = [name for name in methods if f"| `{name}` |" not in text]
    assert not missing, f"methods missing from the README table: {missing}"


def test_pictures_exist_are_generated_and_small() -> None:
    text = README.read_text(encoding="utf-8")
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(pictures) >= 3
    script = SCRIPT.read_text(encoding="utf-8")
    for picture in pictures:
        path = ROOT / picture
        assert picture.startswith("docs/images/") and path.is_file(), picture
        assert path.name in script, f"{picture} is not drawn by {SCRIPT.name}"
        assert cv2.imread(str(path)) is not None
    assert sum(p.stat().st_size for p in IMAGES.iterdir()) < 1.5 * 2**20


def test_relative_links_point_to_files() -> None:
    text = README.read_text(encoding="utf-8")
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http", "#"))]
    assert "cam.py" in links
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"README links to missing files: {missing}"


def test_script_draws_the_committed_pictures(tmp_path: Path, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("make_readme_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "METHODS", ["GradCAM"])  # keep it fast
    monkeypatch.setattr(sys, "argv", ["make_readme_images.py", "--output-dir", str(tmp_path)])
    module.main()
    for name in ("shapes.png", "two_classes.png", "smoothing.png"):
        drawn = cv2.imread(str(tmp_path / name)).astype(float)
        committed = cv2.imread(str(IMAGES / name)).astype(float)
        assert drawn.shape == committed.shape, name
        if name != "shapes.png":  # titled panels in one row: OpenCV's text rendering varies
            drawn, committed = drawn[module.HEADER :], committed[module.HEADER :]
        assert np.abs(drawn - committed).mean() < 1.0, f"docs/images/{name} is out of date"
    methods = cv2.imread(str(tmp_path / "methods.png"))
    assert methods.shape[0] == cv2.imread(str(IMAGES / "methods.png")).shape[0]


@pytest.mark.parametrize(
    "name, rows", [("two_classes.png", 1), ("smoothing.png", 1), ("methods.png", 2)]
)
def test_every_panel_of_the_pictures_has_a_title(name: str, rows: int) -> None:
    spec = importlib.util.spec_from_file_location("make_readme_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    picture = cv2.imread(str(IMAGES / name), cv2.IMREAD_GRAYSCALE)
    step = module.PANEL + 4  # panels and the white gaps between them
    assert picture.shape[0] == rows * (module.HEADER + step) - 4
    columns = (picture.shape[1] + 4) // step
    assert columns >= 3
    for row in range(rows):
        top = row * (module.HEADER + step)
        for column in range(columns):
            strip = picture[top : top + module.HEADER, column * step : column * step + module.PANEL]
            assert (strip < 128).sum() > 20, f"panel {row},{column} of {name} has no title"
