"""Reading a Label Studio JSON export into per-image labels: visionline against the SDK converter.

visionline's `read_export` resolves ground truth, majority, ties, cancelled and unknown choices
per task; the peer is label-studio-sdk's own `Converter.convert_to_csv` on the same file, which
flattens the annotations into a CSV. Both run in this process on the same export; the script
prints the ratio and writes benchmarks/results/label_export_parse.json.

    .venv/bin/python benchmarks/label_export_parse.py [--tasks 20000]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import tempfile
import time
from pathlib import Path

from visionline.config import ProjectConfig
from visionline.data._labelstudio import label_config_xml, read_export

RESULTS = Path(__file__).parent / "results" / "label_export_parse.json"


def _export(n_tasks: int, classes: list[str], path: Path) -> None:
    rng = random.Random(0)
    tasks = []
    for i in range(n_tasks):
        annotations = []
        for by in range(rng.randint(1, 3)):
            annotations.append(
                {
                    "id": i * 10 + by,
                    "completed_by": by,
                    "was_cancelled": rng.random() < 0.05,
                    "ground_truth": rng.random() < 0.1,
                    "result": [
                        {
                            "from_name": "choice",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [rng.choice(classes)]},
                        }
                    ],
                }
            )
        tasks.append(
            {
                "id": i,
                "data": {"image": f"/data/local-files/?d=store/{i:06d}.png", "sha256": f"{i:064x}"},
                "annotations": annotations,
                "predictions": [],
            }
        )
    path.write_text(json.dumps(tasks))


def _best_of(repeats: int, function) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from label_studio_sdk.converter import Converter

    logging.getLogger("label_studio_sdk").setLevel(logging.ERROR)
    config = ProjectConfig()
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export.json"
        _export(args.tasks, config.model_classes(), export)
        converter = Converter(label_config_xml(config), tmp, download_resources=False)
        peer = _best_of(
            args.repeats,
            lambda: converter.convert_to_csv(
                str(export), str(Path(tmp) / "csv"), is_dir=False, sep=","
            ),
        )
        ours = _best_of(args.repeats, lambda: read_export(export, config))
        summary = read_export(export, config)
    result = {
        "benchmark": "label_export_parse",
        "tasks": args.tasks,
        "visionline_read_export_s": round(ours, 4),
        "label_studio_sdk_convert_to_csv_s": round(peer, 4),
        "speedup_vs_sdk": round(peer / ours, 2),
        "visionline_tasks_per_s": round(args.tasks / ours),
        "decisions": len(summary.decisions),
        "ties": summary.n_ties,
        "machine": platform.processor() or platform.machine(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{args.tasks} tasks: visionline read_export {ours:.3f} s, label-studio-sdk "
        f"convert_to_csv {peer:.3f} s → {peer / ours:.1f}× (written to {RESULTS})"
    )


if __name__ == "__main__":
    main()
