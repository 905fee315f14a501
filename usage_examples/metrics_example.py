"""Compare CAM methods with faithfulness metrics: confidence change, ROAD and ARCC.

Usage::

    python usage_examples/metrics_example.py [--image-path IMG]
        [--method gradcam,gradcam++,eigencam,layercam,randomcam] [--model resnet50|demo]
        [--target-category N] [--no-pretrained] [--device auto] [--output-dir output]

A map is faithful when the pixels it highlights are the ones the model relies on. Each metric
perturbs the image according to the map and measures the target's softmax probability:

* **confidence change** (``CamMultImageConfidenceChange``): the image multiplied by the map
  (only the highlighted pixels kept), minus the original; higher is better.
* **ROAD MoRF** (``ROADMostRelevantFirst(90)``): the 10% most relevant pixels replaced by a noisy
  linear imputation of their surroundings (so that the model cannot react to the shape of the
  removed region); a faithful map makes the probability drop: lower is better.
* **ROAD LeRF** (``ROADLeastRelevantFirst(10)``): all but the 10% most relevant pixels removed;
  higher is better.
* **ROAD combined** (``ROADCombined``): (LeRF - MoRF) / 2 averaged over 20/40/60/80%; higher
  is better, and a good summary.
* **ARCC** (``metrics.arcc.ARCC``): ROAD combined with the map's
  coherency (the map of the image multiplied by its map should be the same map) and its
  complexity (simpler maps are better).

The thresholds are percentiles of the map's values. As in grad-cam, pixels tied with the
threshold count as relevant: a map that is zero on more than 100 - p percent of the image makes
``ROADMostRelevantFirst(p)`` impute every pixel. Small shares of relevant pixels avoid that.

``randomcam`` (random channel weights) and ``sobel`` (``sobel_cam``), an edge detector
that knows nothing about the model are baselines: a method should beat them.

``--model demo`` uses the bundled disc/square model on a generated image: offline, and the
numbers mean something. The default, a torchvision ResNet-50, gets its ImageNet weights
downloaded once; without them its weights are random and the comparison has no meaning.

Writes into ``--output-dir``: ``metrics.jpg`` (every map with its ROAD score) and
``road_perturbations.jpg`` (what ROAD MoRF and LeRF feed the model for the first method), one
panel per picture, ``PANEL`` pixels high with the input image's aspect ratio; prints the table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from torch import nn

from pytorch_grad_cam.demo import load_demo_model
from pytorch_grad_cam.metrics import (
    CamMultImageConfidenceChange,
    ROADCombined,
    ROADLeastRelevantFirst,
    ROADMostRelevantFirst,
)
from pytorch_grad_cam.metrics.arcc import ARCC
from pytorch_grad_cam.sobel_cam import sobel_cam
from pytorch_grad_cam.utils.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    preprocess_image,
    show_cam_on_image,
)
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from example_utils import (  # noqa: E402
    cam_methods,
    check_args,
    example_parser,
    fail,
    load_rgb,
    one_line,
    panel_size,
    resize_map,
    resized,
    save_rgb,
    titled,
    torchvision_model,
)

DEFAULT_METHODS = "gradcam,gradcam++,eigencam,layercam,randomcam"
PANEL = 192  # height of each panel of the pictures


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    methods = list(cam_methods())
    parser = example_parser(
        __doc__.splitlines()[0], methods, default_method=DEFAULT_METHODS, multiple=True
    )
    parser.add_argument(
        "--model",
        default="resnet50",
        help="'demo' (offline, trained) or a torchvision classifier such as resnet50",
    )
    parser.add_argument(
        "--target-category", type=int, metavar="N", help="class to explain (default: the top one)"
    )
    args = parser.parse_args(argv)
    check_args(args, methods, multiple=True)
    if args.model != "demo" and args.model not in torchvision.models.list_models(
        module=torchvision.models
    ):
        fail(f"unknown --model {args.model!r}; pass demo or a torchvision classifier")
    return args


def load(
    args: argparse.Namespace, image: np.ndarray
) -> tuple[nn.Module, list[nn.Module], np.ndarray, torch.Tensor]:
    """The model, its target layers, the RGB image resized to its input and the input tensor."""
    if args.model == "demo":  # takes RGB in [0, 1] of any size; trained on 64 x 64 images
        model = load_demo_model(args.device)
        rgb = resized(image, 64)
        return model, [model.target_layer], rgb, torch.from_numpy(rgb.transpose(2, 0, 1))[None]
    weights = torchvision.models.get_model_weights(args.model).DEFAULT
    model, _ = torchvision_model(
        torchvision.models.get_model_builder(args.model), weights, not args.no_pretrained
    )
    from pytorch_grad_cam.utils.find_layers import find_target_layer

    layers, _ = find_target_layer(model)
    rgb = resized(image, 224)
    return model, list(layers), rgb, preprocess_image(rgb, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def compute_maps(
    args: argparse.Namespace,
    model: nn.Module,
    layers: list[nn.Module],
    x: torch.Tensor,
    category: int,
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Map by method name, and the CAM objects (for ARCC, which recomputes maps)."""
    maps, cams = {}, {}
    for name in args.methods:
        cam = cam_methods()[name](model, layers)
        try:
            maps[name] = cam(x, targets=[ClassifierOutputTarget(category)])[0]
        except (ValueError, TypeError, RuntimeError) as error:
            fail(f"--method {name} failed on {args.model}: {one_line(error)}")
        cams[name] = cam
    return maps, cams


