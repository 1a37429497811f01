"""Text in and out: the tokenizer, chat templates, streaming detokenisation
and stop strings.

`Tokenizer` wraps a `tokenizers.Tokenizer` loaded from a local Hugging Face
folder (tokenizer.json, tokenizer_config.json, generation_config.json,
config.json); it never touches the network.  Chat templates are rendered
by transformers' own renderer (imported on first use), so a prompt is
byte for byte what `AutoTokenizer.apply_chat_template` gives.  `IncrementalDetokenizer` turns a
growing list of token ids into text pieces that never end inside a UTF-8
character split across tokens; `StopStrings` finds a request's stop strings
in its text and says how much of the text is safe to stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
import tokenizers

REPLACEMENT_CHAR = "\ufffd"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _token_text(tok: Any) -> str | None:
    """tokenizer_config stores special tokens as strings or AddedToken dicts."""
    if isinstance(tok, dict):
        return tok.get("content")
    return tok if isinstance(tok, str) else None


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def read_chat_template(value: str) -> str:
    """A chat template given as Jinja text or as a file holding it (as
    vLLM's --chat-template).  Raises ValueError for a missing file."""
    if "{" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"chat_template: no file {value} (give a template file or the Jinja text itself)")
    return path.read_text(encoding="utf-8")


def model_eos_token_ids(folder: Path) -> list[int]:
    """The eos ids a model folder declares: generation_config.json's, then
    config.json's (repeats possible; the tokenizer's eos token comes last)."""
    eos = _as_ids(_read_json(folder / "generation_config.json").get("eos_token_id"))
    return eos + _as_ids(_read_json(folder / "config.json").get("eos_token_id"))


class Tokenizer:
    """Encodes, decodes and renders chats for one model.

    eos_token_ids: every id that ends generation (generation_config first,
        then config.json, then the tokenizer's eos token), without repeats.
    """

    def __init__(self, backend: tokenizers.Tokenizer, *, chat_template: str | None = None,
                 eos_token_ids: Iterable[int] = (), bos_token: str | None = None,
                 eos_token: str | None = None) -> None:
        self.backend = backend
        self.chat_template = chat_template
        self.bos_token, self.eos_token = bos_token, eos_token
        ids = list(eos_token_ids)
        if eos_token is not None and backend.token_to_id(eos_token) is not None:
            ids.append(backend.token_to_id(eos_token))
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(ids))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Tokenizer:
        """Load from a local HF folder.  Raises FileNotFoundError when it has
        no tokenizer.json."""
        folder = Path(path)
        if not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{folder} has no tokenizer.json")
        backend = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok_cfg = _read_json(folder / "tokenizer_config.json")
        template = tok_cfg.get("chat_template")
        if isinstance(template, list):   # named templates: take the default
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default", next(iter(named.values()), None))
        if template is None and (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        if template is not None:   # import the renderer now, not inside the first chat request
            import transformers.utils.chat_template_utils  # noqa: F401
        return cls(backend, chat_template=template, eos_token_ids=model_eos_token_ids(folder),
                   bos_token=_token_text(tok_cfg.get("bos_token")),
                   eos_token=_token_text(tok_cfg.get("eos_token")))

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                            tokenize: bool = False, chat_template: str | None = None,
                            **extra: Any) -> str | list[int]:
        """Render a conversation (dicts with role and content) exactly as
        transformers renders it (its own renderer: the same sandboxed Jinja
        environment, filters and globals, with bos_token and eos_token
        passed); `chat_template` overrides the model's for this call; token
        ids when `tokenize`.  Raises ValueError when there is no template,
        a message lacks a role, or the template itself raises."""
        template = chat_template if chat_template is not None else self.chat_template
        if template is None:
            raise ValueError("chat_template: this tokenizer has none; pass a plain prompt or a chat_template")
        for i, m in enumerate(messages):
            if "role" not in m:
                raise ValueError(f"messages[{i}] has no 'role'")
        from transformers.utils.chat_template_utils import render_jinja_template
        try:
            rendered, _ = render_jinja_template(conversations=[list(messages)], chat_template=template,
                                                add_generation_prompt=add_generation_prompt,
                                                bos_token=self.bos_token or "", eos_token=self.eos_token or "",
                                                **extra)
        except (jinja2.TemplateError, TypeError, KeyError) as e:
            raise ValueError(f"chat template failed: {e}") from e
        text = rendered[0]
        # the template writes any special tokens itself
        return self.encode(text, add_special_tokens=False) if tokenize else text


class IncrementalDetokenizer:
    """Streams the text of a growing token list.

    Each `add` decodes a short window of recent tokens twice (with and
    without the new ones) and returns the difference, so decoders that
    treat the first token of a window specially stay consistent.  Text that
    ends in an incomplete UTF-8 character (a replacement char) is held back
    until a later token completes it; `finish` releases whatever is left.
    The concatenation of everything returned equals
    `tokenizer.decode(token_ids)` for byte-level tokenizers.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.token_ids: list[int] = []
        self.text = ""
        self._prefix = 0   # window start
        self._read = 0     # tokens before this are already in self.text

    def add(self, token_ids: Iterable[int]) -> str:
        """Append tokens; return the text they made final (maybe "")."""
        self.token_ids.extend(token_ids)
        decode = self.tokenizer.decode
        old = decode(self.token_ids[self._prefix:self._read], self.skip_special_tokens)
        new = decode(self.token_ids[self._prefix:], self.skip_special_tokens)
        if len(new) <= len(old) or new.endswith(REPLACEMENT_CHAR) or not new.startswith(old):
            return ""
        piece = new[len(old):]
        self._prefix, self._read = self._read, len(self.token_ids)
        self.text += piece
        return piece

    def finish(self) -> str:
        """Return the text still held back (a trailing invalid byte sequence
        decodes to replacement chars now)."""
        full = self.tokenizer.decode(self.token_ids, self.skip_special_tokens)
        if not full.startswith(self.text):
            return ""
        piece = full[len(self.text):]
        self.text = full
        self._prefix = self._read = len(self.token_ids)
        return piece


class StopHit(NamedTuple):
    """A stop string found in a request's text: the text keeps `text_len`
    characters (the stop string included or not, as the request asked)."""

    stop: str
    text_len: int


class StopStrings:
    """One request's stop strings.

    `find(text, new_chars)` looks only where the last `new_chars` characters
    could have completed a stop string and returns the earliest StopHit or
    None.  `stable_len(text)` is how much of an unfinished text may be
    streamed: when stop strings are cut from the output, the tail that
    could still grow into one is held back.
    """

    def __init__(self, stop: Sequence[str], include_in_output: bool = False) -> None:
        if any(not s for s in stop):
            raise ValueError("stop: stop strings must be non-empty")
        self.stop = tuple(stop)
        self.include = include_in_output
        self.max_len = max((len(s) for s in self.stop), default=0)

    def find(self, text: str, new_chars: int) -> StopHit | None:
        if not self.stop or new_chars <= 0:
            return None
        start = max(0, len(text) - new_chars - self.max_len + 1)
        best: StopHit | None = None
        best_at = len(text)
        for s in self.stop:
            at = text.find(s, start)
            if at != -1 and at < best_at:
                best_at = at
                best = StopHit(s, at + len(s) if self.include else at)
        return best

    def stable_len(self, text: str) -> int:
        if not self.stop or self.include:
            return len(text)
        return max(0, len(text) - self.max_len + 1)
