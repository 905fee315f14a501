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
import hashlib
import inspect
import io
import json
import os
import re
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
    model: str  # the model's name, and its weights (DEFAULT, none, a file's absolute path):
    weights: str  # with the method, what a manifest line was computed with
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
    """A manifest file of the output directory (``manifest.jsonl``, or a rank's part): one
    JSON object per line, appended whole (one write per line, fsync per batch); a last line
    cut short by an interruption is dropped when the file is opened. A symlink, something
    that is not a file, or a line that is not a record of this command is a user error."""

    def __init__(self, out: OutputDir, name: str) -> None:
        self.out = out
        self.name = name
        self.path = out.path / name
        self.records: list[dict[str, Any]] = []
        if self.path.is_symlink():
            raise CliError(f"refusing to use {self.path}: it is a symlink")
        if self.path.exists() and not self.path.is_file():
            raise CliError(f"{self.path} is not a file; move it away or pick another --output-dir")
        if self.path.exists():
            self.records = self._read_and_repair()

    def _read_and_repair(self) -> list[dict[str, Any]]:
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
        records, good = [], 0
        for number, line in enumerate(data.splitlines(keepends=True), start=1):
            if not line.endswith(b"\n"):
                break  # the last line, cut short
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if not is_record(record):
                raise CliError(
                    f"{self.path} line {number} is not a grad-cam record; move the file away "
                    "or pick another --output-dir"
                )
            records.append(record)
            good += len(line)
        if good != len(data):
            fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                os.ftruncate(fd, good)
            finally:
                os.close(fd)
        return records

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        try:
            fd = os.open(self.out.target(self.name), flags, 0o666)
        except OSError as error:  # a symlink put there during the run
            raise CliError(f"cannot append to {self.path}: {error.strerror}") from error
        try:
            for record in records:
                os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records += records

    def drop(self, unwanted: Callable[[dict[str, Any]], bool]) -> None:
        """Rewrite the file (atomically) without the ``unwanted`` records."""
        kept = [r for r in self.records if not unwanted(r)]
        if len(kept) != len(self.records):
            self.out.write_text(self.name, "".join(json.dumps(r) + "\n" for r in kept))
            self.records = kept


def is_record(record: Any) -> bool:
    """A manifest line this command wrote (what resuming and the gallery rely on)."""
    if not isinstance(record, dict):
        return False
    if not isinstance(record.get("image"), str) or not isinstance(record.get("method"), str):
        return False
    if record.get("status") == "error":
        return True
    numbers = (record.get(k) for k in ("score", "probability"))
    paths = (record.get(k) for k in ("overlay", "thumbnail"))
    return (
        record.get("status") == "ok"
        and isinstance(record.get("request"), str)
        and type(record.get("category")) is int
        and all(type(v) in (int, float) for v in numbers)
        and str(record.get("map")).startswith("maps/")
        and all(isinstance(v, str) for v in paths)
    )


def identity(record: dict[str, Any]) -> tuple[Any, Any, Any]:
    """What a record was computed with: (method, model, weights)."""
    return record.get("method"), record.get("model"), record.get("weights")


def done_keys(records: Sequence[dict[str, Any]], run: tuple[str, str, str]) -> set[tuple[str, str]]:
    """(image, request) of the records computed as ``run`` = (method, model, weights)."""
    return {
        (r["image"], r["request"]) for r in records if r["status"] == "ok" and identity(r) == run
    }


def output_label(records: Sequence[dict[str, Any]], explainer: Explainer) -> str:
    """The folder of the run's files under ``maps/``, ``overlays/`` and ``thumbs/``: the
    method's name, or ``<method>@<model>`` when that folder already holds the maps of another
    model or other weights (which stay, with their manifest lines)."""
    run = (explainer.method, explainer.model, explainer.weights)
    taken = {r["map"].split("/")[1] for r in records if r["status"] == "ok" and identity(r) != run}
    if explainer.method not in taken:
        return explainer.method
    return f"{explainer.method}@{_variant(explainer.model, explainer.weights)}"