def sobel_map(rgb: np.ndarray) -> np.ndarray:
    """The edge baseline in [0, 1]: the image's Sobel gradient magnitude."""
    edges = np.float32(sobel_cam(cv2.cvtColor(np.uint8(255 * rgb), cv2.COLOR_RGB2BGR)))
    return edges / max(float(edges.max()), 1e-7)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the example; ``argv`` defaults to the command line. Returns the scores by method."""
    args = parse_args(argv)
    torch.manual_seed(0)  # RandomCAM's weights and ROAD's imputation noise: reproducible runs
    image = load_rgb(args.image_path)
    model, layers, rgb, x = load(args, image)
    model, x = model.to(args.device).eval(), x.to(args.device)
    with torch.no_grad():
        logits = model(x)[0]
    category = int(logits.argmax()) if args.target_category is None else args.target_category
    if not 0 <= category < len(logits):
        fail(f"--target-category {category} is out of range; the model has {len(logits)} classes")
    print(f"explaining class {category}")

    maps, cams = compute_maps(args, model, layers, x, category)
    maps["sobel"] = sobel_map(rgb)

    # Every metric scores all the maps in one batch: the image once per map.
    names = list(maps)
    batch = x.repeat(len(names), 1, 1, 1)
    stacked = np.stack([maps[n] for n in names])
    targets = [ClassifierOutputSoftmaxTarget(category)]
    metrics = {
        "confidence change": CamMultImageConfidenceChange(),
        "ROAD MoRF 90": ROADMostRelevantFirst(percentile=90),
        "ROAD LeRF 10": ROADLeastRelevantFirst(percentile=10),
        "ROAD combined": ROADCombined(percentiles=[20, 40, 60, 80]),
    }
    scores = {n: {} for n in names}
    for metric_name, metric in metrics.items():
        for n, value in zip(names, metric(batch, stacked, targets, model)):
            scores[n][metric_name] = float(value)
    for n, cam in cams.items():  # ARCC needs the CAM object: not for the sobel baseline
        value = ARCC(cam)(x, maps[n][None], targets, model)
        scores[n]["ARCC"] = float(np.asarray(value).ravel()[0])

    columns = [*metrics, "ARCC"]
    print(f"{'method':<14}" + "".join(f"{c:>19}" for c in columns))
    for n in names:
        row = "".join(f"{scores[n][c]:>19.4f}" if c in scores[n] else f"{'-':>19}" for c in columns)
        print(f"{n:<14}{row}")

    width, height = panel_size(image, PANEL)
    big = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    panels = [
        titled(
            show_cam_on_image(big, resize_map(maps[n], height, width), use_rgb=True),
            f"{n}: ROAD {scores[n]['ROAD combined']:+.3f}",
        )
        for n in names
    ]
    save_rgb(args.output_dir, "metrics.jpg", np.hstack(panels))

    # What ROAD feeds the model: the image with the most / the least relevant pixels imputed.
    first = names[0]
    pictures = [titled(np.uint8(255 * big), "image")]
    for title in ("ROAD MoRF 90", "ROAD LeRF 10"):
        metric = metrics[title]
        _, perturbed = metric(x, maps[first][None], targets, model, return_visualization=True)
        shown = perturbed[0].cpu().numpy().transpose(1, 2, 0)
        if args.model != "demo":  # undo the ImageNet normalisation
            shown = shown * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
        shown = cv2.resize(np.float32(np.clip(shown, 0, 1)), (width, height))
        pictures.append(titled(np.uint8(255 * shown), f"{first}, {title}"))
    save_rgb(args.output_dir, "road_perturbations.jpg", np.hstack(pictures))
    return scores


if __name__ == "__main__":
    main()
