"""The two-stage recipe: a head on cached frozen embeddings, then the top blocks fine-tuned."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image
from train_builders import tiny_config

from visionline.data import DatasetRepo
from visionline.errors import TrainingError
from visionline.preprocessing import Preprocessing
from visionline.train import ModelSpec, build_model, fit, load_model
from visionline.train._data import PixelCache, split_labels
from visionline.train._features import MaskTarget
from visionline.train._head import (
    VIEWS,
    EmbeddingCache,
    backbone_blocks,
    freeze_below_top_blocks,
    logit_metrics,
    mask_cell_targets,
    train_head,
)


@pytest.fixture
def checkpoint(tmp_path):
    """A raw state dict of a random mobilenetv3_small trunk: a pretrained start that needs
    neither the hub nor ImageNet weights, so the recipe's stages run on tiny images in seconds."""
    model = build_model(ModelSpec("mobilenetv3_small_100", ["good", "x"], Preprocessing(size=32)))
    path = tmp_path / "start.pt"
    torch.save(model.backbone.state_dict(), path)
    return path


def test_views_are_the_eight_symmetries_of_a_square():
    image = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)
    seen = {VIEWS[k](image).tobytes() for k in range(8)}
    assert len(seen) == 8
    assert all(VIEWS[k](image).shape == image.shape for k in range(8))


def test_embeddings_are_computed_once_and_reused_from_disk(tiny_project, tmp_path):
    project, version = tiny_project
    prep = Preprocessing(size=32)
    model = build_model(ModelSpec("mobilenetv3_small_100", ["good", "x"], prep))
    records, _ = split_labels(version, "train", ["good", "scratch", "dent"])
    pixels = PixelCache(DatasetRepo(project).blobs, prep, None).stack(records)
    cpu = torch.device("cpu")

    first = EmbeddingCache(model, "mobilenetv3_small_100", prep, tmp_path)
    vectors = first.embed(records, pixels, 2, cpu)
    assert vectors.shape == (2, len(records), model.embedding_dim)
    assert first.computed == 2 * len(records)
    assert not np.allclose(vectors[0], vectors[1])  # a flipped view is another input

    again = EmbeddingCache(model, "mobilenetv3_small_100", prep, tmp_path)
    np.testing.assert_array_equal(again.embed(records, pixels, 2, cpu), vectors)
    assert again.computed == 0
    other_size = EmbeddingCache(
        model,
        "mobilenetv3_small_100",
        Preprocessing(size=32, resize_mode="letterbox"),
        tmp_path,
    )
    other_size.embed(records[:2], pixels[:2], 1, cpu)
    assert other_size.computed == 2  # another resize mode is another key

    # A retrain starts from a checkpoint whose head moved but whose frozen backbone did not:
    # it reuses the embeddings; a backbone that changed does not.
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.add_(1.0)
    new_head = EmbeddingCache(model, "mobilenetv3_small_100", prep, tmp_path)
    new_head.embed(records, pixels, 2, cpu)
    assert new_head.computed == 0
    with torch.no_grad():
        next(model.backbone.parameters()).add_(0.01)
    new_backbone = EmbeddingCache(model, "mobilenetv3_small_100", prep, tmp_path)
    new_backbone.embed(records[:2], pixels[:2], 1, cpu)
    assert new_backbone.computed == 2


def test_only_the_top_blocks_and_the_layers_above_them_train():
    model = build_model(ModelSpec("efficientnet_lite0", ["good", "x"], Preprocessing(size=32)))
    blocks = backbone_blocks(model.backbone)
    assert len(blocks) == 16
    frozen = freeze_below_top_blocks(model.backbone, 2)
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("blocks.5.3", "blocks.6", "conv_head", "bn2")) for n in trainable
    )
    assert {"conv_head.weight", "blocks.6.0.conv_pwl.weight"} <= trainable
    assert model.backbone.conv_stem in frozen and blocks[0] in frozen
    freeze_below_top_blocks(model.backbone, 0)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    freeze_below_top_blocks(model.backbone, None)
    assert all(p.requires_grad for p in model.backbone.parameters())


