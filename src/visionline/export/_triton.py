"""A Triton Inference Server model repository for the exported ONNX model."""

from __future__ import annotations

import shutil
from pathlib import Path

from visionline.errors import ConfigError
from visionline.export._onnx import INPUT_NAME


def triton_config(
    name: str,
    image_size: int,
    num_classes: int,
    embedding_dim: int,
    max_batch_size: int = 32,
    max_queue_delay_us: int = 2000,
    instances: int = 1,
) -> str:
    """`config.pbtxt` text: ONNX Runtime backend, dynamic batching, the bundle's IO signature."""
    return f'''name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, {image_size}, {image_size} ]
  }}
]
output [
  {{
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ {num_classes} ]
    label_filename: "labels.txt"
  }},
  {{
    name: "embedding"
    data_type: TYPE_FP32
    dims: [ {embedding_dim} ]
  }}
]
dynamic_batching {{
  preferred_batch_size: [ {", ".join(str(b) for b in sorted({min(8, max_batch_size), max_batch_size}))} ]
  max_queue_delay_microseconds: {max_queue_delay_us}
}}
instance_group [
  {{
    count: {instances}
    kind: KIND_CPU
  }}
]
version_policy: {{ latest: {{ num_versions: 1 }} }}
'''


def parse_triton_config(text: str):  # -> model_config_pb2.ModelConfig
    """Parse config text into Triton's own `ModelConfig` protobuf; a bad config raises ConfigError."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(
            f"Generated Triton config does not parse ({exc}); report this as a bug."
        ) from exc


def write_triton_repo(
    repo: Path,
    name: str,
    onnx_path: Path,
    classes: list[str],
    image_size: int,
    embedding_dim: int,
    version: int = 1,
    max_batch_size: int = 32,
    max_queue_delay_us: int = 2000,
) -> Path:
    """Write `repo/<name>/config.pbtxt`, `labels.txt` and `<version>/model.onnx`; return the model dir."""
    if version < 1:
        raise ConfigError(
            f"Triton model versions start at 1, not {version}; pass --triton-version 1 or more."
        )
    text = triton_config(
        name, image_size, len(classes), embedding_dim, max_batch_size, max_queue_delay_us
    )
    parsed = parse_triton_config(text)
    if parsed.name != name or parsed.max_batch_size != max_batch_size:
        raise ConfigError(f"Triton config for {name} did not round-trip; report this as a bug.")
    model_dir = repo / name
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, model_dir / str(version) / "model.onnx")
    (model_dir / "labels.txt").write_text("\n".join(classes) + "\n")
    (model_dir / "config.pbtxt").write_text(text)
    return model_dir
