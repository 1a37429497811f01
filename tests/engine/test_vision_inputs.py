"""Prompt preparation for vision-language models: placeholder expansion,
ImageRefs, cache salts, and the offline API's prompt forms."""

import numpy as np
import pytest
import torch

from jenga.engine.vision_inputs import VisionPrompts, chat_images, split_prompt
from jenga.memory.types import ImageRef
from jenga.model.multimodal import ImageInput

IMG = 9


class FakeVLM:
    """What VisionPrompts reads of a model: 3 tokens per image, hashed by
    the image's first pixel."""

    image_token_id = IMG

    def __init__(self, expand: bool, salted: bool) -> None:
        self.expands_image_tokens, self.prefix_depends_on_images = expand, salted

    def image_processor(self, pre):
        assert pre == {"size": 7}

        def process(image):
            return ImageInput(torch.zeros(1), f"h{np.asarray(image)[0, 0, 0]}", 3)
        return process


def _vp(tmp_path, expand=True, salted=False):
    (tmp_path / "preprocessor_config.json").write_text('{"size": 7}')
    return VisionPrompts(FakeVLM(expand, salted), tmp_path)


def _img(value):
    return torch.full((3, 2, 2), value, dtype=torch.uint8)


def test_expansion_and_refs(tmp_path):
    p = _vp(tmp_path).prepare([1, IMG, 2, IMG, 3], [_img(5), _img(6)], "s")
    assert p.token_ids == (1, IMG, IMG, IMG, 2, IMG, IMG, IMG, 3)
    assert p.images == (ImageRef(1, 3, "h5"), ImageRef(5, 3, "h6"))
    assert p.cache_salt == "s"


def test_already_expanded_prompt_is_kept(tmp_path):
    ids = [1, IMG, IMG, IMG, 2]
    p = _vp(tmp_path).prepare(ids, [_img(5)])
    assert p.token_ids == tuple(ids) and p.images == (ImageRef(1, 3, "h5"),)


def test_cross_models_keep_one_token_and_salt_by_images(tmp_path):
    p = _vp(tmp_path, expand=False, salted=True).prepare([1, IMG, IMG, 2], [_img(5), _img(6)], "s")
    assert p.token_ids == (1, IMG, IMG, 2)
    assert p.images == (ImageRef(1, 3, "h5"), ImageRef(2, 3, "h6"))
    assert p.cache_salt == "s|images:h5,h6"
    assert _vp(tmp_path, expand=False, salted=True).prepare([1, 2], []).cache_salt == ""


@pytest.mark.parametrize("ids,n", [([1, 2], 1), ([1, IMG, IMG, 2], 1), ([IMG], 0), ([IMG, IMG], 3)])
def test_mismatched_image_tokens(tmp_path, ids, n):
    with pytest.raises(ValueError, match=f"image tokens \\(id {IMG}\\) but {n} images were given"):
        _vp(tmp_path).prepare(ids, [_img(1)] * n)


def test_bad_image_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"images\[1\]: no such image file"):
        _vp(tmp_path).prepare([IMG, IMG], [_img(1), "/nope.png"])


def test_split_prompt_forms():
    assert split_prompt("hi") == ("hi", ())
    assert split_prompt([1, 2]) == ([1, 2], ())
    assert split_prompt({"prompt": "a", "multi_modal_data": {"image": "x.png"}}) == ("a", ("x.png",))
    assert split_prompt({"prompt_token_ids": (1, 2), "images": ["a", "b"]}) == ([1, 2], ("a", "b"))
    with pytest.raises(ValueError, match="'prompt' \\(text\\) or 'prompt_token_ids'"):
        split_prompt({"images": []})


def test_chat_images_in_order():
    conv = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "image", "image": "a"}, {"type": "text", "text": "and"},
                                         {"type": "image_url", "image_url": {"url": "b"}},
                                         {"type": "image_url", "image_url": "c"}]}]
    out, images = chat_images(conv)
    assert images == ("a", "b", "c")
    assert out[0] == conv[0]
    assert out[1]["content"] == [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"},
                                 {"type": "image"}]
