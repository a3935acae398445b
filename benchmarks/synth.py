"""Synthetic line speed: images/s of visionline.synth against the floor of JPEG-encoding alone.

Both run in this process, pinned to one CPU core, on the same number of 128×128 images:
  visionline  render one apple (geometry, skin, defect, belt, camera) + JPEG-encode it
  baseline    JPEG-encode an already existing random 128×128 image with Pillow (the floor:
              any generator that writes JPEGs pays at least this)
CPU time (time.process_time) is reported next to wall time because the machine is shared; the
target is >= 200 images/s on one core. Writes benchmarks/results/synth.json.

    python benchmarks/synth.py [--n 1000] [--size 128]
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np
from _record import write_result
from PIL import Image

from visionline.synth import Subtype, SynthConfig, SynthLine


def _timed(work) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    config = SynthConfig(size=args.size, seed=0, defect_rate=0.3)
    line = SynthLine(config)
    subtypes = list(Subtype)
    labels = [subtypes[i % 5] if i % 10 < 3 else None for i in range(args.n)]
    quality = config.camera.jpeg_quality
    sink: list[int] = []

    def render_and_encode() -> None:
        for index, subtype in enumerate(labels):
            buffer = io.BytesIO()
            line.render(index, subtype).image().save(buffer, "JPEG", quality=quality)
            sink.append(len(buffer.getvalue()))

    def render_only() -> None:
        for index, subtype in enumerate(labels):
            line.render(index, subtype)

    noise = np.random.default_rng(0).integers(
        0, 256, (args.n, args.size, args.size, 3), dtype=np.uint8
    )
    images = [Image.fromarray(pixels) for pixels in noise]

    def encode_only() -> None:
        for image in images:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=quality)
            sink.append(len(buffer.getvalue()))

    for index in range(20):  # warm caches and the texture bank
        line.render(index, labels[index])
    ours_wall, ours_cpu = _timed(render_and_encode)
    render_wall, render_cpu = _timed(render_only)
    base_wall, base_cpu = _timed(encode_only)
    rate = lambda seconds: args.n / seconds
    result = {
        "benchmark": "synth",
        "images": args.n,
        "size": args.size,
        "defect_rate": config.defect_rate,
        "visionline_render_and_jpeg": {
            "images_per_s_cpu": round(rate(ours_cpu), 1),
            "images_per_s_wall": round(rate(ours_wall), 1),
        },
        "visionline_render_only": {
            "images_per_s_cpu": round(rate(render_cpu), 1),
            "images_per_s_wall": round(rate(render_wall), 1),
        },
        "baseline_pillow_jpeg_of_random_images": {
            "images_per_s_cpu": round(rate(base_cpu), 1),
            "images_per_s_wall": round(rate(base_wall), 1),
        },
        "ratio_visionline_to_baseline_cpu": round(base_cpu / ours_cpu, 3),
        "target_images_per_s": 200,
        "meets_target_cpu": rate(ours_cpu) >= 200,
        "readme": [
            {
                "benchmark": "synth",
                "measure": f"synthetic apples, {args.size} px, one core, CPU time",
                "visionline": f"{rate(ours_cpu):,.0f} img/s (render + JPEG)",
                "peer": f"Pillow JPEG of noise (the floor): {rate(base_cpu):,.0f} img/s",
                "result": f"{base_cpu / ours_cpu:.3f}x (target ≥ 200 img/s "
                f"{'✓' if rate(ours_cpu) >= 200 else '✗'})",
            }
        ],
    }
    print(
        f"synth {args.size}x{args.size}, {args.n} images, one core (CPU time):\n"
        f"  visionline render+JPEG  {result['visionline_render_and_jpeg']['images_per_s_cpu']:8.1f}"
        f" img/s  (wall {result['visionline_render_and_jpeg']['images_per_s_wall']:.1f})\n"
        f"  visionline render only  {result['visionline_render_only']['images_per_s_cpu']:8.1f}"
        f" img/s\n"
        f"  baseline JPEG only      {result['baseline_pillow_jpeg_of_random_images']['images_per_s_cpu']:8.1f}"
        f" img/s  (wall {result['baseline_pillow_jpeg_of_random_images']['images_per_s_wall']:.1f})\n"
        f"  ratio visionline/baseline throughput: {result['ratio_visionline_to_baseline_cpu']:.3f}"
        f"  target >= 200 img/s: {'met' if result['meets_target_cpu'] else 'NOT met'}"
    )
    print(f"wrote {write_result('synth', result)}")


if __name__ == "__main__":
    main()