@pytest.mark.slow
def test_fit_trains_the_head_first_and_then_only_the_top_blocks(
    tiny_project, tracking_uri, tmp_path, checkpoint
):
    from mlflow import MlflowClient

    project, version = tiny_project
    config = tiny_config(pretrained=str(checkpoint), head_epochs=20, finetune_blocks=1, epochs=1)
    result = fit(config, version, project, out_dir=tmp_path / "run", tracking_uri=tracking_uri)

    assert result.head_metrics is not None and result.head_metrics["head_epoch"] < 20
    assert len(result.history) == 1
    start = torch.load(checkpoint, weights_only=True)
    after = result.last_model.backbone.state_dict()
    changed = {
        k for k, v in start.items() if v.dtype.is_floating_point and not torch.equal(v, after[k])
    }
    # Only the top block and the head convolution moved; BatchNorm statistics stayed put.
    assert changed and all(k.startswith(("blocks.5", "conv_head")) for k in changed)
    assert not any("running_" in k for k in changed)
    params = MlflowClient(tracking_uri).get_run(result.run_id).data.params
    assert params["head_epochs"] == "20" and params["finetune_blocks"] == "1"
    metrics = MlflowClient(tracking_uri).get_run(result.run_id).data.metrics
    assert "head_val_defect_recall" in metrics


def test_head_only_recipe_saves_the_stage_one_model(
    tiny_project, tracking_uri, tmp_path, checkpoint
):
    project, version = tiny_project
    config = tiny_config(pretrained=str(checkpoint), head_epochs=10, finetune_blocks=0)
    result = fit(config, version, project, out_dir=tmp_path / "run", tracking_uri=tracking_uri)

    assert result.history == [] and result.best_epoch == -1
    model, _ = load_model(result.model_path)
    start = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in start.items())
    assert result.best_metrics == result.head_metrics


@pytest.mark.slow
def test_a_second_run_reuses_the_cached_embeddings(
    tiny_project, tracking_uri, tmp_path, checkpoint
):
    project, version = tiny_project
    config = tiny_config(pretrained=str(checkpoint), head_epochs=5, finetune_blocks=0)
    fit(config, version, project, out_dir=tmp_path / "a", tracking_uri=tracking_uri, progress=False)
    cached = sorted((project.cache_dir / "embeddings").rglob("*.npy"))
    assert len(cached) == 28  # each train and val image once, identity view only
    stamps = [p.stat().st_mtime_ns for p in cached]
    fit(config, version, project, out_dir=tmp_path / "b", tracking_uri=tracking_uri, progress=False)
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_patch_features_train_a_patch_head_on_cached_maps(
    tiny_project, tracking_uri, tmp_path, checkpoint
):
    from visionline.train._features import PatchHead

    project, version = tiny_project
    config = tiny_config(
        pretrained=str(checkpoint), head_epochs=5, finetune_blocks=0, features="patches",
        mask_weight=1.0,  # the scratches' masks teach the cells, the dents add the image loss only
    )
    version = _with_masks(project, version)
    result = fit(config, version.id, project, out_dir=tmp_path / "run", tracking_uri=tracking_uri)

    model, spec = load_model(result.model_path)
    assert spec.features == "patches" and isinstance(model.head, PatchHead)
    assert not torch.equal(model.head.std, torch.ones_like(model.head.std))  # standardised
    cached = sorted((project.cache_dir / "embeddings").rglob("*.npy"))
    assert len(cached) == 28 and np.load(cached[0]).ndim == 3  # one (C, H, W) map per image


def test_pooled_and_patch_features_are_cached_under_different_keys(tiny_project, tmp_path):
    project, version = tiny_project
    prep = Preprocessing(size=32)
    records, _ = split_labels(version, "train", ["good", "scratch", "dent"])
    pixels = PixelCache(DatasetRepo(project).blobs, prep, None).stack(records)[:2]
    pooled = build_model(ModelSpec("mobilenetv3_small_100", ["good", "x"], prep))
    patches = build_model(
        ModelSpec("mobilenetv3_small_100", ["good", "x"], prep, features="patches")
    )
    patches.backbone.load_state_dict(pooled.backbone.state_dict())
    cpu = torch.device("cpu")
    first = EmbeddingCache(pooled, "mobilenetv3_small_100", prep, tmp_path)
    second = EmbeddingCache(patches, "mobilenetv3_small_100", prep, tmp_path)
    assert first.directory != second.directory
    assert first.embed(records[:2], pixels, 1, cpu).ndim == 3
    assert second.embed(records[:2], pixels, 1, cpu).shape[:3] == (1, 2, patches.embedding_dim)
    assert second.computed == 2


