"""Images in prompts, for the vision-language families.

`VisionPrompts.prepare(ids, images)` loads and preprocesses every image
(`model.image_processor`, reading the folder's preprocessor_config.json when
there is one), checks that the prompt holds one image token per image, and
returns the prompt the scheduler sees with its `ImageRef`s:
- LLaVA (`expands_image_tokens`): each image token becomes `num_tokens`
  placeholders (a prompt already expanded that way, as transformers'
  processor writes it, is taken as is); the ImageRef starts at the first;
- mllama: the image token stays one token; the ImageRef at it counts the
  image's encoder tokens (all `max_num_tiles` tiles, padding tiles too).
The image inputs go to the runner's ImageStore under the request id.  For
models whose whole prefix depends on the images (mllama), `cache_salt` gets
the images' hashes, so only requests with equal images share prefix pages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..memory.types import ImageRef
from ..model.image_processing import load_image
from ..model.multimodal import ImageInput


@dataclass(frozen=True)
class PreparedPrompt:
    """The prompt ids with placeholders expanded, one ImageRef and one
    ImageInput per image (prompt order), and the cache salt to use."""

    token_ids: tuple[int, ...]
    images: tuple[ImageRef, ...]
    inputs: tuple[ImageInput, ...]
    cache_salt: str


def _runs(ids: Sequence[int], token: int) -> list[tuple[int, int]]:
    """(start, length) of each run of consecutive `token`s."""
    runs: list[tuple[int, int]] = []
    for i, t in enumerate(ids):
        if t != token:
            continue
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


class VisionPrompts:
    """Prompt preparation for one vision-language model (see module doc).
    Raises ValueError when the folder's preprocessor config does not fit
    the model."""

    def __init__(self, model, model_path: str | Path) -> None:
        pre_file = Path(model_path) / "preprocessor_config.json"
        pre = json.loads(pre_file.read_text()) if pre_file.is_file() else {}
        self.process = model.image_processor(pre)
        self.image_token_id: int = model.image_token_id
        self.expand: bool = model.expands_image_tokens
        self.salted: bool = model.prefix_depends_on_images

    def prepare(self, ids: Sequence[int], images: Sequence, cache_salt: str = "") -> PreparedPrompt:
        """See module doc.  Raises ValueError naming `images[i]` for an
        image that is missing, unreadable or wrongly shaped, and when the
        prompt's image tokens do not match the images."""
        # the server hands over decoded images (server.images.LoadedImage): take the PIL image inside
        images = [getattr(src, "image", src) for src in images]
        inputs = tuple(self.process(load_image(src, f"images[{i}]")) for i, src in enumerate(images))
        ids = list(ids)
        tok = self.image_token_id
        locs = [i for i, t in enumerate(ids) if t == tok]
        runs = _runs(ids, tok)
        if self.expand and [n for _, n in runs] == [x.num_tokens for x in inputs] and inputs:
            starts = [s for s, _ in runs]          # already expanded, as transformers' processor does
        elif len(locs) == len(inputs):
            starts = []
            for k, x in enumerate(inputs):
                pos = locs[k] + sum(y.num_tokens - 1 for y in inputs[:k]) if self.expand else locs[k]
                starts.append(pos)
            if self.expand:
                for loc, x in zip(reversed(locs), reversed(inputs)):
                    ids[loc:loc + 1] = [tok] * x.num_tokens
        else:
            raise ValueError(f"prompt has {len(locs)} image tokens (id {tok}) but {len(inputs)} images were given; "
                             "put one image token where each image goes")
        refs = tuple(ImageRef(p, x.num_tokens, x.content_hash) for p, x in zip(starts, inputs))
        salt = cache_salt
        if self.salted and refs:
            salt = f"{cache_salt}|images:{','.join(r.content_hash for r in refs)}"
        return PreparedPrompt(tuple(ids), refs, inputs, salt)


# -- the offline API's prompt forms ------------------------------------------
def split_prompt(prompt) -> tuple[object, tuple]:
    """(text or ids, images) of one `LLM.generate` prompt: a string, token
    ids, or a dict {"prompt": text | "prompt_token_ids": ids,
    "multi_modal_data": {"image": one or a list}} (vLLM's form; "images": [...]
    also works).  Raises ValueError for a dict without a prompt."""
    if not isinstance(prompt, Mapping):
        return prompt, ()
    if "prompt" in prompt:
        body = prompt["prompt"]
    elif "prompt_token_ids" in prompt:
        body = list(prompt["prompt_token_ids"])
    else:
        raise ValueError("a dict prompt needs 'prompt' (text) or 'prompt_token_ids'")
    images = prompt.get("images")
    if images is None:
        images = (prompt.get("multi_modal_data") or {}).get("image", ())
    if not isinstance(images, (list, tuple)):
        images = (images,)
    return body, tuple(images)


def chat_images(conversation: Sequence[Mapping]) -> tuple[list[dict], tuple]:
    """The conversation with image parts reduced to {"type": "image"} (what
    chat templates test for) and the images in order.  Image parts are
    {"type": "image", "image": x} or OpenAI's {"type": "image_url",
    "image_url": {"url": path | data URL}}.  A content list of text parts
    only is joined into one string, as the server does, so templates
    written for string content work.  Raises ValueError naming a part that
    is not a text or image part."""
    images, out = [], []
    for i, m in enumerate(conversation):
        if not isinstance(m, Mapping):
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {type(m).__name__}")
        content = m.get("content")
        if not isinstance(content, list):
            out.append(dict(m))
            continue
        parts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "image":
                images.append(part.get("image", part.get("url")))
                parts.append({"type": "image"})
            elif kind == "image_url":
                url = part.get("image_url")
                images.append(url.get("url") if isinstance(url, Mapping) else url)
                parts.append({"type": "image"})
            elif kind == "text" and isinstance(part.get("text"), str):
                parts.append(part)
            else:
                raise ValueError(f"messages[{i}].content[{j}] must be a text part {{'type': 'text', 'text': ...}} "
                                 f"or an image part, got {part!r:.80}")
        if all(p["type"] == "text" for p in parts):
            out.append({**m, "content": "".join(p["text"] for p in parts)})
        else:
            out.append({**m, "content": parts})
    return out, tuple(images)
