"""`visionline demo`: the lifecycle end to end on the embedded synthetic apple line.

The demo writes a project whose `pipeline:` section describes the run, then calls the same
public API as the CLI: synthesise → `pipeline run` (ingest … deploy) → the line agent decides
the deliveries from suppliers while a dirty lens develops (reject bits to an OPC UA PLC, verdicts
synced to the central log) → drift check → operator verdicts → `retrain` (challenger on old +
production images, compared, promoted) → published on the fleet channel, where the agent
verifies, shadows and switches to it during one more delivery → per-delivery defect rates with
confidence intervals vs the truth.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from visionline.config import Project, dump_config, parse_config
from visionline.errors import ConfigError, DataError

LENS_DIRT = 0.6
"""How dirty the demo's lens gets: enough to fool the champion, not so much that the defects
vanish (at full strength no model could see them, and the only fix is a cloth)."""

TRAIN_RECIPE: dict[str, Any] = {
    "epochs": 1,
    "embedding_views": 2,
    "finetune_blocks": 0,
    "features": "patches",
    "head_lr": 0.003,
}
"""The training settings `benchmarks/demo_recipe.py` chose on apples of seed 7 (its arm
`patches_224_2views`), never on this demo's own split: a patch head (a per-cell MLP pooled by
log-sum-exp, so a small bruise is not averaged away) on cached frozen feature maps of two views
(identity and horizontal flip), with the renders upsampled by `INPUT_SCALE` at the network
input."""
INPUT_SCALE = 224 / 128
"""Network input side per rendered pixel: ImageNet features see a small defect at 224 px far
better than at 128 (the arm `head_only_224` against `head_only_1view`)."""

DEMO_MARKER = ".visionline-demo"
"""A file that marks a directory as demo output, so `--force` never deletes anything else."""


class DemoSettings(BaseModel):
    """The demo's budget; the defaults take a few minutes on a 2-core machine."""

    model_config = ConfigDict(extra="forbid")

    directory: Path = Path("demo-project")
    images: int = Field(1500, ge=60)
    image_size: int = Field(128, ge=32, le=512)
    backbone: str = "efficientnet_lite0"
    epochs: int = Field(60, ge=1, description="epochs of the head on the cached feature maps")
    batch_size: int = Field(32, ge=2)
    suppliers: int = Field(3, ge=1)
    deliveries: int = Field(6, ge=1)
    delivery_size: int = Field(150, ge=10)
    drift_from_delivery: int = Field(4, ge=1, description="dirty lens develops from this delivery")
    feedback: int = Field(150, ge=1, description="logged images the operator labels")
    retrain_epochs: int = Field(2, ge=1)
    seed: int = 0
    force: bool = False


@dataclass
class DemoResult:
    """What the demo produced, for the summary, the HTML report and the tests."""

    project: Project
    dataset_version: str
    run_id: str | None
    model_version: str
    gates_passed: bool
    bundle_dir: Path
    deliveries: list[dict[str, Any]]
    latency_ms: dict[str, float]
    drift: dict[str, Any]
    report_path: Path
    eval_report: Path | None
    retraining: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """CPU seconds of this process per step (all its threads): on a shared machine the wall
    `timings` grow with the load, these do not."""
    visible: dict[str, Any] = field(default_factory=dict)
    """The champion's test recall without the defects the synthetic line marks faint."""
    line: dict[str, Any] = field(default_factory=dict)
    """What the line agent did: reject bits the PLC received per delivery, fail-safes, sync."""


