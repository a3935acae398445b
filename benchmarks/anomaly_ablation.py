"""Which anomaly-detector settings work on the magnetic tiles, chosen on validation only.

The validation split is carved from the *training* tiles of benchmarks/anomaly.py's tile split
(never its val or test tiles): a quarter of the good training tile groups are held out as
validation good images, the training split's defect images (which a fit never reads) are the
validation defects, and the remaining good training tiles are fitted on (a random 250 of their
images). Each setting is scored by
image AUROC (overall and per defect type), recall at 2% FRR with the threshold on these same
validation good images, and pixel AUROC / AUPRO against the masks.

To stay cheap on a shared 2-core machine, each preprocessing variant (backbone, size, resize
mode, autocontrast) runs the backbone once over the images and keeps every stage's map; the
feature variants (stage pair, neighbourhood, standardisation, coreset ratio, image score) are then
scored from those maps. Rounds go one factor at a time from the best setting so far. Stage 1
(4x the patches) is left out, and coreset ratios above 3% (a bank too slow for the 30 ms latency
budget); pixel metrics are taken on maps and masks at half the input resolution.

The later rounds weigh the memory-bank size against k-nearest-neighbour patch scores (a patch's
mean distance to its k nearest bank patches) and the map's Gaussian sigma (pixel metrics only).

The fusion round (`--fusion`) adds the image-level kNN on pooled patch features to the patch
score (`AnomalyConfig.image_neighbours`, fusion weights from the training images, as
`fit_detector` sets them) and repeats every setting over four coreset seeds: single runs differ
by up to 0.03 image AUROC between seeds, more than the gains weighed here.

The flip round (`--flip`) scores each validation image together with its left-right mirror and
averages the two scores and maps (`AnomalyConfig.flip_average`), against each image alone, over
the same four seeds; pixel AUROC counts as much as image AUROC here.

The background round (`--background`) takes each image's score relative to its own median patch
distance (`AnomalyConfig.subtract_background`; the maps keep absolute distances), against the
score as it was, over the same four seeds.

Run: nice -n 5 .venv/bin/python benchmarks/anomaly_ablation.py  → results/anomaly_ablation.json
(`--quick`: 60 fit images and 80 validation images, writes nothing; `--extend`: only the later
rounds, from `DEFAULTS`, keeping the earlier run's rounds in the JSON under "extends";
`--fusion`: only the fusion round, from `FUSION_START`, keeping everything earlier; `--flip`: only
the flip round, from `FLIP_START`, keeping everything earlier; `--background`: only the
background round, from `BACKGROUND_START`, likewise)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import write_result
from anomaly import CLASSES, FRR, parse_flags, tile_split

from visionline.anomaly import AnomalyConfig, greedy_coreset, pixel_metrics_from_masks
from visionline.anomaly._fit import _image_knn, batches, training_scores
from visionline.anomaly._model import PatchCore
from visionline.anomaly._search import bank_neighbours
from visionline.data import TILE_SPEC, group_ids
from visionline.evaluate import choose_operating_point, roc_auc
from visionline.preprocessing import Preprocessing, ResizeMode

OPTIONS = parse_flags(
    __doc__,
    {
        "--quick": "60 fit images and 80 validation images; writes nothing",
        "--extend": "only the later rounds, from DEFAULTS, keeping the earlier rounds",
        "--fusion": "only the fusion round, from FUSION_START",
        "--flip": "only the flip round, from FLIP_START",
        "--background": "only the background round, from BACKGROUND_START",
    },
    as_script=__name__ == "__main__",
)
QUICK = OPTIONS.quick
EXTEND = OPTIONS.extend
FUSION = OPTIONS.fusion
FLIP = OPTIONS.flip
BACKGROUND = OPTIONS.background
SEEDS = (0, 1, 2, 3)
RESULT = Path(__file__).parent / "results" / "anomaly_ablation.json"
HELD_OUT_SHARE = 0.25
MAX_CANDIDATES = 200_000
FIT_IMAGES = 250
"""A random subset of the fit tiles' good images, so that ~25 settings fit into minutes here."""


