"""``torchrun --nproc-per-node 2 -m pytorch_grad_cam ...`` on the CPU (gloo): the images are
sharded over the two processes, and the output directory is the one a single process writes
(one merged manifest, one gallery)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist

from pytorch_grad_cam.cli import dataset as cli_dataset
from pytorch_grad_cam.cli import models as cli_models
from pytorch_grad_cam.cli.args import parse_args

ARGS = ["--model", "mobilenet_v3_small", "--weights", "none", "--target-layer", "features.-1"]
ARGS += ["--batch-size", "2", "--workers", "0", "--no-progress"]


def grad_cam(*argv: str, processes: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTORCH_GRAD_CAM_OFFLINE": "1"}
    if processes == 1:
        command = [sys.executable, "-m", "pytorch_grad_cam"]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc-per-node", str(processes), "-m", "pytorch_grad_cam"]
    result = subprocess.run([*command, *argv], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for i, shape in enumerate([(40, 64), (64, 48), (50, 50), (30, 70), (64, 64)]):
        img = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
        assert cv2.imwrite(str(root / ("sub" if i % 2 else ".") / f"img{i}.png"), img)
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_two_processes_write_what_one_process_writes(folder, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    grad_cam("--image-path", str(folder), *ARGS, "--output-dir", str(one))
    grad_cam("--image-path", str(folder), *ARGS, "--output-dir", str(two), processes=2)
    a, b = records(one), records(two)
    assert len(a) == 6 and [r["image"] for r in a] == [r["image"] for r in b]
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for key in x:
            if key in ("score", "probability"):
                assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-5)
            else:
                assert x[key] == y[key], key
        if x["status"] == "ok":
            map_a = cv2.imread(str(one / x["map"]), cv2.IMREAD_UNCHANGED).astype(int)
            map_b = cv2.imread(str(two / y["map"]), cv2.IMREAD_UNCHANGED).astype(int)
            assert np.abs(map_a - map_b).max() <= 2
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert not list(two.glob("manifest.part*"))
    # a rerun under torchrun finds everything done
    rerun = grad_cam("--image-path", str(folder), *ARGS, "--output-dir", str(two), processes=2)
    assert "5 of 6 images are already in manifest.jsonl" in rerun.stdout
    assert rerun.stdout.count("random weights") == 1  # rank 0 only
    explained = [r["image"] for r in b if r["status"] == "ok"]
    assert [r["image"] for r in records(two)] == [*explained, "broken.png"]  # its line replaced


def test_each_rank_takes_the_gpu_of_its_local_rank(monkeypatch):
    """With CUDA (mocked): --device auto/cuda is cuda:LOCAL_RANK, the rank is bound to it
    (torch.cuda.set_device) and NCCL is told the device; on the CPU gloo, nothing bound."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    for argv in (["--device", "auto"], ["--device", "cuda"], ["--use-cuda"]):
        assert cli_models.pick_device(parse_args(["--demo", *argv])) == torch.device("cuda", 3)
    assert cli_models.pick_device(parse_args(["--demo", "--device", "cpu"])).type == "cpu"

    calls: list[tuple] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)

    def init_process_group(backend: str, device_id: torch.device | None = None) -> None:
        calls.append(("init", backend, device_id))

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("bind", device)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    cuda = torch.device("cuda", 3)
    assert cli_dataset._start_distributed(cuda) == (1, 2)
    assert calls == [("bind", cuda), ("init", "nccl", cuda)]
    calls.clear()
    assert cli_dataset._start_distributed(torch.device("cpu")) == (1, 2)
    assert calls == [("init", "gloo", None)]