def _demo_config_yaml(settings: DemoSettings) -> str:
    """The demo project: goals a short CPU training budget can certify, and its pipeline. The
    threshold is set for 2% false rejects on the calib split (val picks the epoch, test is only
    measured), by the split-conformal rank, so that the 5% budget holds on unseen apples too
    with room for the calib split's sampling error. The training settings are `TRAIN_RECIPE`,
    which `benchmarks/demo_recipe.py` chose on apples of another seed, not on this split."""
    train = {
        "backbone": settings.backbone,
        "pretrained": "imagenet",
        "batch_size": settings.batch_size,
        "head_epochs": settings.epochs,
        **TRAIN_RECIPE,
        "image_size": round(settings.image_size * INPUT_SCALE),
        "seed": settings.seed,
    }
    return f"""name: apples
goals:
  max_false_reject_rate: 0.05
  threshold_false_reject_rate: 0.02
  min_defect_recall: 0.7
  edge_p95_latency_ms: 50
  image_size: {settings.image_size}
pipeline:
  ingest: {{source: synth/dataset, name: apples-synth}}
  split: {{val: 0.15, calib: 0.15, test: 0.2, seed: {settings.seed}}}
  train: {json.dumps(train)}
  evaluate: {{bootstrap: 300}}
  gate: {{enforce: false}}
  quantise: {{calibration_images: {min(100, settings.images // 4)}}}
  benchmark: {{runs: 20}}
  bundle: {{signing_key: keys/visionline-signing.key}}
  deploy: {{only_champion: false, trust_store: keys/visionline-signing.pub, require_signature: true}}
  retrain:
    min_new_labels: {min(50, settings.feedback)}
    epochs: {settings.retrain_epochs}
    min_holdout: {max(5, min(20, settings.feedback // 5))}
"""


def _prepare_directory(settings: DemoSettings) -> Path:
    directory = settings.directory.resolve()
    if directory.exists() and any(directory.iterdir()):
        if not (directory / DEMO_MARKER).exists():
            raise ConfigError(
                f"{directory} exists and is not a demo directory; pass another --dir or remove it."
            )
        if not settings.force:
            raise ConfigError(f"{directory} holds an earlier demo; pass --force to start afresh.")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DEMO_MARKER).write_text("created by visionline demo\n")
    config = parse_config(_demo_config_yaml(settings))
    (directory / "visionline.yaml").write_text(dump_config(config))
    return directory


