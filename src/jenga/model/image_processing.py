"""Image inputs for the vision-language families: load, resize, normalise.

`load_image` turns what a user passes (a file path, a PIL image, a tensor or
a numpy array) into an 8-bit RGB PIL image, or raises ValueError naming the
input.  The two preprocessors reproduce transformers' PIL image processors,
step for step, with no download:

- `clip_pixels` (LLaVA's CLIPImageProcessor): resize the shortest edge
  (bicubic), centre-crop, scale by 1/255, normalise -> [3, S, S];
- `mllama_pixels` (MllamaImageProcessor): pick the tile canvas that needs
  the least scaling, resize to fit it keeping the aspect ratio (bilinear),
  pad with black, scale, normalise, cut into tiles, pad to max_num_tiles
  with zero tiles -> [max_tiles, 3, S, S], aspect-ratio id and tile count.

Sizes, means and stds come from a model folder's preprocessor_config.json
when it has one, else from the model config and transformers' defaults
(`processor_settings`).  `pixel_hash` names the pixels the encoder sees, so
equal images share prefix-cache pages whatever file they came from.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
MAX_IMAGE_PIXELS = 64 * 1024 * 1024   # decompression-bomb guard, beyond any VLM's input


@dataclass(frozen=True)
class ProcessorSettings:
    """What a model's image processor does.  size: shortest edge (CLIP) or
    tile side (mllama); crop: centre-crop side (CLIP); max_tiles: mllama's
    tile budget; rescale: factor applied to 8-bit values."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: int = 0
    max_tiles: int = 1
    rescale: float = 1 / 255

    def __post_init__(self) -> None:
        if self.size <= 0 or self.max_tiles <= 0 or self.crop < 0:
            raise ValueError(f"image processor size={self.size}, crop={self.crop}, max_tiles={self.max_tiles}: "
                             "must be positive")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"image processor mean={self.mean} / std={self.std} must be 3 values, std > 0")


def _edge(value, default: int) -> int:
    if isinstance(value, dict):
        return int(value.get("shortest_edge") or value.get("height") or default)
    return int(value) if value else default


def processor_settings(kind: str, vision_cfg: dict, pre: dict | None = None) -> ProcessorSettings:
    """Settings for `kind` ("clip" or "mllama") from a folder's
    preprocessor_config.json dict `pre` (may be empty) and the vision config;
    ValueError for an unknown kind."""
    pre = pre or {}
    side = int(vision_cfg.get("image_size") or 224)
    if kind == "clip":
        mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        size, crop = _edge(pre.get("size"), side), _edge(pre.get("crop_size"), side)
        tiles = 1
    elif kind == "mllama":
        mean, std = IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD
        size, crop = _edge(pre.get("size"), side), 0
        tiles = int(pre.get("max_image_tiles") or vision_cfg.get("max_num_tiles") or 4)
    else:
        raise ValueError(f"image processor kind {kind!r} is unknown; known: clip, mllama")
    return ProcessorSettings(size, tuple(pre.get("image_mean") or mean), tuple(pre.get("image_std") or std),
                             crop, tiles, float(pre.get("rescale_factor") or 1 / 255))


# -- loading ---------------------------------------------------------------
def _from_array(arr: np.ndarray, name: str):
    from PIL import Image
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"{name}: an image array must be [C, H, W] or [H, W, C], got shape {tuple(arr.shape)}")
    if arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    elif arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: an image array needs 1, 3 or 4 channels first or last, got shape "
                         f"{tuple(arr.shape)}")
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(f"{name}: a float image must hold values in [0, 1]")
        arr = np.round(arr * 255)
    elif arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"{name}: an integer image must hold values in [0, 255]")
    arr = np.ascontiguousarray(arr.astype(np.uint8))
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    mode = "RGBA" if arr.shape[-1] == 4 else "RGB"
    _check_size(arr.shape[1], arr.shape[0], name)
    return Image.fromarray(arr, mode)


def _check_size(width: int, height: int, name: str) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"{name}: image is empty ({width}x{height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"{name}: image has {width}x{height} pixels, more than {MAX_IMAGE_PIXELS}")


def _data_url(url: str, name: str):
    """The image inside a data:image/...;base64 URL, as a PIL image."""
    import base64
    import binascii
    import io

    from PIL import Image, UnidentifiedImageError
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ValueError(f"{name}: a data URL must look like data:image/<type>;base64,<data>")
    try:
        with Image.open(io.BytesIO(base64.b64decode(payload, validate=True))) as probe:
            _check_size(probe.width, probe.height, name)
            return probe.copy()
    except (binascii.Error, UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{name}: cannot decode the data URL as an image ({e})") from None


def load_image(src, name: str = "image"):
    """An RGB PIL image from a path (or file:// URL), a data:image/...;base64
    URL, a PIL image, a tensor or a numpy array (channels first or last;
    uint8, or float in [0, 1] rounded to 8 bits).  Transparency is
    composited onto white, as transformers does.  Raises ValueError naming
    `name` for a missing or undecodable file, a wrong shape or an empty or
    oversized image."""
    from PIL import Image, UnidentifiedImageError
    if isinstance(src, str) and src.startswith("data:"):
        return load_image(_data_url(src, name), name)
    if isinstance(src, str) and src.startswith("file://"):
        src = src[len("file://"):]
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise ValueError(f"{name}: no such image file {str(src)!r}")
        try:
            with Image.open(path) as probe:
                _check_size(probe.width, probe.height, name)
                image = probe.copy()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"{name}: cannot read {str(src)!r} as an image ({e})") from None
    elif isinstance(src, Image.Image):
        _check_size(src.width, src.height, name)
        image = src
    elif isinstance(src, torch.Tensor):
        image = _from_array(src.detach().cpu().numpy(), name)
    elif isinstance(src, np.ndarray):
        image = _from_array(src, name)
    else:
        raise ValueError(f"{name}: expected a file path, PIL image, tensor or numpy array, got "
                         f"{type(src).__name__}")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


