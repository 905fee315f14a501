"""``python -m pytorch_grad_cam``: the ``grad-cam`` command."""

import sys

from pytorch_grad_cam.cli import main

if __name__ == "__main__":
    sys.exit(main())
