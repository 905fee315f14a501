"""The ``grad-cam`` command (``pytorch_grad_cam.cli``), one image at a time and ``--demo``
(offline: random or local weights only). Dataset runs: test_cli_dataset.py."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import pytorch_grad_cam
from pytorch_grad_cam import cli
from pytorch_grad_cam.cli import args as cli_args
from pytorch_grad_cam.cli import models as cli_models
from pytorch_grad_cam.cli import runner as cli_runner

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"]
PREDICTED = re.compile(r"^predicted class: (\d+) \((.+)\), probability [0-9.]+$", re.M)
NATIVE = (120, 170, 3)  # the test image's own size: outputs keep it


@pytest.fixture
def image_path(tmp_path: Path) -> str:
    """A non-square BGR image written with OpenCV (the model sees it at 224x224)."""
    img = np.zeros((120, 170, 3), np.uint8)
    img[:] = (40, 120, 200)
    cv2.circle(img, (60, 60), 35, (250, 250, 20), -1)
    path = tmp_path / "input.png"
    cv2.imwrite(str(path), img)
    return str(path)


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """``grad-cam argv`` in this process: (status, stdout, stderr)."""
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_clean_error(status: int, err: str, *fragments: str) -> None:
    """Exit status 2 and exactly one ``error: ...`` line mentioning ``fragments``."""
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def assert_images(out_dir: Path, names: list[str], shape: tuple[int, int, int]) -> None:
    for name in names:
        img = cv2.imread(str(out_dir / name))
        assert img is not None, f"{name} missing or unreadable"
        assert img.shape == shape


# ----------------------------------------------------------------------------- as commands
# A few subprocesses (the import of torch dominates their cost); the other tests call main().


def test_script_offline_without_cached_weights_is_one_line_and_exit_2(image_path, tmp_path):
    env = {**os.environ, "PYTORCH_GRAD_CAM_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "th")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "cam.py"), "--image-path", image_path, "--model", "resnet18"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert_clean_error(2, result.stderr, "resnet18", "--weights none", "--weights PATH", "--demo")
    assert not (tmp_path / "output").exists()


@pytest.mark.parametrize(
    "command",
    [["grad-cam"], [sys.executable, "-m", "pytorch_grad_cam"], [sys.executable, "cam.py"]],
    ids=["grad-cam", "python-m", "cam.py"],
)
def test_help_is_instant_and_the_same_for_every_entry(command):
    if command == ["grad-cam"]:
        command = [str(Path(sys.executable).with_name("grad-cam"))]
    start = time.perf_counter()
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    for fragment in ("--image-path", "manifest.jsonl", "index.html", "examples:", "torchrun"):
        assert fragment in result.stdout
    assert "gradcam++" in result.stdout and "(default: resnet50)" in result.stdout
    assert elapsed < 1.0, f"--help took {elapsed:.2f} s"


def test_help_does_not_import_torch():
    code = (
        "import sys; from pytorch_grad_cam.cli import main; main(['--help']); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_help_shows_every_default_and_every_method():
    parser = cli_args.build_parser()
    text = " ".join(parser.format_help().split())  # argparse wraps lines
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.default not in (None, False, argparse.SUPPRESS):
            assert action.help, action.option_strings
            shown = " ".join(formatter._expand_help(action).split())
            assert f"(default: {action.default})" in shown, action.option_strings
    for method in cli_args.METHOD_NAMES:
        assert re.search(rf"[ :,]{re.escape(method)}[,\s]", text + " "), method
    assert "(default: auto)" in text and "(default: 0)" in text


def test_the_readmes_multi_node_commands_are_complete():
    """A command said to be the same on every machine has no --node-rank; with fixed ranks,
    each machine's command is shown."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**Several GPUs or machines**") :]
    block = section[section.index("```bash") : section.index("```", section.index("```bash") + 3)]
    code = "\n".join(line for line in block.splitlines() if not line.startswith("#"))
    commands = [c.replace("\\\n", " ") for c in code.split("\ntorchrun")[1:]]
    ranks = [re.search(r"--node-rank (\d+)", c) for c in commands]
    nodes = [int(re.search(r"--nnodes (\d+)", c).group(1)) for c in commands if "--nnodes" in c]
    assert nodes, "no multi-node example"
    shown = sorted(int(r.group(1)) for r in ranks if r)
    assert shown in ([], list(range(max(nodes)))), shown
    assert any("--nnodes" in c and "--node-rank" not in c and "c10d" in c for c in commands)


