"""`visionline-edge`: verify a bundle and score images with it on the device.

    visionline-edge verify BUNDLE --trust-store /etc/visionline/trusted-keys
    visionline-edge score BUNDLE IMAGE_OR_FOLDER... --trust-store DIR [--json]

A signature by a trusted key is required unless `--allow-unsigned` is given (then only the file
hashes are checked, which catches corruption but not tampering). `VISIONLINE_TRUST_STORE` sets the
default trust store. Errors are one sentence on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from visionline_edge import __version__
from visionline_edge.errors import ConfigError, ImageError, VisionlineError

__all__ = ["main"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def _trust_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory or .tar.gz")
    parser.add_argument(
        "--trust-store",
        type=Path,
        default=os.environ.get("VISIONLINE_TRUST_STORE") or None,
        help="folder of trusted Ed25519 public keys (*.pub), or one PEM file "
        "(default: $VISIONLINE_TRUST_STORE)",
    )
    parser.add_argument("--pubkey", type=Path, help="one trusted public key (.pub)")
    parser.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept a bundle without a trusted signature (checks file hashes only)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionline-edge",
        description="Verify visionline edge bundles and score images with them.",
    )
    parser.add_argument("--version", action="version", version=f"visionline-edge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check a bundle's files and signature")
    _trust_options(verify)
    score = commands.add_parser("score", help="verify a bundle, then score images with it")
    _trust_options(score)
    score.add_argument("images", nargs="+", type=Path, help="image files or folders (recursive)")
    score.add_argument("--precision", help="model to run (fp32, int8; default: the deployed one)")
    score.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: default)")
    score.add_argument("--batch-size", type=int, default=16, help="images per model call")
    score.add_argument("--json", action="store_true", help="one JSON object per image")
    return parser


def _verify_options(args: argparse.Namespace) -> dict[str, Any]:
    keyed = args.trust_store is not None or args.pubkey is not None
    if args.allow_unsigned and keyed:
        raise ConfigError(
            "--allow-unsigned contradicts --trust-store/--pubkey; drop one of them."
        )
    if not args.allow_unsigned and not keyed:
        raise ConfigError(
            "No trusted key given; pass --trust-store DIR or --pubkey FILE (or set "
            "VISIONLINE_TRUST_STORE), or --allow-unsigned to check file hashes only."
        )
    return {
        "pubkey": args.pubkey,
        "trust_store": args.trust_store,
        "require_signature": not args.allow_unsigned,
    }


def _images(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            yield path
        else:
            raise ConfigError(f"No image or folder at {path}; pass existing files or folders.")


def _verify(args: argparse.Namespace) -> int:
    from visionline_edge._verify import release_unpacked, verify_bundle

    manifest = verify_bundle(args.bundle, **_verify_options(args))
    release_unpacked(manifest)
    files = len(manifest["files"])
    signer = manifest["_signed_by"]
    how = f"signed by trusted key {signer}" if signer else "UNSIGNED (hashes only)"
    print(
        f"OK {manifest['name']} v{manifest['version']}: {files} files match bundle.json, {how}; "
        f"threshold {manifest['threshold']}, deployed model {manifest['deployed']}."
    )
    return 0


def _score(args: argparse.Namespace) -> int:
    from visionline_edge._model import load_bundle

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {args.batch_size}.")
    paths = list(_images(args.images))
    if not paths:
        raise ConfigError("No images found; pass image files or folders holding .jpg/.png files.")
    model = load_bundle(
        args.bundle, precision=args.precision, threads=args.threads or None, **_verify_options(args)
    )
    failed = flagged = 0
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        decoded, rows = [], {}
        for path in chunk:
            try:
                decoded.append((path, _decode(path, model.max_pixels)))
            except ImageError as exc:
                rows[path] = {"image": str(path), "error": str(exc)}
        if decoded:
            result = model.predict([image for _, image in decoded])
            for (path, _), one in zip(decoded, result):
                rows[path] = {
                    "image": str(path),
                    "decision": one.decision,
                    "defect_score": float(one.defect_score),
                    "predicted_class": one.predicted_class,
                }
                if one.anomaly_score is not None:
                    rows[path]["anomaly_score"] = round(one.anomaly_score, 6)
        for path in chunk:
            row = rows[path]
            failed += "error" in row
            flagged += row.get("decision", "good") != "good"
            print(json.dumps(row) if args.json else _text(row))
    threshold = (
        f"anomaly threshold {model.anomaly_threshold:.4f}"
        if model.anomaly_threshold is not None
        else f"threshold {model.threshold:.4f}"
    )
    print(
        f"{model.name} v{model.version}: {len(paths)} images, {flagged} flagged, "
        f"{failed} unreadable ({threshold}).",
        file=sys.stderr,
    )
    return 0


def _decode(path: Path, max_pixels: int) -> Any:
    from visionline_edge.preprocessing import decode_image

    return decode_image(path.read_bytes(), max_pixels)


def _text(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['image']}\terror\t{row['error']}"
    return f"{row['image']}\t{row['decision']}\t{row['defect_score']:.6f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _verify(args) if args.command == "verify" else _score(args)
    except VisionlineError as exc:
        print(f"visionline-edge: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"visionline-edge: {exc.strerror or exc}: {exc.filename}; check the path.", file=sys.stderr)
        return 1
