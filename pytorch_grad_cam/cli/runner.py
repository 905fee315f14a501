"""What the command line does once its arguments are parsed: one image, or a dataset run."""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pytorch_grad_cam.cli import demo
from pytorch_grad_cam.cli.args import CliError
from pytorch_grad_cam.cli.dataset import (
    Explainer,
    ImageFile,
    find_images,
    latest_records,
    run_dataset,
)
from pytorch_grad_cam.cli.models import (
    available_methods,
    check_model_name,
    check_weights,
    class_names,
    input_size,
    known_num_classes,
    layer_names,
    load_model,
    make_cam,
    model_explainer,
    one_line,
    pick_categories,
    pick_device,
    pick_target_layers,
    run_cam,
)
from pytorch_grad_cam.cli.output import OutputDir, read_rgb
from pytorch_grad_cam.utils.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    deprocess_image,
    preprocess_image,
    show_cam_on_image,
)

RANDOM_WEIGHTS_NOTE = "note: random weights (--weights none): the map has no meaning"


def run(args: argparse.Namespace) -> None:
    out = OutputDir(args.output_dir)  # checked before any work
    cam_class = available_methods()[args.method]
    device = pick_device(args)
    torch.manual_seed(args.seed)
    if args.demo:
        if args.num_images:
            demo.explain_generated_images(args, out, cam_class, device)
        else:
            demo.explain_demo(args, out, cam_class, device)
        return
    if not args.image_path:
        raise CliError("pass --image-path IMG (or --demo for generated images)")
    images = find_images(args.image_path)
    check_model_name(args.model)
    check_weights(args.model, args.weights)
    num_classes = known_num_classes(args.model, args.weights)
    if args.target_category and num_classes is not None:
        pick_categories(args.target_category, [], num_classes)  # before the model loads
    single = len(images) == 1 and len(args.image_path) == 1
    if single and os.path.isfile(args.image_path[0]) and not glob.has_magic(args.image_path[0]):
        explain_image(args, out, cam_class, device, images[0])
    else:
        explain_dataset(args, out, cam_class, device, images)


def _model_and_layers(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any, Any]:
    model = load_model(args.model, args.weights).to(device)
    layers, reshape = None, None
    if args.method != "fullgrad":  # FullGrad uses every biased layer, not target layers
        layers, reshape = pick_target_layers(model, args.target_layer)
    if args.weights.lower() == "none" and os.environ.get("RANK", "0") == "0":
        print(RANDOM_WEIGHTS_NOTE)  # once, not once per torchrun process
    return model, layers, reshape


def explain_image(
    args: argparse.Namespace,
    out: OutputDir,
    cam_class: type,
    device: torch.device,
    image: ImageFile,
) -> None:
    """The overlay, guided backpropagation and their product for one image, at its size."""
    from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel

    try:
        rgb8 = read_rgb(image.path)
    except ValueError as error:
        detail = one_line(error.__cause__ or error)
        raise CliError(f"--image-path {str(image.path)!r}: {detail}") from error
    size = input_size(args.model, args.weights)
    model, layers, reshape = _model_and_layers(args, device)
    small = np.float32(cv2.resize(rgb8, (size, size), interpolation=cv2.INTER_LINEAR)) / 255
    input_tensor = preprocess_image(small, mean=IMAGENET_MEAN, std=IMAGENET_STD).to(device)
    try:
        with torch.no_grad():
            logits = model(input_tensor)[0]
    except (ValueError, TypeError, RuntimeError) as error:
        raise CliError(
            f"--model {args.model} failed on a {size}x{size} image: {one_line(error)}"
        ) from error
    names = class_names(args.model)
    if names is not None and len(names) != logits.numel():
        names = None
    top = int(logits.argmax())
    print(
        f"predicted class: {_describe(top, names)}, probability {float(logits.softmax(0)[top]):.3f}"
    )
    categories = pick_categories(args.target_category, [top], logits.numel())
    if args.target_category:
        print("explaining: " + ", ".join(_describe(c, names) for c in categories))

    batch = input_tensor.repeat(len(categories), 1, 1, 1)
    cam = make_cam(cam_class, model, layers, reshape, args.batch_size)
    maps = run_cam(args.method, cam, batch, categories, args)
    grads = GuidedBackpropReLUModel(model=model, device=device)(batch, target_category=categories)
    grads = grads.reshape(len(categories), *grads.shape[-3:])

    height, width = rgb8.shape[:2]
    rgb = np.float32(rgb8) / 255
    for category, small_map, small_gb in zip(categories, maps, grads):
        stem = args.method if len(categories) == 1 else f"{args.method}_{category}"
        cam_map = np.clip(cv2.resize(small_map, (width, height)), 0, 1)
        gb = cv2.resize(small_gb, (width, height))
        overlay = show_cam_on_image(rgb, cam_map, use_rgb=True)
        for name, picture in (
            (f"{stem}_cam.jpg", overlay),
            (f"{stem}_gb.jpg", deprocess_image(gb)),
            (f"{stem}_cam_gb.jpg", deprocess_image(cam_map[..., None] * gb)),
        ):
            print(f"wrote {out.write_image(name, picture)}")


def explain_dataset(
    args: argparse.Namespace,
    out: OutputDir,
    cam_class: type,
    device: torch.device,
    images: list[ImageFile],
) -> None:
    """A dataset run over ``images`` with a torchvision classifier."""
    model, layers, reshape = _model_and_layers(args, device)
    with torch.no_grad():
        size = input_size(args.model, args.weights)
        num_classes = int(model(torch.zeros(1, 3, size, size, device=device)).shape[1])
    names = class_names(args.model)
    if names is not None and len(names) != num_classes:
        names = None
    if args.target_category:
        pick_categories(args.target_category, [], num_classes)  # range check, before any work
    cam = make_cam(cam_class, model, layers, reshape, args.batch_size)
    explainer = Explainer(
        method=args.method,
        model=args.model,
        weights=weights_id(args.weights),
        explain=model_explainer(model, cam, args),
        probabilities=lambda logits: logits.softmax(dim=1),
        class_names=names,
        target_layers=layer_names(model, cam.target_layers),
        size=size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    records = run_dataset(args, explainer, images, out, device, f"{args.method} on {args.model}")
    if records:
        summarise(records, out)


def weights_id(weights: str) -> str:
    """``--weights`` as the manifest records it: DEFAULT, none, or the file's absolute path."""
    if weights.lower() in ("default", "none"):
        return weights.upper() if weights.lower() == "default" else "none"
    return str(Path(weights).resolve())


def summarise(records: list[dict[str, Any]], out: OutputDir) -> None:
    records = latest_records(records)
    ok = sum(r["status"] == "ok" for r in records)
    errors = [r for r in records if r["status"] != "ok"]
    print(f"{ok} maps in {out.path} (manifest.jsonl, index.html)")
    for record in errors[:10]:
        print(f"could not explain {record['image']}: {record['error']}")


def _describe(index: int, names: list[str] | None) -> str:
    return f"{index} ({names[index]})" if names else str(index)
