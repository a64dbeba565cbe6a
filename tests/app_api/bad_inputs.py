"""Bad /predict bodies, shared by the in-process and the real-server tests."""

from __future__ import annotations

import json
import zlib

from PIL import Image

from tests.images import b64, encode, textured

MAX_BODY = 8 * 1024 * 1024
MAX_PIXELS = 4_000_000


def bad_inputs() -> list[tuple[str, bytes, dict, int, str]]:
    """(id, raw body, extra headers, expected status, words in detail)."""
    jpeg = encode(textured((400, 300)), quality=90)
    j = lambda s: json.dumps({"image": s}).encode()  # noqa: E731
    bomb = encode(Image.new("1", (5000, 5000)), "PNG")  # 25 Mpx in a few kB
    # A 1x1 PNG whose header claims 100000 x 100000 pixels: refused before decoding.
    png = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    png[16:24] = (100_000).to_bytes(4, "big") * 2
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    frames = [Image.new("L", (4, 4), 0) for _ in range(300)]
    for i, f in enumerate(frames):  # each frame differs, or the GIF writer merges them
        f.putpixel((i % 4, (i // 4) % 4), 255 if (i // 16) % 2 else 128)
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    thin = encode(Image.new("RGB", (1, 39000)), "PNG")  # 39 kpx; 7.6 GB once resized
    return [
        ("empty_object", b"{}", {}, 422, "image"),
        ("bad_data", j("bad data"), {}, 400, "base64"),
        ("empty_string", j(""), {}, 400, "empty"),
        ("whitespace", j("   "), {}, 400, "empty"),
        ("base64_not_image", j(b64(b"hello, this is not a picture" * 20)), {}, 400, "not an image"),
        ("base64_of_nothing", j("===="), {}, 400, "base64"),
        ("truncated_jpeg", j(b64(jpeg[: len(jpeg) // 2])), {}, 400, "truncated"),
        ("jpeg_header_only", j(b64(jpeg[:200])), {}, 400, ""),
        ("pixel_bomb", j(b64(bomb)), {}, 413, "pixels"),
        ("header_bomb_10G_pixels", j(b64(bytes(png))), {}, 413, "pixels"),
        ("image_number", b'{"image": 12345}', {}, 422, "string"),
        ("image_null", b'{"image": null}', {}, 422, "string"),
        ("image_list", b'{"image": ["a"]}', {}, 422, "string"),
        ("json_list", b'["image"]', {}, 422, ""),
        ("malformed_json", b'{"image": "abc', {}, 422, "JSON"),
        ("not_json", b"image=abc", {}, 422, ""),
        ("empty_body", b"", {}, 422, ""),
        ("thin_strip_1x39000", j(b64(thin)), {}, 422, "times the other"),
        ("raw_thin_strip", thin, {"content-type": "image/png"}, 422, "times the other"),
        ("gif_300_frames", j(b64(gif)), {}, 413, "frames"),
        ("raw_jpeg_as_text", jpeg, {"content-type": "text/plain"}, 415, "image/jpeg"),
        ("raw_not_image", b"\xff\xfe\x00 garbage", {"content-type": "application/octet-stream"},
         400, "not an image"),
        ("raw_empty", b"", {"content-type": "image/jpeg"}, 400, "empty"),
        ("form_body", b"image=abc", {"content-type": "application/x-www-form-urlencoded"}, 415, ""),
        ("over_size", b'{"image": "' + b"A" * (MAX_BODY + 10) + b'"}', {}, 413, "limit"),
    ]
