"""Image loading: accepted sources, limits and content hashes."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from jenga.server.errors import APIError
from jenga.server.images import ImageLimits, load_image


def _encoded(color, fmt="PNG", size=(3, 2)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def _url(data: bytes, kind="png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def test_same_pixels_same_hash_whatever_the_format():
    a = load_image(_url(_encoded((1, 2, 3), "PNG")), ImageLimits(), "p")
    b = load_image(_url(_encoded((1, 2, 3), "BMP"), "bmp"), ImageLimits(), "p")
    c = load_image(_url(_encoded((1, 2, 4), "PNG")), ImageLimits(), "p")
    assert a.size == (3, 2) and a.content_hash == b.content_hash != c.content_hash


def test_local_file_under_the_allowed_folder(tmp_path):
    (tmp_path / "x.png").write_bytes(_encoded((9, 9, 9)))
    img = load_image(str(tmp_path / "x.png"), ImageLimits(allowed_local_path=str(tmp_path)), "p")
    assert img.image.getpixel((0, 0)) == (9, 9, 9)


def test_truncated_image_is_refused():
    data = _encoded((5, 5, 5), size=(64, 64))
    with pytest.raises(APIError, match="could not be decoded") as e:
        load_image(_url(data[: len(data) // 2]), ImageLimits(), "messages[0].content[0]")
    assert e.value.param == "messages[0].content[0]" and e.value.status == 400


def test_size_limit_applies_before_decoding(tmp_path):
    data = _encoded((5, 5, 5), size=(64, 64))
    limits = ImageLimits(max_bytes=len(data) - 1, allowed_local_path=str(tmp_path))
    with pytest.raises(APIError, match="larger than the limit"):
        load_image(_url(data), limits, "p")
    (tmp_path / "big.png").write_bytes(data)
    with pytest.raises(APIError, match="larger than the limit"):
        load_image(str(tmp_path / "big.png"), limits, "p")
    assert load_image(_url(data), ImageLimits(max_bytes=len(data)), "p").size == (64, 64)


@pytest.mark.parametrize("url,words", [
    (_url(b"not a png at all"), "could not be decoded"),
    ("data:image/png;base64,@@@@", "invalid base64"),
    ("data:text/plain;base64,aGVsbG8=", "data:image/"),
    ("https://example.com/cat.png", "remote image URLs are not fetched"),
    ("/etc/passwd", "local image paths are disabled"),
    ("cat.png", "absolute local file path"),
])
def test_refused_sources(url, words):
    with pytest.raises(APIError, match=words) as e:
        load_image(url, ImageLimits(), "messages[0].content[1]")
    assert e.value.param == "messages[0].content[1]"


def test_local_paths_only_under_the_allowed_folder(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "cat.png").write_bytes(_encoded((1, 1, 1)))
    (tmp_path / "secret.png").write_bytes(_encoded((1, 1, 1)))
    limits = ImageLimits(allowed_local_path=str(tmp_path / "ok"))
    for path in (str(tmp_path / "secret.png"), str(tmp_path / "ok" / "../secret.png")):
        with pytest.raises(APIError, match="must lie under"):
            load_image(path, limits, "p")
    assert load_image("file://" + str(tmp_path / "ok" / "cat.png"), limits, "p").size == (3, 2)


def test_pixel_limit_is_read_from_the_header():
    """A decompression bomb (a few KiB of PNG, 9000x8000 pixels) is refused
    from its header, before its pixels are decoded."""
    buf = io.BytesIO()
    Image.new("1", (9000, 8000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 1 << 20
    with pytest.raises(APIError, match="9000x8000 pixels"):
        load_image(_url(buf.getvalue()), ImageLimits(), "p")
