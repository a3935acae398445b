"""INT8 static quantisation (ONNX Runtime, QDQ, per-channel weights), chosen by measurement.

`search_int8` is what export uses: class-stratified calibration images, the calibration method
whose INT8 model moves the fewest decisions on them, and, when the fully quantised model still
moves too many, a per-node-group sensitivity sweep (quantise one group at a time, measure the
score change) that keeps the most sensitive groups in float until the calibration images agree.
What it measured goes into the bundle beside the accuracy gate, which then decides on images
calibration did not see.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionline.config import GOOD_CLASS
from visionline.errors import ConfigError, DataError
from visionline.export._onnx import INPUT_NAME
from visionline.export._options import MEASURED_CALIBRATIONS, Calibration

QUANTISABLE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_BLOCK = re.compile(r"^(.*?blocks\.\d+\.\d+)/")
MAX_FLOAT_GROUPS = 4


def stratified_indices(classes: Sequence[str], count: int, seed: int = 0) -> np.ndarray:
    """`count` image indices spread over the classes in proportion, at least one of each.

    Calibration ranges come from these images; without defect images the activations that
    defects cause (dark blobs, torn edges) fall outside the ranges and get clipped.
    """
    classes = np.asarray(list(classes))
    names = sorted(set(classes.tolist()))
    if GOOD_CLASS not in names or len(names) < 2:
        raise DataError(
            "INT8 calibration needs good and defect images; add defect images to the train split "
            "or export with --no-int8."
        )
    rng = np.random.default_rng(seed)
    count = min(count, len(classes))
    per_class = {n: rng.permutation(np.flatnonzero(classes == n)) for n in names}
    quota = {n: max(1, round(count * len(per_class[n]) / len(classes))) for n in names}
    while sum(quota.values()) > max(count, len(names)):
        largest = max(quota, key=quota.get)
        quota[largest] -= 1
    chosen = np.concatenate([per_class[n][: quota[n]] for n in names])
    return np.sort(chosen)


class _Reader:
    """Equal-size batches (ORT's histogram calibrators cannot stack a short last batch)."""

    def __init__(self, images: np.ndarray, batch_size: int) -> None:
        size = max(b for b in range(1, min(batch_size, len(images)) + 1) if len(images) % b == 0)
        self._batches = iter(
            [{INPUT_NAME: images[i : i + size]} for i in range(0, len(images), size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _prepare(fp32_path: Path, out: Path) -> tuple[Path, list[str]]:
    """Shape-inferred copy with the image channels padded to 4; names of nodes kept float."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        graph = onnx.load(str(fp32_path)).graph
    except Exception as exc:  # onnx raises DecodeError/ValueError/OSError for a bad file
        raise ConfigError(
            f"{fp32_path} is not a readable ONNX model ({exc.__class__.__name__}); re-export it."
        ) from exc
    if not any(node.op_type in QUANTISABLE_OPS for node in graph.node):
        raise ConfigError(
            f"{fp32_path.name} has no convolution or matrix multiply that INT8 could run, so it "
            "cannot be quantised; export it with --no-int8."
        )
    quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=True)
    return out, _head_nodes(out) + _pad_input_channels(out)


def _quantize_prepared(
    prepared: Path,
    out: Path,
    calibration: np.ndarray,
    method: Calibration,
    exclude: Sequence[str],
    cache: Path,
    batch_size: int = 16,
) -> Path:
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints calibration progress
        if not cache.is_file():
            _calibrate(prepared, calibration, {Calibration(method): cache}, batch_size)
        _quantize_static(prepared, out, _ort_method(method), exclude, cache)
    return out


def _ort_method(method: Calibration) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    names = {Calibration.MINMAX: "MinMax", Calibration.ENTROPY: "Entropy",
             Calibration.PERCENTILE: "Percentile"}
    return getattr(CalibrationMethod, names[Calibration(method)])


_HISTOGRAMS = {
    # Entropy gets 256 histogram bins: with ORT's default 128 (= its 128 quantised bins) the
    # only candidate range is the full one, i.e. MinMax again, and ORT's Python search grows
    # with bins squared (1024 bins took 140 s on a small model). Percentile keeps ORT's defaults.
    Calibration.ENTROPY: {"method": "entropy", "num_bins": 256, "num_quantized_bins": 128},
    Calibration.PERCENTILE: {"method": "percentile", "num_bins": 2048, "num_quantized_bins": 2048},
}
PERCENTILE = 99.999
"""ORT's default percentile for `Calibration.PERCENTILE`."""


def _calibrate(
    prepared: Path, calibration: np.ndarray, caches: dict[Calibration, Path], batch_size: int = 16
) -> None:
    """Activation ranges of each method into its cache file: with a histogram method among them
    all together by `_calibrate_histograms`, MinMax alone by ORT's (light) calibrator."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if any(method in _HISTOGRAMS for method in caches):
        _calibrate_histograms(prepared, calibration, caches, batch_size)
    elif Calibration.MINMAX in caches:
        cache = caches[Calibration.MINMAX]
        calibrator = create_calibrator(
            prepared,
            None,
            augmented_model_path=str(cache.with_suffix(".augmented.onnx")),
            calibrate_method=_ort_method(Calibration.MINMAX),
            extra_options={"symmetric": False, "moving_average": False},
        )
        calibrator.collect_data(_Reader(calibration, batch_size))
        save_tensors_data(calibrator.compute_data(), cache)


def _calibrate_histograms(
    prepared: Path, calibration: np.ndarray, caches: dict[Calibration, Path], batch_size: int
) -> None:
    """MinMax, Entropy and Percentile ranges from one pair of passes over the calibration images.

    ORT's histogram calibrators keep every intermediate tensor of every image in memory and
    copy it twice before binning (6.8 GB for 100 images of lite0 at 224 px), once per method.
    The counts ORT bins from all images at once are the sums of per-batch counts over the same
    range (the tensor's largest magnitude, both signs), so a first pass finds each tensor's
    min and max (MinMax's ranges, as ORT's ReduceMin/ReduceMax give them), a second adds up
    each histogram method's counts batch by batch, and ORT's own collector turns them into
    the same ranges.
    """
    from onnxruntime.quantization.calibrate import (
        HistogramCollector,
        TensorsData,
        create_calibrator,
        save_tensors_data,
    )

    first = next(iter(caches.values()))
    calibrator = create_calibrator(
        prepared,
        None,
        augmented_model_path=str(first.with_suffix(".augmented.onnx")),
        calibrate_method=_ort_method(Calibration.ENTROPY),
        extra_options={"symmetric": False},
    )
    session = calibrator.infer_session
    names = [output.name for output in session.get_outputs()]
    tensors = [(i, name) for i, name in enumerate(names) if name in calibrator.tensors_to_calibrate]

    def passes() -> Any:
        reader = _Reader(calibration, batch_size)
        while (feed := reader.get_next()) is not None:
            yield session.run(None, feed)

    low: dict[str, np.ndarray] = {}
    high: dict[str, np.ndarray] = {}
    for outputs in passes():
        for i, name in tensors:
            if outputs[i].size:
                lo, hi = np.nanmin(outputs[i]), np.nanmax(outputs[i])
                low[name] = min(low.get(name, lo), lo)
                high[name] = max(high.get(name, hi), hi)
    bound = {}
    for i, name in tensors:
        zero = np.zeros((), dtype=np.float32)
        low.setdefault(name, zero)
        high.setdefault(name, zero)
        bound[name] = np.array(max(abs(low[name]), abs(high[name])), dtype=low[name].dtype)
    if Calibration.MINMAX in caches:
        ranges = {name: (low[name].reshape(1), high[name].reshape(1)) for _, name in tensors}
        save_tensors_data(
            TensorsData(_ort_method(Calibration.MINMAX), ranges), caches[Calibration.MINMAX]
        )
    histograms = [method for method in caches if method in _HISTOGRAMS]
    bins = sorted({_HISTOGRAMS[m]["num_bins"] for m in histograms}, reverse=True)
    counts: dict[int, dict[str, np.ndarray]] = {n: {} for n in bins}
    for outputs in passes():
        for i, name in tensors:
            values, span = outputs[i].ravel(), (-bound[name], bound[name])
            finest = np.histogram(values, bins[0], range=span)[0]
            for n in bins:
                # numpy bins by comparing with float32 edges, and the edges of n bins are every
                # (finest/n)-th edge of the finest (power-of-two steps), so summing is exact
                hist = (
                    finest.reshape(n, -1).sum(axis=1) if bins[0] % n == 0
                    else np.histogram(values, n, range=span)[0]
                )
                counts[n][name] = counts[n][name] + hist if name in counts[n] else hist
    for method in histograms:
        options = _HISTOGRAMS[method]
        collector = HistogramCollector(
            method=options["method"], symmetric=False, num_bins=options["num_bins"],
            num_quantized_bins=options["num_quantized_bins"], percentile=PERCENTILE,
            scenario="same",
        )
        n = options["num_bins"]
        collector.histogram_dict = {
            name: (
                hist, np.histogram_bin_edges(low[name][None], n, range=(-bound[name], bound[name])),
                low[name], high[name], bound[name],
            )
            for name, hist in counts[n].items()
        }
        result = collector.compute_collection_result()
        save_tensors_data(TensorsData(_ort_method(method), result), caches[method])


def _quantize_static(
    prepared: Path, out: Path, ort_method: Any, exclude: Sequence[str], cache: Path
) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(prepared),
        str(out),
        None,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=ort_method,
        nodes_to_exclude=list(exclude),
        calibration_cache_path=cache,
    )


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration_batch: np.ndarray,
    method: Calibration = Calibration.MINMAX,
    batch_size: int = 16,
    float_nodes: Sequence[str] = (),
) -> Path:
    """Static QDQ quantisation with per-channel int8 weights, calibrated on NCHW float32 images.

    uint8 activations with symmetric int8 weights is the combination ONNX Runtime's x86 kernels
    run fastest (its VNNI "symmetric" convolution path). Measured on efficientnet_lite0, batch 1,
    int8 activations left 14 convolutions in float and ran 1.0x FP32, symmetric activations 0.85x
    and uint8 weights 0.1x; QOperator and the QDQ extra options gave the same fused graph.
    `float_nodes` stay float (the head and the channel pad always do).
    """
    if len(calibration_batch) == 0:
        raise ConfigError("INT8 calibration needs at least one image; raise --calibration-images.")
    if Calibration(method) is Calibration.AUTO:
        raise ConfigError(
            "quantize_int8 needs one calibration method; search_int8 chooses among them."
        )
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="visionline-quant-") as tmp:
        prepared, keep = _prepare(fp32_path, Path(tmp) / "prepared.onnx")
        return _quantize_prepared(
            prepared,
            int8_path,
            calibration_batch,
            method,
            [*keep, *float_nodes],
            Path(tmp) / "ranges.json",
            batch_size,
        )


def node_groups(path: Path) -> dict[str, list[str]]:
    """Nodes by the network block they belong to (`…blocks.3.1`, `…conv_stem`, …), in graph order.

    A block is the unit a sweep keeps in float: its convolutions, activations and residual add.
    Only groups with a convolution or matrix multiply are returned.
    """
    import onnx

    groups: dict[str, list[str]] = {}
    quantisable: set[str] = set()
    for node in onnx.load(str(path)).graph.node:
        match = _BLOCK.match(node.name)
        key = match.group(1) if match else "/".join(node.name.split("/")[:3]) or node.name
        groups.setdefault(key, []).append(node.name)
        if node.op_type in QUANTISABLE_OPS:
            quantisable.add(key)
    return {key: nodes for key, nodes in groups.items() if key in quantisable}


@dataclass
class Int8Choice:
    """What `search_int8` measured and chose; recorded in the bundle."""

    method: str
    float_groups: list[str]
    float_nodes: list[str]
    calibration_images: int
    calibration_classes: dict[str, int]
    threshold: float
    flip_budget: int
    methods: dict[str, dict[str, float]] = field(default_factory=dict)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _disagreement(reference: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    return {
        "decision_flips": int(((reference > threshold) != (scores > threshold)).sum()),
        "mean_abs_score_change": float(np.abs(scores - reference).mean()),
        "max_abs_score_change": float(np.abs(scores - reference).max()),
    }


def _rank(row: dict[str, float]) -> tuple[float, float]:
    return (row["decision_flips"], row["mean_abs_score_change"])


def search_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration: np.ndarray,
    classes: Sequence[str],
    threshold: float,
    method: Calibration = Calibration.AUTO,
    tolerance: float = 0.01,
    max_float_groups: int = MAX_FLOAT_GROUPS,
    progress: Any = None,
) -> Int8Choice:
    """Quantise `fp32_path` into `int8_path`, choosing the method and the float groups by measurement.

    `calibration` are normalised NCHW images with their `classes`; decisions are compared with
    FP32 at `threshold`. The flip budget is `tolerance` of the calibration images (at least 1):
    the sweep stops at the fewest float groups that stay within it, or keeps the best it found
    with `max_float_groups` float groups.
    """
    from visionline.export._onnx import onnx_predict, onnx_session

    if len(calibration) == 0:
        raise ConfigError("INT8 calibration needs at least one image; raise --calibration-images.")
    stratified_indices(classes, len(classes))  # both classes present, or a one-sentence error
    counts = {name: int(n) for name, n in zip(*np.unique(np.asarray(classes), return_counts=True))}
    methods = (
        MEASURED_CALIBRATIONS if Calibration(method) is Calibration.AUTO else (Calibration(method),)
    )
    budget = max(1, int(np.floor(tolerance * len(calibration) + 1e-9)))
    task = progress.add_task("INT8 search", total=None) if progress else None

    def scores(path: Path) -> np.ndarray:
        return 1.0 - onnx_predict(onnx_session(path, 1), calibration)[0][:, 0]

    reference = scores(fp32_path)
    with tempfile.TemporaryDirectory(prefix="visionline-int8-") as tmp_name:
        tmp = Path(tmp_name)
        prepared, keep = _prepare(fp32_path, tmp / "prepared.onnx")

        def trial(name: str, meth: Calibration, exclude: Sequence[str]) -> dict[str, float]:
            out = _quantize_prepared(
                prepared,
                tmp / f"{name}.onnx",
                calibration,
                meth,
                [*keep, *exclude],
                tmp / f"ranges-{meth.value}.json",
            )
            if progress:
                progress.update(task, description=f"INT8 search: {name}")
            return _disagreement(reference, scores(out), threshold)

        with contextlib.redirect_stdout(io.StringIO()):  # every method's ranges in one go
            _calibrate(prepared, calibration, {m: tmp / f"ranges-{m.value}.json" for m in methods})
        measured = {m.value: trial(m.value, m, []) for m in methods}
        best = Calibration(min(measured, key=lambda m: _rank(measured[m])))
        choice = Int8Choice(
            best.value, [], [], len(calibration), counts, float(threshold), budget, measured
        )
        if measured[best.value]["decision_flips"] > budget:
            groups = {
                name: nodes
                for name, nodes in node_groups(prepared).items()
                if any(n not in keep for n in nodes)
            }
            for name in groups:
                others = [n for other, ns in groups.items() if other != name for n in ns]
                choice.sensitivity.append({"group": name, **trial("sweep", best, others)})
            choice.sensitivity.sort(key=lambda row: -row["mean_abs_score_change"])
            ranked = [row["group"] for row in choice.sensitivity]
            best_row, best_k = measured[best.value], 0
            for k in range(1, min(max_float_groups, len(ranked)) + 1):
                row = trial("keep", best, [n for g in ranked[:k] for n in groups[g]])
                choice.steps.append({"float_groups": ranked[:k], **row})
                if _rank(row) < _rank(best_row):
                    best_row, best_k = row, k
                if row["decision_flips"] <= budget:
                    break
            choice.float_groups = ranked[:best_k]
            choice.float_nodes = [n for g in choice.float_groups for n in groups[g]]
        _quantize_prepared(
            prepared,
            int8_path,
            calibration,
            best,
            [*keep, *choice.float_nodes],
            tmp / f"ranges-{best.value}.json",
        )
    if progress:
        progress.remove_task(task)
    return choice


def _pad_input_channels(path: Path, multiple: int = 4) -> list[str]:
    """Zero-pad the image's channels (3 → 4) in front of each convolution that reads it.

    ONNX Runtime's fast int8 convolution needs a multiple of 4 input channels; a 3-channel stem
    falls back to a generic kernel that runs slower than FP32. The padded channel meets zero
    weights, so outputs are unchanged. The Pad stays float (its names are returned to be
    excluded from quantisation) so the image is quantised once, after padding.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inputs = {value.name for value in graph.input}
    weights = {tensor.name: tensor for tensor in graph.initializer}
    padded = []
    for node in list(graph.node):
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type != "Conv" or node.input[0] not in inputs or group != 1:
            continue
        if node.input[1] not in weights:
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        extra = -weight.shape[1] % multiple
        if extra == 0:
            continue
        zeros = np.zeros((weight.shape[0], extra, *weight.shape[2:]), dtype=weight.dtype)
        weights[node.input[1]].CopyFrom(
            numpy_helper.from_array(np.concatenate([weight, zeros], axis=1), node.input[1])
        )
        rank = weight.ndim
        pads = np.zeros(2 * rank, dtype=np.int64)
        pads[rank + 1] = extra
        pads_name, output = f"{node.name}/channel_pads", f"{node.name}/channel_padded"
        graph.initializer.append(numpy_helper.from_array(pads, pads_name))
        pad = helper.make_node(
            "Pad", [node.input[0], pads_name], [output], name=f"{node.name}/channel_pad"
        )
        graph.node.insert(list(graph.node).index(node), pad)
        node.input[0] = output
        padded.append(pad.name)
    if padded:
        onnx.save(onnx.shape_inference.infer_shapes(model), str(path))
    return padded


def _upstream(producer: dict[str, Any], outputs: Sequence[str], stop: set[str]) -> list[Any]:
    """The nodes that `outputs` depend on, not walking into tensors in `stop`."""
    found: dict[str, Any] = {}
    frontier = list(outputs)
    while frontier:
        tensor = frontier.pop()
        node = producer.get(tensor)
        if tensor in stop or node is None or node.name in found:
            continue
        found[node.name] = node
        frontier.extend(node.input)
    return list(found.values())


def _head_nodes(path: Path) -> list[str]:
    """Nodes between the backbone and the probabilities (linear or per-cell head, temperature,
    softmax): everything `probabilities` depends on that `embedding` does not.

    They stay float: the head is tiny, and 8-bit probabilities would move scores near the
    operating threshold by whole quantisation steps. A patch head reads the feature map, not the
    pooled embedding, so the boundary is every tensor upstream of the embedding.
    """
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    backbone = {out for node in _upstream(producer, ["embedding"], set()) for out in node.output}
    return [node.name for node in _upstream(producer, ["probabilities"], backbone)]


def convert_fp16(fp32_path: Path, fp16_path: Path) -> Path:
    """Half-precision weights and compute for GPU targets; inputs and outputs stay float32."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    graph = model.graph
    consumed = {name for node in graph.node for name in node.input}
    for output in graph.output:
        # An output that also feeds other nodes would be cast in place and break them (Gemm type
        # mismatch); give it its own Identity so only the graph output is cast back to float32.
        if output.name in consumed:
            internal = output.name + "_fp16_internal"
            for node in graph.node:
                node.input[:] = [internal if n == output.name else n for n in node.input]
                node.output[:] = [internal if n == output.name else n for n in node.output]
            graph.node.append(onnx.helper.make_node("Identity", [internal], [output.name]))
    model = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(model, str(fp16_path))
    return fp16_path


def speedup(
    fp32_path: Path, int8_path: Path, one: np.ndarray, threads: int = 2, rounds: int = 15
) -> float:
    """Median over interleaved rounds of FP32 / INT8 batch-1 latency (a quick figure for logs;
    `benchmarks/edge.py` measures it properly)."""
    import time

    from visionline.export._onnx import onnx_session

    sessions = [onnx_session(p, threads, spinning=False) for p in (fp32_path, int8_path)]
    feed = {INPUT_NAME: np.ascontiguousarray(one[:1])}
    for session in sessions:
        session.run(None, feed)
    ratios = []
    for _ in range(rounds):
        times = []
        for session in sessions:
            block = []
            for _ in range(3):
                start = time.perf_counter()
                session.run(None, feed)
                block.append(time.perf_counter() - start)
            times.append(min(block))
        ratios.append(times[0] / times[1])
    return float(np.median(ratios))