@dataclass(frozen=True)
class Setting:
    backbone: str = "efficientnet_lite0"
    size: int = 224
    resize_mode: str = "stretch"
    autocontrast: bool = False
    stages: tuple[int, int] = (2, 3)
    neighbourhood: int = 3
    standardise: bool = False
    coreset_ratio: float = 0.01
    reweight: bool = True
    score_neighbours: int = 1
    sigma: float = 4.0
    image_neighbours: int = 0
    flip_average: bool = False
    subtract_background: bool = False
    seed: int = 0

    def prep_key(self) -> tuple:
        return (self.backbone, self.size, self.resize_mode, self.autocontrast)


DEFAULTS = Setting(
    autocontrast=True, stages=(3, 4), neighbourhood=1, standardise=True, coreset_ratio=0.01
)
"""Where the earlier rounds (preprocessing ... backbone) left the defaults; `--extend` starts here."""
FUSION_START = replace(DEFAULTS, coreset_ratio=0.0025, score_neighbours=3, sigma=12.0)
"""Where `--extend` left them (bank 0.25%, k = 3, sigma 12); `--fusion` starts here."""
FLIP_START = replace(FUSION_START, image_neighbours=3)
"""Where `--fusion` left them (image kNN k = 3); `--flip` starts here."""
BACKGROUND_START = replace(FLIP_START, flip_average=True)
"""Where `--flip` left them (flip averaging); `--background` starts here."""


def carve(seed: int = 0):
    """(fit good paths, [(val path, class index)]) from the training tiles only."""
    rows = [r for r in tile_split() if r[1] == "train"]
    paths = [p for p, _, _ in rows]
    group_of = dict(zip(paths, group_ids(paths, TILE_SPEC)))
    good = [p for p, _, y in rows if y == 0]
    keys = sorted({group_of[p] for p in good})
    np.random.default_rng(seed).shuffle(keys)
    held = set(keys[: round(HELD_OUT_SHARE * len(keys))])
    fit = [p for p in good if group_of[p] not in held]
    val = [(p, 0) for p in good if group_of[p] in held] + [(p, y) for p, _, y in rows if y != 0]
    rng = np.random.default_rng(0)
    fit = [fit[i] for i in sorted(rng.permutation(len(fit))[: 60 if QUICK else FIT_IMAGES])]
    if QUICK:
        val = [val[i] for i in sorted(rng.permutation(len(val))[:80])]
    return fit, val


def stage_maps(setting: Setting, paths: list[str], mirror: bool = False) -> dict[int, torch.Tensor]:
    """Every stage's map (blocks 1-5) of every image (or of its left-right mirror), from one pass
    of the frozen backbone."""
    from visionline.train._backbones import create_backbone, load_pretrained, normalization_for

    trunk = create_backbone(setting.backbone, num_classes=0)
    load_pretrained(trunk, setting.backbone, "imagenet")
    trunk.eval()
    mean, std = normalization_for(setting.backbone, "imagenet")
    prep = preprocessing(setting, mean, std)
    keep = (1, 2, 3, 4, 5)
    parts: dict[int, list[torch.Tensor]] = {k: [] for k in keep}
    with torch.inference_mode():
        for batch in batches((Image.open(p) for p in paths), 16):
            x = torch.from_numpy(prep(batch))
            x = trunk.bn1(trunk.conv_stem(x.flip(3) if mirror else x))
            for index, block in enumerate(list(trunk.blocks)[: max(keep) + 1]):
                x = block(x)
                if index in keep:
                    parts[index].append(x.half() if index == 1 else x)
    return {k: torch.cat(v) for k, v in parts.items()}


def preprocessing(setting: Setting, mean=(0.5,) * 3, std=(0.5,) * 3) -> Preprocessing:
    return Preprocessing(
        size=setting.size,
        resize_mode=ResizeMode(setting.resize_mode),
        mean=tuple(mean),
        std=tuple(std),
        autocontrast=setting.autocontrast,
    )


