"""Versioned image datasets: content-addressed blobs, immutable Parquet manifests, ingest with
validation, leak-free splits, diff, export and verification."""

from visionline.data._groups import DEFAULT_MAX_GROUP_SHARE, TILE_SPEC, group_ids
from visionline.data._ingest import IngestReport
from visionline.data._manifest import SPLITS, ImageRecord
from visionline.data._masks import binary_mask, mask_in_model_frame, record_mask
from visionline.data._ops import VerifyReport, VersionDiff
from visionline.data._phash import DEFAULT_MAX_DISTANCE, phash
from visionline.data._repo import DatasetRepo, DatasetVersion
from visionline.data._selection import Strategy
from visionline.data._selection_monitor import MonitorPick, select_from_monitor
from visionline.data._split import split_groups
from visionline.data._store import BlobStore

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "DEFAULT_MAX_GROUP_SHARE",
    "SPLITS",
    "TILE_SPEC",
    "BlobStore",
    "DatasetRepo",
    "DatasetVersion",
    "ImageRecord",
    "IngestReport",
    "MonitorPick",
    "Strategy",
    "VerifyReport",
    "VersionDiff",
    "binary_mask",
    "group_ids",
    "mask_in_model_frame",
    "phash",
    "record_mask",
    "select_from_monitor",
    "split_groups",
]
