"""Model files load as tensors and plain data only: a file that would run code is refused on every
way in (`--pretrained`, `--teacher`, `--resume`, `visionline export`) and nothing runs."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from cli_support import assert_one_line_error, run_visionline
from train_builders import tiny_config

from visionline.errors import TrainingError, UnsafeFileError
from visionline.train import ModelSpec, build_model, fit, load_model, save_model
from visionline.train._backbones import load_pretrained
from visionline.train._checkpoint import LAST_CHECKPOINT, load_state


class _WritesMarker:
    """Unpickling this calls `open(marker, "w")`: a harmless stand-in for any code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """(file, marker): a model file shaped like visionline's whose unpickling creates `marker`."""
    marker = tmp_path / "code-ran"
    spec = ModelSpec("mobilenetv3_small_100", ["good", "scratch", "dent"])
    payload = {
        "format": "visionline.model/1",
        "spec": spec.to_dict(),
        "state_dict": build_model(spec).state_dict(),
        "metrics": _WritesMarker(marker),
    }
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    # The file is live: the old `weights_only=False` load runs it.
    torch.load(io.BytesIO(path.read_bytes()), weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_load_model_refuses_a_file_that_would_run_code(planted) -> None:
    path, marker = planted
    with pytest.raises(UnsafeFileError, match=r"refuses to unpickle because that can run code"):
        load_model(path)
    assert not marker.exists()


def test_pretrained_file_is_refused(planted) -> None:
    path, marker = planted
    backbone = build_model(ModelSpec("mobilenetv3_small_100", ["good", "dent"])).backbone
    with pytest.raises(UnsafeFileError, match=str(path)):
        load_pretrained(backbone, "mobilenetv3_small_100", str(path))
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["pretrained", "teacher", "resume"])
def test_training_refuses_planted_files(entry, planted, tiny_project, tmp_path) -> None:
    path, marker = planted
    project, version = tiny_project
    out = tmp_path / "run"
    if entry == "resume":
        out.mkdir()
        (out / LAST_CHECKPOINT).write_bytes(path.read_bytes())
        config = tiny_config()
    else:
        config = tiny_config(**{entry: str(path)})
    with pytest.raises(UnsafeFileError, match="can run code"):
        fit(config, version, project, out_dir=out, resume=entry == "resume", progress=False)
    assert not marker.exists()


def test_cli_export_refuses_a_planted_model_in_one_line(planted, tmp_path) -> None:
    path, marker = planted
    result = run_visionline("export", path, "--no-int8", "--out", tmp_path / "b", cwd=tmp_path)
    assert_one_line_error(result, str(path), "can run code")
    assert not marker.exists() and not (tmp_path / "b").exists()


def test_saved_metadata_is_plain_so_numpy_metrics_still_load(tmp_path) -> None:
    spec = ModelSpec("mobilenetv3_small_100", ["good", "dent"])
    path = save_model(
        tmp_path / "model.pt",
        build_model(spec),
        spec,
        metrics={"val_loss": np.float32(0.25), "epoch": np.int64(3)},
    )
    _, loaded = load_model(path)
    assert loaded == spec
    payload = torch.load(path, weights_only=True)
    assert payload["metrics"] == {"val_loss": 0.25, "epoch": 3}


def test_an_old_checkpoint_with_numpy_objects_gets_one_sentence(tmp_path) -> None:
    spec = ModelSpec("mobilenetv3_small_100", ["good", "dent"])
    old = {
        "format": "visionline.model/1",
        "spec": spec.to_dict(),
        "state_dict": build_model(spec).state_dict(),
        "metrics": {"val_loss": np.float64(0.25)},
    }
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(UnsafeFileError) as caught:
        load_model(tmp_path / "old.pt")
    message = str(caught.value)
    assert "numpy" in message and message.endswith("re-download it.")
    assert message.count(". ") == 0 and "\n" not in message


def test_a_damaged_file_is_not_reported_as_unsafe(tmp_path, tiny_project) -> None:
    _, version = tiny_project
    (tmp_path / "last.pt").write_bytes(b"\x00garbage")
    with pytest.raises(TrainingError, match="cannot be read as a PyTorch checkpoint") as caught:
        load_state(tmp_path / "last.pt", version)
    assert not isinstance(caught.value, UnsafeFileError)
