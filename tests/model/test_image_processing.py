"""Image loading and preprocessing against transformers' PIL processors."""

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from jenga.model.image_processing import (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, ProcessorSettings,
                                          aspect_ratios, clip_pixels, load_image, mllama_pixels, pixel_hash,
                                          processor_settings)

SIZES = [(16, 16), (20, 37), (50, 9), (7, 7), (33, 64), (100, 40), (3, 90)]


def _pil(seed: int, h: int, w: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("h,w", SIZES)
def test_mllama_pixels_equal_transformers(h, w):
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil
    img = _pil(h * 100 + w, h, w)
    ref = MllamaImageProcessorPil(size={"height": 16, "width": 16}, max_image_tiles=4)(images=[[img]],
                                                                                        return_tensors="pt")
    px, ratio, tiles = mllama_pixels(img, ProcessorSettings(16, IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD,
                                                            max_tiles=4))
    assert torch.equal(px, ref["pixel_values"][0, 0])
    assert ratio == ref["aspect_ratio_ids"][0, 0].item()
    assert tiles == ref["num_tiles"][0][0]
    assert torch.equal((torch.arange(4) < tiles).long(), ref["aspect_ratio_mask"][0, 0])


@pytest.mark.parametrize("h,w", SIZES)
def test_clip_pixels_equal_transformers(h, w):
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    img = _pil(h * 7 + w, h, w)
    ref = LlavaImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})(
        images=[img], return_tensors="pt")["pixel_values"][0]
    assert torch.equal(clip_pixels(img, processor_settings("clip", {"image_size": 16})), ref)


def test_mllama_tiles_and_padding_tiles():
    s = ProcessorSettings(16, (0.5,) * 3, (0.5,) * 3, max_tiles=4)
    # 20x37: no canvas avoids downscaling; 2x2 tiles (scale 32/37) shrinks it least
    px, ratio, tiles = mllama_pixels(_pil(0, 20, 37), s)
    assert (aspect_ratios(4)[ratio - 1], tiles) == ((2, 2), 4)
    px, ratio, tiles = mllama_pixels(_pil(0, 16, 16), s)
    assert (ratio, tiles, px.shape) == (1, 1, (4, 3, 16, 16))
    assert torch.count_nonzero(px[1:]) == 0      # padding tiles are zero, not normalised black
    assert aspect_ratios(2) == [(1, 1), (1, 2), (2, 1)]


def test_settings_from_preprocessor_config():
    s = processor_settings("mllama", {"image_size": 560, "max_num_tiles": 4},
                           {"size": {"height": 560, "width": 560}, "max_image_tiles": 4,
                            "image_mean": [0.1, 0.2, 0.3], "image_std": [1, 2, 3]})
    assert (s.size, s.max_tiles, s.mean, s.std) == (560, 4, (0.1, 0.2, 0.3), (1, 2, 3))
    c = processor_settings("clip", {"image_size": 336}, {"size": {"shortest_edge": 336},
                                                        "crop_size": {"height": 336, "width": 336}})
    assert (c.size, c.crop) == (336, 336)
    with pytest.raises(ValueError, match="kind 'dino'"):
        processor_settings("dino", {})
    with pytest.raises(ValueError, match="std"):
        ProcessorSettings(16, (0.5,) * 3, (0.5, 0.5, 0.0))


def test_load_image_forms_agree(tmp_path):
    img = _pil(3, 9, 11)
    path = tmp_path / "a.png"
    img.save(path)
    arr = np.array(img)
    url = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    forms = [path, str(path), f"file://{path}", url, img, torch.from_numpy(arr).permute(2, 0, 1), arr,
             torch.from_numpy(arr).permute(2, 0, 1).float() / 255]
    for f in forms:
        assert np.array_equal(np.asarray(load_image(f)), arr), type(f)


def test_load_image_composites_alpha_on_white_and_greyscale():
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 0))
    assert np.asarray(load_image(rgba)).tolist() == [[[255, 255, 255], [255, 255, 255]]]
    grey = torch.full((1, 2, 2), 7, dtype=torch.uint8)
    assert np.asarray(load_image(grey)).tolist() == [[[7, 7, 7]] * 2] * 2


@pytest.mark.parametrize("src,match", [
    ("/no/such/file.png", r"images\[0\]: no such image file"),
    (torch.zeros(2, 3, 4, 5, dtype=torch.uint8), r"images\[0\]: an image array must be"),
    (torch.zeros(5, 4, 2, dtype=torch.uint8), "1, 3 or 4 channels"),
    (torch.zeros(3, 0, 4, dtype=torch.uint8), "empty"),
    (torch.full((3, 2, 2), 2.0), r"float image must hold values in \[0, 1\]"),
    (torch.full((3, 2, 2), 300, dtype=torch.int32), r"\[0, 255\]"),
    ("data:image/png;base64,AAAA", "cannot decode the data URL"),
    ("data:text/plain,hi", "data URL must look like"),
    (3.5, "expected a file path, PIL image, tensor or numpy array, got float"),
])
def test_load_image_errors_name_the_image(src, match):
    with pytest.raises(ValueError, match=match):
        load_image(src, "images[0]")


def test_unreadable_file(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"images\[1\]: cannot read .*x.png"):
        load_image(bad, "images[1]")


def test_pixel_hash_follows_pixels_and_geometry():
    a = torch.zeros(3, 4, 4)
    b = a.clone()
    b[0, 0, 0] = 1e-6
    assert pixel_hash(a) == pixel_hash(a.clone())
    assert pixel_hash(a) != pixel_hash(b)
    assert pixel_hash(a, 1, 1) != pixel_hash(a, 2, 1)


def test_png_roundtrip_hashes_equal():
    img = _pil(5, 20, 20)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    again = Image.open(io.BytesIO(buf.getvalue()))
    s = processor_settings("clip", {"image_size": 16})
    assert pixel_hash(clip_pixels(load_image(img), s)) == pixel_hash(clip_pixels(load_image(again), s))
