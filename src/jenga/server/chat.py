"""From an OpenAI chat request to the engine's prompt: render the messages
with the model's chat template and load the images they carry.

Text-only content lists are joined into one string, so templates written
for plain string content work; a message with images keeps its parts
(`{"type": "text"}` / `{"type": "image"}`), as multimodal templates expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import APIError, invalid
from .images import ImageLimits, LoadedImage, load_image
from .protocol import ChatCompletionRequest, ImagePart, TextPart


@dataclass(frozen=True)
class ChatPrompt:
    """The rendered prompt's token ids and the images in message order."""

    token_ids: list[int]
    images: tuple[LoadedImage, ...]


def _message_dict(i: int, msg: Any, limits: ImageLimits, accepts_images: bool,
                  images: list[LoadedImage]) -> dict:
    content = msg.content
    if content is None or isinstance(content, str):
        return {"role": msg.role, "content": content or ""}
    if not any(isinstance(p, ImagePart) for p in content):
        return {"role": msg.role, "content": "".join(p.text for p in content)}
    parts: list[dict] = []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
            continue
        param = f"messages[{i}].content[{j}]"
        if not accepts_images:   # before decoding anything: a text model never pays for an image
            raise invalid("model does not accept images", param)
        images.append(load_image(part.image_url.url, limits, param))
        parts.append({"type": "image"})
    return {"role": msg.role, "content": parts}


def render_chat(req: ChatCompletionRequest, tokenizer: Any, limits: ImageLimits,
                accepts_images: bool) -> ChatPrompt:
    """Template the conversation into token ids.  Raises APIError (400) for
    any image when the model takes none (before reading it), for images
    that are refused or undecodable, and when the template rejects the
    conversation."""
    images: list[LoadedImage] = []
    messages = [_message_dict(i, m, limits, accepts_images, images) for i, m in enumerate(req.messages)]
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    except ValueError as e:
        raise invalid(f"messages could not be rendered with the model's chat template: {e}", "messages") from None
    if isinstance(ids, str):
        raise APIError("tokenizer returned text for tokenize=True", status=500, type="server_error")
    return ChatPrompt(list(ids), tuple(images))