# ----------------------------------------------------------------------------- in process


def test_writes_three_images_and_prints_the_class_name(capsys, image_path, tmp_path):
    status, out, err = run_main(
        capsys,
        *("--image-path", image_path, "--model", "resnet18", "--weights", "none"),
        *("--output-dir", str(tmp_path / "out"), "--device", "cpu"),
    )
    assert status == 0, err
    match = PREDICTED.search(out)
    assert match, out
    assert match.group(2) == CATEGORIES[int(match.group(1))]
    names = ["gradcam_cam.jpg", "gradcam_gb.jpg", "gradcam_cam_gb.jpg"]
    assert_images(tmp_path / "out", names, NATIVE)
    assert "random weights" in out and "no meaning" in out


def test_target_categories_each_get_their_images(capsys, image_path, tmp_path):
    status, out, err = run_main(
        capsys,
        *("--image-path", image_path, "--model", "mobilenet_v3_small", "--weights", "none"),
        *("--target-layer", "features.-1", "--method", "GradCAM++"),
        *("--target-category", "1", "--target-category", "2", "--target-category", "1"),
        *("--output-dir", str(tmp_path), "--device", "cpu"),
    )
    assert status == 0, err
    assert f"explaining: 1 ({CATEGORIES[1]}), 2 ({CATEGORIES[2]})" in out
    names = [f"gradcam++_{c}_{kind}.jpg" for c in (1, 2) for kind in ("cam", "gb", "cam_gb")]
    assert_images(tmp_path, names, NATIVE)
    assert not (tmp_path / "gradcam++_cam.jpg").exists()


def test_local_and_cached_weights_are_loaded(capsys, monkeypatch, image_path, tmp_path):
    """A state_dict file, then the same file as torch.hub's cached DEFAULT weights (offline)."""
    model = torchvision.models.mobilenet_v3_small()
    with torch.no_grad():
        model.classifier[-1].bias[7] = 1e4  # makes class 7 the prediction whatever the image
    url = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.url
    cached = tmp_path / "th" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(model.state_dict(), cached)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv("PYTORCH_GRAD_CAM_OFFLINE", "1")
    for weights in (str(cached), "DEFAULT"):
        status, out, err = run_main(
            capsys,
            *("--image-path", image_path, "--model", "mobilenet_v3_small", "--weights", weights),
            *("--target-layer", "features.-1", "--method", "eigencam"),
            *("--output-dir", str(tmp_path), "--device", "cpu"),
        )
        assert status == 0, err
        assert PREDICTED.search(out).groups() == ("7", CATEGORIES[7])
    assert_images(tmp_path, ["eigencam_cam.jpg", "eigencam_gb.jpg"], NATIVE)


def test_fine_tuned_state_dict_with_other_class_count(capsys, image_path, tmp_path):
    """A --weights file for 3 classes builds a 3-class model; no ImageNet names are printed."""
    model = torchvision.models.squeezenet1_1(num_classes=3)  # its head is a 1x1 convolution
    with torch.no_grad():
        model.classifier[1].bias[:] = torch.tensor([0.0, 50.0, 0.0])
    path = tmp_path / "fine_tuned.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 7}, path)
    status, out, err = run_main(
        capsys,
        *("--image-path", image_path, "--model", "squeezenet1_1", "--weights", str(path)),
        *("--target-layer", "features.-1", "--target-category", "2"),
        *("--output-dir", str(tmp_path), "--device", "cpu"),
    )
    assert status == 0, err
    assert re.search(r"^predicted class: 1, probability [0-9.]+$", out, re.M), out
    assert "explaining: 2\n" in out
    assert_images(tmp_path, ["gradcam_cam.jpg", "gradcam_gb.jpg"], NATIVE)