def _with_masks(project, version):
    """A version of the tiny project whose scratches carry a mask of their top-left quadrant
    (dents keep none) and whose good images carry none."""
    repo = DatasetRepo(project)
    buffer = io.BytesIO()
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:16, :16] = 255
    Image.fromarray(mask).save(buffer, format="PNG")
    sha = repo.blobs.put(buffer.getvalue())
    records = [
        dataclasses.replace(r, mask_sha256=sha) if r.subtype == "scratch" else r
        for r in version.records
    ]
    return repo.create_version(records, name="tiny+masks", parent=version.id, metadata={})


def test_mask_targets_go_through_the_resize_and_views_of_their_images(tiny_project):
    project, version = tiny_project
    version = _with_masks(project, version)
    records, labels = split_labels(version, "train", ["good", "scratch", "dent"])
    targets = mask_cell_targets(
        records, labels, DatasetRepo(project).blobs, Preprocessing(size=64), 2, (2, 2),
        MaskTarget.SHARE,
    )
    assert targets.shape == (2, len(records), 2, 2)
    kinds = [r.subtype or "good" for r in records]
    scratch, dent, good = (kinds.index(k) for k in ("scratch", "dent", "good"))
    np.testing.assert_allclose(targets[0, scratch], [[1, 0], [0, 0]])  # upsampled 32 -> 64
    np.testing.assert_allclose(targets[1, scratch], [[0, 1], [0, 0]])  # the flipped view
    assert (targets[:, good] == 0).all() and np.isnan(targets[:, dent]).all()


def test_masks_teach_the_cells_where_the_defect_is():
    prep = Preprocessing(size=32)
    model = build_model(ModelSpec("mobilenetv3_small_100", ["good", "x"], prep, features="patches"))
    start = {k: v.clone() for k, v in model.head.state_dict().items()}
    rng = np.random.default_rng(0)
    n = 64
    maps = rng.normal(size=(n, model.embedding_dim, 3, 3)).astype(np.float32)
    labels = np.arange(n) % 2
    cells = np.zeros((n, 3, 3), dtype=np.float32)
    where = rng.integers(0, 3, size=(n, 2))
    for i in np.flatnonzero(labels):
        maps[i, 0, where[i, 0], where[i, 1]] += 4.0  # the defect's own cell
        maps[i, 1] += 1.5  # and a shift of every cell that also tells defects apart
        cells[i, where[i, 0], where[i, 1]] = 1.0

    def top_cell_hits(masks):
        model.head.load_state_dict(start)
        train_head(
            model, maps, labels, maps, labels, epochs=20, lr=0.01, weight_decay=0.0,
            batch_size=32, class_weight=None, label_smoothing=0.0, seed=0, masks=masks,
            score=lambda logits, y: logit_metrics(logits, y, 0.1),
        )
        with torch.no_grad():
            logits = model.head.cell_logits(torch.from_numpy(maps[labels == 1]))
        top = (logits[:, 1] - logits[:, 0]).flatten(1).argmax(1).numpy()
        return (top == where[labels == 1, 0] * 3 + where[labels == 1, 1]).mean()

    taught, untaught = top_cell_hits((cells, 1.0)), top_cell_hits(None)
    assert taught >= 0.8 and untaught < taught - 0.3
    with pytest.raises(TrainingError, match="one \\(H, W\\) target per train map"):
        top_cell_hits((cells[:, :2], 1.0))


def test_mask_weight_without_masks_is_refused_in_one_sentence(
    tiny_project, tracking_uri, tmp_path, checkpoint
):
    project, version = tiny_project
    config = tiny_config(
        pretrained=str(checkpoint), head_epochs=2, finetune_blocks=0, features="patches",
        mask_weight=1.0,
    )
    with pytest.raises(TrainingError, match=r"data add --masks\) or set mask_weight: 0\.$"):
        fit(config, version, project, out_dir=tmp_path / "a", tracking_uri=tracking_uri,
            progress=False)
    assert not (project.cache_dir / "embeddings").exists()  # refused before the backbone ran
