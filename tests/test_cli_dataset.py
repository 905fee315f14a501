"""Dataset runs of the ``grad-cam`` command: folders, globs, the manifest, maps and overlays at
each image's own size, resuming, interruptions, and the demo's localisation goals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision

from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.cli import dataset as cli_dataset
from pytorch_grad_cam.cli import main
from pytorch_grad_cam.cli.args import METHOD_NAMES
from pytorch_grad_cam.utils.image import IMAGENET_MEAN, IMAGENET_STD

MODEL = ["--model", "mobilenet_v3_small", "--weights", "none", "--target-layer", "features.-1"]
FIELDS = {"image", "category", "category_name", "score", "probability", "method"}
FIELDS |= {"target_layers", "map", "overlay", "thumbnail", "width", "height", "status"}


def write(path: Path, shape: tuple[int, int], seed: int) -> Path:
    """A random-colour image with a disc, written with OpenCV."""
    rng = np.random.default_rng(seed)
    img = np.full((*shape, 3), rng.integers(0, 255, 3), np.uint8)
    cv2.circle(img, (shape[1] // 3, shape[0] // 2), min(shape) // 4, (250, 250, 20), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    write(root / "a.png", (40, 64), 0)
    write(root / "sub" / "b.jpg", (64, 48), 1)
    write(root / "sub" / "deep" / "c.png", (50, 50), 2)
    (root / "notes.txt").write_text("not an image")
    truncated = write(root / "broken.jpg", (64, 64), 3)
    truncated.write_bytes(truncated.read_bytes()[:400])  # a file cut short
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main([*argv, "--no-progress", "--workers", "1", "--batch-size", "2"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_a_folder_is_a_dataset_run_with_maps_at_each_images_size(capsys, folder, tmp_path):
    out = tmp_path / "out"
    status, stdout, err = run(capsys, "--image-path", str(folder), *MODEL, "--output-dir", str(out))
    assert status == 0, err
    assert "random weights" in stdout
    records = manifest(out)
    ok = {r["image"]: r for r in records if r["status"] == "ok"}
    assert sorted(ok) == ["a.png", "sub/b.jpg", "sub/deep/c.png"]
    (error,) = [r for r in records if r["status"] == "error"]
    assert error["image"] == "broken.jpg" and "truncated" in error["error"].lower()
    names = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.meta["categories"]
    for name, record in ok.items():
        assert FIELDS <= set(record)
        assert record["category_name"] == names[record["category"]]
        assert record["method"] == "gradcam" and record["target_layers"] == ["features.12"]
        assert 0 < record["probability"] <= 1
        height, width = cv2.imread(str(folder / name)).shape[:2]
        cam = cv2.imread(str(out / record["map"]), cv2.IMREAD_UNCHANGED)
        assert cam.dtype == np.uint16 and cam.shape == (height, width) and cam.max() > 60000
        assert cv2.imread(str(out / record["overlay"])).shape == (height, width, 3)
        assert max(cv2.imread(str(out / record["thumbnail"])).shape[:2]) == 160
    assert not list(out.rglob("*.tmp")) and not (out / "notes.txt").exists()
    page = (out / "index.html").read_text()
    assert "http" not in page.lower() and '"a.png"' in page


def test_maps_equal_the_library_on_the_same_input(capsys, folder, tmp_path):
    out = tmp_path / "out"
    image = folder / "sub" / "b.jpg"
    status, _, err = run(
        capsys, "--image-path", str(image), "--image-path", str(folder / "a.png"), *MODEL,
        "--target-category", "7", "--output-dir", str(out),
    )  # fmt: skip
    assert status == 0, err
    record = next(r for r in manifest(out) if r["image"] == "b.jpg")
    assert record["category"] == 7 and record["map"] == "maps/gradcam/b.7.png"
    torch.manual_seed(0)  # the command seeds the random weights with --seed 0
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    small = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_LINEAR)
    x = (small.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    x = torch.from_numpy(x.transpose(2, 0, 1).copy())[None].float()
    expected = GradCAM(model, [model.features[-1]])(x, [7])[0]
    expected = np.clip(cv2.resize(expected, (48, 64), interpolation=cv2.INTER_LINEAR), 0, 1)
    got = cv2.imread(str(out / record["map"]), cv2.IMREAD_UNCHANGED) / 65535
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_globs_repeatable_paths_and_npy_maps(capsys, folder, tmp_path):
    out = tmp_path / "out"
    other = tmp_path / "other"
    write(other / "a.png", (30, 30), 5)  # the same relative name as photos/a.png
    status, _, err = run(
        capsys, "--image-path", str(folder / "**" / "*.png"), "--image-path", str(other),
        *MODEL, "--save-maps", "npy", "--output-dir", str(out),
    )  # fmt: skip
    assert status == 0, err
    records = manifest(out)
    assert [r["image"] for r in records] == ["a.png", "sub/deep/c.png", "2/a.png"]
    for record in records:
        cam = np.load(out / record["map"])
        assert cam.dtype == np.float32 and cam.shape == (record["height"], record["width"])
        assert 0 <= cam.min() and cam.max() <= 1


def test_reruns_skip_what_is_done_and_overwrite_recomputes(capsys, folder, tmp_path):
    out = tmp_path / "out"
    args = ["--image-path", str(folder), *MODEL, "--output-dir", str(out)]
    assert run(capsys, *args)[0] == 0
    first = manifest(out)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    status, stdout, _ = run(capsys, *args)
    assert status == 0 and "3 of 4 images are already in manifest.jsonl" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamp
    # the unreadable image is retried, its error line replaced (and reported once)
    ok = [r["image"] for r in first if r["status"] == "ok"]
    assert [r["image"] for r in manifest(out)] == [*ok, "broken.jpg"]
    assert stdout.count("could not explain broken.jpg") == 1
    write(folder / "new.png", (20, 30), 9)
    assert run(capsys, *args)[0] == 0
    added = manifest(out)[len(ok) :]
    assert [r["image"] for r in added] == ["broken.jpg", "new.png"]
    assert run(capsys, *args, "--overwrite")[0] == 0
    assert sorted(r["image"] for r in manifest(out)) == sorted(
        ["a.png", "broken.jpg", "new.png", "sub/b.jpg", "sub/deep/c.png"]
    )


def test_an_interrupted_run_leaves_no_half_written_file_and_resumes(
    capsys, monkeypatch, folder, tmp_path
):
    out = tmp_path / "out"
    args = ["--image-path", str(folder), *MODEL, "--output-dir", str(out)]
    real, calls = cli_dataset.OutputDir.write_bytes, [0]

    def dying(self, relative, data):
        calls[0] += 1
        if calls[0] == 5:  # the second image's overlay: die half-way through writing it
            path = self.target(relative)
            (path.parent / f".{path.name}.xyz.tmp").write_bytes(data[:10])
            raise KeyboardInterrupt
        return real(self, relative, data)

    monkeypatch.setattr(cli_dataset.OutputDir, "write_bytes", dying)
    status, _, err = run(capsys, *args)  # Ctrl-C: one line, no traceback
    assert status == 130 and err == "interrupted; rerun the same command to resume\n"
    monkeypatch.undo()
    with open(out / "manifest.jsonl", "ab") as handle:
        handle.write(b'{"image": "cut sh')  # as if killed while appending a line
    for path in out.rglob("*.png"):  # every finished file decodes
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None
    assert run(capsys, *args)[0] == 0
    records = manifest(out)  # the cut line is gone, every image is there once
    assert sorted(r["image"] for r in records if r["status"] == "ok") == [
        "a.png", "sub/b.jpg", "sub/deep/c.png",
    ]  # fmt: skip
    assert not list(out.rglob("*.tmp"))


def test_demo_maps_sit_on_the_asked_shape(capsys, tmp_path):
    out = tmp_path / "demo"
    status, stdout, err = run(capsys, "--demo", "--num-images", "200", "--output-dir", str(out))
    assert status == 0, err
    scores = json.loads((out / "demo_localisation.json").read_text())
    for name in ("circle", "square"):
        assert scores[name]["images"] == 200
        assert scores[name]["pointing_game"] >= 0.95, scores
        assert scores[name]["energy_inside"] >= 0.5, scores
        assert f"{name}: pointing game" in stdout
    records = manifest(out)
    assert len(records) == 400 and {r["category_name"] for r in records} == {"circle", "square"}
    assert (out / "demo_images" / "shapes_00199.png").is_file()


@pytest.mark.parametrize("method", sorted(METHOD_NAMES))
def test_every_method_works_in_a_dataset_run(capsys, tmp_path, method):
    out = tmp_path / method
    status, _, err = run(
        capsys, "--demo", "--num-images", "3", "--method", method, "--output-dir", str(out)
    )
    assert status == 0, err
    records = manifest(out)
    assert len(records) == 6 and all(r["status"] == "ok" and r["method"] == method for r in records)


@pytest.mark.parametrize(
    "setup, fragment",
    [
        (lambda out: out.write_text("a file"), "is not a directory"),
        (lambda out: (out.parent / "file").write_text("x"), "is a file"),
    ],
    ids=["output-dir-is-a-file", "inside-a-file"],
)
def test_output_problems_are_found_before_any_work(capsys, tmp_path, setup, fragment):
    out = tmp_path / "out"
    setup(out)
    target = out if out.exists() else tmp_path / "file" / "out"
    status, _, err = run(capsys, "--demo", "--num-images", "2", "--output-dir", str(target))
    assert status == 2 and fragment in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["/proc/grad-cam-out", "/sys/grad-cam-out"])
def test_an_output_dir_that_cannot_be_created_is_found_before_any_work(capsys, where):
    if not Path(where).parent.is_dir():
        pytest.skip(f"no {Path(where).parent}")
    status, _, err = run(capsys, "--demo", "--num-images", "2", "--output-dir", where)
    assert status == 2 and "cannot be written" in err and len(err.strip().splitlines()) == 1
    assert "circle" not in capsys.readouterr().out


def test_the_writability_check_leaves_nothing_behind(capsys, tmp_path):
    out = tmp_path / "a" / "b" / "out"
    status, _, err = run(capsys, "--image-path", str(tmp_path), "--output-dir", str(out))
    assert status == 2 and "no images" in err
    assert list(tmp_path.iterdir()) == []


def test_under_torchrun_the_writability_check_keeps_the_directory(tmp_path, monkeypatch):
    from pytorch_grad_cam.cli.output import OutputDir

    monkeypatch.setenv("WORLD_SIZE", "2")  # another rank may be probing it at the same time
    out = tmp_path / "a" / "out"
    OutputDir(out)
    assert out.is_dir() and list(out.iterdir()) == []
    OutputDir(out)  # the same check again (the other rank) finds it and passes


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_the_usual_permissions(capsys, tmp_path, umask):
    previous = os.umask(umask)
    try:
        status, _, err = run(capsys, "--demo", "--num-images", "2", "--output-dir", str(tmp_path))
    finally:
        os.umask(previous)
    assert status == 0, err
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 8
    assert {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~umask}


@pytest.mark.parametrize("folder", ["maps", "overlays", "thumbs"])
def test_writes_never_follow_a_symlink_out_of_the_output_dir(capsys, tmp_path, folder):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / folder).symlink_to(elsewhere, target_is_directory=True)
    status, _, err = run(capsys, "--demo", "--num-images", "2", "--output-dir", str(out))
    assert status == 2 and "outside --output-dir" in err and len(err.strip().splitlines()) == 1
    assert list(elsewhere.iterdir()) == []
    written = [p for p in out.rglob("*") if p.is_file() and "demo_images" not in p.parts]
    assert written == []  # refused before any map was computed or written


def test_a_corrupt_single_image_is_a_one_line_error(capsys, folder, tmp_path):
    status, _, err = run(capsys, "--image-path", str(folder / "broken.jpg"), *MODEL)
    assert status == 2 and "truncated" in err.lower() and len(err.strip().splitlines()) == 1


def test_progress_bar_on_stderr_and_silenced(capsys, tmp_path, monkeypatch):
    argv = ["--demo", "--num-images", "3", "--workers", "0"]
    assert main([*argv, "--output-dir", str(tmp_path / "a")]) == 0
    assert "3/3" in capsys.readouterr().err
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert main([*argv, "--output-dir", str(tmp_path / "b")]) == 0
    assert "3/3" not in capsys.readouterr().err


def test_another_model_in_the_same_output_dir_is_computed_and_kept_apart(capsys, folder, tmp_path):
    out = tmp_path / "out"
    base = ["--image-path", str(folder), "--output-dir", str(out)]
    resnet = ["--model", "resnet18", "--weights", "none", "--target-layer", "layer4.-1"]
    assert run(capsys, *base, *MODEL)[0] == 0
    first = manifest(out)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    status, stdout, err = run(capsys, *base, *resnet)
    assert status == 0 and "already in" not in stdout, err
    records = manifest(out)
    assert records[: len(first)] == first  # the first model's lines and files stay
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    added = [r for r in records[len(first) :] if r["status"] == "ok"]
    assert sorted(r["image"] for r in added) == ["a.png", "sub/b.jpg", "sub/deep/c.png"]
    assert {(r["model"], r["weights"]) for r in added} == {("resnet18", "none")}
    assert {r["target_layers"][0] for r in added} == {"layer4.1"}
    assert all(r["map"].startswith("maps/gradcam@resnet18-random/") for r in added)
    assert all((out / r["map"]).is_file() for r in records if r["status"] == "ok")
    for argv in (MODEL, resnet):  # each model's rerun finds its own maps done
        status, stdout, _ = run(capsys, *base, *argv)
        assert status == 0 and "3 of 4 images are already" in stdout
    assert len(manifest(out)) == len(records)
    page = (out / "index.html").read_text()
    assert page.count("gradcam@resnet18-random/") == 6 and page.count('"maps/gradcam/') == 0


def test_overwrite_replaces_only_the_lines_it_recomputes(capsys, folder, tmp_path):
    out = tmp_path / "out"
    base = ["--image-path", str(folder), *MODEL, "--output-dir", str(out)]
    assert run(capsys, *base)[0] == 0
    assert run(capsys, *base, "--method", "eigencam")[0] == 0
    eigencam = [r for r in manifest(out) if r["method"] == "eigencam"]
    assert run(capsys, *base, "--overwrite")[0] == 0
    records = manifest(out)
    assert [r for r in records if r["method"] == "eigencam"] == eigencam
    gradcam = sorted(r["image"] for r in records if r["method"] == "gradcam")
    assert gradcam == ["a.png", "broken.jpg", "sub/b.jpg", "sub/deep/c.png"]
    assert all((out / r["map"]).is_file() for r in records if r["status"] == "ok")


@pytest.mark.parametrize("name", ["manifest.jsonl", "manifest.part0.jsonl"])
def test_a_symlinked_manifest_is_refused(capsys, tmp_path, name):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere.jsonl"
    out.mkdir()
    elsewhere.write_text("")
    (out / name).symlink_to(elsewhere)
    status, _, err = run(capsys, "--demo", "--num-images", "2", "--output-dir", str(out))
    assert status == 2 and "symlink" in err and len(err.strip().splitlines()) == 1
    assert elsewhere.read_text() == "" and not (out / "maps").exists()


BAD_MAP = json.dumps(
    {"image": "x", "status": "ok", "method": "gradcam", "request": "top", "category": 1}
    | {"score": 1.0, "probability": 0.5, "map": "elsewhere", "overlay": "o", "thumbnail": "t"}
)


@pytest.mark.parametrize(
    "lines",
    ['{"image": "x"}\n', "null\n", "not json\n", "[1, 2]\n", BAD_MAP + "\n", "\xff\n"],
    ids=repr,
)
def test_a_manifest_with_foreign_lines_is_a_one_line_error(capsys, tmp_path, lines):
    out = tmp_path / "out"
    assert run(capsys, "--demo", "--num-images", "2", "--output-dir", str(out))[0] == 0
    path = out / "manifest.jsonl"
    good = path.read_text().splitlines(keepends=True)
    path.write_text(good[0] + lines + "".join(good[1:]))
    before = path.read_bytes()
    status, _, err = run(capsys, "--demo", "--num-images", "3", "--output-dir", str(out))
    assert status == 2 and "line 2 is not a grad-cam record" in err
    assert len(err.strip().splitlines()) == 1 and path.read_bytes() == before  # not truncated


def test_a_directory_named_like_the_manifest_is_a_one_line_error(capsys, tmp_path):
    (tmp_path / "manifest.jsonl").mkdir()
    status, _, err = run(capsys, "--demo", "--num-images", "2", "--output-dir", str(tmp_path))
    assert status == 2 and "is not a file" in err and len(err.strip().splitlines()) == 1


def test_under_torchrun_rank_0_labels_its_bar_and_notes_once(capsys, monkeypatch, folder, tmp_path):
    """Rank 0 of 2 (the process group mocked): its bar says so; other ranks print no note."""
    monkeypatch.setattr(cli_dataset, "_start_distributed", lambda device: (0, 2))
    monkeypatch.setattr(cli_dataset, "_barrier", lambda world: None)
    monkeypatch.setattr(cli_dataset, "_from_rank0", lambda value, world: value)
    monkeypatch.setattr(cli_dataset.dist, "destroy_process_group", lambda: None)
    argv = ["--image-path", str(folder), *MODEL, "--workers", "0", "--batch-size", "2"]
    status = main([*argv, "--output-dir", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "gradcam, rank 0 of 2: 100%" in captured.err and "2/2" in captured.err
    assert "random weights" in captured.out
    monkeypatch.setenv("RANK", "1")
    status = main([*argv, "--output-dir", str(tmp_path / "rank1"), "--no-progress"])
    assert status == 0 and "random weights" not in capsys.readouterr().out


def test_under_torchrun_any_failure_of_rank_0_is_sent_to_every_rank(monkeypatch, folder, tmp_path):
    """A failure of rank 0 while it prepares the run (here a full disk) is broadcast, so the
    other ranks stop with it instead of waiting for a plan (the process group mocked)."""
    sent = []

    def from_rank0(value, world):
        sent.append(value)
        return value

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_dataset, "_start_distributed", lambda device: (0, 2))
    monkeypatch.setattr(cli_dataset, "_from_rank0", from_rank0)
    monkeypatch.setattr(cli_dataset.dist, "destroy_process_group", lambda: None)
    monkeypatch.setattr(cli_dataset, "_merge_parts", disk_full)
    argv = ["--image-path", str(folder), *MODEL, "--workers", "0", "--no-progress"]
    with pytest.raises(RuntimeError, match="rank 0 failed: OSError: .*No space left on device"):
        main([*argv, "--output-dir", str(tmp_path / "out")])
    assert len(sent) == 1 and "No space left on device" in sent[0][0]


def test_under_torchrun_a_failing_rank_still_meets_the_others(monkeypatch, folder, tmp_path):
    """A rank whose writing fails (here rank 1 of 2, the process group mocked) passes both
    barriers the others wait at, then raises its error."""
    steps = []

    def failing_write(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_dataset, "_start_distributed", lambda device: (1, 2))
    monkeypatch.setattr(cli_dataset, "_from_rank0", lambda value, world: ("", [0, 1, 2, 3], "x"))
    monkeypatch.setattr(cli_dataset, "_barrier", lambda world: steps.append("barrier"))
    monkeypatch.setattr(
        cli_dataset.dist, "destroy_process_group", lambda: steps.append("destroyed")
    )
    monkeypatch.setattr(cli_dataset, "_write_one", failing_write)
    argv = ["--image-path", str(folder), *MODEL, "--workers", "0", "--no-progress"]
    with pytest.raises(OSError, match="No space left on device"):
        main([*argv, "--output-dir", str(tmp_path / "out")])
    assert steps == ["barrier", "barrier", "destroyed"]