def patch_features(maps: dict[int, torch.Tensor], setting: Setting) -> torch.Tensor:
    """(N, D, h, w) features exactly as visionline.anomaly._features.PatchFeatures forms them."""
    k = setting.neighbourhood
    pooled = [
        F.avg_pool2d(maps[s].float(), k, stride=1, padding=k // 2, count_include_pad=False)
        for s in setting.stages
    ]
    shallow, deep = pooled
    deep = F.interpolate(deep, size=shallow.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([shallow, deep], dim=1)


def evaluate_setting(
    setting: Setting, fit_maps, val_maps, labels, masks, sizes, mirrored_maps=None
) -> dict:
    """`mirrored_maps`: the validation images' mirrors' stage maps, for `flip_average`."""
    started = time.perf_counter()
    train = patch_features(fit_maps, setting)
    val = patch_features(val_maps, setting)
    mirrored = patch_features(mirrored_maps, setting) if setting.flip_average else val
    n, d, h, w = train.shape
    patches = train.permute(0, 2, 3, 1).reshape(-1, d)
    if setting.standardise:
        mean, std = patches.mean(0), patches.std(0).clamp_min(1e-3)
        patches = (patches - mean) / std
        val = (val - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        mirrored = (mirrored - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    if len(patches) > MAX_CANDIDATES:
        patches = patches[torch.randperm(len(patches), generator=generator)[:MAX_CANDIDATES]]
    bank_size = max(1, round(setting.coreset_ratio * n * h * w))
    bank = patches[greedy_coreset(patches, bank_size, 64, setting.seed)].contiguous()
    half = setting.size // 2  # pixel metrics at half resolution: 4x cheaper, same ranking
    model = PatchCore(
        torch.nn.Identity(),
        bank,
        bank_neighbours(bank, 9),
        setting.sigma * half / setting.size,  # the same blur as `sigma` at full resolution
        score_neighbours=setting.score_neighbours,
        flip_average=setting.flip_average,
    )
    if setting.image_neighbours or setting.subtract_background:  # the fit's own code
        # embeddings from standardised maps: the embedding's own z-score makes that the same
        searched = (
            train
            if not setting.standardise
            else (train - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        )
        patch_scores, levels = training_scores(
            model, searched.permute(0, 2, 3, 1).reshape(n, h * w, d)
        )
        if setting.subtract_background:
            offset = float(levels.mean())
            model.set_background(offset)
            patch_scores = patch_scores - levels + offset
        if setting.image_neighbours:
            model.set_image_knn(
                _image_knn(
                    patch_scores,
                    searched.mean(dim=(2, 3)),
                    setting.image_neighbours,
                    AnomalyConfig(),
                )
            )
    scores, amaps = [], []
    with torch.inference_mode():
        for part, mirror in zip(val.split(32), mirrored.split(32)):
            if setting.flip_average:  # the model's own averaging of an image and its mirror
                reweighted, amap = model.score_views(torch.cat([part, mirror]), (half, half))
                scores.append(reweighted.numpy())
                amaps.append(amap[:, 0].numpy())
                continue
            patch_map, reweighted = model.score_features(part)
            top = patch_map.amax(dim=(1, 2))
            scores.append((reweighted if setting.reweight else top).numpy())
            amaps.append(model.smooth(patch_map, (half, half))[:, 0].numpy())
    scores, amaps = np.concatenate(scores), np.concatenate(amaps)
    defect = labels != 0
    point = choose_operating_point(scores[~defect], FRR)
    flagged = scores > point.threshold
    out = {
        "setting": asdict(setting),
        "bank_size": bank_size,
        "feature_dim": d,
        "roc_auc": roc_auc(defect, scores),
        "recall_at_2pct_frr": float(flagged[defect].mean()),
        "subtype_roc_auc": {
            name: roc_auc(labels[(labels == i) | ~defect] == i, scores[(labels == i) | ~defect])
            for i, name in enumerate(CLASSES[1:], start=1)
        },
    }
    prep = preprocessing(replace(setting, size=half))
    out.update(pixel_metrics_from_masks(amaps, masks, sizes, list(defect), prep))
    out["seconds"] = time.perf_counter() - started
    return out


def main() -> None:
    torch.set_num_threads(1)
    fit, val = carve()
    labels = np.array([y for _, y in val])
    val_paths = [p for p, _ in val]
    sizes = [Image.open(p).size for p in val_paths]
    masks = [
        np.asarray(Image.open(p[:-4] + ".png").convert("L")) >= 128
        if y
        else np.zeros(s[::-1], bool)
        for (p, y), s in zip(val, sizes)
    ]
    print(
        f"carved from train tiles: {len(fit)} fit, {len(val)} val ({labels.astype(bool).sum()} "
        "defects)",
        flush=True,
    )
    cache: dict[tuple, tuple] = {}
    results: list[dict] = []

    def run(setting: Setting) -> dict:
        key = setting.prep_key()
        if key not in cache:
            cache.clear()
            started = time.perf_counter()
            cache[key] = (
                stage_maps(setting, fit),
                stage_maps(setting, val_paths),
                time.perf_counter() - started,
            )
        fit_maps, val_maps, extract_seconds = cache[key]
        if setting.flip_average and "mirrored" not in cache:
            cache["mirrored"] = stage_maps(setting, val_paths, mirror=True)
        done = next((r for r in results if r["setting"] == asdict(setting)), None)
        if done is None:
            done = evaluate_setting(
                setting, fit_maps, val_maps, labels, masks, sizes, cache.get("mirrored")
            )
            done["extract_seconds"] = extract_seconds
            results.append(done)
            print(
                json.dumps(
                    {
                        k: done[k]
                        for k in (
                            "setting",
                            "roc_auc",
                            "recall_at_2pct_frr",
                            "pixel_auroc",
                            "aupro",
                            "seconds",
                        )
                    },
                    default=float,
                ),
                flush=True,
            )
        return done

    def best_of(candidates: list[Setting]) -> Setting:
        scored = [(run(s), s) for s in candidates]
        # image AUROC first; pixel AUROC breaks near-ties (within 0.005)
        top = max(r["roc_auc"] for r, _ in scored)
        near = [(r, s) for r, s in scored if r["roc_auc"] >= top - 0.005]
        return max(near, key=lambda rs: rs[0]["pixel_auroc"])[1]

    best = Setting()
    rounds = [
        (
            "preprocessing",
            lambda b: [
                replace(b, resize_mode=m, autocontrast=a)
                for m in ("stretch", "letterbox")
                for a in (False, True)
            ],
        ),
        ("stages", lambda b: [replace(b, stages=s) for s in ((2, 3), (2, 4), (3, 4), (2, 5))]),
        ("neighbourhood", lambda b: [replace(b, neighbourhood=k) for k in (1, 3, 5)]),
        (
            "standardise+score",
            lambda b: [
                replace(b, standardise=z, reweight=r) for z in (False, True) for r in (True, False)
            ],
        ),
        ("size", lambda b: [replace(b, size=s) for s in (224, 256, 320)]),
        (
            "backbone",
            lambda b: [
                replace(b, backbone=n)
                for n in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
            ],
        ),
    ]
    later_rounds = [
        (
            "bank+score neighbours",
            lambda b: [
                replace(b, coreset_ratio=r, score_neighbours=k)
                for r in (0.0025, 0.01, 0.03)
                for k in (1, 3, 9)
            ],
        ),
        ("map sigma", lambda b: [replace(b, sigma=s) for s in (4.0, 8.0, 12.0)]),
    ]
    if FUSION:
        write_fusion_round(run)
        return
    if FLIP:
        write_flip_round(run)
        return
    if BACKGROUND:
        write_background_round(run)
        return
    earlier = None
    if EXTEND:  # only the rounds added later, from the defaults the earlier rounds chose
        earlier = json.loads(RESULT.read_text())
        best, rounds = DEFAULTS, later_rounds
    else:
        rounds += later_rounds
    chosen = []
    for name, candidates in rounds:
        best = best_of(candidates(best))
        chosen.append({"round": name, "best": asdict(best)})
        print(f"round {name}: {asdict(best)}", flush=True)
    result = {
        "validation": {
            "carved": "benchmarks/anomaly.py tile_split train split only: 25% of the good tile "
            "groups (visionline.data.group_ids, TILE_SPEC) held out as validation good images, the "
            "train split's defect images as validation defects; fitted on the other good tiles",
            "fit_good": len(fit),
            "val_good": int((labels == 0).sum()),
            "val_defects": {n: int((labels == i).sum()) for i, n in enumerate(CLASSES) if i},
            "selection": "per round, highest validation image AUROC; pixel AUROC among those "
            "within 0.005",
        },
        "rounds": chosen,
        "best": asdict(best),
        "runs": results,
    }
    if earlier is not None:
        result["extends"] = {
            "note": "--extend: only the later rounds, started from the defaults the earlier "
            "rounds chose (efficientnet_lite0 kept over lite2 for latency); the earlier run below",
            "start": asdict(DEFAULTS),
            **{k: earlier[k] for k in ("rounds", "best", "runs", "provenance") if k in earlier},
        }
    Path("/tmp/visionline-anomaly-ablation.json").write_text(json.dumps(result, default=float))
    if not QUICK:
        print(write_result("anomaly_ablation", result))


def seed_rows(run, settings: dict[str, Setting]) -> list[dict]:
    """Each named setting over `SEEDS`: means, per-seed image AUROC and the gain over the first."""
    rows = []
    for name, setting in settings.items():
        runs = [run(replace(setting, seed=seed)) for seed in SEEDS]
        aurocs = [r["roc_auc"] for r in runs]
        rows.append(
            {
                "variant": name,
                "roc_auc_mean": float(np.mean(aurocs)),
                "roc_auc_per_seed": aurocs,
                "recall_at_2pct_frr_mean": float(np.mean([r["recall_at_2pct_frr"] for r in runs])),
                "subtype_roc_auc_mean": {
                    name: float(np.mean([r["subtype_roc_auc"][name] for r in runs]))
                    for name in CLASSES[1:]
                },
                "pixel_auroc_mean": float(np.mean([r["pixel_auroc"] for r in runs])),
                "pixel_auroc_per_seed": [r["pixel_auroc"] for r in runs],
                "aupro_mean": float(np.mean([r["aupro"] for r in runs])),
            }
        )
        print(json.dumps(rows[-1], default=float), flush=True)
    base = rows[0]["roc_auc_per_seed"]
    for row in rows[1:]:
        row["gain_per_seed"] = [a - b for a, b in zip(row["roc_auc_per_seed"], base)]
    return rows


def write_round(key: str, start: Setting, rows: list[dict], best: dict) -> None:
    """Add round `key` to the committed JSON, keeping every earlier round and its provenance."""
    earlier = json.loads(RESULT.read_text())
    kept = {"fusion": "earlier_provenance"}.get(key, f"provenance_before_{key}")  # as first written
    if key in earlier:  # a rerun of this round replaces the last one, not what came before
        earlier["provenance"] = earlier.pop(kept)
    result = {
        **{k: v for k, v in earlier.items() if k not in ("provenance", key)},
        key: {
            "start": asdict(start),
            "selection": f"highest mean validation image AUROC over coreset seeds {list(SEEDS)}",
            "rows": rows,
            **best,
        },
        kept: earlier.get("provenance"),
    }
    Path("/tmp/visionline-anomaly-ablation.json").write_text(json.dumps(result, default=float))
    if not QUICK:
        print(write_result("anomaly_ablation", result))


def write_fusion_round(run) -> None:
    """Patch score alone vs fused with the image-level kNN (k = 3 or 9), each over `SEEDS`."""
    rows = seed_rows(run, {f"k={k}": replace(FUSION_START, image_neighbours=k) for k in (0, 3, 9)})
    best = max(rows, key=lambda r: r["roc_auc_mean"])
    write_round("fusion", FUSION_START, rows, {"best_image_neighbours": best["variant"]})


def write_flip_round(run) -> None:
    """Each image scored alone vs averaged with its left-right mirror (scores and maps)."""
    rows = seed_rows(
        run, {f"flip_average={f}": replace(FLIP_START, flip_average=f) for f in (False, True)}
    )
    best = max(rows, key=lambda r: r["roc_auc_mean"])
    write_round("flip", FLIP_START, rows, {"best": best["variant"]})


def write_background_round(run) -> None:
    """Image scores as they are vs relative to each image's median patch distance."""
    rows = seed_rows(
        run,
        {
            f"subtract_background={b}": replace(BACKGROUND_START, subtract_background=b)
            for b in (False, True)
        },
    )
    best = max(rows, key=lambda r: r["roc_auc_mean"])
    write_round("background", BACKGROUND_START, rows, {"best": best["variant"]})


if __name__ == "__main__":
    main()
