"""Requests to replay, and their JSONL trace format (docs/trace-format.md).

A `TraceRequest` is one request of a workload: when it arrives, its prompt
token ids, its images, how many tokens it generates.  A prompt may be
described as *segments*: a named segment always expands to the same token
ids (the first `len` tokens of a stream seeded by the name), so requests
that share a document or a system prompt share token ids, their chained
block hashes match, and the prefix cache can hit.  Traces keep the segments,
which keeps a trace of 100K-token documents small.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..memory.types import ImageRef
from .runner import DEFAULT_VOCAB, TOKEN_LOW

_BLOCK = 4096   # a named stream is built in blocks, so any prefix is stable


class Segment(NamedTuple):
    """Part of a prompt: `length` tokens of the named stream `name`, or,
    when `name` is empty, the literal `tokens`."""

    name: str
    length: int
    tokens: tuple[int, ...] = ()


@lru_cache(maxsize=64)
def segment_tokens(name: str, length: int, vocab_size: int = DEFAULT_VOCAB) -> tuple[int, ...]:
    """The first `length` token ids of the stream `name`, in
    [TOKEN_LOW, vocab_size).  Equal names give equal ids; a shorter length
    is a prefix of a longer one.  The tuple is shared between callers."""
    if not name:
        raise ValueError("segment name must be non-empty")
    if length < 0:
        raise ValueError(f"segment {name!r}: len must be >= 0, got {length}")
    if vocab_size <= TOKEN_LOW:
        raise ValueError(f"vocab_size must be > {TOKEN_LOW}, got {vocab_size}")
    parts = []
    for block in range(-(-length // _BLOCK)):
        seed = int.from_bytes(hashlib.blake2b(f"{name}\x00{block}".encode(), digest_size=8).digest(), "little")
        n = min(_BLOCK, length - block * _BLOCK)
        parts.append(np.random.default_rng(seed).integers(TOKEN_LOW, vocab_size, size=_BLOCK)[:n])
    return tuple(np.concatenate(parts).tolist()) if parts else ()


def expand(segments: tuple[Segment, ...], vocab_size: int = DEFAULT_VOCAB) -> tuple[int, ...]:
    """The token ids `segments` describe."""
    out: tuple[int, ...] = ()
    for seg in segments:
        out += segment_tokens(seg.name, seg.length, vocab_size) if seg.name else tuple(seg.tokens)
    return out


@dataclass(frozen=True)
class TraceRequest:
    """One request to replay.

    arrival_time: seconds from the start of the run.
    prompt: token ids.  segments: how the prompt was built (optional; kept
        so a dumped trace stays compact); their lengths must add up to it.
    output_len: tokens to generate (run with ignore_eos, as in the paper).
    images: ImageRefs into the prompt.  cache_salt: isolates prefix cache.
    req_id: empty means "assign one when replaying".
    Raises ValueError naming the field on invalid values.
    """

    arrival_time: float
    prompt: tuple[int, ...]
    output_len: int
    images: tuple[ImageRef, ...] = ()
    cache_salt: str = ""
    req_id: str = ""
    segments: tuple[Segment, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.arrival_time, (int, float)) or not math.isfinite(self.arrival_time) \
                or self.arrival_time < 0:
            raise ValueError(f"arrival_time must be a finite number >= 0, got {self.arrival_time!r}")
        if not self.prompt:
            raise ValueError("prompt must contain at least one token")
        if not isinstance(self.output_len, int) or isinstance(self.output_len, bool) or self.output_len < 1:
            raise ValueError(f"output_len must be a positive integer, got {self.output_len!r}")
        for img in self.images:
            if img.position >= len(self.prompt):
                raise ValueError(f"images: position {img.position} lies outside the {len(self.prompt)}-token prompt")
        if self.segments and sum(s.length for s in self.segments) != len(self.prompt):
            raise ValueError("segments do not add up to the prompt's length")

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)


class TraceError(ValueError):
    """A trace line is invalid; the message names the file, line and field."""


# ------------------------------------------------------------------ dump
def _segment_json(seg: Segment) -> dict:
    return {"segment": seg.name, "len": seg.length} if seg.name else {"tokens": list(seg.tokens)}


def to_json(req: TraceRequest) -> dict:
    """The JSON object of one trace line."""
    out: dict = {"arrival": req.arrival_time}
    if req.req_id:
        out["id"] = req.req_id
    if req.segments:
        out["prompt"] = [_segment_json(s) for s in req.segments]
    else:
        out["token_ids"] = list(req.prompt)
    if req.images:
        out["images"] = [{"position": i.position, "num_tokens": i.num_tokens, "hash": i.content_hash}
                         for i in req.images]
    out["output_len"] = req.output_len
    if req.cache_salt:
        out["salt"] = req.cache_salt
    return out


def dump_trace(reqs: list[TraceRequest], path: str | Path) -> None:
    """Write `reqs` to `path`, one JSON object per line."""
    with open(path, "w", encoding="utf-8") as f:
        for req in reqs:
            f.write(json.dumps(to_json(req), separators=(",", ":")) + "\n")


# ------------------------------------------------------------------ load
_FIELDS = {"arrival", "id", "token_ids", "prompt", "images", "output_len", "salt"}


def _int(value, field: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"field {field!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _tokens(value, field: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"field {field!r} must be a non-empty list of token ids")
    return tuple(_int(t, field, 0) for t in value)


def _segment(obj, i: int) -> Segment:
    field = f"prompt[{i}]"
    if not isinstance(obj, dict) or not ({"segment", "len"} == set(obj) or {"tokens"} == set(obj)):
        raise ValueError(f"field {field!r} must be {{'segment': name, 'len': n}} or {{'tokens': [...]}}")
    if "tokens" in obj:
        toks = _tokens(obj["tokens"], f"{field}.tokens")
        return Segment("", len(toks), toks)
    if not isinstance(obj["segment"], str) or not obj["segment"]:
        raise ValueError(f"field '{field}.segment' must be a non-empty string")
    return Segment(obj["segment"], _int(obj["len"], f"{field}.len", 1))


def _image(obj, i: int) -> ImageRef:
    field = f"images[{i}]"
    if not isinstance(obj, dict) or set(obj) != {"position", "num_tokens", "hash"}:
        raise ValueError(f"field {field!r} must have exactly 'position', 'num_tokens' and 'hash'")
    if not isinstance(obj["hash"], str) or not obj["hash"]:
        raise ValueError(f"field '{field}.hash' must be a non-empty string")
    return ImageRef(_int(obj["position"], f"{field}.position", 0),
                    _int(obj["num_tokens"], f"{field}.num_tokens", 1), obj["hash"])


def from_json(obj, vocab_size: int = DEFAULT_VOCAB) -> TraceRequest:
    """Parse one trace line's object; ValueError names the bad field."""
    if not isinstance(obj, dict):
        raise ValueError("a trace line must be a JSON object")
    unknown = set(obj) - _FIELDS
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]!r}; known: {', '.join(sorted(_FIELDS))}")
    for field in ("arrival", "output_len"):
        if field not in obj:
            raise ValueError(f"field {field!r} is missing")
    if ("token_ids" in obj) == ("prompt" in obj):
        raise ValueError("exactly one of fields 'token_ids' and 'prompt' must be given")
    arrival = obj["arrival"]
    if isinstance(arrival, bool) or not isinstance(arrival, (int, float)) or not math.isfinite(arrival) or arrival < 0:
        raise ValueError(f"field 'arrival' must be a finite number >= 0, got {arrival!r}")
    segments: tuple[Segment, ...] = ()
    if "prompt" in obj:
        if not isinstance(obj["prompt"], list) or not obj["prompt"]:
            raise ValueError("field 'prompt' must be a non-empty list of segments")
        segments = tuple(_segment(s, i) for i, s in enumerate(obj["prompt"]))
        prompt = expand(segments, vocab_size)
    else:
        prompt = _tokens(obj["token_ids"], "token_ids")
    images = obj.get("images", [])
    if not isinstance(images, list):
        raise ValueError("field 'images' must be a list")
    for field in ("id", "salt"):
        if not isinstance(obj.get(field, ""), str):
            raise ValueError(f"field {field!r} must be a string")
    req = dict(arrival_time=float(arrival), prompt=prompt, output_len=_int(obj["output_len"], "output_len", 1),
               images=tuple(_image(x, i) for i, x in enumerate(images)), cache_salt=obj.get("salt", ""),
               req_id=obj.get("id", ""), segments=segments)
    for img in req["images"]:
        if img.position >= len(prompt):
            raise ValueError(f"field 'images': position {img.position} lies outside the {len(prompt)}-token prompt")
    return TraceRequest(**req)


def load_trace(path: str | Path, vocab_size: int = DEFAULT_VOCAB) -> list[TraceRequest]:
    """Read a JSONL trace; blank lines are skipped.  Named segments expand
    with ids in [TOKEN_LOW, vocab_size).  Raises TraceError naming the file,
    line number and field of the first invalid line."""
    out, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                req = from_json(json.loads(line), vocab_size)
            except json.JSONDecodeError as e:
                raise TraceError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            except ValueError as e:
                raise TraceError(f"{path}:{lineno}: {e}") from None
            if req.req_id and req.req_id in seen:
                raise TraceError(f"{path}:{lineno}: field 'id': {req.req_id!r} already used on line {seen[req.req_id]}")
            seen[req.req_id] = lineno
            out.append(req)
    return out
