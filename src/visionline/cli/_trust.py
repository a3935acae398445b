"""The options every command that opens a bundle shares: which keys to trust, and whether a
signature is required. The checks themselves are the edge runtime's (`visionline_edge`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["PubkeyOption", "RequireSignatureOption", "TrustStoreOption"]

TrustStoreOption = Annotated[
    Path | None,
    typer.Option(
        "--trust-store",
        envvar="VISIONLINE_TRUST_STORE",
        help="Folder of trusted Ed25519 public keys (*.pub) or one PEM file: only bundles signed "
        "by one of them are accepted.",
    ),
]
PubkeyOption = Annotated[
    Path | None,
    typer.Option("--pubkey", help="One trusted Ed25519 public key (.pub from 'visionline keys generate')."),
]
RequireSignatureOption = Annotated[
    bool,
    typer.Option(
        "--require-signature",
        help="Refuse unsigned bundles, and refuse to start without --trust-store or --pubkey.",
    ),
]