# -- preprocessing ---------------------------------------------------------
def _normalise(chw: np.ndarray, s: ProcessorSettings) -> np.ndarray:
    x = (chw.astype(np.float64) * s.rescale).astype(np.float32)
    mean = np.asarray(s.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(s.std, dtype=np.float32)[:, None, None]
    return (x - mean) / std


def _center_crop(chw: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' centre crop, zero-padding first where the image is smaller."""
    _, h, w = chw.shape
    top, left = (h - height) // 2, (w - width) // 2
    if top >= 0 and left >= 0:
        return chw[:, top:top + height, left:left + width]
    nh, nw = max(height, h), max(width, w)
    padded = np.zeros((chw.shape[0], nh, nw), dtype=chw.dtype)
    tp, lp = math.ceil((nh - h) / 2), math.ceil((nw - w) / 2)
    padded[:, tp:tp + h, lp:lp + w] = chw
    top, left = top + tp, left + lp
    return padded[:, max(0, top):min(nh, top + height), max(0, left):min(nw, left + width)]


def clip_pixels(image, s: ProcessorSettings) -> torch.Tensor:
    """LLaVA / CLIP pixel values [3, crop, crop] (float32) of an RGB PIL image."""
    from PIL import Image
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = s.size, int(s.size * long / short)
    new_h, new_w = (new_long, new_short) if w <= h else (new_short, new_long)
    resized = np.moveaxis(np.asarray(image.resize((new_w, new_h), Image.Resampling.BICUBIC)), -1, 0)
    crop = s.crop or s.size
    return torch.from_numpy(np.ascontiguousarray(_normalise(_center_crop(resized, crop, crop), s)))


def aspect_ratios(max_tiles: int) -> list[tuple[int, int]]:
    """Tile arrangements with at most max_tiles tiles, in transformers' order
    (an image's aspect-ratio id is its index + 1; 0 means no image)."""
    return [(a, b) for a in range(1, max_tiles + 1) for b in range(1, max_tiles + 1) if a * b <= max_tiles]


def _canvas(h: int, w: int, max_tiles: int, tile: int) -> tuple[int, int]:
    """The tiled canvas needing the least upscaling (else the least
    downscaling), the smallest area among ties."""
    sizes = np.array(aspect_ratios(max_tiles)) * tile
    sh, sw = sizes[:, 0] / h, sizes[:, 1] / w
    scales = np.where(sw > sh, sh, sw)
    up = scales[scales >= 1]
    chosen = sizes[scales == (np.min(up) if len(up) else np.max(scales[scales < 1]))]
    best = chosen[np.argmin(chosen[:, 0] * chosen[:, 1])] if len(chosen) > 1 else chosen[0]
    return int(best[0]), int(best[1])


def _fit(h: int, w: int, canvas_h: int, canvas_w: int, tile: int) -> tuple[int, int]:
    th, tw = int(np.clip(h, tile, canvas_h)), int(np.clip(w, tile, canvas_w))
    scale_h, scale_w = th / h, tw / w
    if scale_w < scale_h:
        return min(math.floor(h * scale_w) or 1, th), tw
    return th, min(math.floor(w * scale_h) or 1, tw)


def mllama_pixels(image, s: ProcessorSettings) -> tuple[torch.Tensor, int, int]:
    """mllama pixel values [max_tiles, 3, S, S] of an RGB PIL image, its
    aspect-ratio id and its number of real tiles (the rest are zero)."""
    from PIL import Image
    w, h = image.size
    tile = s.size
    ch, cw = _canvas(h, w, s.max_tiles, tile)
    nh, nw = ch // tile, cw // tile
    new_h, new_w = _fit(h, w, ch, cw, tile)
    arr = np.moveaxis(np.asarray(image.resize((new_w, new_h), Image.Resampling.BILINEAR)), -1, 0)
    padded = np.zeros((3, ch, cw), dtype=np.uint8)
    padded[:, :new_h, :new_w] = arr
    x = _normalise(padded, s)
    tiles = x.reshape(3, nh, tile, nw, tile).transpose(1, 3, 0, 2, 4).reshape(nh * nw, 3, tile, tile)
    out = np.zeros((s.max_tiles, 3, tile, tile), dtype=np.float32)
    out[:nh * nw] = tiles
    return torch.from_numpy(out), aspect_ratios(s.max_tiles).index((nh, nw)) + 1, nh * nw


def pixel_hash(pixels: torch.Tensor, *extra: object) -> str:
    """sha256 of the pixel values (and any extra geometry) the encoder sees."""
    h = hashlib.sha256(repr((tuple(pixels.shape), str(pixels.dtype)) + extra).encode())
    h.update(pixels.contiguous().numpy().tobytes())
    return h.hexdigest()
