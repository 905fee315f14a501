"""Dataset runs: many images through a CAM method, written as maps, overlays, a manifest and
a gallery; resumable, and sharded over the processes of ``torchrun``.

Layout of ``--output-dir``::

    manifest.jsonl                    one JSON line per explained (image, class)
    maps/<method>/<image>.<class>.png the map at the image's own size (uint16, 65535 = 1.0)
    overlays/<method>/<image>.<class>.jpg
    thumbs/<method>/<image>.<class>.jpg
    index.html                        the gallery
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pytorch_grad_cam._perturbation import progress_disabled
from pytorch_grad_cam.cli.args import IMAGE_SUFFIXES, CliError
from pytorch_grad_cam.cli.gallery import gallery_html
from pytorch_grad_cam.cli.output import OutputDir, read_rgb
from pytorch_grad_cam.utils.image import show_cam_on_image

MANIFEST = "manifest.jsonl"
THUMBNAIL = 160  # pixels, longer side
PENDING_BATCHES = 4  # batches of maps waiting to be written, at most


@dataclass(frozen=True)
class ImageFile:
    path: Path
    name: str  # path relative to its --image-path root (posix), unique in the run
    stem: str = ""  # the name its output files take (the name without its suffix if unique)

    def __post_init__(self) -> None:
        if not self.stem:
            object.__setattr__(self, "stem", self.name.rsplit(".", 1)[0])


def find_images(patterns: Sequence[str]) -> list[ImageFile]:
    """Files, directories (searched recursively) and globs, in a stable order."""
    found: list[tuple[Path, Path]] = []  # (file, root)
    for pattern in patterns:
        if glob.has_magic(pattern):
            root = Path(pattern)
            while glob.has_magic(str(root)):
                root = root.parent
            files = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
            files = [p for p in files if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise CliError(f"--image-path {pattern!r}: no image file matches")
        elif os.path.isdir(pattern):
            root = Path(pattern)
            files = sorted(
                p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                suffixes = ", ".join(IMAGE_SUFFIXES)
                raise CliError(f"--image-path {pattern!r}: no images in it ({suffixes})")
        elif os.path.isfile(pattern):
            root, files = Path(pattern).parent, [Path(pattern)]
        else:
            raise CliError(f"--image-path {pattern!r}: no such file or directory")
        found += [(f, root) for f in files]
    unique, names, seen = [], set(), set()
    for index, (path, root) in enumerate(found):
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        name = path.relative_to(root).as_posix()
        if name in names:  # the same relative path under two roots
            name = f"{index}/{name}"
        names.add(name)
        unique.append((path, name))
    stems = [name.rsplit(".", 1)[0] for _, name in unique]
    clash = {s for s, n in Counter(stems).items() if n > 1}  # a.jpg and a.png: keep suffixes
    return [
        ImageFile(path, name, name if stem in clash else stem)
        for (path, name), stem in zip(unique, stems)
    ]


class ImageDataset(Dataset):
    """Decodes images (in the DataLoader's worker processes): the model input, resized to a
    square of ``size`` and normalised, and the image itself at its own size."""

    def __init__(
        self,
        images: Sequence[ImageFile],
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.images = list(images)
        self.size = size
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, Any, Any, str | None]:
        try:
            rgb = read_rgb(self.images[index].path)
        except ValueError as error:
            return index, None, None, str(error)
        small = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        x = (small.astype(np.float32) / 255 - self.mean) / self.std
        return index, torch.from_numpy(x.transpose(2, 0, 1).copy()), rgb, None


def _as_list(batch: list) -> list:
    return batch


@dataclass
class Explainer:
    """What a dataset run needs from the model side."""

    method: str
    explain: Callable[[torch.Tensor, list[int] | None], tuple[np.ndarray, torch.Tensor]]
    # -> (maps (B, S, S) in [0, 1], the model's outputs (B, classes)) for the given classes,
    #    or each image's top class when None
    probabilities: Callable[[torch.Tensor], torch.Tensor]
    class_names: Sequence[str] | None
    target_layers: list[str]
    size: int
    mean: Sequence[float]
    std: Sequence[float]


class Manifest:
    """``manifest.jsonl``: one JSON object per line, appended whole (one write per line, fsync
    per batch); a line cut short by an interruption is dropped when the file is opened."""

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if path.exists() and overwrite:
            path.unlink()
        if path.exists():
            self.records = self._read_and_repair()

    def _read_and_repair(self) -> list[dict[str, Any]]:
        data = self.path.read_bytes()
        records, good = [], 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good += len(line)
        if good != len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good)
        return records

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for record in records:
                os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records += records


def done_keys(records: Sequence[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(r["image"], r["request"], r["method"]) for r in records if r.get("status") == "ok"}


def run_dataset(
    args: argparse.Namespace,
    explainer: Explainer,
    images: Sequence[ImageFile],
    out: OutputDir,
    device: torch.device,
    title: str,
) -> list[dict[str, Any]]:
    """Explain ``images``; returns every manifest record of the output directory."""
    rank, world = _start_distributed(device)
    root = out.create()
    manifest_path = root / MANIFEST
    requests = [str(c) for c in args.target_category] if args.target_category else ["top"]
    order = {image.name: i for i, image in enumerate(images)}

    def position(record: dict[str, Any]) -> tuple[int, int]:
        request = record.get("request")
        rank_of_request = requests.index(request) if request in requests else -1
        return order.get(record["image"], -1), rank_of_request

    if rank == 0:
        for stale in root.glob("**/.*.tmp"):  # an interrupted write (never a finished file)
            stale.unlink()
        manifest = Manifest(manifest_path, overwrite=args.overwrite)
        _merge_parts(root, manifest, position)  # what the ranks of an interrupted run wrote
    _barrier(world)
    done = done_keys(Manifest(manifest_path).records)
    todo = [
        (i, image)
        for i, image in enumerate(images)
        if not all((image.name, r, explainer.method) in done for r in requests)
    ]
    mine = todo[rank::world]
    part = Manifest(root / f"manifest.part{rank}.jsonl") if world > 1 else Manifest(manifest_path)
    if rank == 0 and len(todo) < len(images):
        print(f"{len(images) - len(todo)} of {len(images)} images are already in {MANIFEST}")
    dataset = ImageDataset(
        [image for _, image in mine], explainer.size, explainer.mean, explainer.std
    )
    workers = (
        args.workers if args.workers is not None else min(4, max(1, (os.cpu_count() or 2) - 1))
    )
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        num_workers=min(workers, len(dataset)),
        collate_fn=_as_list,
    )
    show = not args.no_progress and rank == 0 and not progress_disabled()
    # OpenCV's own thread pool in the two writing threads would compete with the model for the
    # cores; one OpenCV thread (set before the decoding workers fork, so they inherit it).
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    write = partial(_write_one, out, explainer, args.save_maps)
    bar_options = {"unit": "image", "disable": not show, "file": sys.stderr}
    try:
        with tqdm(total=len(mine), desc=explainer.method, **bar_options) as bar:
            for batch in _explain_batches(loader, mine, requests, explainer, write, device):
                part.append(sorted(batch, key=position))
                bar.update(len({r["image"] for r in batch}))
    finally:
        cv2.setNumThreads(opencv_threads)
    _barrier(world)
    records: list[dict[str, Any]] = []
    if rank == 0:
        manifest = Manifest(manifest_path)
        _merge_parts(root, manifest, position)
        records = manifest.records
        out.write_text("index.html", gallery_html(title, _latest(records)))
    _barrier(world)
    if world > 1:
        dist.destroy_process_group()
    return records


def _explain_batches(
    loader: DataLoader,
    mine: Sequence[tuple[int, ImageFile]],
    requests: list[str],
    explainer: Explainer,
    write: Callable[..., dict[str, Any]],
    device: torch.device,
) -> Iterator[list[dict[str, Any]]]:
    """Manifest records, a batch at a time, in image order; writing runs in two threads,
    overlapping the next batch's computation."""
    pending: deque[list[Future]] = deque()
    with ThreadPoolExecutor(max_workers=2) as pool:
        for batch in loader:
            jobs: list[Future] = []
            good = [b for b in batch if b[3] is None]
            for index, _, _, error in batch:
                if error is not None:
                    jobs.append(pool.submit(_error_record, mine[index][1], explainer, error))
            if good:
                x = torch.stack([b[1] for b in good]).to(device)
                for request in requests:
                    classes = None if request == "top" else [int(request)] * len(good)
                    maps, outputs = explainer.explain(x, classes)
                    probs = explainer.probabilities(outputs).float().cpu()
                    outputs = outputs.float().cpu()
                    chosen = classes or outputs.argmax(dim=1).tolist()
                    for k, (index, _, rgb, _) in enumerate(good):
                        c = chosen[k]
                        info = {
                            "request": request,
                            "category": int(c),
                            "score": float(outputs[k, c]),
                            "probability": float(probs[k, c]),
                        }
                        jobs.append(pool.submit(write, mine[index][1], maps[k], rgb, info))
            pending.append(jobs)
            while len(pending) > PENDING_BATCHES or (pending and all(j.done() for j in pending[0])):
                yield [job.result() for job in pending.popleft()]
        while pending:
            yield [job.result() for job in pending.popleft()]


def _stem(image: ImageFile, method: str, category: int) -> str:
    return f"{method}/{image.stem}.{category}"


def _write_one(
    out: OutputDir,
    explainer: Explainer,
    save_maps: str,
    image: ImageFile,
    small_map: np.ndarray,
    rgb: np.ndarray,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Write one image's map, overlay and thumbnail (at the image's own size)."""
    height, width = rgb.shape[:2]
    cam = np.clip(cv2.resize(small_map, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)
    stem = _stem(image, explainer.method, info["category"])
    if save_maps == "npy":
        buffer = io.BytesIO()
        np.save(buffer, cam.astype(np.float32))
        map_path = f"maps/{stem}.npy"
        out.write_bytes(map_path, buffer.getvalue())
    else:
        map_path = f"maps/{stem}.png"
        out.write_bytes(map_path, _encode(".png", np.round(cam * 65535).astype(np.uint16)))
    overlay = show_cam_on_image(rgb.astype(np.float32) / 255, cam, use_rgb=True)
    overlay_bgr = cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)
    out.write_bytes(f"overlays/{stem}.jpg", _encode(".jpg", overlay_bgr))
    scale = THUMBNAIL / max(height, width)
    thumb = cv2.resize(
        overlay_bgr,
        (max(1, round(width * scale)), max(1, round(height * scale))),
        interpolation=cv2.INTER_AREA,
    )
    out.write_bytes(f"thumbs/{stem}.jpg", _encode(".jpg", thumb))
    names = explainer.class_names
    c = info["category"]
    return {
        "image": image.name,
        "status": "ok",
        **info,
        "category_name": names[c] if names is not None and c < len(names) else None,
        "method": explainer.method,
        "target_layers": explainer.target_layers,
        "width": width,
        "height": height,
        "map": map_path,
        "overlay": f"overlays/{stem}.jpg",
        "thumbnail": f"thumbs/{stem}.jpg",
    }


def _error_record(image: ImageFile, explainer: Explainer, error: str) -> dict[str, Any]:
    return {"image": image.name, "status": "error", "error": error, "method": explainer.method}


def _encode(suffix: str, image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(suffix, image)
    if not ok:
        raise RuntimeError(f"could not encode a {suffix} image")
    return data.tobytes()


def _latest(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (image, class, method): the last one written."""
    latest: dict[tuple, dict[str, Any]] = {}
    for r in records:
        key = (r["image"], r.get("category"), r["method"], r.get("status"))
        latest[key] = r
    ok = {(k[0], k[2]) for k in latest if k[3] == "ok"}
    return [r for k, r in latest.items() if k[3] == "ok" or (k[0], k[2]) not in ok]


# --------------------------------------------------------------------- several processes
def _start_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins torchrun's process group when there is one."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _merge_parts(root: Path, manifest: Manifest, position: Callable[[dict], Any]) -> None:
    """Move the ranks' ``manifest.part<rank>.jsonl`` lines into the manifest, in the order
    one process would have written them."""
    parts = sorted(root.glob("manifest.part*.jsonl"))
    records = [r for part in parts for r in Manifest(part).records]
    manifest.append(sorted(records, key=position))
    for part in parts:
        part.unlink()
