"""Quantisation-aware fine-tuning: fake quantisation on the INT8 grid, removed afterwards, and
`--int8 qat` rescuing a refused post-training INT8 model end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from visionline.errors import ConfigError
from visionline.export import ExportConfig, export_model, verify_bundle
from visionline.export._qat import FakeQuantized


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3)
    ).eval()


def test_fake_quantisation_puts_weights_on_an_int8_grid_and_leaves_no_trace() -> None:
    net = _net()
    x = torch.randn(4, 3, 8, 8)
    before = net(x)
    weight = net[0].weight.detach().clone()
    with FakeQuantized(net) as quantized:
        assert len(quantized.layers) == 2
        on_grid = net[0].weight.detach()
        for channel in on_grid:
            step = channel.abs().max() / 127
            assert torch.allclose(channel / step, (channel / step).round(), atol=1e-3)
        assert not torch.equal(on_grid, weight)
        fake = net(x)
    assert not torch.allclose(fake, before)
    torch.testing.assert_close(net[0].weight, weight)
    torch.testing.assert_close(net(x), before)
    assert not net[0]._forward_pre_hooks


def test_a_model_without_quantisable_layers_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match="cannot be quantised; export it with --no-int8"):
        FakeQuantized(nn.Sequential(nn.ReLU())).__enter__()


def test_qat_contradicting_no_int8_is_one_sentence(tmp_path) -> None:
    config = ExportConfig(data="any", int8=False, qat=True)
    with pytest.raises(ConfigError, match="drop --no-int8 or drop --int8 qat"):
        export_model(tmp_path / "model.pt", tmp_path / "b", config, object())


@pytest.mark.slow
def test_qat_ships_int8_when_post_training_int8_is_refused(
    export_workspace, tmp_path, monkeypatch
) -> None:
    from visionline.export import _quantize

    real_search = _quantize.search_int8
    calls = []

    def ptq_broken_once(fp32, out, calibration, classes, threshold, *args, **kwargs):
        calls.append(fp32)
        if len(calls) > 1:
            return real_search(fp32, out, calibration, classes, threshold, *args, **kwargs)
        # ranges from blank images clip every real activation: post-training INT8 is useless
        _quantize.quantize_int8(fp32, out, np.zeros_like(calibration[:4]))
        return _quantize.Int8Choice("minmax", [], [], 4, {}, threshold, 0)

    monkeypatch.setattr(_quantize, "search_int8", ptq_broken_once)
    result = export_model(
        export_workspace["model"],
        tmp_path / "bundle",
        ExportConfig(
            data=export_workspace["version"].id,
            int8=True,
            qat=True,
            qat_epochs=1,
            calibration_images=16,
            calibration="minmax",
        ),
        export_workspace["project"],
        progress=False,
    )
    manifest = result.manifest
    gate = manifest["gates"]["int8_accuracy"]
    assert len(calls) == 2 and calls[1].name == "model.qat.onnx"
    assert gate["quantisation"]["qat"]["post_training_gate"]["passed"] is False
    assert gate["quantisation"]["qat"]["epochs"] == 1
    assert gate["passed"] is True and manifest["deployed"] == "int8"
    assert manifest["models"]["int8"]["quantisation_aware"] is True
    assert any("quantisation-aware fine-tune" in note for note in result.notes)
    verify_bundle(result.bundle_dir)
