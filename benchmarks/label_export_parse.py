"""Reading a Label Studio JSON export into per-image labels: visionline against the SDK's parser.

Like for like: both parse the same export file into labels in memory, and neither writes a file.
visionline's `read_export` returns one decision per task (ground truth, majority, ties, cancelled
and unknown choices resolved); the peer is label-studio-sdk's `Converter.iter_from_json_file`, the
streaming parser under all of its converters, drained into a list of per-annotation records
(cancelled annotations skipped, choices kept per control tag). The peer's output is the raw
material a user would still have to reduce to one label per image, so visionline does more work
per task. The SDK's `convert_to_csv` (the same parse plus a pandas CSV file) is timed too, for
reference only. Best of `--repeats` for each; the script prints the ratio.

    .venv/bin/python benchmarks/label_export_parse.py [--tasks 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import time
from pathlib import Path

from _record import write_result

from visionline.config import ProjectConfig
from visionline.data._labelstudio import label_config_xml, read_export


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


def _seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


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
        ours = peer = csv = float("inf")
        for _ in range(args.repeats):  # interleaved, so load changes hit both sides
            ours = min(ours, _seconds(lambda: read_export(export, config)))
            peer = min(peer, _seconds(lambda: list(converter.iter_from_json_file(str(export)))))
            csv = min(
                csv,
                _seconds(
                    lambda: converter.convert_to_csv(
                        str(export), str(Path(tmp) / "csv"), is_dir=False, sep=","
                    )
                ),
            )
        summary = read_export(export, config)
        records = list(converter.iter_from_json_file(str(export)))
    result = {
        "benchmark": "label_export_parse",
        "tasks": args.tasks,
        "repeats": args.repeats,
        "visionline_read_export_s": round(ours, 4),
        "sdk_iter_from_json_file_s": round(peer, 4),
        "sdk_convert_to_csv_s_reference_only": round(csv, 4),
        "speedup_vs_sdk_in_memory": round(peer / ours, 2),
        "visionline_tasks_per_s": round(args.tasks / ours),
        "visionline_decisions": len(summary.decisions),
        "visionline_ties": summary.n_ties,
        "visionline_cancelled_annotations": summary.n_cancelled,
        "sdk_annotation_records": len(records),
        "notes": "Both sides parse the same JSON file in memory and write nothing. visionline's "
        "read_export yields one resolved decision per task; the SDK's iter_from_json_file (ijson "
        "streaming, the parser under every SDK converter) yields one record per non-cancelled "
        "annotation, which still needs reducing to one label per image. convert_to_csv adds a "
        "pandas CSV file to the same parse and is shown for reference, not compared.",
        "readme": [
            {
                "benchmark": "label_export_parse",
                "measure": f"Label Studio export, {args.tasks:,} tasks, parsed in memory",
                "visionline": f"read_export {ours:.2f} s (one resolved label per image)",
                "peer": f"label-studio-sdk iter_from_json_file {peer:.2f} s "
                "(one record per annotation)",
                "result": f"{peer / ours:.2f}x",
            }
        ],
    }
    path = write_result("label_export_parse", result)
    print(
        f"{args.tasks} tasks in memory: visionline read_export {ours:.3f} s, label-studio-sdk "
        f"iter_from_json_file {peer:.3f} s → {peer / ours:.2f}× (convert_to_csv {csv:.3f} s); "
        f"wrote {path}"
    )


if __name__ == "__main__":
    main()
