"""Explain CLIP: which regions of an image match a text prompt best among several.

Usage::

    python usage_examples/clip_example.py [--image-path IMG]
        [--labels "a circle" "a square" "a dog"] [--method gradcam]
        [--model openai/clip-vit-base-patch32] [--no-pretrained] [--device auto]
        [--output-dir output]

How it works:

1. ``ImageClassifier`` wraps CLIP as a classifier over the text prompts: the prompts are encoded
   once, and the forward pass returns the image's similarity to each of them (CLIP's
   ``logits_per_image``, shape (B, number of labels)).
2. ``ClassifierOutputTarget(k)`` then explains prompt k, as for any classifier. Every prompt is
   explained in one batch (the image once per prompt, one target each).
3. The target layer is the vision transformer's last layer's ``layer_norm1``; its tokens (a
   class token and a 7 x 7 grid for ViT-B/32 at 224 pixels) become a map through
   ``vit_reshape_transform``.

Writes ``{method}_{k}_{label}.jpg`` into ``--output-dir`` per label (at the input image's own
size), and prints each label's
probability. Weights and tokenizer are downloaded once from the hub. Without them (offline and
not cached, or ``--no-pretrained``) the example builds a small CLIP from a configuration with
random weights and numbers the prompts' words itself instead of tokenizing them: the maps have
no meaning, but every step runs. Needs ``pip install transformers`` (the ``examples`` extra).
"""

from __future__ import annotations

import argparse
import re
import sys
import zlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pytorch_grad_cam.utils.image import preprocess_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from example_utils import (  # noqa: E402
    cam_methods,
    check_args,
    example_parser,
    fail,
    hub_model,
    load_rgb,
    one_line,
    overlay,
    prepare_hub,
    require,
    resized,
    save_rgb,
)

SIZE = 224
# The normalisation of CLIP's image processor.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Token ids of the small offline CLIP: padding, the words, then start and end of text.
VOCAB, PAD, BOS, EOS = 1024, 0, 1022, 1023


class ImageClassifier(nn.Module):
    """CLIP as a classifier over fixed text prompts: images -> (B, prompts) similarities."""

    def __init__(self, clip: nn.Module, text_inputs: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.clip = clip
        self.text_inputs = text_inputs

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.clip(pixel_values=pixel_values, **self.text_inputs).logits_per_image


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    methods = list(cam_methods())
    parser = example_parser(__doc__.splitlines()[0], methods, default_method="gradcam")
    parser.add_argument(
        "--labels",
        nargs="+",
        default=["a circle", "a square", "a dog"],
        help="text prompts to compare (default: 'a circle' 'a square' 'a dog')",
    )
    parser.add_argument("--model", default="openai/clip-vit-base-patch32", help="hub name")
    args = parser.parse_args(argv)
    check_args(args, methods)
    if any(not label.strip() for label in args.labels):
        fail("--labels must not be empty strings")
    return args


def small_clip() -> nn.Module:
    """A small randomly initialised CLIP (ViT-B/32's patch grid) built from a configuration."""
    transformers = require("transformers")
    layers = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    config = transformers.CLIPConfig(
        text_config={
            **layers,
            "num_attention_heads": 2,
            "vocab_size": VOCAB,
            "pad_token_id": PAD,
            "bos_token_id": BOS,
            "eos_token_id": EOS,
        },
        vision_config={**layers, "num_attention_heads": 2, "image_size": SIZE, "patch_size": 32},
        projection_dim=32,
    )
    return transformers.CLIPModel(config)


def word_ids(labels: Sequence[str]) -> dict[str, torch.Tensor]:
    """Token ids without a tokenizer: each word numbered by a hash, between start and end
    tokens, padded to one length (enough for the small random CLIP)."""
    rows = []
    for label in labels:
        words = re.findall(r"\w+", label.lower())
        rows.append([BOS, *(1 + zlib.crc32(w.encode()) % (BOS - 1) for w in words), EOS])
    length = max(map(len, rows))
    ids = torch.tensor([row + [PAD] * (length - len(row)) for row in rows])
    return {"input_ids": ids, "attention_mask": (ids != PAD).long()}


def load_clip(args: argparse.Namespace) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """CLIP and its text inputs for ``args.labels``: pretrained with the tokenizer, or small
    and random with :func:`word_ids`."""
    prepare_hub()  # before transformers is imported
    transformers = require("transformers")

    def pretrained() -> tuple[nn.Module, dict[str, torch.Tensor]]:
        clip = transformers.CLIPModel.from_pretrained(args.model)
        tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
        tokens = tokenizer(list(args.labels), padding=True, return_tensors="pt")
        return clip, {k: tokens[k] for k in ("input_ids", "attention_mask")}

    (clip, text_inputs), _ = hub_model(
        args.model,
        not args.no_pretrained,
        pretrained,
        lambda: (small_clip(), word_ids(args.labels)),
    )
    return clip, text_inputs


def main(argv: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run the example; ``argv`` defaults to the command line. Returns the map by label."""
    args = parse_args(argv)
    image = load_rgb(args.image_path)
    rgb = resized(image, SIZE)  # the model's input
    clip, text_inputs = load_clip(args)
    text_inputs = {k: v.to(args.device) for k, v in text_inputs.items()}
    model = ImageClassifier(clip, text_inputs).to(args.device).eval()
    input_tensor = preprocess_image(rgb, mean=CLIP_MEAN, std=CLIP_STD).to(args.device)

    with torch.no_grad():
        probabilities = model(input_tensor)[0].softmax(0).tolist()
    for label, probability in zip(args.labels, probabilities):
        print(f"{label}: probability {probability:.3f}")

    vision: Any = clip.vision_model
    grid = vision.config.image_size // vision.config.patch_size
    reshape = partial(vit_reshape_transform, height=grid, width=grid, num_prefix_tokens=1)
    count = len(args.labels)
    targets = [ClassifierOutputTarget(k) for k in range(count)]
    try:
        with cam_methods()[args.method](
            model, [vision.encoder.layers[-1].layer_norm1], reshape
        ) as cam:
            maps = cam(input_tensor.repeat(count, 1, 1, 1), targets=targets)
    except (ValueError, TypeError, RuntimeError) as error:
        fail(f"--method {args.method} failed on {args.model}: {one_line(error)}")

    result = {}
    for k, (label, grayscale_cam) in enumerate(zip(args.labels, maps)):
        slug = re.sub(r"\W+", "_", label.strip().lower()).strip("_")[:40] or "label"
        save_rgb(args.output_dir, f"{args.method}_{k}_{slug}.jpg", overlay(image, grayscale_cam))
        result[label] = grayscale_cam
    return result


if __name__ == "__main__":
    main()
