"""A bounded loopback load test (issue 7): 20,000 image requests, a hot swap in the middle, zero failures."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from serve_support import image_bytes, write_bundle

VISIONLINE = Path(sys.executable).parent / "visionline"
TOTAL, CONCURRENCY = 20_000, 16
MANAGEMENT_KEY = "management-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary_image_request(image: bytes) -> tuple[bytes, dict[str, str]]:
    raw = len(image).to_bytes(4, "little") + image
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
        }
    ).encode()
    return header + raw, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


async def _hammer(url: str, repo: Path, onnx_model: Path) -> tuple[Counter, Counter, list[str]]:
    """TOTAL requests from CONCURRENCY keep-alive connections, a hot swap after half of them.

    The client is aiohttp: with its C HTTP parser it spends about a tenth of httpx's CPU per
    request, so the run measures the server rather than the client on a 2-core machine.
    """
    import aiohttp

    body, headers = _binary_image_request(image_bytes(0, size=32))
    statuses: Counter = Counter()
    versions: Counter = Counter()
    errors: list[str] = []
    sent = 0
    swapped = asyncio.Event()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while sent < TOTAL:
            sent += 1
            try:
                async with session.post(
                    f"{url}/v2/models/apples/infer", data=body, headers=headers
                ) as response:
                    text = await response.text()
            except (TimeoutError, aiohttp.ClientError) as exc:
                errors.append(repr(exc))
                continue
            statuses[response.status] += 1
            if response.status == 200:
                versions[json.loads(text)["model_version"]] += 1
            else:
                errors.append(text[:200])

    async def swap(session: aiohttp.ClientSession) -> None:
        while sent < TOTAL // 2:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(write_bundle, onnx_model, repo / "apples" / "2", "2")
        async with session.post(
            f"{url}/v2/repository/models/apples/load",
            headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"},
        ) as response:
            assert response.status == 200, await response.text()
        swapped.set()

    connector = aiohttp.TCPConnector(limit=CONCURRENCY + 1)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(swap(session), *(worker(session) for _ in range(CONCURRENCY)))
    assert swapped.is_set()
    return statuses, versions, errors


@pytest.mark.slow
def test_20000_requests_with_a_hot_swap_and_no_failure(tmp_path, onnx_model):
    repo = tmp_path / "repo"
    write_bundle(onnx_model, repo / "apples" / "1", "1")
    port = _free_port()
    process = subprocess.Popen(
        [
            str(VISIONLINE),
            "serve",
            str(repo),
            "--http-port",
            str(port),
            "--no-grpc",
            "--max-batch-size",
            "16",
            "--max-queue-size",
            "1024",
            "--log-format",
            "text",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "VISIONLINE_ADMIN_KEY": MANAGEMENT_KEY},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        statuses, versions, errors = asyncio.run(_hammer(url, repo, onnx_model))
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        process.terminate()
        process.wait(30)
    assert errors == [] and statuses == Counter({200: TOTAL})
    assert versions["1"] > 0 and versions["2"] > 0 and sum(versions.values()) == TOTAL
    batches = [
        line for line in metrics.splitlines() if line.startswith("visionline_batch_size_count")
    ]
    assert batches and any(
        float(line.split()[-1]) < versions[v]
        for line in batches
        for v in "12"
        if f'version="{v}"' in line
    )