def _variant(model: str, weights: str) -> str:
    if weights in ("DEFAULT", "bundled"):
        return model
    if weights == "none":
        return f"{model}-random"
    digest = hashlib.sha1(weights.encode("utf-8")).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(weights).stem)
    return f"{model}-{stem}-{digest}"


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
    out.create()
    requests = [str(c) for c in args.target_category] if args.target_category else ["top"]
    order = {image.name: i for i, image in enumerate(images)}

    def position(record: dict[str, Any]) -> tuple[int, int]:
        request = record.get("request")
        rank_of_request = requests.index(request) if request in requests else -1
        return order.get(record["image"], -1), rank_of_request

    # Rank 0 reads and tidies the output directory, then tells the others what to do.
    manifest: Manifest | None = None
    plan: tuple[str, list[int], str] = ("", [], "")  # (error, images to do, output label)
    if rank == 0:
        try:
            manifest = Manifest(out, MANIFEST)
            _merge_parts(out, manifest, position)  # what the ranks of an interrupted run wrote
            todo, label = _prepare(manifest, images, requests, explainer, args.overwrite)
            out.check_inside(*(f"{folder}/{label}" for folder in ("maps", "overlays", "thumbs")))
            plan = ("", todo, label)
        except CliError as error:
            plan = (str(error), [], "")
        except Exception as error:  # e.g. a full disk: the other ranks must not wait forever
            if world == 1:
                raise
            plan = (f"rank 0 failed: {type(error).__name__}: {error}", [], "internal")
    refused, todo, label = _from_rank0(plan, world)
    if refused:  # every rank stops, with the same one line
        if world > 1:
            dist.destroy_process_group()
        raise (RuntimeError if label == "internal" else CliError)(refused)
    mine = [(i, images[i]) for i in todo][rank::world]
    part = Manifest(out, f"manifest.part{rank}.jsonl") if world > 1 else manifest
    assert part is not None
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
    write = partial(_write_one, out, explainer, label, args.save_maps)
    # Under torchrun the bar is rank 0's: its share of the images, and labelled so.
    desc = explainer.method if world == 1 else f"{explainer.method}, rank 0 of {world}"
    bar_options = {"unit": "image", "disable": not show, "file": sys.stderr}
    # Under torchrun a rank that fails still meets the others at both barriers (so none waits
    # for it), then raises; what was written stays, and a rerun resumes.
    failure: Exception | None = None
    try:
        with tqdm(total=len(mine), desc=desc, **bar_options) as bar:
            for batch in _explain_batches(loader, mine, requests, explainer, write, device):
                part.append(sorted(batch, key=position))
                bar.update(len({r["image"] for r in batch}))
    except Exception as error:
        if world == 1:
            raise
        failure = error
    finally:
        cv2.setNumThreads(opencv_threads)
    _barrier(world)
    records: list[dict[str, Any]] = []
    if manifest is not None and failure is None:
        try:
            _merge_parts(out, manifest, position)
            records = manifest.records
            out.write_text("index.html", gallery_html(title, latest_records(records)))
        except Exception as error:
            if world == 1:
                raise
            failure = error
    _barrier(world)
    if world > 1:
        dist.destroy_process_group()
    if failure is not None:
        raise failure
    return records


def _prepare(
    manifest: Manifest,
    images: Sequence[ImageFile],
    requests: list[str],
    explainer: Explainer,
    overwrite: bool,
) -> tuple[list[int], str]:
    """The indices of the images to compute (all with ``--overwrite``, else those not done
    for every request by this method, model and weights), after dropping the manifest lines
    they replace: theirs for these requests, and their errors. Then the output label."""
    for stale in manifest.out.path.glob("**/.*.tmp"):  # an interrupted write, never a file
        stale.unlink()
    run = (explainer.method, explainer.model, explainer.weights)
    done = done_keys(manifest.records, run)
    todo = [
        i
        for i, image in enumerate(images)
        if overwrite or not all((image.name, r) in done for r in requests)
    ]
    redone = {images[i].name for i in todo}
    manifest.drop(
        lambda r: (
            r["image"] in redone
            and identity(r) == run
            and (r["status"] == "error" or r.get("request") in requests)
        )
    )
    if len(todo) < len(images):
        print(f"{len(images) - len(todo)} of {len(images)} images are already in {MANIFEST}")
    return todo, output_label(manifest.records, explainer)


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


def _write_one(
    out: OutputDir,
    explainer: Explainer,
    label: str,
    save_maps: str,
    image: ImageFile,
    small_map: np.ndarray,
    rgb: np.ndarray,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Write one image's map, overlay and thumbnail (at the image's own size)."""
    height, width = rgb.shape[:2]
    cam = np.clip(cv2.resize(small_map, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)
    stem = f"{label}/{image.stem}.{info['category']}"
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
        "model": explainer.model,
        "weights": explainer.weights,
        "target_layers": explainer.target_layers,
        "width": width,
        "height": height,
        "map": map_path,
        "overlay": f"overlays/{stem}.jpg",
        "thumbnail": f"thumbs/{stem}.jpg",
    }


def _error_record(image: ImageFile, explainer: Explainer, error: str) -> dict[str, Any]:
    return {
        "image": image.name,
        "status": "error",
        "error": error,
        "method": explainer.method,
        "model": explainer.model,
        "weights": explainer.weights,
    }


def _encode(suffix: str, image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(suffix, image)
    if not ok:
        raise RuntimeError(f"could not encode a {suffix} image")
    return data.tobytes()


def latest_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (image, class, method, model, weights): the last one written; an
    error only where that image has no map of the method, model and weights."""
    latest: dict[tuple, dict[str, Any]] = {}
    for r in records:
        latest[(r["image"], identity(r), r.get("category"), r["status"])] = r
    explained = {key[:2] for key in latest if key[3] == "ok"}
    return [r for key, r in latest.items() if key[3] == "ok" or key[:2] not in explained]


# --------------------------------------------------------------------- several processes
def _start_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins torchrun's process group when there is one: NCCL with
    each rank bound to its own GPU (``device``, from ``LOCAL_RANK``), gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # the collectives' device is the model's
            options: dict[str, Any] = {}
            if "device_id" in inspect.signature(dist.init_process_group).parameters:
                options["device_id"] = device  # torch >= 2.3: bound at once, no guessing
            dist.init_process_group(backend="nccl", **options)
        else:
            dist.init_process_group(backend="gloo")
    return dist.get_rank(), dist.get_world_size()


def _from_rank0(value: Any, world: int) -> Any:
    """``value`` as rank 0 has it, on every rank."""
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _merge_parts(out: OutputDir, manifest: Manifest, position: Callable[[dict], Any]) -> None:
    """Move the ranks' ``manifest.part<rank>.jsonl`` lines into the manifest, in the order
    one process would have written them."""
    parts = [Manifest(out, p.name) for p in sorted(out.path.glob("manifest.part*.jsonl"))]
    manifest.append(sorted([r for part in parts for r in part.records], key=position))
    for part in parts:
        part.path.unlink()
