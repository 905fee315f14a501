"""The ``grad-cam`` command (also ``python -m pytorch_grad_cam`` and ``python cam.py``).

Arguments are parsed before torch is imported, so ``--help`` and argument errors are
instant; ``grad-cam --help`` lists the options, what is written where, and examples.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pytorch_grad_cam.cli.args import CliError, parse_args

__all__ = ["CliError", "main", "parse_args"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user error, on one line; 130
    after Ctrl-C)."""
    try:
        args = parse_args(argv)
    except SystemExit as exit:  # --help, or an argument error (already printed)
        return int(exit.code or 0)
    try:
        from pytorch_grad_cam.cli.runner import run

        run(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # every file written so far is whole: a rerun resumes
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
