"""Images in chat messages: fetch (data URL or allowed local file), check
size, decode with PIL, and hash the pixels for the prefix cache.

Remote http(s) URLs are refused: the server never reaches the network on
a client's behalf.  Local paths are accepted only under the directory the
operator allowed (`--allowed-local-media-path`), so a client cannot make
the server read arbitrary files.  Every failure is an `APIError` naming
the message part.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import invalid

MAX_IMAGE_PIXELS = 64 * 1024 * 1024   # decompression-bomb guard, beyond any VLM's input


@dataclass(frozen=True)
class LoadedImage:
    """A decoded RGB image and the hash of its pixels (equal pixels, equal
    hash, whatever the file format)."""

    image: object   # PIL.Image.Image
    content_hash: str

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    allowed_local_path: str | None = None

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {self.max_bytes}")


def _data_url_bytes(url: str, limits: ImageLimits, param: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise invalid("image data URL must look like data:image/<type>;base64,<data>", param)
    if len(payload) * 3 // 4 > limits.max_bytes:
        raise invalid(f"image is larger than the limit of {limits.max_bytes} bytes", param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("image data URL holds invalid base64", param) from None


def _local_bytes(url: str, limits: ImageLimits, param: str) -> bytes:
    if limits.allowed_local_path is None:
        raise invalid("local image paths are disabled on this server (start it with "
                      "--allowed-local-media-path DIR)", param)
    raw = unquote(urlparse(url).path) if url.startswith("file:") else url
    path = Path(raw).resolve()
    root = Path(limits.allowed_local_path).resolve()
    if not path.is_relative_to(root):
        raise invalid(f"image path must lie under {root}", param)
    if not path.is_file():
        raise invalid("image file does not exist", param)
    if path.stat().st_size > limits.max_bytes:
        raise invalid(f"image is larger than the limit of {limits.max_bytes} bytes", param)
    return path.read_bytes()


def load_image(url: str, limits: ImageLimits, param: str) -> LoadedImage:
    """Fetch and decode one `image_url`.  Raises APIError (400) naming
    `param` when the URL kind is refused, the image is too large, or it
    does not decode."""
    from PIL import Image

    if url.startswith("data:"):
        data = _data_url_bytes(url, limits, param)
    elif url.startswith(("http://", "https://")):
        raise invalid("remote image URLs are not fetched; send a data: URL or a local file path", param)
    elif url.startswith("file:") or url.startswith("/"):
        data = _local_bytes(url, limits, param)
    else:
        raise invalid("image_url.url must be a data: URL or an absolute local file path", param)
    if len(data) > limits.max_bytes:
        raise invalid(f"image is larger than the limit of {limits.max_bytes} bytes", param)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.width * probe.height > MAX_IMAGE_PIXELS:
                raise invalid(f"image has {probe.width}x{probe.height} pixels, more than "
                              f"{MAX_IMAGE_PIXELS}", param)
            probe.verify()   # catches truncated and corrupt files without decoding twice in memory
        image = Image.open(io.BytesIO(data)).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise invalid("image could not be decoded", param) from None
    digest = hashlib.sha256(f"{image.width}x{image.height}:".encode() + image.tobytes()).hexdigest()
    return LoadedImage(image, digest)