class _Steps:
    """Prints one line per finished step with its duration; keeps the wall and CPU timings."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.timings: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    def run(self, name: str, description: str, func: Any, *args: Any, live: bool = True,
            **kwargs: Any) -> Any:
        """`live=False` for steps that draw their own progress (one live display at a time)."""
        started, cpu = time.perf_counter(), time.process_time()
        if live:
            with self.console.status(f"[bold]{description}…"):
                result = func(*args, **kwargs)
        else:
            self.console.rule(f"[bold]{description}")
            result = func(*args, **kwargs)
        self.timings[name] = time.perf_counter() - started
        self.cpu_seconds[name] = time.process_time() - cpu
        self.console.print(f"[green]✓[/green] {description} [dim]({self.timings[name]:.1f} s, "
                           f"{self.cpu_seconds[name]:.0f} CPU s)[/dim]")
        return result


def run_demo(settings: DemoSettings, console: Console | None = None) -> DemoResult:
    """Run the whole loop; return what it produced. Raises `VisionlineError`s with a fix."""
    from visionline.export import generate_keys
    from visionline.pipeline._continuous import retrain
    from visionline.pipeline._demo_line import (
        AgentLine,
        check_drift,
        line_rows,
        operator_feedback,
    )
    from visionline.pipeline._run import run_pipeline

    console = console or Console()
    steps = _Steps(console)
    root = _prepare_directory(settings)
    project = Project.load(root)
    console.print(f"[bold]visionline demo[/bold] in {root}")
    _, public_key = generate_keys(root / "keys")

    line_dir = steps.run("synth", "Synthesise the labelled apple dataset and the supplier line",
                         _synthesise, project, settings)
    run = steps.run("pipeline", "Pipeline: ingest → … → train → evaluate → export → INT8 → bundle "
                    "→ benchmark → register → deploy", run_pipeline, project, console=console,
                    live=False)
    champion = _champion(project, run)
    console.print(f"  {champion['summary']}")
    visible = _visible_recall(project, run)
    console.print(f"  {visible['sentence']}")
    if not champion["promoted"]:
        console.print("  [yellow]A plant would stop here; the demo deploys it anyway to show the "
                      "rest of the loop.[/yellow]")

    rows = line_rows(line_dir)
    per_delivery = settings.delivery_size
    first, last = rows[: settings.deliveries * per_delivery], rows[settings.deliveries * per_delivery:]
    drift_start = (settings.drift_from_delivery - 1) * per_delivery
    with AgentLine(project, champion["bundle_dir"], public_key, line_dir,
                   shadow_items=max(5, per_delivery // 5)) as line:
        stream = steps.run("serve", f"Line agent: {settings.deliveries} deliveries, reject bits "
                           "to the PLC over OPC UA, verdicts synced (a dirty lens develops)",
                           line.stream, first)
        _print_line(console, stream)
        drift = steps.run("monitor", "Check the prediction log for drift against the bundle",
                          check_drift, project, champion["bundle_dir"], drift_start, len(first))
        _print_drift(console, drift)
        console.print(f"  {_lens_action(drift)}")
        labelled = steps.run("feedback", "Operator labels the kept images active learning picks",
                             operator_feedback, project, line.truth, settings.feedback)
        console.print(f"  {labelled} verdicts recorded")
        project = _reuse_calibration(project, run, console)
        project = _skip_challenger_benchmark(project, console)
        retrained = steps.run("retrain", "Continuous training: challenger → compare → promote",
                              retrain, project, console=console, live=False)
        if retrained.deployed:
            published = line.publish(retrained.run.outputs("deploy")["deployment"].resolve(project))
            console.print(f"  published {published.name} on the fleet channel {line.channel}")
        after = steps.run("after", "One more delivery; the agent verifies the new bundle, runs it "
                          "in shadow, switches", line.stream, last)
        _print_line(console, after)
    retraining = _retraining_summary(retrained, after)
    console.print(f"  {retraining['sentence']}")
    records = stream["records"] + after["records"]
    truth = _line_truth(line_dir)
    deliveries = steps.run(
        "estimate", "Estimate each delivery's defect rate (the served models' test rates first)",
        lambda: _estimate(records, truth, _rates_by_version(project, run, retrained, public_key)),
    )
    result = DemoResult(
        project=project,
        dataset_version=champion["dataset"],
        run_id=champion["run_id"],
        model_version=champion["version"],
        gates_passed=champion["gates_passed"],
        bundle_dir=champion["bundle_dir"],
        deliveries=deliveries,
        latency_ms=stream["latency_ms"],
        drift=drift,
        report_path=project.reports_dir / "demo.html",
        eval_report=champion["report"],
        retraining=retraining,
        visible=visible,
        timings=steps.timings,
        cpu_seconds=steps.cpu_seconds,
        line={key: [*stream[key], *after[key]] for key in ("ejected", "rollout")}
        | {"fail_safe": {k: stream["fail_safe"].get(k, 0) + after["fail_safe"].get(k, 0)
                         for k in {*stream["fail_safe"], *after["fail_safe"]}},
           "sync": after["sync"]},
    )
    from visionline.pipeline._demo_report import write_demo_report

    write_demo_report(result)
    _print_summary(console, result)
    return result


def _synthesise(project: Project, settings: DemoSettings) -> Path:
    """The training images and a stream of deliveries (+1 for after the model swap) whose
    dirty lens starts at `drift_from_delivery`, reaches `LENS_DIRT` two deliveries later and is
    cleaned before the extra delivery."""
    from visionline.synth import DriftConfig, SynthConfig, generate_dataset, generate_deliveries

    config = SynthConfig(size=settings.image_size, seed=settings.seed, defect_rate=0.35)
    generate_dataset(config, project.root / "synth" / "dataset", settings.images)
    size = settings.delivery_size
    stream = SynthConfig(
        size=settings.image_size,
        seed=settings.seed + 1,
        drift=DriftConfig(kind="dirty_lens", start=(settings.drift_from_delivery - 1) * size,
                          ramp=size * 2, max_strength=LENS_DIRT, end=settings.deliveries * size),
    )
    line = generate_deliveries(stream, project.root / "synth" / "line", settings.suppliers,
                               settings.deliveries + 1, size)
    return line.out


def _set_pipeline_setting(project: Project, section: str, key: str, value: Any) -> Project:
    """`pipeline.<section>.<key>: value` written to the project's visionline.yaml (validated
    through the config model, so a wrong value fails here, not in the next run), reloaded."""
    import yaml

    path = project.root / "visionline.yaml"
    config = yaml.safe_load(path.read_text())
    config["pipeline"].setdefault(section, {})[key] = value
    path.write_text(dump_config(parse_config(yaml.safe_dump(config, sort_keys=False))))
    return Project.load(project.root)


def _reuse_calibration(project: Project, run: Any, console: Console) -> Project:
    """Pin the project's INT8 calibration to the method the champion's search chose.

    The challenger is warm-started from the champion (same architecture; with the demo's
    recipe the same frozen backbone), so the activation ranges that suited the champion suit
    it too, and measuring all three methods again would cost the demo ~20 s. The paired gate
    still judges the challenger's INT8 model on images calibration did not see.
    """
    int8 = run.outputs("quantise").get("int8")
    method = int8.meta.get("calibration") if int8 is not None else None
    if not method or project.config.pipeline.quantise.calibration != "auto":
        return project
    console.print(f"  pipeline.quantise.calibration: {method}, the method the champion's INT8 "
                  "search chose, for its challenger")
    return _set_pipeline_setting(project, "quantise", "calibration", method)


def _skip_challenger_benchmark(project: Project, console: Console) -> Project:
    """Leave the latency benchmark (three fresh timing processes) out of the challenger's run:
    it is warm-started from the champion, the same network, input size and INT8 recipe, whose
    latency the first run measured, and the demo does not enforce the budget. The challenger's
    INT8 speed-up is still measured by its quantise step."""
    benchmark = project.config.pipeline.benchmark
    if benchmark.enforce or not benchmark.enabled:
        return project
    console.print("  pipeline.benchmark.enabled: false for the challenger (the champion's network "
                  "and input size; its latency was measured above)")
    return _set_pipeline_setting(project, "benchmark", "enabled", False)


def _champion(project: Project, run: Any) -> dict[str, Any]:
    """What the first pipeline run produced, read from its artifacts."""
    model = run.outputs("train")["model"]
    evaluation = run.outputs("evaluate")["evaluation"]
    registered = run.outputs("register")["registered_model"]
    deployment = run.outputs("deploy")["deployment"]
    verdict = "champion" if registered.meta["promoted"] else "not promoted"
    report = evaluation.meta.get("report")
    return {
        "dataset": run.outputs("split")["dataset"].id,
        "run_id": model.meta.get("run_id"),
        "version": registered.meta["version"],
        "promoted": registered.meta["promoted"],
        "gates_passed": bool(evaluation.meta["gates_passed"]),
        "bundle_dir": deployment.resolve(project),
        "report": project.root / report if report else None,
        "summary": f"{registered.id}: {verdict} — " + "; ".join(registered.meta["reasons"]),
    }


def _visible_recall(project: Project, run: Any) -> dict[str, Any]:
    """The champion's test recall at its threshold, counting apart the defects the synthetic line
    marks `faint` (too faint to see by construction); good images, and so the FRR, are unchanged."""
    import csv

    from visionline.data import DatasetRepo
    from visionline.evaluate import predict_records
    from visionline.train import load_model

    with open(project.root / "synth" / "dataset" / "manifest.csv", newline="") as handle:
        faint = {row["file"] for row in csv.DictReader(handle) if row["faint"] == "True"}
    metrics = json.loads(run.outputs("evaluate")["evaluation"].resolve(project).read_text())
    threshold, temperature = metrics["operating_point"]["threshold"], metrics["temperature"]
    repo = DatasetRepo(project)
    defects = [r for r in repo.get(run.outputs("split")["dataset"].id).split_records("test")
               if r.label != "good"]
    model, spec = load_model(run.outputs("train")["model"].resolve(project))
    caught = predict_records(model, spec, defects, repo.blobs).defect_scores(temperature) > threshold
    seen = [hit for record, hit in zip(defects, caught) if record.path not in faint]
    recall = sum(seen) / max(len(seen), 1)
    return {
        "n_defect": len(defects),
        "n_faint": len(defects) - len(seen),
        "recall_all": float(caught.mean()),
        "recall_visible": recall,
        "sentence": f"Test defects the line marks faint (too faint to see by construction): "
        f"{len(defects) - len(seen)} of {len(defects)}; recall {caught.mean():.1%} on all, "
        f"{recall:.1%} on the other {len(seen)}.",
    }


def _retraining_summary(retrained: Any, after: dict[str, Any]) -> dict[str, Any]:
    served = sorted({r.version for r in after["records"]})
    rollout = "; ".join(f"{e['event']} {e['version']} ({e['detail']})" if e["detail"]
                        else f"{e['event']} {e['version']}" for e in after["rollout"])
    if not retrained.ran:
        sentence = "No retraining trigger fired."
    else:
        verdict = ("promoted and published on the fleet channel" if retrained.deployed
                   else "not promoted")
        sentence = (
            f"Challenger {retrained.registered} (+{retrained.new_images} production images, "
            f"{retrained.held_out} held out to judge it) "
            f"{verdict}; the line agent's roll-out: {rollout or 'nothing new on the channel'}; "
            f"the last delivery was judged by version {', '.join(served)}."
        )
    return {
        "triggers": [f"{t.kind}: {t.reason}" for t in retrained.triggers],
        "ran": retrained.ran,
        "challenger": retrained.registered,
        "promoted": retrained.promoted,
        "deployed": retrained.deployed,
        "new_images": retrained.new_images,
        "held_out": retrained.held_out,
        "holdout": retrained.holdout,
        "reasons": retrained.reasons,
        "served_after": served,
        "rollout": after["rollout"],
        "sentence": sentence,
    }


def _line_truth(line_dir: Path) -> dict[str, dict[str, Any]]:
    import csv

    with open(line_dir / "deliveries.csv", newline="") as handle:
        return {row["delivery"]: row for row in csv.DictReader(handle)}


def _rates_by_version(project: Project, run: Any, retrained: Any,
                      public_key: Path) -> dict[str, dict[str, Any]]:
    """Each served version's error rates on its test split, for the bundle the line ran (its
    deployed model at its threshold): its confusion matrix of called classes, which corrects
    each delivery, and its counts per apple variety (from the synthetic dataset's manifest),
    whose spread widens the interval."""
    import csv

    from visionline.pipeline._demo_line import served_rates

    with open(project.root / "synth" / "dataset" / "manifest.csv", newline="") as handle:
        varieties = {row["file"]: row["variety"] for row in csv.DictReader(handle)}
    runs = [run] + ([retrained.run] if retrained.run is not None else [])
    found = {}
    for pipeline_run in runs:
        registered = pipeline_run.outputs("register").get("registered_model")
        bundle = pipeline_run.outputs("bundle").get("bundle")
        if registered is not None and bundle is not None:
            found[registered.meta["version"]] = served_rates(
                project, bundle.resolve(project), public_key,
                pipeline_run.outputs("split")["dataset"].id, varieties,
            )
    return found


def _print_line(console: Console, stream: dict[str, Any]) -> None:
    """What the PLC ejected per delivery, fail-safes, and where the sync stands."""
    for row in stream["ejected"]:
        console.print(f"  {row['delivery']}: {row['ejected']} of {row['signals']} apples ejected "
                      "by the PLC")
    if stream["fail_safe"]:
        console.print(f"  fail-safe verdicts: {stream['fail_safe']}")
    sync = stream["sync"]
    console.print(
        f"  sync: {sync['counts'].get('synced', 0)} verdicts acknowledged by the central log "
        f"{sync['central']}, backlog {sync['backlog']}"
    )


def _lens_action(drift: dict[str, Any]) -> str:
    """What the plant does about the lens: the alarm's fix when an alarm named the optics."""
    if any(alarm["kind"] == "optics" for alarm in drift["alarms"]):
        return "The operator cleans the lens, as the alarm advises, before the next delivery."
    return "No alarm named the optics; the lens is cleaned at the end of the shift anyway."


def _print_drift(console: Console, drift: dict[str, Any]) -> None:
    console.print(
        f"  {len(drift['alarms'])} alarm(s) in {drift['windows']} windows of {drift['window']} "
        f"images; the dirty lens starts at image {drift['drift_start']}"
    )
    for alarm in drift["alarms"]:
        console.print(
            f"  [bold]alarm[/bold] at image {alarm['image']}: {alarm['cause']} "
            f"[dim]({', '.join(alarm['detectors'])})[/dim]"
        )


def _class_rates(rates: dict[str, Any]) -> tuple[Any, float]:
    """A served version's confusion matrix of called classes on its test split, and the spread
    of its recall between the apple varieties there (`condition_spread`)."""
    from visionline.evaluate import ValidatedRates, condition_spread

    strata = [(int(c["tp"]), int(c["n_defect"])) for c in rates.get("by", {}).values()]
    return ValidatedRates.from_metrics(rates), condition_spread(strata)


def _estimate(
    records: list[Any], truth: dict[str, dict[str, Any]], rates: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per delivery: the flags corrected per called class with the confusion matrix that the
    version that served them has on its test split, good apples of its calib split included
    (`served_rates`, `estimate_prevalence_classes`); a delivery
    judged by two versions sums each part's corrected count. The class matters: each supplier
    sends its own subtype mix, and the model misses bruises far more often than rot, so one TPR
    counted on the test split's mix under-corrects a bruise-heavy delivery. The interval also
    carries the spread of the recall between apple varieties (red and striped apples hide
    bruises), since the test split holds too few apples of one variety for a matrix of its own.
    90% intervals; the raw flag rate with Clopper–Pearson for a version without usable rates."""
    from collections import Counter

    import pandas as pd

    from visionline.evaluate import clopper_pearson, estimate_prevalence_classes
    from visionline.pipeline._demo_line import called_class

    frame = pd.DataFrame(
        {"delivery": r.extra["parameters"]["delivery"], "version": r.version,
         "flagged": r.is_defect, "record": r}
        for r in records
    )
    rows = []
    for offset, (delivery, part) in enumerate(frame.groupby("delivery", sort=True)):
        row = truth[str(delivery)]
        n, flagged = len(part), int(part["flagged"].sum())
        versions = sorted(part["version"].unique(), key=str)
        try:
            parts, spreads = [], []
            for version in versions:
                served, spread = _class_rates(rates[str(version)])
                names = served.class_names or ()
                judged = part[part["version"] == version]
                called = Counter(
                    called_class(r.probabilities, r.is_defect, names) for r in judged["record"]
                )
                parts.append(({k: v for k, v in called.items() if k != names[0]}, len(judged),
                              served))
                spreads.append(spread)
            found = estimate_prevalence_classes(parts, 0.90, spread=max(spreads), seed=offset)
            estimate, low, high = found.estimate, found.low, found.high
            rates_from = (f"test apples (goods: test + calib) per called class, variety spread "
                          f"{max(spreads):.2f}")
        except (DataError, KeyError) as exc:
            Console().print(f"  [yellow]{delivery} stays uncorrected:[/yellow] {exc}")
            estimate, (low, high) = flagged / n, clopper_pearson(flagged, n, 0.90)
            rates_from = "none"
        rows.append({
            "delivery": str(delivery), "n": n, "flagged": flagged, "raw_rate": flagged / n,
            "estimate": estimate, "low": low, "high": high, "rates_from": rates_from,
            "version": "+".join(str(v) for v in versions),
            "supplier": row["supplier"],
            "true_rate": float(row["defect_rate"]),
            "clean": all(float(row[key] or 0) == 0
                         for key in ("drift_strength_first", "drift_strength_last")),
        })
    return rows


def _print_summary(console: Console, result: DemoResult) -> None:
    table = Table(title="Defect rate per delivery (90% CI) vs the truth")
    for column in ("delivery", "supplier", "model", "apples", "flagged", "estimate", "90% CI", "true"):
        table.add_column(column, justify="right")
    for row in result.deliveries:
        table.add_row(
            row["delivery"], row["supplier"], f"v{row['version']}", str(row["n"]), f"{row['raw_rate']:.1%}",
            f"{row['estimate']:.1%}", f"{row['low']:.1%} – {row['high']:.1%}",
            f"{row['true_rate']:.1%}",
        )
    console.print(table)
    errors = [abs(r["estimate"] - r["true_rate"]) for r in result.deliveries]
    clean = [e for e, r in zip(errors, result.deliveries) if r["clean"]]
    dirty = [e for e, r in zip(errors, result.deliveries) if not r["clean"]]
    covered = sum(r["low"] <= r["true_rate"] <= r["high"] for r in result.deliveries)
    by_lens = [
        f"{statistics.mean(group):.1%} on the {len(group)} deliveries with a {lens} lens"
        for group, lens in ((clean, "clean"), (dirty, "dirty"))
        if group
    ]
    console.print(
        f"Mean absolute error {statistics.mean(errors):.1%} ({', '.join(by_lens)})"
        f"; the interval holds the truth for {covered} of {len(errors)} deliveries."
    )
    console.print(
        f"Line latency, frame to PLC write: p50 {result.latency_ms['p50']:.1f} ms, "
        f"p95 {result.latency_ms['p95']:.1f} ms ({result.latency_ms['requests']} items)."
    )
    delay = result.drift["delay_images"]
    console.print(
        f"Dirty lens from image {result.drift['drift_start']}: "
        + (f"first alarm {delay} images later." if delay is not None else "no alarm after it.")
    )
    console.print(f"Model {result.project.config.name} v{result.model_version} "
                  f"(run {result.run_id}); gates {'passed' if result.gates_passed else 'FAILED'}.")
    console.print("Continuous training: " + result.retraining["sentence"])
    console.print(f"Report: {result.report_path}")
    console.print("Explore what was just produced:")
    console.print(f"  mlflow ui --backend-store-uri {result.project.tracking_uri}")
    console.print(
        f"  visionline monitor serve -p {result.project.root} --bundle {result.bundle_dir}"
        "    # dashboard"
    )
    console.print(f"  visionline models show {result.project.config.name} -p {result.project.root}")
    console.print(f"  visionline pipeline status -p {result.project.root}")


def summary_json(result: DemoResult) -> str:
    """The demo's headline numbers as JSON (for CI logs and the tests)."""
    return json.dumps(
        {
            "dataset_version": result.dataset_version,
            "run_id": result.run_id,
            "model_version": result.model_version,
            "gates_passed": result.gates_passed,
            "latency_ms": result.latency_ms,
            "drift": result.drift,
            "retraining": result.retraining,
            "visible_recall": result.visible,
            "deliveries": result.deliveries,
            "line": result.line,
            "timings_s": result.timings,
            "cpu_s": result.cpu_seconds,
        },
        indent=2,
        default=str,
    )
