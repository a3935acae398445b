import numpy as np
import pytest

from visionline.anomaly import AnomalyConfig, fit_detector, score_images
from visionline.anomaly._onnx import (
    check_anomaly_parity,
    export_anomaly_onnx,
    onnx_anomaly_predict,
)
from visionline.export._onnx import onnx_session

from .conftest import global_change, tile


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    config = AnomalyConfig(
        image_size=128, batch_size=8, min_bank=16, max_bank=128, coreset_ratio=0.1
    )
    goods = [tile(seed)[0] for seed in range(4)]
    model, spec, _ = fit_detector(goods, len(goods), config)
    good_scores, _ = score_images(model, spec.preprocessing, [tile(50)[0], tile(51)[0]])
    spec.threshold = float(good_scores.max()) * 1.5
    path = export_anomaly_onnx(model, spec, tmp_path_factory.mktemp("onnx") / "anomaly.onnx")
    return model, spec, path


def test_onnx_graph_holds_the_bank_and_matches_pytorch_on_scores_maps_and_decisions(exported):
    model, spec, path = exported
    images = [tile(60)[0], tile(61, defect=True)[0], tile(62, defect=True)[0]]
    batch = spec.preprocessing(images)
    report = check_anomaly_parity(model, spec, path, batch)
    assert report["max_score_diff"] < 1e-3 and report["max_map_diff"] < 1e-3
    scores, decisions, maps = onnx_anomaly_predict(onnx_session(path), batch, batch_size=2)
    assert decisions.tolist() == [False, True, True]
    assert maps.shape == (3, 128, 128)
    torch_scores, _ = score_images(model, spec.preprocessing, images)
    np.testing.assert_allclose(scores, torch_scores, rtol=1e-3)


def test_the_fused_image_level_score_is_inside_the_graph_and_matches_pytorch(fused, tmp_path):
    import onnx

    model, spec, _ = fused
    spec.threshold = 1e9  # parity of scores and maps; every decision is False on both sides
    path = export_anomaly_onnx(model, spec, tmp_path / "fused.onnx")
    initialisers = {tuple(i.dims) for i in onnx.load(str(path)).graph.initializer}
    assert {(10, 192), (192, 10)} & initialisers  # the image bank, maybe stored transposed
    batch = spec.preprocessing([tile(70)[0], global_change(71), tile(72, defect=True)[0]])
    report = check_anomaly_parity(model, spec, path, batch)
    assert report["max_score_diff"] < 1e-4 and report["decisions_differ"] == 0


def test_the_onnx_model_takes_any_batch_size(exported):
    _, spec, path = exported
    session = onnx_session(path)
    one = spec.preprocessing([tile(70)[0]])
    five = spec.preprocessing([tile(70 + i)[0] for i in range(5)])
    single, _, _ = onnx_anomaly_predict(session, one, batch_size=1)
    batched, _, _ = onnx_anomaly_predict(session, five, batch_size=5)
    np.testing.assert_allclose(batched[0], single[0], rtol=1e-4)


def test_int8_quantises_only_the_backbone_and_keeps_the_contract(exported, tmp_path):
    import onnx

    from visionline.anomaly import quantize_anomaly_onnx
    from visionline.anomaly._onnx import INPUT_NAME, OUTPUT_NAMES

    _, spec, path = exported
    calibration = spec.preprocessing([tile(80 + i)[0] for i in range(4)])
    int8 = quantize_anomaly_onnx(path, tmp_path / "anomaly-int8.onnx", calibration)
    graph = onnx.load(str(int8)).graph
    assert [i.name for i in graph.input] == [INPUT_NAME]
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES)
    quantised = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    conv_inputs = {i for n in graph.node if n.op_type == "Conv" for i in n.input}
    matmul_inputs = {i for n in graph.node if n.op_type == "MatMul" for i in n.input}
    assert conv_inputs & quantised and not matmul_inputs & quantised
    images = [tile(90)[0], tile(91, defect=True)[0], tile(92, defect=True)[0]]
    scores, decisions, maps = onnx_anomaly_predict(onnx_session(int8), spec.preprocessing(images))
    fp32_scores, _, _ = onnx_anomaly_predict(onnx_session(path), spec.preprocessing(images))
    assert decisions.tolist() == [False, True, True] and maps.shape == (3, 128, 128)
    assert scores[1:].min() > 1.5 * scores[0]  # quantised features still separate the defects
    np.testing.assert_allclose(scores, fp32_scores, rtol=0.2)


def test_int8_without_calibration_images_names_the_fix(exported, tmp_path):
    from visionline.anomaly import quantize_anomaly_onnx
    from visionline.errors import ConfigError

    _, _, path = exported
    with pytest.raises(ConfigError, match="at least one good image"):
        quantize_anomaly_onnx(path, tmp_path / "x.onnx", np.zeros((0, 3, 128, 128), np.float32))