def test_failed_download_is_one_line_and_restores_the_socket_timeout(
    capsys, monkeypatch, image_path, tmp_path
):
    import socket
    import urllib.error

    def no_network(url, dst, hash_prefix=None, progress=True):
        assert socket.getdefaulttimeout() == cli_models.DOWNLOAD_TIMEOUT_S
        assert hash_prefix and hash_prefix in url
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv("PYTORCH_GRAD_CAM_OFFLINE", raising=False)
    before = socket.getdefaulttimeout()
    status, _, err = run_main(
        capsys, "--image-path", image_path, "--model", "resnet18", "--output-dir", str(tmp_path)
    )
    assert_clean_error(status, err, "could not download the resnet18 weights", "--weights none")
    assert socket.getdefaulttimeout() == before
    assert not list((tmp_path / "th").rglob("*.pth"))


def test_out_of_memory_suggests_a_smaller_batch(monkeypatch):
    def hungry_cam(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    args = cli.parse_args(["--demo"])
    with pytest.raises(cli.CliError, match="scorecam ran out of memory on cpu.*--batch-size"):
        cli_models.run_cam("scorecam", hungry_cam, torch.zeros(1, 3, 8, 8), [0], args)


def test_2021_flag_spellings(capsys, tmp_path):
    args = cli.parse_args(["--use-cuda", "--aug_smooth", "--eigen_smooth", "--image-path", "x"])
    assert args.use_cuda and args.aug_smooth and args.eigen_smooth
    status, _, err = run_main(
        capsys,
        "--demo",
        "--use-cuda",
        "--aug_smooth",
        "--eigen_smooth",
        "--output-dir",
        str(tmp_path),
    )
    assert status == 0, err
    if not torch.cuda.is_available():
        assert "CUDA is not available; using the CPU" in err
    assert cv2.imread(str(tmp_path / "gradcam_demo.jpg")) is not None


def test_demo_explains_each_class_side_by_side(capsys, tmp_path):
    status, out, err = run_main(capsys, "--demo", "--output-dir", str(tmp_path))
    assert status == 0, err
    img = cv2.imread(str(tmp_path / "gradcam_demo.jpg"))
    assert img is not None and img.shape[1] == 3 * img.shape[0]
    for name, other in (("circle", "square"), ("square", "circle")):
        line = re.search(
            rf"^{name}: probability ([0-9.]+); its map puts (\d+)% .* (\d+)% on the "
            rf"{other}$",
            out,
            re.M,
        )
        assert line, out
        assert float(line.group(1)) > 0.5  # the trained demo model sees both shapes
        assert int(line.group(2)) > int(line.group(3))  # each map favours its own shape


def test_demo_target_category_keeps_one_class(capsys, tmp_path):
    status, out, err = run_main(
        capsys, "--demo", "--target-category", "1", "--output-dir", str(tmp_path)
    )
    assert status == 0, err
    img = cv2.imread(str(tmp_path / "gradcam_demo.jpg"))
    assert img is not None and img.shape == (256, 512, 3)
    assert out.startswith("square: probability") and "circle: probability" not in out
    status, _, err = run_main(capsys, "--demo", "--target-category", "2")
    assert_clean_error(status, err, "--target-category 2", "2 classes")


@pytest.mark.parametrize("method", sorted(cli_args.METHOD_NAMES))
def test_every_method_runs_from_the_command_line(capsys, tmp_path, method):
    status, out, err = run_main(
        capsys, "--demo", "--method", method, "--output-dir", str(tmp_path), "--batch-size", "16"
    )
    assert status == 0, err
    img = cv2.imread(str(tmp_path / f"{method}_demo.jpg"))
    assert img is not None and img.shape == (256, 768, 3)
    assert out.count("its map puts") == 2


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--image-path", "IMG", "--method", "nosuchcam"], ["nosuchcam", "gradcam", "eigencam"]),
        (["--image-path", "IMG", "--batch-size", "0"], ["--batch-size", "positive integer"]),
        (["--image-path", "IMG", "--seed", "-1"], ["--seed", "2**32"]),
        (["--image-path", "IMG", "--num-images", "3"], ["--num-images goes with --demo"]),
        (["--image-path", "/no/such/image.png"], ["/no/such/image.png", "no such file"]),
        (["--method", "gradcam"], ["--image-path", "--demo"]),
        (["--image-path", "IMG", "--model", "resnet_9000"], ["resnet_9000"]),
        (["--image-path", "IMG", "--weights", "/no/such.pt"], ["/no/such.pt"]),
        (["--image-path", "IMG", "--weights", "BAD"], ["not a state_dict for resnet18"]),
        (["--image-path", "IMG", "--target-layer", "layer4.nope"], ["layer4.nope", "'nope'"]),
        (["--image-path", "IMG", "--target-layer", "layer9"], ["layer9", "layer4, avgpool, fc"]),
        (["--image-path", "IMG", "--target-layer", "layer4.5"], ["index 5 is out of range"]),
        (["--image-path", "IMG", "--target-layer", "fc"], ["gradcam failed", "(1, 1000)"]),
        (["--image-path", "IMG", "--target-category", "1000"], ["1000", "1000 classes"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, image_path, tmp_path, argv, fragments):
    bad_weights = tmp_path / "bad.pt"
    torch.save({"not_a_layer.weight": torch.zeros(1)}, bad_weights)
    argv = [image_path if a == "IMG" else str(bad_weights) if a == "BAD" else a for a in argv]
    if "--model" not in argv:
        argv += ["--model", "resnet18"]
    if "--weights" not in argv:
        argv += ["--weights", "none"]
    status, _, err = run_main(capsys, *argv, "--output-dir", str(tmp_path / "out"))
    assert_clean_error(status, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_an_unquoted_glob_expanded_by_the_shell_is_accepted():
    args = cli.parse_args(["--image-path", "a.jpg", "b.jpg", "c.jpg", "--image-path", "d/"])
    assert args.image_path == ["a.jpg", "b.jpg", "c.jpg", "d/"]
    args = cli.parse_args(["--target-category", "1", "2", "--target-category", "3"])
    assert args.target_category == [1, 2, 3]


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--target-category", "-1"], ["--target-category", "0 or more", "-1"]),
        (["--demo", "--num-images", "99999999999"], ["--num-images", "at most 100000"]),
    ],
)
def test_numbers_out_of_range_are_argument_errors(capsys, argv, fragments):
    with pytest.raises(SystemExit) as info:
        cli.parse_args(argv)
    assert_clean_error(info.value.code, capsys.readouterr().err, *fragments)


def test_a_category_out_of_range_is_found_before_the_model_loads(
    capsys, monkeypatch, image_path, tmp_path
):
    def no_loading(name, weights):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli_runner, "load_model", no_loading)
    copy = tmp_path / "copy.png"
    copy.write_bytes(Path(image_path).read_bytes())
    for paths in ([image_path], [image_path, str(copy)]):
        status, _, err = run_main(
            capsys,
            *("--image-path", *paths, "--model", "resnet18", "--weights", "none"),
            *("--target-category", "1000", "--output-dir", str(tmp_path / "out")),
        )
        assert_clean_error(status, err, "--target-category 1000", "1000 classes")


