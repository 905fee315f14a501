"""Deep Feature Factorization: split an image into the concepts a CNN sees, and name them.

Usage::

    python usage_examples/dff_example.py [--image-path IMG] [--model resnet50]
        [--n-components 5] [--top-k 2] [--no-pretrained] [--device auto] [--output-dir output]

How it works (Collins et al., ECCV 2018):

1. The activations of the last block (``layer4``, C channels at every position) are factorised
   into ``--n-components`` non-negative parts: each part is a concept, a C-vector of channel
   weights, with a map of where in the image it is present.
2. ``computation_on_concepts=model.fc`` runs the classifier on each concept vector, so every
   concept gets class scores: ``create_labels_legend`` names it after its ``--top-k`` classes.
3. ``show_factorization_on_image`` paints each concept's region in its own colour, with the
   legend beside the image.

Unlike a CAM, this explains no particular class: it shows how the model divides the image.

Writes ``dff.jpg`` (the image at its own size, then the legend) into ``--output-dir`` and
prints the concepts. ImageNet weights are
downloaded once; without them the model has random weights and the concepts have no meaning.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision

from pytorch_grad_cam.feature_factorization.deep_feature_factorization import (
    DeepFeatureFactorization,
)
from pytorch_grad_cam.utils.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    create_labels_legend,
    preprocess_image,
    show_factorization_on_image,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from example_utils import (  # noqa: E402
    check_args,
    example_parser,
    fail,
    load_rgb,
    one_line,
    resize_map,
    resized,
    save_rgb,
    torchvision_model,
)

MODELS = ("resnet50", "resnet18", "resnet34", "resnet101", "resnet152")
SIZE = 224


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = example_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODELS[0], choices=MODELS, help="torchvision ResNet")
    parser.add_argument("--n-components", type=int, default=5, help="number of concepts")
    parser.add_argument("--top-k", type=int, default=2, help="class names shown per concept")
    args = parser.parse_args(argv)
    check_args(args)
    if args.n_components < 1 or args.top_k < 1:
        fail("--n-components and --top-k must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> np.ndarray:
    """Run the example; ``argv`` defaults to the command line. Returns the (K, H, W) maps."""
    args = parse_args(argv)
    image = load_rgb(args.image_path)
    rgb = resized(image, SIZE)  # the model's input
    weights = torchvision.models.get_model_weights(args.model).DEFAULT
    labels = dict(enumerate(weights.meta["categories"]))  # ImageNet names, without a download
    model, _ = torchvision_model(
        torchvision.models.get_model_builder(args.model), weights, not args.no_pretrained
    )
    model = model.to(args.device).eval()
    input_tensor = preprocess_image(rgb, mean=IMAGENET_MEAN, std=IMAGENET_STD).to(args.device)

    dff = DeepFeatureFactorization(
        model=model, target_layer=model.layer4, computation_on_concepts=model.fc
    )
    try:
        _, batch_explanations, concept_scores = dff(input_tensor, args.n_components)
    except (ValueError, TypeError, RuntimeError) as error:
        fail(f"Deep Feature Factorization failed on {args.model}: {one_line(error)}")
    # The classifier's logits per concept, as probabilities.
    probabilities = torch.softmax(torch.as_tensor(np.asarray(concept_scores)), dim=-1).numpy()
    legend = create_labels_legend(probabilities, labels=labels, top_k=args.top_k)
    for k, text in enumerate(legend):
        print(f"concept {k}: {' | '.join(text.splitlines())}")

    explanations = np.asarray(batch_explanations[0])  # (K, H, W) for the one image
    at_image_size = np.stack([resize_map(e, *image.shape[:2]) for e in explanations])
    picture = show_factorization_on_image(
        image, at_image_size, image_weight=0.3, concept_labels=legend
    )
    save_rgb(args.output_dir, "dff.jpg", picture)
    return explanations


if __name__ == "__main__":
    main()
