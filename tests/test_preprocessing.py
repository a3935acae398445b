import io

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