def test_unavailable_device_is_an_error(capsys, image_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    status, _, err = run_main(capsys, "--image-path", image_path, "--device", "cuda")
    assert_clean_error(status, err, "--device cuda", "--device cpu")


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.parse_args(["--target-category", "dog"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli.parse_args(["--batch-size", "0"])
    assert info.value.code == 2


# ----------------------------------------------------------------------------- helpers


def test_method_table_follows_the_package_exports():
    methods = cli_models.available_methods()
    assert methods["gradcam"] is pytorch_grad_cam.GradCAM
    assert methods["gradcam++"] is pytorch_grad_cam.GradCAMPlusPlus
    assert methods["eigengradcam"] is pytorch_grad_cam.EigenGradCAM
    exported = {
        obj
        for obj in map(partial(getattr, pytorch_grad_cam), pytorch_grad_cam.__all__)
        if isinstance(obj, type)
        and issubclass(obj, pytorch_grad_cam.BaseCAM)
        and obj is not pytorch_grad_cam.BaseCAM
    }
    assert exported <= set(methods.values())  # every BaseCAM method, FinerCAM (a wrapper) too
    for name, class_name in cli_args.METHOD_NAMES.items():
        assert methods.get(name) is getattr(pytorch_grad_cam, class_name, None)
    assert all(name == name.lower() for name in methods)


def test_find_layer_walks_names_and_indices():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Sequential(nn.ReLU(), nn.Identity()))
    model.add_module("head", nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 3)]))
    assert cli_models.find_layer(model, "1.-1") is model[1][1]
    assert cli_models.find_layer(model, "head.-2") is model.head[0]
    assert cli_models.find_layer(model, "head.1") is model.head[1]
    with pytest.raises(cli.CliError, match="model.1 has no child 'x'; its children: 0, 1"):
        cli_models.find_layer(model, "1.x")
    with pytest.raises(cli.CliError, match="index -3 is out of range for model.head"):
        cli_models.find_layer(model, "head.-3")


