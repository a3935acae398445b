"""`visionline eval` and `visionline estimate` as a user runs them: a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate"))

from eval_builders import make_dataset

VISIONLINE = Path(sys.executable).parent / "visionline"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [str(VISIONLINE), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [
        line
        for line in result.stderr.strip().splitlines()
        if line.strip() and not line.startswith("warning:")  # e.g. no calib split: not the error
    ]
    assert len(lines) == 1, result.stderr
    assert text in lines[0]


@pytest.mark.slow
def test_eval_prints_metrics_gates_and_writes_the_report(eval_env, tmp_path):
    project = str(eval_env.project.root)
    out = tmp_path / "report"
    result = run(
        "eval",
        str(eval_env.model),
        "--data",
        eval_env.dataset[:10],
        "--out",
        str(out),
        "--bootstrap",
        "50",
        "--gate",
        "-p",
        project,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"{metrics['false_reject_rate']:.2%}" in result.stdout
    assert "Quality gates" in result.stdout and "defect_recall" in result.stdout
    assert "Recall per defect subtype: bruise" in result.stdout
    assert (out / "report.html").is_file()


@pytest.mark.slow
def test_eval_gate_failure_exits_3_with_the_reason(eval_env, tmp_path):
    result = run(
        "eval",
        str(eval_env.useless_model),
        "--data",
        f"{eval_env.dataset}:test",
        "--out",
        str(tmp_path / "r"),
        "--bootstrap",
        "0",
        "--gate",
        "-p",
        str(eval_env.project.root),
        cwd=tmp_path,
    )
    assert "fail" in result.stdout
    one_line_error(result, 3, "defect_recall 0.00% is below the minimum 50.00%")


@pytest.mark.slow
def test_eval_bad_input_is_one_line(eval_env, tmp_path):
    project = str(eval_env.project.root)
    result = run(
        "eval", "models:/nope@champion", "--data", eval_env.dataset, "-p", project, cwd=tmp_path
    )
    one_line_error(result, 1, "No registered model version nope@champion")
    result = run(
        "eval",
        str(tmp_path / "missing.pt"),
        "--data",
        eval_env.dataset,
        "-p",
        project,
        cwd=tmp_path,
    )
    one_line_error(result, 1, "No model at")
    no_val = make_dataset(eval_env.project, seed=9, splits=("train", "test"))
    result = run("eval", str(eval_env.model), "--data", no_val, "-p", project, cwd=tmp_path)
    one_line_error(result, 1, "has no images in split 'val'")
    result = run("eval", str(eval_env.model), "--data", ":test", "-p", project, cwd=tmp_path)
    one_line_error(result, 2, "names no dataset version")


def _predictions(path: Path) -> Path:
    rows = ["delivery,supplier,defect_score,predicted_subtype"]
    for delivery, flagged in (("d1", 5), ("d2", 20)):
        for index in range(100):
            score, subtype = (0.9, "bruise") if index < flagged else (0.1, "")
            rows.append(f"{delivery},s-{delivery},{score},{subtype}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_estimate_prints_corrected_rates(tmp_path):
    rates = tmp_path / "metrics.json"
    rates.write_text(
        json.dumps(
            {
                "rates": {
                    "tp": 90,
                    "n_defect": 100,
                    "fp": 4,
                    "n_good": 200,
                    "threshold": 0.5,
                    "class_names": ["good", "bruise", "rot"],
                    "confusion_matrix": [[196, 4, 0], [10, 85, 5], [10, 5, 85]],
                }
            }
        )
    )
    out = tmp_path / "rates.json"
    result = run(
        "estimate",
        "--predictions",
        str(_predictions(tmp_path / "p.csv")),
        "--by",
        "delivery",
        "--rates",
        str(rates),
        "-o",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [(r["delivery"], r["flagged"]) for r in rows] == [("d1", 5), ("d2", 20)]
    assert rows[1]["estimate"] == pytest.approx((0.20 - 0.02) / (0.90 - 0.02))
    assert rows[1]["low"] < rows[1]["estimate"] < rows[1]["high"]
    assert "bruise" in rows[1]["subtypes"]
    assert "20.5%" in result.stdout  # (0.20 - 0.02) / 0.88


def test_estimate_bad_input_is_one_line(tmp_path):
    predictions = _predictions(tmp_path / "p.csv")
    chance = tmp_path / "chance.json"
    chance.write_text(json.dumps({"rates": {"tp": 10, "n_defect": 100, "fp": 30, "n_good": 100}}))
    result = run(
        "estimate", "--predictions", str(predictions), "--rates", str(chance), cwd=tmp_path
    )
    one_line_error(result, 1, "no better than chance")
    result = run("estimate", "--predictions", str(predictions), "--by", "line", cwd=tmp_path)
    one_line_error(result, 1, "no column 'line'")
    result = run("estimate", "--predictions", str(tmp_path / "none.csv"), cwd=tmp_path)
    one_line_error(result, 1, "No predictions file")
