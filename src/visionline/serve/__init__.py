"""serve stage: KServe v2 / Open Inference Protocol over REST and gRPC for edge bundles.

`InferenceServer(ServerConfig(repository=...)).run()` serves every bundle under
`REPO/<model>/<version>/` with image-native input, dynamic batching, hot swap, canary and
shadow routing, Prometheus metrics and a prediction-log hook.
"""

from visionline.serve._batcher import Batcher, OverloadedError
from visionline.serve._config import Route, ServerConfig, parse_version_policy
from visionline.serve._hooks import PredictionHook, PredictionRecord
from visionline.serve._repository import ModelRepository
from visionline.serve._runner import ModelRunner, load_runner
from visionline.serve._server import InferenceServer
from visionline.serve._service import ROUTE_HEADER, InferenceService

__all__ = [
    "ROUTE_HEADER",
    "Batcher",
    "InferenceServer",
    "InferenceService",
    "ModelRepository",
    "ModelRunner",
    "OverloadedError",
    "PredictionHook",
    "PredictionRecord",
    "Route",
    "ServerConfig",
    "load_runner",
    "parse_version_policy",
]
