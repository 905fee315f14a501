"""Explain an embedding: which regions of an image make it similar to a concept's embedding.

Usage::

    python usage_examples/embeddings_example.py [--image-path IMG]
        [--concept-path IMG --concept-path IMG ...] [--method gradcam] [--model resnet50]
        [--no-pretrained] [--device auto] [--output-dir output]

How it works:

1. The model is a ResNet without its classification layer (``fc`` replaced by an identity):
   it maps an image to an embedding, the 2048 pooled features of ResNet-50.
2. Each concept image (``--concept-path``, repeatable) gives a concept embedding. Without
   concept images, the concepts are two generated pictures: one holding only a disc, one
   holding only a square.
3. The target ``SimilarityToConceptTarget(concept)`` is the cosine similarity between the
   image's embedding and the concept's. One batch explains the image once per concept, with one
   target per copy of the image.

Writes into ``--output-dir``: ``{method}_{concept}.jpg`` per concept (named after the concept
file, or ``circle`` and ``square``), at the image's own size, and prints each similarity.
ImageNet weights are downloaded once; without them the model has random weights and the maps
have no meaning (a note says so).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from pytorch_grad_cam.demo.shapes import make_shapes_image
from pytorch_grad_cam.utils.image import IMAGENET_MEAN, IMAGENET_STD, preprocess_image
from pytorch_grad_cam.utils.model_targets import SimilarityToConceptTarget

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from example_utils import (  # noqa: E402
    cam_methods,
    check_args,
    example_parser,
    fail,
    load_rgb,
    one_line,
    overlay,
    resized,
    save_rgb,
    torchvision_model,
)

MODELS = ("resnet50", "resnet18", "resnet34", "resnet101", "resnet152")
SIZE = 224


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    methods = list(cam_methods())
    parser = example_parser(__doc__.splitlines()[0], methods, default_method="gradcam")
    parser.add_argument(
        "--concept-path", action="append", metavar="IMG", help="concept image (repeatable)"
    )
    parser.add_argument("--model", default=MODELS[0], choices=MODELS, help="torchvision ResNet")
    args = parser.parse_args(argv)
    check_args(args, methods)
    return args


def concepts(paths: list[str] | None) -> dict[str, np.ndarray]:
    """Concept name -> RGB image: the files given, else a generated disc and square."""
    if paths:
        return {Path(p).stem: load_rgb(p, SIZE) for p in paths}
    rng = np.random.default_rng(1)
    return {
        "circle": make_shapes_image(rng, classes=(0,), size=SIZE)[0],
        "square": make_shapes_image(rng, classes=(1,), size=SIZE)[0],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run the example; ``argv`` defaults to the command line. Returns the map by concept."""
    args = parse_args(argv)
    image = load_rgb(args.image_path)
    rgb = resized(image, SIZE)  # the model's input
    concept_images = concepts(args.concept_path)
    weights = torchvision.models.get_model_weights(args.model).DEFAULT
    model, _ = torchvision_model(
        torchvision.models.get_model_builder(args.model), weights, not args.no_pretrained
    )
    model.fc = nn.Identity()  # the pooled features are the embedding
    model = model.to(args.device).eval()

    def preprocess(image: np.ndarray) -> torch.Tensor:
        return preprocess_image(image, mean=IMAGENET_MEAN, std=IMAGENET_STD).to(args.device)

    with torch.no_grad():
        embeddings = {name: model(preprocess(img))[0] for name, img in concept_images.items()}

    # One copy of the image per concept, each with its own target.
    input_tensor = preprocess(rgb).repeat(len(embeddings), 1, 1, 1)
    targets = [SimilarityToConceptTarget(embedding) for embedding in embeddings.values()]
    try:
        with cam_methods()[args.method](model, [model.layer4[-1]]) as cam:
            maps = cam(input_tensor, targets=targets)
            similarities = [float(t(out)) for t, out in zip(targets, cam.outputs)]
    except (ValueError, TypeError, RuntimeError) as error:
        fail(f"--method {args.method} failed on {args.model}: {one_line(error)}")

    result = {}
    for name, grayscale_cam, similarity in zip(embeddings, maps, similarities):
        print(f"similarity to {name}: {similarity:.3f}")
        save_rgb(args.output_dir, f"{args.method}_{name}.jpg", overlay(image, grayscale_cam))
        result[name] = grayscale_cam
    return result


if __name__ == "__main__":
    main()
