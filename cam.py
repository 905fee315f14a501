"""Explain a classifier's predictions with a CAM method: ``python cam.py --help``.

The same program as the ``grad-cam`` command and ``python -m pytorch_grad_cam`` (see
``pytorch_grad_cam.cli``), kept here with every flag it has always had.
"""

import sys

from pytorch_grad_cam.cli import main

if __name__ == "__main__":
    sys.exit(main())
