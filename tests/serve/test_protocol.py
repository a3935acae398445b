"""The v2 tensor codec: JSON, Triton's binary extension, and the bad-input messages."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from visionline.errors import DataError
from visionline.serve._protocol import (
    build_http_response,
    deserialize_bytes,
    parse_http_request,
    serialize_bytes,
)


def _binary_request(inputs: list[tuple[str, str, list[int], bytes]], outputs=None) -> tuple[bytes, str]:
    header = {
        "inputs": [
            {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(raw)}}
            for n, d, s, raw in inputs
        ]
    }
    if outputs:
        header["outputs"] = outputs
    head = json.dumps(header).encode()
    return head + b"".join(raw for *_, raw in inputs), str(len(head))


def test_binary_fp32_round_trip():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    body, length = _binary_request([("image", "FP32", [2, 3, 2, 2], x.tobytes())])
    _, tensors = parse_http_request(body, length)
    assert tensors[0].datatype == "FP32"
    np.testing.assert_array_equal(tensors[0].array, x)


def test_bytes_elements_are_length_prefixed():
    items = [b"\x89PNG-one", b"", b"jpeg\x00two"]
    raw = serialize_bytes(np.array(items, dtype=object))
    assert raw[:4] == struct.pack("<I", len(items[0]))
    assert list(deserialize_bytes(raw, 3, "image")) == items
    with pytest.raises(DataError, match="truncated"):
        deserialize_bytes(raw[:-1], 3, "image")
    with pytest.raises(DataError, match="holds 3 elements, not 2"):
        deserialize_bytes(raw, 2, "image")


def test_json_data_nested_and_flat():
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]})
    _, tensors = parse_http_request(body.encode(), None)
    np.testing.assert_array_equal(tensors[0].array, np.array([[1, 2], [3, 4]], dtype=np.float32))


@pytest.mark.parametrize(
    "body, header, message",
    [
        (b"not json", None, "not valid JSON"),
        (b'{"inputs": []}', None, "inputs"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}]}', None, "needs 3"),
        (b'{"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}', None, "unknown datatype"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}', None, "negative"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}]}', None, "non-numeric"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', None, "no data"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', "abc", "integer"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', "9999", "larger than the body"),
    ],
)
def test_bad_requests_raise_one_clear_sentence(body, header, message):
    with pytest.raises(DataError, match=message) as info:
        parse_http_request(body, header)
    assert "\n" not in str(info.value)


def test_binary_size_mismatch_is_refused():
    x = np.zeros(4, dtype=np.float32)
    body, length = _binary_request([("image", "FP32", [5], x.tobytes())])
    with pytest.raises(DataError, match="needs 20"):
        parse_http_request(body, length)
    body, length = _binary_request([("image", "FP32", [4], x.tobytes())])
    with pytest.raises(DataError, match="no input claims"):
        parse_http_request(body + b"extra", length)


def test_response_mixes_binary_and_json_outputs():
    probs = np.array([[0.7, 0.3]], dtype=np.float32)
    emb = np.ones((1, 4), dtype=np.float32)
    body, length = build_http_response("m", "1", "r1", {"p": probs, "e": emb}, {"p": True, "e": False})
    header = json.loads(body[:length])
    assert header["id"] == "r1" and header["model_version"] == "1"
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert header["outputs"][1]["data"] == [1.0] * 4
    np.testing.assert_array_equal(np.frombuffer(body[length:], dtype=np.float32), probs.ravel())
    body, length = build_http_response("m", "1", None, {"e": emb}, {"e": False})
    assert length is None and json.loads(body)["outputs"][0]["shape"] == [1, 4]


def test_shape_too_large_for_int64_is_a_clear_400():
    from visionline.errors import DataError
    from visionline.serve._protocol import RequestInput, tensor_from_json

    item = RequestInput(name="image", datatype="FP32", shape=[2**40, 2**40, 2**40], data=[0.0])
    with pytest.raises(DataError, match="too large"):
        tensor_from_json(item)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e39])
def test_non_finite_fp32_is_refused_in_json_and_binary(value):
    data = [0.0, value, 1.0, 2.0]
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": data}]})
    with pytest.raises(DataError, match="NaN or infinite"):
        parse_http_request(body.encode(), None)
    with np.errstate(over="ignore"):
        raw = np.array(data, dtype=np.float64).astype(np.float32).tobytes()
    body, length = _binary_request([("x", "FP32", [1, 4], raw)])
    with pytest.raises(DataError, match="NaN or infinite"):
        parse_http_request(body, length)
