"""The line agent: frames from the camera, verdicts in process, reject signals to the PLC.

`open_source` gives frames (hot folder, `synth://`, video/RTSP/USB, GenICam), `TaggedSource`
names them by the PLC's trigger tag, `Decider` turns one into a `Verdict`
within its deadline (or the fail-safe), `Outbox` keeps every verdict until `SyncWorker` has it
acknowledged by the central log, and `LineAgent` runs the loop.
"""

from visionline.edge._agent import AgentStats, LineAgent
from visionline.edge._config import EdgeConfig, load_edge_config
from visionline.edge._decide import Decider, Decision, FailSafe
from visionline.edge._fleet import Rollout, RolloutEvent
from visionline.edge._frames import (
    Frame,
    FrameSource,
    HotFolderSource,
    SynthSource,
    VideoSource,
    group_views,
    open_source,
)
from visionline.edge._genicam import GenICamSource
from visionline.edge._metrics import AgentMetrics
from visionline.edge._outbox import ImageStore, Outbox
from visionline.edge._sinks import BufferedSink, item_key, open_sink
from visionline.edge._sync import SyncWorker
from visionline.edge._trigger import TaggedSource, open_item_tag
from visionline.edge._types import SignalSink, Verdict

__all__ = [
    "AgentMetrics",
    "AgentStats",
    "BufferedSink",
    "Decider",
    "Decision",
    "EdgeConfig",
    "FailSafe",
    "Frame",
    "FrameSource",
    "GenICamSource",
    "HotFolderSource",
    "ImageStore",
    "LineAgent",
    "Outbox",
    "Rollout",
    "RolloutEvent",
    "SignalSink",
    "SyncWorker",
    "SynthSource",
    "TaggedSource",
    "Verdict",
    "VideoSource",
    "group_views",
    "item_key",
    "load_edge_config",
    "open_item_tag",
    "open_sink",
    "open_source",
]
