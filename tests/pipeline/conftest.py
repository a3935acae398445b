import sys
from pathlib import Path

import pytest

# The test modules import `*_support` helpers from this folder (pytest runs in importlib mode).
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Batch-scoring fixtures (a tiny bundle, a folder of test images) for test_score*.py.
from score_support import onnx_model, score_bundle, score_images  # noqa: F401


@pytest.fixture(scope="session")
def first(tmp_path_factory):
    """The first local run of the whole pipeline on a fresh `make_project` project.

    test_run.py goes on from it (reruns, changed settings, failures); test_run_ray.py compares
    the Ray executor's artifacts with this run's, so the suite runs the local pipeline once.
    """
    from pipeline_support import make_project

    from visionline.pipeline import run_pipeline

    project = make_project(tmp_path_factory.mktemp("pipeline") / "project")
    return project, run_pipeline(project, progress=False)


@pytest.fixture(scope="session")
def _ray_stopped_at_exit():
    import ray

    yield
    ray.shutdown()


@pytest.fixture
def local_ray(_ray_stopped_at_exit):
    """One local Ray session for test_run_ray.py and test_score_ray.py: each start (and stop)
    of Ray's processes costs seconds. `pytest_runtest_teardown` below stops it after the last
    test that uses it, so it never idles beside the tests that follow. It is started again if a
    test needs it after that: under pytest-xdist a worker may run test_score_ray.py before
    test_run_ray.py, against the collection order the hook reads."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    return ray


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    items = item.session.items
    if "local_ray" not in item.fixturenames:
        return
    later = items[items.index(item) + 1 :]
    if not any("local_ray" in other.fixturenames for other in later):
        import ray

        ray.shutdown()
