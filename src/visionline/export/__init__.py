"""Edge optimisation: ONNX export with parity, INT8/FP16, pruning, benchmarks, signed bundles, Triton.

Names are imported lazily, so importing the package costs nothing until a name is used. The edge
runtime names (`load_bundle`, `verify_bundle`, `EdgeModel`, ...) come from `visionline_edge`, the
runtime that devices install on their own.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Calibration": "_options",
    "quantize_int8": "_quantize",
    "search_int8": "_quantize",
    "stratified_indices": "_quantize",
    "Int8Choice": "_quantize",
    "convert_fp16": "_quantize",
    "export_onnx": "_onnx",
    "check_parity": "_onnx",
    "ParityReport": "_onnx",
    "accuracy_gate": "_gate",
    "compare_decisions": "_gate",
    "operating_metrics": "_gate",
    "GateResult": "_gate",
    "prune_channels": "_prune",
    "finetune": "_prune",
    "footprint": "_prune",
    "PruneReport": "_prune",
    "ExportConfig": "_pipeline",
    "ExportResult": "_pipeline",
    "export_model": "_pipeline",
    "generate_keys": "_signing",
    "write_triton_repo": "_triton",
    "parse_triton_config": "_triton",
    "bench": "_bench",
    "BenchReport": "_bench",
    "EdgeModel": "visionline_edge",
    "EdgePrediction": "visionline_edge",
    "load_bundle": "visionline_edge",
    "verify_bundle": "visionline_edge",
    "image_quality": "visionline_edge",
}

__all__ = [
    "BenchReport",
    "Calibration",
    "EdgeModel",
    "EdgePrediction",
    "ExportConfig",
    "ExportResult",
    "GateResult",
    "Int8Choice",
    "ParityReport",
    "PruneReport",
    "accuracy_gate",
    "bench",
    "check_parity",
    "compare_decisions",
    "convert_fp16",
    "export_model",
    "export_onnx",
    "finetune",
    "footprint",
    "generate_keys",
    "image_quality",
    "load_bundle",
    "operating_metrics",
    "parse_triton_config",
    "prune_channels",
    "quantize_int8",
    "search_int8",
    "stratified_indices",
    "verify_bundle",
    "write_triton_repo",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = _EXPORTS[name]
        path = module if module == "visionline_edge" else f"visionline.export.{module}"
        return getattr(import_module(path), name)
    raise AttributeError(f"module 'visionline.export' has no attribute {name!r}")
