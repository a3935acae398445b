"""The lifecycle as a DAG of cached, lineage-tracked steps (local or Ray), continuous training,
batch scoring, and `visionline demo`, which runs the whole loop on the synthetic apple line."""

from visionline.pipeline._continuous import RetrainResult, Trigger, check_triggers, retrain
from visionline.pipeline._demo import DemoResult, DemoSettings, run_demo, summary_json
from visionline.pipeline._graph import Artifact, Step, StepContext
from visionline.pipeline._lifecycle import STEPS, build_graph
from visionline.pipeline._records import PipelineRun, StepRecord
from visionline.pipeline._run import PlannedStep, plan, run_pipeline, runs
from visionline.pipeline._score import ScoreResult, ScoreSummary, resolve_bundle, score

__all__ = [
    "STEPS",
    "Artifact",
    "DemoResult",
    "DemoSettings",
    "PipelineRun",
    "PlannedStep",
    "RetrainResult",
    "ScoreResult",
    "ScoreSummary",
    "Step",
    "StepContext",
    "StepRecord",
    "Trigger",
    "build_graph",
    "check_triggers",
    "plan",
    "resolve_bundle",
    "retrain",
    "run_demo",
    "run_pipeline",
    "runs",
    "score",
    "summary_json",
]
