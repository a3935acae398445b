"""The lifecycle DAG: which steps exist, what each needs, and what it asks of a Ray cluster."""

from __future__ import annotations

from visionline.config import PipelineConfig
from visionline.pipeline import _steps_data as data
from visionline.pipeline import _steps_edge as edge
from visionline.pipeline import _steps_model as model
from visionline.pipeline._graph import Graph, Step


def _training_resources(config: PipelineConfig) -> dict[str, float]:
    """Training asks for a GPU when the config says cuda, so Ray places it on a GPU node."""
    device = str(config.train.get("device", "auto"))
    return {"cpus": 2, "gpus": 1 if device == "cuda" else 0}


STEPS: list[Step] = [
    Step("ingest", data.ingest, (), "ingest images as a content-addressed version", cacheable=False),
    Step("validate", data.validate, ("ingest",), "check blobs and class counts"),
    Step("split", data.split, ("validate",), "stratified, leak-free train/val/test split"),
    Step("tune", model.tune, ("split",), "Optuna search for training settings",
         enabled=lambda c: c.tune.enabled, resources=_training_resources),
    Step("train", model.train, ("split", "tune"), "train the model (pipeline.train.method)",
         resources=_training_resources),
    Step("evaluate", model.evaluate, ("train", "split"), "test metrics with confidence intervals"),
    Step("gate", model.gate, ("evaluate",), "quality gates from the project goals"),
    Step("export", edge.export, ("gate", "train", "split"), "ONNX FP32 with a parity check"),
    Step("quantise", edge.quantise, ("export", "train", "split"), "INT8 with an accuracy gate",
         enabled=lambda c: c.quantise.enabled),
    Step("bundle", edge.bundle, ("quantise", "export", "train", "split"),
         "signed edge bundle with drift reference statistics"),
    Step("benchmark", edge.benchmark, ("bundle", "train"), "latency against the edge budget",
         enabled=lambda c: c.benchmark.enabled, resources=lambda _c: {"cpus": 2}),
    Step("register", edge.register, ("benchmark", "bundle", "train"),
         "register and promote through the champion comparison", cacheable=False),
    Step("deploy", edge.deploy, ("register", "bundle"),
         "install in the model repository and hot-swap the server", cacheable=False),
]

RESUMABLE = {"train"}
"""Steps that continue from their own partial work (train resumes from `last.pt`)."""


def build_graph(config: PipelineConfig) -> Graph:
    return Graph(STEPS, config)