def test_default_and_auto_target_layers():
    resnet = torchvision.models.resnet18()
    layers, reshape = cli_models.pick_target_layers(resnet, None)
    assert layers == [resnet.layer4[-1]] and reshape is None
    layers, _ = cli_models.pick_target_layers(resnet, ["layer3", "layer4.-1"])
    assert layers == [resnet.layer3, resnet.layer4[-1]]
    find_layers = pytest.importorskip("pytorch_grad_cam.utils.find_layers")
    if not hasattr(find_layers, "find_target_layer"):
        pytest.skip("find_target_layer is not available")
    vgg_like = torchvision.models.mobilenet_v3_small()
    expected, _ = find_layers.find_target_layer(vgg_like)
    assert cli_models.pick_target_layers(vgg_like, ["auto"])[0] == list(expected)
    assert cli_models.pick_target_layers(vgg_like, None)[0] == list(expected)


def test_input_size_follows_the_pretrained_weights():
    assert cli_models.input_size("resnet50", "DEFAULT") == 224
    assert cli_models.input_size("inception_v3", "default") == 299
    assert (
        cli_models.input_size("vit_h_14", "DEFAULT") == 518
    )  # its DEFAULT weights need 518 pixels
    assert cli_models.input_size("vit_h_14", "none") == 224  # built for 224 without them
    assert cli_models.input_size("no_such_model", "DEFAULT") == 224


def test_a_model_failing_on_the_image_is_one_line(capsys, monkeypatch, image_path, tmp_path):
    class NeedsGray(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer4 = nn.Sequential(nn.Conv2d(1, 2, 3))

        def forward(self, x):
            return self.layer4(x).mean((2, 3))

    monkeypatch.setattr(cli_runner, "load_model", lambda name, weights: NeedsGray())
    status, _, err = run_main(
        capsys,
        *("--image-path", image_path, "--target-layer", "layer4.0", "--weights", "none"),
        *("--output-dir", str(tmp_path / "out")),
    )
    assert_clean_error(status, err, "--model resnet50 failed on a 224x224 image")
    assert not (tmp_path / "out").exists()


def test_a_token_layer_of_a_known_family_gets_its_transform():
    from torchvision.models import SwinTransformer, VisionTransformer

    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
    ).eval()
    layers, reshape = cli_models.pick_target_layers(vit, ["encoder.layers.-1.ln_1"])
    assert layers == [vit.encoder.layers[-1].ln_1] and reshape is not None
    tokens = torch.randn(2, 1 + 16, 16)
    assert reshape(tokens).shape == (2, 16, 4, 4)
    assert cli_models.pick_target_layers(vit, ["conv_proj"])[1] is None  # a (B, C, H, W) conv
    swin = SwinTransformer([4, 4], 8, [1, 1], [1, 2], [4, 4]).eval()
    _, swin_reshape = cli_models.pick_target_layers(swin, ["features.-1.-1.norm1"])
    assert swin_reshape(torch.randn(1, 2, 2, 16)).shape == (1, 16, 2, 2)
    resnet = torchvision.models.resnet18()
    assert cli_models.pick_target_layers(resnet, ["layer3"])[1] is None
