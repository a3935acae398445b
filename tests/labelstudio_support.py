"""A real Label Studio for the tests: its own virtual environment, a server on 127.0.0.1, an
annotator that submits answers through the same REST call as the browser.

Label Studio's Django stack has its own pins, so it lives in `.venv-labelstudio/` (made with the
system `python3.11 -m venv`; the Makefile's test target makes it, and `ensure_venv` makes it when
a developer runs the tests without `make`). The server keeps its SQLite database in a temporary
folder and serves local files from a document root the test chooses.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-labelstudio"
VERSION = "1.23.2"
STAMP = VENV / f".installed-{VERSION}"
TEMPLATE = (
    VENV / f"template-{VERSION}"
)  # a migrated database with the test user: starts take seconds
DATABASE = "label_studio.sqlite3"
USERNAME = "annotator@visionline.test"
PASSWORD = "visionline-test-pass"
TOKEN = "0123456789abcdef0123456789abcdef01234567"


def ensure_venv() -> Path:
    """The `label-studio` executable, installing it into its own venv on first use."""
    executable = VENV / "bin" / "label-studio"
    if STAMP.exists() and executable.exists():
        return executable
    python = shutil.which("python3.11") or "python3.11"
    subprocess.run([python, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(VENV / "bin" / "pip"), "install", "-q", f"label-studio=={VERSION}"], check=True
    )
    STAMP.touch()
    return executable


def ensure_template() -> Path:
    """A migrated SQLite database holding the test user and token, made by one first start."""
    database = TEMPLATE / DATABASE
    if not database.exists():
        building = TEMPLATE.with_name("template-building")
        shutil.rmtree(building, ignore_errors=True)
        _launch(building, building / "root", timeout=900).stop()
        (building / DATABASE).replace(building / (DATABASE + ".done"))
        shutil.rmtree(TEMPLATE, ignore_errors=True)
        TEMPLATE.mkdir()
        (building / (DATABASE + ".done")).replace(database)
        shutil.rmtree(building, ignore_errors=True)
    return database


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabelStudio:
    """A running server and the one user the tests act as."""

    url: str
    token: str
    document_root: Path
    process: subprocess.Popen
    log: Path

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One authenticated JSON call, as the browser's frontend makes it."""
        request = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def annotate(self, task_id: int, result: list[dict[str, Any]], lead_time: float = 3.0) -> Any:
        """Submit an annotation the way the labelling page does on 'Submit'."""
        return self.api(
            "POST",
            f"/api/tasks/{task_id}/annotations/",
            {"result": result, "lead_time": lead_time, "was_cancelled": False},
        )

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        page = self.api("GET", f"/api/tasks/?project={project_id}&page_size=1000")
        return page["tasks"] if isinstance(page, dict) else page

    def add_user_token(self, email: str) -> str:
        """A second annotator with their own token, made through Django's shell (the API has no
        call that hands out another user's token)."""
        code = (
            "from users.models import User; from rest_framework.authtoken.models import Token;"
            "from organizations.models import Organization;"
            f"u=User.objects.create_user(email={email!r}, username={email!r}, password='x-pass-123');"
            "o=Organization.objects.first(); o.add_user(u); u.active_organization=o; u.save();"
            "print(Token.objects.get_or_create(user=u)[0].key)"
        )
        package = next((VENV / "lib").glob("python3*/site-packages/label_studio"))
        out = subprocess.run(
            [str(VENV / "bin" / "python"), "manage.py", "shell", "-c", code],
            check=True,
            capture_output=True,
            text=True,
            env={**self._env(), "DJANGO_SETTINGS_MODULE": "core.settings.label_studio"},
            cwd=package,
            timeout=180,
        )
        return out.stdout.strip().splitlines()[-1]

    def _env(self) -> dict[str, str]:
        return server_env(self.log.parent, self.document_root)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def server_env(data_dir: Path, document_root: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LABEL_STUDIO_", "DJANGO_", "VIRTUAL_ENV"))
    }
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_USERNAME=USERNAME,
        LABEL_STUDIO_PASSWORD=PASSWORD,
        LABEL_STUDIO_USER_TOKEN=TOKEN,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        COLLECT_ANALYTICS="false",
        LATEST_VERSION_CHECK="false",
    )
    return env


def start(data_dir: Path, document_root: Path, timeout: float = 300.0) -> LabelStudio:
    """Start `label-studio` on a free 127.0.0.1 port, on a copy of the template database, and
    wait until /health says UP."""
    template = ensure_template()
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, data_dir / DATABASE)
    return _launch(data_dir, document_root, timeout)


def _launch(data_dir: Path, document_root: Path, timeout: float) -> LabelStudio:
    executable = ensure_venv()
    data_dir.mkdir(parents=True, exist_ok=True)
    document_root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = data_dir / "label-studio.log"
    process = subprocess.Popen(
        [
            str(executable),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=server_env(data_dir, document_root),
        cwd=data_dir,
    )
    url = f"http://127.0.0.1:{port}"
    server = LabelStudio(url, TOKEN, document_root, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"label-studio exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if b"UP" in response.read():
                    server.api("GET", "/api/current-user/whoami")
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    server.stop()
    raise RuntimeError(f"label-studio did not become healthy:\n{log.read_text()[-3000:]}")


if __name__ == "__main__":  # `make test` runs this once: the venv and the template database
    ensure_template()
