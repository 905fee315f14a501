"""Writing under ``--output-dir``: checked before any work, atomic, never outside it."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from pytorch_grad_cam.cli.args import CliError


class OutputDir:
    """The output directory of a run.

    Creating it checks, before any computation, that it can be written: the path (or its
    nearest existing ancestor) must be a writable directory. Files are written atomically
    (a temporary file in the same directory, then a rename), and a path whose real location
    (after symlinks) is outside the directory is refused.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        probe = self.path
        while not probe.exists() and not probe.is_symlink():
            if probe.parent == probe:
                break
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            what = "" if probe == self.path else f" ({probe} is a file)"
            raise CliError(f"--output-dir {str(self.path)!r} is not a directory{what}")
        self._try_writing()

    def _try_writing(self) -> None:
        """Create the directory and a file in it, then remove what was created: permissions
        (``os.access`` says yes to root), read-only file systems and /proc all fail here.

        Under ``torchrun`` the ranks probe at once: directories are created if missing and
        left for the run, so that one rank never removes a directory another is probing.
        """
        missing = []
        directory = self.path
        while not directory.exists() and not directory.is_symlink():
            missing.append(directory)
            directory = directory.parent
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            os.unlink(_new_file(self.path / ".grad-cam-probe", b""))
        except OSError as error:
            reason = error.strerror or str(error)
            raise CliError(
                f"--output-dir {str(self.path)!r} cannot be written: {reason}"
            ) from error
        finally:
            if int(os.environ.get("WORLD_SIZE", 1)) == 1:
                for directory in missing:  # (deepest first)
                    with contextlib.suppress(OSError):
                        directory.rmdir()

    def create(self) -> Path:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CliError(f"--output-dir {str(self.path)!r}: {error.strerror}") from error
        self.root = self.path.resolve()
        return self.path

    def target(self, relative: str) -> Path:
        """The path of ``relative`` inside the directory (parents created), checked to stay
        inside it."""
        self.create()
        target = self.path / relative
        parent = existing = target.parent
        while not existing.exists():  # checked before anything is created under it
            existing = existing.parent
        self._check_inside(existing, target)
        parent.mkdir(parents=True, exist_ok=True)
        self._check_inside(parent, target)
        return target

    def check_inside(self, *relatives: str) -> None:
        """Refuse now, before any work, folders under the directory (e.g. a symlinked
        ``overlays/``) whose real location is outside it; writes check again."""
        self.create()
        for relative in relatives:
            target = existing = self.path / relative
            while not existing.exists() and existing != self.path:
                existing = existing.parent
            self._check_inside(existing, target)

    def _check_inside(self, directory: Path, target: Path) -> None:
        real = directory.resolve()
        if real != self.root and self.root not in real.parents:
            raise CliError(f"refusing to write {target}: it resolves outside --output-dir")

    def write_bytes(self, relative: str, data: bytes) -> Path:
        """Write ``data`` to ``relative`` atomically; a symlink there is replaced, not
        followed."""
        target = self.target(relative)
        tmp = _new_file(target.parent / f".{target.name}", data)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
        return target

    def write_text(self, relative: str, text: str) -> Path:
        return self.write_bytes(relative, text.encode("utf-8"))

    def write_image(self, relative: str, rgb: np.ndarray) -> Path:
        """Write an RGB uint8 image (JPEG or PNG, by the name's suffix) atomically."""
        ok, data = cv2.imencode(Path(relative).suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise CliError(f"could not encode {relative}")
        return self.write_bytes(relative, data.tobytes())


def _new_file(prefix: Path, data: bytes) -> Path:
    """A new file ``<prefix>.<random>.tmp`` holding ``data`` (flushed to disk), created with
    the mode ``open()`` gives (0666 less the umask), never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    path = prefix.with_name(f"{prefix.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(path, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(path)
        raise
    return path


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as a uint8 RGB array (H, W, 3), EXIF orientation applied.

    Raises:
        ValueError: the file cannot be read as an image, or is truncated or corrupt.
    """
    try:
        with Image.open(path) as image:
            image.load()  # a truncated file raises here instead of decoding half grey
            oriented = ImageOps.exif_transpose(image)
            return np.asarray(oriented.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read {path} as an image: {error}") from error
