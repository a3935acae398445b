"""Verdicts within the belt's deadline: the bundle's model in process, the fail-safe otherwise.

Inference runs on one worker thread so that the line waits at most until the item's deadline:
a verdict that misses it, a frame that cannot be decoded, or a model that raises takes the
plant's configured fail-safe (reject or pass) and is counted; the agent never stops for one item.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
from PIL import Image

from visionline.edge._frames import Frame
from visionline.edge._types import Verdict

__all__ = ["LOG_TAGS", "Decider", "Decision", "FailSafe", "infer"]

LOG_TAGS = ("delivery_id", "supplier_id")
"""Frame metadata that goes into the prediction log's columns of the same name (a batch or
delivery tag read from the PLC or the file name), so the central side can report per delivery."""

log = logging.getLogger("visionline.edge")


class FailSafe(str, Enum):
    """What the ejector does when the model did not decide in time."""

    reject = "reject"
    pass_ = "pass"


@dataclass(frozen=True)
class Decision:
    """A verdict and its prediction-log record (the row the central log stores)."""

    verdict: Verdict
    record: dict[str, Any]
    image: bytes | None


class Decider:
    """Decide one frame at a time with an `EdgeModel` (from `visionline_edge.load_bundle`)."""

    def __init__(
        self,
        model: Any,
        deadline_ms: float = 100.0,
        fail_safe: FailSafe = FailSafe.reject,
        line: str | None = None,
    ) -> None:
        self.model = model
        self.deadline_s = deadline_ms / 1000.0
        self.fail_safe = FailSafe(fail_safe)
        self.line = line
        self.version = f"{model.name}:{model.version}"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verdict")

    def warm_up(self, runs: int = 3) -> None:
        """Run the model a few times on a grey frame on the verdict thread before the first item:
        ONNX Runtime's first runs allocate its buffers and the thread starts, which would
        otherwise cost the line's first items their deadline."""
        size = int(getattr(self.model.preprocessing, "size", 64))
        frame = Frame("warm-up", time.time(), array=np.full((size, size, 3), 128, np.uint8))
        try:
            for _ in range(runs):
                self._pool.submit(infer, self.model, frame).result()
        except Exception as exc:  # noqa: BLE001 - a broken model shows as fail-safes per item
            log.warning("warm-up run failed (%s); items will show why", exc)

    def swap(self, model: Any) -> Any:
        """Decide with `model` from the next item on; returns the model it replaced."""
        previous, self.model = self.model, model
        self.version = f"{model.name}:{model.version}"
        return previous

    def decide(self, frame: Frame) -> Decision:
        """The verdict for `frame`, due `deadline_ms` after it was captured."""
        remaining = frame.captured_at + self.deadline_s - time.time()
        reason = ""
        result = None
        if remaining <= 0:
            reason = "deadline"
        else:
            future = self._pool.submit(infer, self.model, frame)
            try:
                result = future.result(timeout=remaining)
            except FutureTimeout:
                future.cancel()  # still queued behind a stalled one: never run it late
                reason = "deadline"
            except Exception as exc:  # noqa: BLE001 - a corrupt frame or model error must not stop the line
                reason = "corrupt" if _is_image_error(exc) else "error"
                log.warning("item %s: %s (%s)", frame.item_id, reason, exc)
        decided = time.time()
        if result is None:
            if reason == "deadline":
                log.warning(
                    "item %s missed its %.0f ms deadline; fail-safe %s",
                    frame.item_id, self.deadline_s * 1000, self.fail_safe.value,
                )
            return self._fail_safe(frame, reason, decided)
        prediction, quality = result
        model = self.model
        verdict = Verdict(
            item_id=frame.item_id,
            reject=prediction.defect_score > model.threshold,
            score=prediction.defect_score,
            label=prediction.decision,
            model_version=self.version,
            captured_at=frame.captured_at,
            decided_at=decided,
        )
        record = self._record(verdict, route="edge", frame=frame)
        record.update(
            probabilities={
                c: round(float(p), 6) for c, p in zip(model.classes, prediction.probabilities)
            },
            predicted_class=prediction.predicted_class,
            embedding=base64.b64encode(
                np.asarray(prediction.embedding, np.float16).tobytes()
            ).decode(),
            quality=[float(v) for v in quality],
        )
        if prediction.anomaly_score is not None:  # an anomaly bundle: its raw detector score too
            record["anomaly_score"] = float(prediction.anomaly_score)
        return Decision(verdict, record, frame.data)

    def decide_item(self, frames: list[Frame]) -> tuple[Decision, Frame]:
        """One verdict for several views of one item, due `deadline_ms` after its first view:
        the most defective view decides (a defect seen from one side is a defect), and a view
        that could not be decided makes the whole item take the fail-safe (its unseen side
        cannot be vouched for). Returns the decision and the view it came from."""
        if len(frames) == 1 and "item" not in frames[0].meta:  # single-view line
            return self.decide(frames[0]), frames[0]
        item, start = frames[0].meta.get("item", frames[0].item_id), frames[0].captured_at
        views = [Frame(item, start, f.data, f.array, f.meta) for f in frames]
        decisions = [self.decide(view) for view in views]
        failed = [d for d in decisions if d.verdict.fail_safe]
        chosen = failed[0] if failed else max(decisions, key=lambda d: d.verdict.score)
        index = decisions.index(chosen)
        chosen.record["views"] = len(frames)
        return chosen, views[index]

    def _fail_safe(self, frame: Frame, reason: str, decided: float) -> Decision:
        reject = self.fail_safe is FailSafe.reject
        verdict = Verdict(
            item_id=frame.item_id,
            reject=reject,
            score=float("nan"),
            label=f"fail_safe_{self.fail_safe.value}",
            model_version=self.version,
            captured_at=frame.captured_at,
            decided_at=decided,
            fail_safe=True,
            reason=reason,
        )
        record = self._record(verdict, route="fail_safe", frame=frame)
        record.update(probabilities={}, predicted_class=reason, defect_score=-1.0)
        return Decision(verdict, record, frame.data)

    def _record(self, verdict: Verdict, route: str, frame: Frame) -> dict[str, Any]:
        tags = {k: str(frame.meta[k]) for k in LOG_TAGS if frame.meta.get(k) is not None}
        return {
            **tags,
            "id": uuid.uuid4().hex,
            "ts": verdict.captured_at,
            "model": self.model.name,
            "version": self.model.version,
            "route": route,
            "request_id": verdict.item_id,
            "line": self.line,
            "defect_score": verdict.score,
            "flagged": verdict.reject,
            "decision": verdict.label,
            "threshold": float(self.model.threshold),
            "latency_ms": (verdict.decided_at - verdict.captured_at) * 1000.0,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def infer(model: Any, frame: Frame) -> tuple[Any, np.ndarray]:
    """`model`'s prediction for a frame and the image-quality statistics of its input, computed
    on the same resized pixels the server logs (`Preprocessing.to_uint8`)."""
    from visionline_edge import image_quality
    from visionline_edge.preprocessing import decode_image

    if frame.array is not None:
        image = Image.fromarray(np.asarray(frame.array, dtype=np.uint8))
    else:
        image = decode_image(frame.data or b"", model.max_pixels)
    pre = model.preprocessing
    pixels = pre.to_uint8(image)[None]
    prediction = next(iter(model.predict_array(pre.normalize(pixels))))
    return prediction, image_quality(pixels, pre.channel_order)[0]


def _is_image_error(exc: Exception) -> bool:
    from visionline_edge.errors import ImageError

    return isinstance(exc, (ImageError, OSError, ValueError))
