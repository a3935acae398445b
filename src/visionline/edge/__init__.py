"""The line agent: frames from the camera, verdicts in process, reject signals to the PLC."""

from visionline.edge._types import SignalSink, Verdict

__all__ = ["SignalSink", "Verdict"]
