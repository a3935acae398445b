"""The serving benchmark's peers, KServe and Triton, each in a venv of its own.

The peers pin other library versions than visionline (KServe its FastAPI stack, the
`nvidia-pytriton` wheel its own numpy), so each gets a venv that this module creates on first use
and reuses while its requirements stay the same; the project's venv is never touched. Both venvs
see visionline's `src/` through a `.pth` file, so every server decodes and preprocesses images
with the same code, and both get the ONNX Runtime version of the project's venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRITON_WHEEL = "nvidia-pytriton==0.7.0"
KSERVE_WHEEL = "kserve==0.21.0"


def _pinned(*names: str) -> list[str]:
    from importlib import metadata

    return [f"{name}=={metadata.version(name)}" for name in names]


def ensure_venv(path: Path, requirements: list[str]) -> Path:
    """A venv at `path` holding `requirements` (built once, rebuilt when they change); its python."""
    python, marker = path / "bin" / "python", path / "requirements.json"
    if python.exists() and marker.exists() and json.loads(marker.read_text()) == requirements:
        return python
    base = Path(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([str(base), "-m", "venv", "--clear", str(path)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    (Path(site) / "visionline-src.pth").write_text(str(ROOT / "src") + "\n")
    marker.write_text(json.dumps(requirements))
    return python


def kserve_python(venvs: Path) -> Path:
    return ensure_venv(venvs / "kserve", [KSERVE_WHEEL, *_pinned("onnxruntime", "pillow")])


def triton_python(venvs: Path) -> Path:
    return ensure_venv(venvs / "triton", [TRITON_WHEEL, *_pinned("onnxruntime", "pillow")])


def version_in(python: Path, distribution: str) -> str:
    return subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({distribution!r}))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Wait for a 200 from `url`; a server that exits or never gets ready raises with its log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.3)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    raise RuntimeError(f"{url} never became ready (exit code {process.poll()}); log tail:\n{tail}")


def start_kserve(python: Path, onnx: Path, size: int, ports: tuple[int, int], threads: int, work: Path) -> subprocess.Popen:
    log = work / "kserve.log"
    process = subprocess.Popen(
        [str(python), str(ROOT / "benchmarks" / "_kserve_server.py"), str(onnx), str(size),
         str(ports[0]), str(ports[1]), str(threads)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    wait_ready(f"http://127.0.0.1:{ports[0]}/v2/models/apples/ready", process, log)
    return process


def _triton_config(name: str, image_input: bool, onnx: Path, size: int, threads: int,
                   max_batch: int, delay_us: int, instances: int, classes: int) -> str:
    datatype, dims = ("TYPE_STRING", "1") if image_input else ("TYPE_FP32", f"3, {size}, {size}")
    params = {"onnx_path": str(onnx), "size": str(size), "ort_threads": str(threads)}
    entries = ",\n".join(f'  {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items())
    return f'''name: "{name}"
backend: "python"
max_batch_size: {max_batch}
input [ {{ name: "image" data_type: {datatype} dims: [ {dims} ] }} ]
output [ {{ name: "probabilities" data_type: TYPE_FP32 dims: [ {classes} ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
parameters [
{entries}
]
'''


def triton_repository(work: Path, onnx: Path, size: int, threads: int, max_batch: int,
                      delay_us: int, instances: int, classes: int) -> Path:
    """Models `apples` (BYTES: encoded images) and `apples_tensor` (FP32 [3, S, S]), one ONNX file."""
    repo = work / "triton-repo"
    for name, image_input in (("apples", True), ("apples_tensor", False)):
        (repo / name / "1").mkdir(parents=True, exist_ok=True)
        (repo / name / "1" / "model.py").write_text((ROOT / "benchmarks" / "_triton_model.py").read_text())
        (repo / name / "config.pbtxt").write_text(
            _triton_config(name, image_input, onnx, size, threads, max_batch, delay_us, instances, classes)
        )
    return repo


def start_triton(python: Path, repo: Path, ports: tuple[int, int], work: Path) -> subprocess.Popen:
    """`tritonserver` from the wheel on loopback, with the Python backend and the stub for the
    venv's Python (the wheel keeps stubs per Python version, as pytriton's own launcher picks one).
    The stub embeds libpython and finds the venv's packages through the venv's `bin` on PATH."""
    dist = Path(subprocess.run(
        [str(python), "-c", "import pytriton, pathlib; print(pathlib.Path(pytriton.__file__).parent / 'tritonserver')"],
        capture_output=True, text=True, check=True,
    ).stdout.strip())
    minor = subprocess.run([str(python), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                           capture_output=True, text=True, check=True).stdout.strip()
    backend = work / "triton-backends" / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for source in (dist / "backends" / "python" / "libtriton_python.so",
                   dist / "backends" / "python" / "triton_python_backend_utils.py",
                   dist / "python_backend_stubs" / minor / "triton_python_backend_stub"):
        if not source.exists():
            raise RuntimeError(f"the nvidia-pytriton wheel has no {source.relative_to(dist)}")
        (backend / source.name).unlink(missing_ok=True)
        (backend / source.name).symlink_to(source)
    log = work / "triton.log"
    env = {**os.environ, "PATH": f"{python.parent}:{os.environ.get('PATH', '')}"}
    process = subprocess.Popen(
        [str(dist / "bin" / "tritonserver"), f"--model-repository={repo}",
         f"--backend-directory={backend.parent}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
         f"--http-port={ports[0]}", f"--grpc-port={ports[1]}", "--allow-metrics=false", "--log-verbose=0"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
    )
    wait_ready(f"http://127.0.0.1:{ports[0]}/v2/health/ready", process, log)
    return process
