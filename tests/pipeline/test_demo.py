"""The demo end to end on a reduced budget: every stage runs for real and hands on its artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from visionline.errors import ConfigError
from visionline.pipeline import DemoSettings, run_demo, summary_json

VISIONLINE = Path(sys.executable).parent / "visionline"


@pytest.mark.slow
def test_reduced_demo_runs_the_whole_loop(tmp_path):
    settings = DemoSettings(
        directory=tmp_path / "demo",
        images=120,
        image_size=48,
        epochs=2,
        batch_size=16,
        deliveries=3,
        delivery_size=30,
        drift_from_delivery=2,
        feedback=30,
        retrain_epochs=1,
    )
    result = run_demo(settings)

    assert len({row["delivery"] for row in result.deliveries}) == 4
    assert sum(row["n"] for row in result.deliveries) == 120
    for row in result.deliveries:
        assert 0.0 <= row["low"] <= row["estimate"] <= row["high"] <= 1.0
        assert 0.0 <= row["true_rate"] <= 1.0
    assert result.latency_ms["requests"] == 90  # the PLC received a verdict for every apple
    plc = result.line["ejected"]
    assert [row["signals"] for row in plc] == [30, 30, 30, 30]
    assert sum(row["ejected"] for row in plc) == sum(row["flagged"] for row in result.deliveries)
    assert result.line["sync"]["backlog"] == 0
    assert result.line["sync"]["counts"]["synced"] == 120
    assert result.drift["windows"] >= 1
    assert result.drift["drift_start"] == 30
    assert [row["clean"] for row in result.deliveries] == [True, False, False, True]
    visible = result.visible  # the faint defects are counted, never silently dropped
    assert 0 <= visible["n_faint"] < visible["n_defect"]
    assert 0.0 <= visible["recall_all"] <= 1.0 and 0.0 <= visible["recall_visible"] <= 1.0

    from visionline.monitor import MonitorDB

    db = MonitorDB(result.project.monitor_db_url)
    logged = db.frame(model=result.project.config.name)
    assert len(logged) == 120
    assert set(logged["delivery_id"]) == {row["delivery"] for row in result.deliveries}
    for column in ("brightness", "contrast", "sharpness", "colourfulness", "latency_ms"):
        assert logged[column].notna().all(), column
    flagged = logged[logged["flagged"]]
    assert flagged["image_sha256"].notna().all()

    manifest = json.loads((result.bundle_dir / "bundle.json").read_text())
    assert manifest["lineage"]["mlflow_run_id"] == result.run_id
    assert manifest["lineage"]["dataset_version"] == result.dataset_version
    assert (result.bundle_dir / "bundle.sig").is_file()

    from mlflow import MlflowClient

    client = MlflowClient(result.project.tracking_uri)
    version = client.get_model_version(result.project.config.name, result.model_version)
    assert version.run_id == result.run_id

    page = result.report_path.read_text()
    assert "data:image/png;base64," in page
    for row in result.deliveries:
        assert row["delivery"] in page
    assert json.loads(summary_json(result))["run_id"] == result.run_id

    verdicts = db.feedback_frame()
    assert 0 < len(verdicts) <= 30 and set(verdicts["source"]) == {"operator"}
    retraining = result.retraining
    assert retraining["ran"] == bool(retraining["triggers"])
    if retraining["ran"]:
        assert retraining["challenger"] == f"{result.project.config.name}/2"
        assert retraining["new_images"] + retraining["held_out"] == len(verdicts)
        events = [e["event"] for e in retraining["rollout"]]
        if retraining["deployed"] is None:
            assert events == [] and retraining["served_after"] == [result.model_version]
        else:  # the line agent verified the published bundle and ran it in shadow first
            assert events[0] == "shadowing" and events[1] in ("switched", "rejected")
            switched = events[1] == "switched"
            assert ("2" in retraining["served_after"]) == switched
            assert retraining["served_after"][0] == result.model_version  # during the shadow
    from visionline.pipeline import runs

    reruns = retraining["ran"] + bool(retraining["promoted"])  # a promoted one is then deployed
    pipeline_runs = runs(result.project)
    assert [run.status for run in pipeline_runs] == ["succeeded"] * (1 + reruns)
    searched = [run.outputs("quantise")["int8"].meta for run in pipeline_runs[: 1 + reruns]]
    assert set(searched[0]["quantisation"]["methods"]) == {"minmax", "entropy", "percentile"}
    for challenger in searched[1:]:  # measured once, for the champion; the challenger reuses it
        assert list(challenger["quantisation"]["methods"]) == [searched[0]["calibration"]]
    # the champion's latency is benchmarked; the challenger (same network and input) is not
    assert "benchmark" in pipeline_runs[0].steps
    assert all("benchmark" not in run.steps for run in pipeline_runs[1:])


def test_demo_never_deletes_a_directory_it_did_not_create(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a demo directory"):
        run_demo(DemoSettings(directory=tmp_path, force=True))
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_demo_cli_refuses_bad_options_in_one_line(tmp_path):
    result = subprocess.run(
        [str(VISIONLINE), "demo", "--dir", str(tmp_path / "d"), "--images", "5"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "images" in result.stderr
    assert not (tmp_path / "d").exists()


def test_demo_trains_the_recipe_chosen_on_another_seed():
    import yaml

    from visionline.pipeline._demo import _demo_config_yaml
    from visionline.train import Features, TrainConfig

    settings = DemoSettings()
    train = dict(yaml.safe_load(_demo_config_yaml(settings))["pipeline"]["train"])
    config = TrainConfig.model_validate(train)
    # benchmarks/demo_recipe.py's arm patches_224_2views: a patch head on frozen lite0 maps of
    # two views at 224 px.
    assert config.features is Features.PATCHES
    assert config.image_size == 224 and config.finetune_blocks == 0
    assert (config.head_epochs, config.head_lr, config.embedding_views) == (60, 0.003, 2)


def test_each_delivery_is_estimated_once_per_called_class():
    from visionline.pipeline._demo import _estimate
    from visionline.pipeline._demo_line import LoggedVerdict

    def verdicts(delivery, version, called, n):
        flagged = [c for c, k in called.items() for _ in range(k)]
        return [LoggedVerdict(version, 0.0, i < len(flagged), {"parameters": {"delivery": delivery}},
                              {"good": 0.1, flagged[i]: 0.9} if i < len(flagged) else {"good": 1.0})
                for i in range(n)]

    truth = {d: {"supplier": "S1", "defect_rate": "0.1", "drift_strength_first": "0.0",
                 "drift_strength_last": "0.0"} for d in ("D1", "D2", "D3")}
    matrix = [[98, 1, 1], [50, 45, 5], [5, 5, 90]]  # half the bruises missed, few rot
    by = {"red": {"tp": 30, "n_defect": 50, "fp": 1, "n_good": 50},
          "green": {"tp": 40, "n_defect": 50, "fp": 1, "n_good": 50}}
    rates = {v: {"tp": 145, "n_defect": 200, "fp": 2, "n_good": 100, "by": by,
                 "class_names": ["good", "bruise", "rot"], "confusion_matrix": matrix}
             for v in ("1", "2")}
    records = (verdicts("D1", "1", {"bruise": 8}, 150) + verdicts("D2", "1", {"rot": 8}, 150)
               + verdicts("D3", "1", {"rot": 3}, 50) + verdicts("D3", "2", {"rot": 6}, 100))
    rows = {row["delivery"]: row for row in _estimate(records, truth, rates)}

    assert list(rows) == ["D1", "D2", "D3"]
    assert rows["D1"]["rates_from"].startswith("test apples (goods: test + calib) per called class")
    # the same 8 flags: bruises (half missed) stand for far more bad apples than rot
    assert rows["D1"]["estimate"] > 1.5 * rows["D2"]["estimate"] > 0
    d3 = rows["D3"]  # the model switch: one row, both versions' corrected counts summed
    assert (d3["version"], d3["n"], d3["flagged"]) == ("1+2", 150, 9)
    for row in rows.values():
        assert row["low"] <= row["estimate"] <= row["high"] and row["clean"]

    unrated = _estimate(verdicts("D1", "3", {"rot": 15}, 150), truth, rates)[0]
    assert unrated["rates_from"] == "none"
    assert unrated["estimate"] == pytest.approx(0.1) and unrated["low"] < 0.1 < unrated["high"]
