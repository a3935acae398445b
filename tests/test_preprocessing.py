import io
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from visionline.errors import ImageError
from visionline.preprocessing import Preprocessing, ResizeMode, decode_image


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", list(ResizeMode))
def test_batch_has_model_layout_for_any_aspect_ratio(mode):
    spec = Preprocessing(size=32, resize_mode=mode)
    images = [Image.new("RGB", (80, 40), (255, 0, 0)), Image.new("L", (30, 90), 10)]
    batch = spec(images)
    assert batch.shape == (2, 3, 32, 32)
    assert batch.dtype == np.float32


def test_normalisation_uses_mean_and_std_per_channel():
    spec = Preprocessing(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    batch = spec([Image.new("RGB", (16, 16), (255, 255, 0))])
    assert np.allclose(batch[0, 0], 1.0)
    assert np.allclose(batch[0, 1], 2.0)
    assert np.allclose(batch[0, 2], -1.0)


def test_bgr_order_swaps_channels_consistently():
    rgb = Preprocessing(size=16)([Image.new("RGB", (16, 16), (200, 100, 0))])
    bgr = Preprocessing(size=16, channel_order="BGR")([Image.new("RGB", (16, 16), (200, 100, 0))])
    assert np.allclose(rgb[:, ::-1], bgr)


def test_round_trips_through_dict():
    spec = Preprocessing(size=64, resize_mode="letterbox", channel_order="BGR")
    assert Preprocessing.from_dict(spec.to_dict()) == spec


def test_letterbox_keeps_aspect_ratio_with_black_bars():
    pixels = Preprocessing(size=32, resize_mode="letterbox").to_uint8(
        Image.new("RGB", (64, 32), (255, 255, 255))
    )
    assert pixels[0].max() == 0 and pixels[16].min() == 255


def test_decode_refuses_truncated_image():
    data = _png(64, 64)
    with pytest.raises(ImageError, match="cannot be decoded"):
        decode_image(data[: len(data) // 2])


def test_decode_refuses_garbage():
    with pytest.raises(ImageError, match="valid JPEG or PNG"):
        decode_image(b"not an image at all")


def test_decode_refuses_too_many_pixels_before_decoding():
    with pytest.raises(ImageError, match="above the limit"):
        decode_image(_png(200, 200, "1"), max_pixels=10_000)


def test_invalid_spec_values_are_refused():
    with pytest.raises(ImageError, match="channel_order"):
        Preprocessing(channel_order="RGBA")
    with pytest.raises(ImageError, match="size"):
        Preprocessing(size=4)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width`×`height` pixels: all a decompression bomb needs to be opened."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_concurrent_decodes_of_good_images_and_bombs_are_thread_safe():
    """Threads decoding at once each get their own verdict, and no global state changes
    (the old `warnings.catch_warnings` left the process's warning filters altered)."""
    good = _png(32, 24)
    bombs = [
        _png_header(7_000, 7_000),  # over visionline's limit only
        _png_header(10_000, 10_000),  # Pillow warns too
        _png_header(20_000, 20_000),  # Pillow refuses on its own
    ]
    jobs = [good if i % 2 else bombs[i % 3] for i in range(600)]
    filters, limit = list(warnings.filters), Image.MAX_IMAGE_PIXELS

    def decode(data: bytes) -> tuple[int, int] | str:
        try:
            return decode_image(data).size
        except ImageError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(decode, jobs))
    for data, result in zip(jobs, results):
        if data is good:
            assert result == (32, 24)
        else:
            assert "above the limit" in result or "decompression bomb" in result, result
    assert warnings.filters == filters and Image.MAX_IMAGE_PIXELS == limit


def test_a_bomb_is_refused_even_when_warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="above the limit|decompression bomb"):
            decode_image(_png_header(10_000, 10_000), max_pixels=200_000_000)


def test_autocontrast_stretches_a_dim_image_and_is_recorded():
    dim = Image.fromarray(np.tile(np.linspace(100, 140, 32, dtype=np.uint8), (32, 1)))
    plain = Preprocessing(size=32, resize_mode=ResizeMode.LETTERBOX)
    stretched = Preprocessing(size=32, resize_mode=ResizeMode.LETTERBOX, autocontrast=True)
    assert np.ptp(stretched.to_uint8(dim)) > 200 > np.ptp(plain.to_uint8(dim))
    assert Preprocessing.from_dict(stretched.to_dict()) == stretched
    older = {k: v for k, v in plain.to_dict().items() if k != "autocontrast"}
    assert Preprocessing.from_dict(older) == plain  # manifests written before the field


def test_decode_garbage_message_names_no_buffer_object():
    with pytest.raises(ImageError) as caught:
        decode_image(b"aGVsbG8gd29ybGQ=")  # base64 text, not image bytes
    assert "BytesIO" not in str(caught.value)
    assert str(caught.value).endswith("send a valid JPEG or PNG.")


def test_base64_encoded_image_is_named_as_such():
    import base64

    with pytest.raises(ImageError, match="base64 text, not image bytes"):
        decode_image(base64.b64encode(_png(8, 8)))
