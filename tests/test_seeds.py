"""The Python snippets of the seed documents (original README, GradCAM tutorial), run as written.

Only what needs the network is replaced: pretrained weights -> random weights, downloaded
images -> a synthetic image, the ImageNet label file -> a tiny dict, ``args`` -> a namespace,
and ``plt`` -> a recording stub when matplotlib is not installed. Inputs are kept small.
"""

import collections
import io
import types
import warnings

import cv2
import numpy as np
import pytest
import torch
from conftest import synthetic_image
from PIL import Image
from torch import nn

from pytorch_grad_cam.utils.image import preprocess_image

timm = pytest.importorskip("timm")


def test_readme_library_snippet():
    rgb_img = synthetic_image(64, 64)
    args = types.SimpleNamespace(use_cuda=False)
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # ---- README "Using from code as a library" ----
        from torchvision.models import resnet50

        from pytorch_grad_cam import (  # noqa: F401
            AblationCAM,
            EigenCAM,
            GradCAM,
            GradCAMPlusPlus,
            ScoreCAM,
            XGradCAM,
        )
        from pytorch_grad_cam.utils.image import show_cam_on_image

        model = resnet50(pretrained=False)  # README: pretrained=True
        target_layer = model.layer4[-1]
        input_tensor = preprocess_image(rgb_img)  # "Create an input tensor image for your model"
        # Note: input_tensor can be a batch tensor with several images!

        # Construct the CAM object once, and then re-use it on many images:
        cam = GradCAM(model=model, target_layer=target_layer, use_cuda=args.use_cuda)

        # If target_category is None, the highest scoring category
        # will be used for every image in the batch.
        # target_category can also be an integer, or a list of different integers
        # for every image in the batch.
        target_category = 281

        # You can also pass aug_smooth=True and eigen_smooth=True, to apply smoothing.
        grayscale_cam = cam(input_tensor=input_tensor, target_category=target_category)

        # In this example grayscale_cam has only one image in the batch:
        grayscale_cam = grayscale_cam[0, :]
        visualization = show_cam_on_image(rgb_img, grayscale_cam)
        # ---- end of snippet ----
    deprecated = {str(w.message).split("=")[0] for w in caught if w.category is DeprecationWarning}
    assert {"target_layer", "use_cuda", "target_category"} <= deprecated
    assert grayscale_cam.shape == (64, 64) and grayscale_cam.max() > 0.99
    assert visualization.shape == (64, 64, 3) and visualization.dtype == np.uint8
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model, [model.layer4[-1]]) as new_style:
        expected = new_style(input_tensor, [ClassifierOutputTarget(281)])[0]
    np.testing.assert_allclose(grayscale_cam, expected, atol=1e-6)
    # The smoothing flags the README mentions:
    smooth = cam(input_tensor=input_tensor, targets=None, aug_smooth=True, eigen_smooth=True)
    assert smooth.shape == (1, 64, 64) and smooth.max() > 0
    cam.release()


def test_readme_vit_reshape_transform():
    from pytorch_grad_cam import GradCAM

    # ---- README "How does it work with Vision Transformers" ----
    def reshape_transform(tensor, height=14, width=14):
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))

        # Bring the channels to the first dimension,
        # like in CNNs.
        result = result.transpose(2, 3).transpose(1, 2)
        return result

    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    target_layer = model.blocks[-1].norm1
    with pytest.warns(DeprecationWarning, match="target_layer"):
        cam = GradCAM(model=model, target_layer=target_layer, reshape_transform=reshape_transform)
    # ---- end of snippet ----
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    got = cam(x)
    assert got.shape == (1, 224, 224) and got.dtype == np.float32 and got.max() > 0.99
    assert cam.activations_and_grads.activations[0].shape == (1, 192, 14, 14)
    cam.release()


