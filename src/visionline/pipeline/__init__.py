"""The lifecycle run end to end: `visionline demo` on the embedded synthetic apple line."""

from visionline.pipeline._demo import DemoResult, DemoSettings, run_demo, summary_json

__all__ = ["DemoResult", "DemoSettings", "run_demo", "summary_json"]
