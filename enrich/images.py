"""Safe image loading for captioning: every file becomes an RGB image or a reason.

A catalogue of millions of user-uploaded images always holds some that are
missing, empty, truncated, not images at all, or crafted to explode when decoded.
The captioner must survive all of them, so :func:`load_rgb` never raises for a
bad file: it returns an :class:`ImageLoad` whose ``error`` says what was wrong,
and the caller records that reason (``enrich/caption_errors.parquet``).

Images that *are* valid but unusual are normalised to what BLIP expects (8-bit
RGB, upright): CMYK and palette images are converted, transparent pixels are
composited onto white (not black, which would turn a cut-out product photo into a
silhouette), 16-bit greyscale is scaled down rather than clipped, EXIF
orientation is applied, and an animation contributes its first frame.

:func:`sha256_file` keys images by content, so an image shared by several pins
or products is captioned once.

Both read only regular files of at most ``max_bytes`` (:func:`open_image_file`): a path that
is a FIFO would block forever, a symlink to ``/dev/zero`` would never end, and a multi-gigabyte
file is not a catalogue image; each becomes an error row instead.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from omnisearchsage.validate import not_regular

#: Background that transparent pixels are composited onto.
_BACKGROUND = (255, 255, 255)
#: 16-bit and 32-bit integer greyscale modes; their values span 0..65535 in practice (PNG 16-bit).
_WIDE_INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_UINT16_TO_UINT8 = 255.0 / 65535.0


class ImageLoad(NamedTuple):
    """The outcome of loading one file: ``image`` (RGB) when ``error`` is None."""

    image: Image.Image | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


class UnreadableImage(OSError):
    """A path that is not a regular file, or one larger than the read limit; ``str()`` says which."""


def open_image_file(path: str | os.PathLike[str], max_bytes: int) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file of at most ``max_bytes``.

    Opened non-blocking and checked on the open descriptor, so a FIFO never blocks the open
    and a path swapped between a check and the read cannot slip through. Raises
    :class:`FileNotFoundError` or :class:`UnreadableImage`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except IsADirectoryError:
        raise UnreadableImage("not a regular file (a directory)") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableImage(not_regular(Path(path)) or "not a regular file")
        if info.st_size > max_bytes:
            raise UnreadableImage(f"too large: {info.st_size} bytes, the limit is {max_bytes}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_file(path: str | os.PathLike[str], max_bytes: int) -> str:
    """Hex SHA-256 of a regular file's bytes (streamed, so large files cost no memory)."""
    with open_image_file(path, max_bytes) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_rgb(path: str | os.PathLike[str], max_pixels: int, draft_size: int | None = None,
             max_bytes: int = 64 * 2**20) -> ImageLoad:
    """Decode ``path`` into an upright 8-bit RGB image, or say why it cannot be.

    ``max_pixels`` guards against decompression bombs: the pixel count is read
    from the header *before* decoding, so a tiny file that declares a huge canvas
    is rejected without allocating it (Pillow's own global limit is left alone,
    because changing it would affect every other user of Pillow in the process).
    ``draft_size`` lets JPEG decode at a reduced scale (DCT scaling) when the
    model only needs a small image, which makes decoding large photos several
    times cheaper; the result is never smaller than ``draft_size`` on either side.
    Only a regular file of at most ``max_bytes`` is read (see :func:`open_image_file`).
    """
    path = Path(path)
    try:
        with open_image_file(path, max_bytes) as f:
            if os.fstat(f.fileno()).st_size == 0:
                return ImageLoad(None, "empty file (0 bytes)")
            return _decode(f, max_pixels, draft_size)
    except FileNotFoundError:
        return ImageLoad(None, "missing file")
    except UnreadableImage as e:
        return ImageLoad(None, f"unreadable file: {e}")
    except OSError as e:  # no permission, an I/O error
        return ImageLoad(None, f"unreadable file: {type(e).__name__}: {e.strerror or e}")


def _decode(f: BinaryIO, max_pixels: int, draft_size: int | None) -> ImageLoad:
    """Decode an open image file (see :func:`load_rgb`)."""
    try:
        with Image.open(f) as im:
            width, height = im.size
            if width * height > max_pixels:
                return ImageLoad(
                    None, f"decompression bomb guard: {width}x{height} pixels exceeds {max_pixels}"
                )
            if draft_size is not None and im.format == "JPEG":
                im.draft("RGB", (draft_size, draft_size))
            # Frame 0 is current after open, so an animation contributes its first frame.
            im.load()
            return ImageLoad(_to_rgb(ImageOps.exif_transpose(im)), None)
    except UnidentifiedImageError:
        return ImageLoad(None, "not an image (unrecognised format)")
    except Image.DecompressionBombError as e:
        return ImageLoad(None, f"decompression bomb guard: {e}")
    except Exception as e:  # noqa: BLE001 - one bad file must never stop a run
        # Pillow reports truncated or corrupt data as OSError ("image file is
        # truncated"), SyntaxError (bad header fields), ValueError or EOFError, and its
        # decoders raise struct.error, IndexError and others on crafted files.
        return ImageLoad(None, f"corrupt image: {type(e).__name__}: {e}")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (see the module docstring for the rules)."""
    if im.mode in _WIDE_INT_MODES:
        scaled = np.asarray(im, dtype=np.float32) * _UINT16_TO_UINT8
        im = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")
