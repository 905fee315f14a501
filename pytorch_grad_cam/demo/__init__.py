"""An offline demo: synthetic disc/square images and a tiny CNN trained on them.

Reproduces the classic "dog versus cat" Grad-CAM experiment in seconds without downloads::

    import numpy as np
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.demo import load_demo_model, make_shapes_batch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = load_demo_model()
    images, labels, masks = make_shapes_batch(np.random.default_rng(0), 4, classes=(0, 1))
    with GradCAM(model=model, target_layers=[model.target_layer]) as cam:
        circle_maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(0)])
"""

from pytorch_grad_cam.demo.model import WEIGHTS_PATH, DemoCNN, load_demo_model
from pytorch_grad_cam.demo.shapes import DEMO_CLASSES, make_shapes_batch, make_shapes_image

__all__ = [
    "DEMO_CLASSES",
    "WEIGHTS_PATH",
    "DemoCNN",
    "load_demo_model",
    "make_shapes_batch",
    "make_shapes_image",
]
