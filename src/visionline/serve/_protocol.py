"""KServe v2 / Open Inference Protocol tensors: JSON, Triton's binary extension, and gRPC.

Both transports decode into the same `Tensor` list, so validation lives in one place and a
tritonclient request means the same thing over HTTP (JSON or binary) and gRPC.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visionline.errors import DataError

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
MAX_DIMS = 8
MAX_ELEMENTS = 1 << 28


class RequestInput(BaseModel):
    """One input tensor of a v2 inference request."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=256)
    shape: list[int] = Field(max_length=MAX_DIMS)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None


class RequestOutput(BaseModel):
    """An output the client asks for, optionally as binary data."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=256)
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """The JSON part of a v2 inference request."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=64)
    outputs: list[RequestOutput] | None = Field(default=None, max_length=64)


@dataclass
class Tensor:
    """A decoded tensor; BYTES tensors hold an object array of `bytes`."""

    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray


def _check_shape(shape: list[int], name: str) -> int:
    if any(d < 0 for d in shape):
        raise DataError(f"Input {name!r} has a negative dimension in shape {shape}; send real sizes.")
    count = math.prod(shape)  # exact for any size, where int64 would overflow
    if count > MAX_ELEMENTS:
        raise DataError(f"Input {name!r} with shape {shape} is too large; send smaller batches.")
    return count


def deserialize_bytes(raw: bytes, count: int, name: str) -> np.ndarray:
    """Triton's BYTES wire format: each element is a 4-byte little-endian length, then the bytes."""
    items: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise DataError(f"BYTES input {name!r} is truncated; send length-prefixed elements.")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > end:
            raise DataError(f"BYTES input {name!r} is truncated; send length-prefixed elements.")
        items.append(raw[offset : offset + length])
        offset += length
    if len(items) != count:
        raise DataError(f"BYTES input {name!r} holds {len(items)} elements, not {count} as its shape says.")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def serialize_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def tensor_from_raw(name: str, datatype: str, shape: list[int], raw: bytes) -> Tensor:
    """A tensor sent as raw bytes (binary HTTP extension or gRPC raw_input_contents)."""
    count = _check_shape(shape, name)
    if datatype == "BYTES":
        return Tensor(name, datatype, shape, deserialize_bytes(raw, count, name).reshape(shape))
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise DataError(f"Input {name!r} has unknown datatype {datatype!r}; use FP32 or BYTES.")
    if len(raw) != count * dtype.itemsize:
        raise DataError(
            f"Input {name!r} carries {len(raw)} bytes but shape {shape} of {datatype} needs "
            f"{count * dtype.itemsize}; fix the shape or the data."
        )
    array = _finite(name, np.frombuffer(raw, dtype=dtype))
    return Tensor(name, datatype, shape, array.reshape(shape))


def tensor_from_json(item: RequestInput) -> Tensor:
    """A tensor whose data is a (possibly nested) JSON list."""
    count = _check_shape(item.shape, item.name)
    if item.data is None:
        raise DataError(f"Input {item.name!r} has no data; send 'data' or binary_data_size.")
    flat: list[Any] = []
    stack = [item.data] if not isinstance(item.data, list) else list(reversed(item.data))
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(reversed(value))
        else:
            flat.append(value)
        if len(flat) > count:
            break
    if len(flat) != count:
        raise DataError(
            f"Input {item.name!r} has {len(flat)} data elements but shape {item.shape} needs {count}."
        )
    if item.datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise DataError(f"BYTES input {item.name!r} must hold strings in JSON; send binary data.")
        array = np.empty(count, dtype=object)
        array[:] = [v.encode("utf-8") for v in flat]
        return Tensor(item.name, item.datatype, item.shape, array.reshape(item.shape))
    dtype = DTYPES.get(item.datatype)
    if dtype is None:
        raise DataError(f"Input {item.name!r} has unknown datatype {item.datatype!r}; use FP32 or BYTES.")
    if not all(isinstance(v, (int, float, bool)) for v in flat):
        raise DataError(f"Input {item.name!r} holds non-numeric data for {item.datatype}.")
    try:
        with np.errstate(over="ignore"):  # an overflow becomes inf, which _finite refuses
            array = np.asarray(flat, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise DataError(f"Input {item.name!r} holds values that do not fit {item.datatype}.") from exc
    array = _finite(item.name, array)
    return Tensor(item.name, item.datatype, item.shape, array.reshape(item.shape))


def _finite(name: str, array: np.ndarray) -> np.ndarray:
    """Refuse NaN and infinity (1e39 overflows FP32): the model would answer NaN, which is not
    valid JSON, and the prediction log would keep it."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(
            f"Input {name!r} holds NaN or infinite values; send finite numbers in the FP32 range."
        )
    return array


def _validation_message(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "body"
    return f"Request field {where!r}: {error['msg']}; follow the v2 inference request schema."


def parse_http_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, list[Tensor]]:
    """Parse a REST inference body, with or without Triton's binary tensor extension."""
    if header_length is not None:
        try:
            json_size = int(header_length)
        except ValueError as exc:
            raise DataError("Inference-Header-Content-Length must be an integer byte count.") from exc
        if not 0 < json_size <= len(body):
            raise DataError("Inference-Header-Content-Length is larger than the body; fix the header.")
        head, binary = body[:json_size], body[json_size:]
    else:
        head, binary = body, b""
    try:
        request = InferenceRequest.model_validate_json(head)
    except ValidationError as exc:
        if exc.errors()[0]["type"].startswith("json"):
            raise DataError("The request body is not valid JSON; send a v2 inference request.") from exc
        raise DataError(_validation_message(exc)) from exc
    tensors = []
    offset = 0
    for item in request.inputs:
        size = (item.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise DataError(f"binary_data_size of {item.name!r} must be a non-negative integer.")
            if offset + size > len(binary):
                raise DataError(f"Input {item.name!r} claims {size} binary bytes the body lacks.")
            tensors.append(tensor_from_raw(item.name, item.datatype, item.shape, binary[offset : offset + size]))
            offset += size
        else:
            tensors.append(tensor_from_json(item))
    if offset != len(binary):
        raise DataError("The body holds binary data no input claims; check binary_data_size.")
    return request, tensors


def wants_binary(request: InferenceRequest, name: str) -> bool:
    """Binary output if asked per output, or for all outputs via binary_data_output."""
    for output in request.outputs or []:
        if output.name == name and output.parameters and "binary_data" in output.parameters:
            return bool(output.parameters["binary_data"])
    return bool((request.parameters or {}).get("binary_data_output", False))


def datatype_of(array: np.ndarray) -> str:
    if array.dtype == object:
        return "BYTES"
    for name, dtype in DTYPES.items():
        if array.dtype == dtype:
            return name
    raise DataError(f"Output dtype {array.dtype} has no v2 datatype.")


def build_http_response(
    model: str, version: str, request_id: str | None, outputs: dict[str, np.ndarray],
    binary: dict[str, bool], parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """JSON header plus appended binary outputs; returns (body, json length or None)."""
    entries, chunks = [], []
    for name, array in outputs.items():
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary.get(name):
            raw = serialize_bytes(array) if datatype == "BYTES" else np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "BYTES":
            entry["data"] = [v.decode("utf-8", "replace") for v in array.reshape(-1)]
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    header: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": entries}
    if request_id:
        header["id"] = request_id
    if parameters:
        header["parameters"] = parameters
    head = json.dumps(header, separators=(",", ":")).encode()
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)