class OldSwinLike(nn.Module):
    """The 2021 timm Swin layout the README's transform is written for: the last stage's
    blocks see (B, 49, C) tokens (current timm blocks see (B, H, W, C), see test_models.py)."""

    def __init__(self, channels: int = 32, classes: int = 10):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, channels, 32, stride=32)  # 224 -> 7x7 tokens
        block = nn.Module()
        block.norm1 = nn.LayerNorm(channels)
        block.mlp = nn.Linear(channels, channels)
        stage = nn.Module()
        stage.blocks = nn.ModuleList([block])
        self.layers = nn.ModuleList([stage])
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        block = self.layers[-1].blocks[-1]
        tokens = tokens + block.mlp(block.norm1(tokens)).relu()
        return self.head(tokens.mean(dim=1))


def test_readme_swin_reshape_transform():
    from pytorch_grad_cam import GradCAM

    # ---- README "How does it work with Swin Transformers" ----
    def reshape_transform(tensor, height=7, width=7):
        result = tensor.reshape(tensor.size(0), height, width, tensor.size(2))

        # Bring the channels to the first dimension,
        # like in CNNs.
        result = result.transpose(2, 3).transpose(1, 2)
        return result

    torch.manual_seed(0)
    model = OldSwinLike().eval()
    target_layer = model.layers[-1].blocks[-1].norm1
    with pytest.warns(DeprecationWarning, match="target_layer"):
        cam = GradCAM(model=model, target_layer=target_layer, reshape_transform=reshape_transform)
    # ---- end of snippet ----
    got = cam(torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert got.shape == (2, 224, 224) and np.all(got.max(axis=(1, 2)) > 0.99)
    cam.release()


# ---- tutorial: stand-ins for the downloads ----
def _png_bytes() -> bytes:  # instead of requests.get(".../examples/both.png").raw
    buffer = io.BytesIO()
    Image.fromarray(np.uint8(synthetic_image(64, 64) * 255)).save(buffer, format="PNG")
    return buffer.getvalue()


# instead of eval(requests.get(imagenet_categories_url).text); unknown ids -> "other"
LABELS_TEXT = (
    "{157: 'Siberian husky', 162: 'beagle', 245: 'French bulldog', 281: 'tabby, tabby cat', "
    "285: 'Egyptian cat', 360: 'otter', 537: 'dogsled, dog sled, dog sleigh', "
    "799: 'sliding door', 918: 'crossword puzzle, crossword'}"
)
labels = collections.defaultdict(lambda: "other", eval(LABELS_TEXT))


class _RecordingPlt:
    """matplotlib.pyplot stand-in (matplotlib is not a dependency)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


plt = _RecordingPlt()


# ---- tutorial: viz_gradcam, as written ----
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


def viz_gradcam(model, target_layers, class_id, input_tensor, rgb_image):
    """
    Visualize Grad-CAM heatmaps for a given model and target class.

    Parameters:
    1. model (torch.nn.Module): The neural network model.
    2. target_layers (list): List of layers to compute Grad-CAM for (usually the last
       convolutional layer).
    3. class_id (int or None): Target class ID for which Grad-CAM is computed. If None, the
       model's prediction is used.
    4. input_tensor (torch.Tensor): The input image tensor expected by the model.
    5. rgb_image (numpy.ndarray): The original input image in RGB format, scaled to [0, 1].

    Returns:
    None. Displays a Grad-CAM heatmap over the input image.
    """

    # Step 1: Get predicted class if class_id is not specified
    if class_id is None:
        with torch.no_grad():  # Disable gradient computation for efficiency
            outputs = model(input_tensor)  # Run the input image through the model
            # torch.argmax finds the index of the maximum value in the output tensor.
            # dim=1 indicates we are finding the maximum value **along the class dimension**
            # (assuming the shape of outputs is [batch_size, num_classes]).
            predicted_class = torch.argmax(outputs, dim=1).item()  # Extract the top class index.
            # .item() converts the PyTorch scalar tensor to a Python integer.
            # This is necessary for further operations like accessing the class label.

        print(f"Predicted Class: {labels[predicted_class]} ({predicted_class})")
        # Define the target for Grad-CAM visualization.
        # ClassifierOutputTarget wraps the target class for Grad-CAM to calculate activations.
        targets = [ClassifierOutputTarget(predicted_class)]
    else:
        # If a specific class_id is provided, use it directly.
        print(f"Target Class: {labels[class_id]} ({class_id})")
        targets = [ClassifierOutputTarget(class_id)]

    # Step 2: Select the Grad-CAM algorithm.
    # Here, we use GradCAM, but this can be swapped for other algorithms like GradCAM++.
    cam_algorithm = GradCAM

    # Step 3: Initialize the Grad-CAM object.
    # This links the model and the target layers where Grad-CAM will compute the gradients.
    cam = cam_algorithm(model=model, target_layers=target_layers)

    # Step 4: Generate the Grad-CAM heatmap.
    # - input_tensor: The input image tensor (preprocessed as required by the model).
    # - targets: The target class for which we compute Grad-CAM.
    grayscale_cam = cam(input_tensor=input_tensor, targets=targets)

    # Step 5: Extract the heatmap corresponding to the first input image.
    # The result is [batch_size, height, width], so we select the first image.
    grayscale_cam = grayscale_cam[0, :]

    # Step 6: Overlay the Grad-CAM heatmap on the original input image.
    # - show_cam_on_image: Combines the heatmap with the RGB image (values must be in [0, 1]).
    cam_image = show_cam_on_image(rgb_image, grayscale_cam, use_rgb=True)

    # Step 7: Convert the image from RGB to BGR (OpenCV's default format).
    cam_image = cv2.cvtColor(cam_image, cv2.COLOR_RGB2BGR)

    # Step 8: Display the Grad-CAM heatmap overlaid on the input image.
    plt.imshow(cam_image)  # Show the image with the heatmap.
    plt.axis("off")  # Remove axes for cleaner visualization.
    plt.show()  # Display the plot.


@pytest.fixture(scope="module")
def tutorial_setup():
    from torchvision.models import resnet50

    torch.manual_seed(0)
    model = resnet50(weights=None).eval()
    image = Image.open(io.BytesIO(_png_bytes())).convert("RGB")
    rgb_image = np.float32(image) / 255
    input_tensor = preprocess_image(rgb_image)
    target_layers = [model.layer4]  # "the last layer before the final classification layer"
    return model, target_layers, input_tensor, rgb_image


@pytest.mark.parametrize("class_id", [None, 245, 281, 799, 918, 537])
def test_tutorial_viz_gradcam(tutorial_setup, class_id, capsys):
    model, target_layers, input_tensor, rgb_image = tutorial_setup
    plt.calls.clear()
    viz_gradcam(
        model=model,
        target_layers=target_layers,
        class_id=class_id,
        input_tensor=input_tensor,
        rgb_image=rgb_image,
    )
    printed = capsys.readouterr().out
    shown_class = class_id if class_id is not None else int(model(input_tensor).argmax())
    prefix = "Predicted Class" if class_id is None else "Target Class"
    assert printed.strip() == f"{prefix}: {labels[shown_class]} ({shown_class})"
    assert [name for name, _, _ in plt.calls] == ["imshow", "axis", "show"]
    shown = plt.calls[0][1][0]
    assert shown.shape == (64, 64, 3) and shown.dtype == np.uint8
    assert not any(m._forward_hooks for m in model.modules()), "the tutorial's cam was dropped"
    cam = GradCAM(model, target_layers)(input_tensor, [ClassifierOutputTarget(shown_class)])
    expected = cv2.cvtColor(show_cam_on_image(rgb_image, cam[0], use_rgb=True), cv2.COLOR_RGB2BGR)
    np.testing.assert_array_equal(shown, expected)
