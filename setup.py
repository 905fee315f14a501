"""Packaging for pytorch_grad_cam (distribution name ``grad-cam``)."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

setup(
    name="grad-cam",
    version="0.1.0",
    description="Class Activation Map methods (Grad-CAM and friends) for PyTorch vision models",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["pytorch_grad_cam", "pytorch_grad_cam.*"]),
    package_data={"pytorch_grad_cam": ["py.typed", "demo/*.pt"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=1.13",
        "torchvision>=0.13",
        "numpy",
        "opencv-python-headless",
        "ttach",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest", "timm"],
        "dev": ["pytest", "timm", "ruff"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
