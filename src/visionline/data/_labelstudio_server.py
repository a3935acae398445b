"""A Label Studio server reached through `label-studio-sdk` (push tasks, pull exports), with
one-sentence errors for the ways a server can fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionline.data._labelstudio import ENV_DOCUMENT_ROOT, ENV_SERVING
from visionline.errors import ConfigError

TOKEN_SETTING = "LABEL_STUDIO_API_KEY (or --api-key)"


def _start_hint(url: str) -> str:
    return (
        f"Label Studio at {url} did not answer; start it with 'label-studio start' (pip install "
        f"label-studio) or fix --url, and put its access token in {TOKEN_SETTING}."
    )


def _normalised(xml: str) -> str:
    return "".join(xml.split())


class LabelStudioServer:
    """A Label Studio server reached through `label-studio-sdk`, with one-line errors."""

    def __init__(
        self, url: str, api_key: str, timeout: float = 30.0, httpx_client: Any = None
    ) -> None:
        try:
            from label_studio_sdk import LabelStudio
        except ImportError:
            raise ConfigError(
                "label-studio-sdk is not installed; run 'pip install \"visionline[label]\"'."
            ) from None
        self.url = url.rstrip("/")
        self._client = LabelStudio(
            base_url=self.url,
            api_key=api_key,
            timeout=timeout,
            max_retries=0,
            httpx_client=httpx_client,
        )

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        from visionline.errors import ServiceUnavailableError

        try:
            return function(*args, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(_start_hint(self.url)) from exc
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise ConfigError(
                    f"Label Studio at {self.url} refused the API key while trying to {what}; "
                    "copy the token from Account & Settings > Access Token of the server you "
                    f"started with 'label-studio start' into {TOKEN_SETTING}."
                ) from exc
            if exc.status_code == 404:
                raise ConfigError(
                    f"Label Studio at {self.url} has no such object while trying to {what}; "
                    "check the project id."
                ) from exc
            raise ServiceUnavailableError(
                f"Label Studio at {self.url} failed to {what} (HTTP {exc.status_code}: "
                f"{str(exc.body)[:200]}); check its logs."
            ) from exc

    def check(self) -> str:
        """The signed-in user's email; fails with the fix when the server or token is wrong."""
        user = self._call("read the current user", self._client.users.whoami)
        return str(getattr(user, "email", None) or getattr(user, "username", ""))

    def find_project(self, title: str) -> Any | None:
        """The project with this exact title, if the server has one."""
        pages = self._call("list projects", self._client.projects.list)
        return next((p for p in pages if p.title == title), None)

    def allow_local_files(self, project_id: int, folder: Path) -> None:
        """Connect a local-files storage for `folder` (not synced: it imports nothing), without
        which Label Studio answers 404 for every /data/local-files/ image of the project."""
        from label_studio_sdk.core.api_error import ApiError

        storages = self._call(
            "list local storages", self._client.import_storage.local.list, project=project_id
        )
        if any(folder.is_relative_to(Path(s.path)) for s in storages if s.path):
            return
        try:
            self._client.import_storage.local.create(
                project=project_id,
                path=str(folder),
                title="visionline blob store",
                use_blob_urls=False,
                synchronizable=False,
            )
        except ApiError as exc:
            if exc.status_code != 400:
                raise
            raise ConfigError(
                f"Label Studio at {self.url} refused local-files storage {folder} "
                f"({str(exc.body)[:160]}); start it with {ENV_SERVING}=true and "
                f"{ENV_DOCUMENT_ROOT} set to the --document-root you passed."
            ) from exc

    def push(
        self,
        title: str,
        label_config: str,
        tasks: list[dict[str, Any]],
        model_version: str,
        local_folder: Path | None = None,
    ) -> tuple[int, bool]:
        """Import tasks into the project of this title (created when missing, reused when its
        labelling configuration is ours); returns its id and whether it was created."""
        project = self.find_project(title)
        created = project is None
        if project is None:
            project = self._call(
                "create a project",
                self._client.projects.create,
                title=title,
                label_config=label_config,
                model_version=model_version,
            )
        elif _normalised(project.label_config or "") != _normalised(label_config):
            raise ConfigError(
                f"Label Studio project {project.id} '{title}' has a labelling configuration "
                "that differs from this project's classes; pass another --project-title or "
                "paste `visionline label export`'s label_config.xml into its settings."
            )
        if local_folder is not None:
            self._call("connect local files", self.allow_local_files, int(project.id), local_folder)
        if tasks:
            self._call(
                "import tasks", self._client.projects.import_tasks, project.id, request=tasks
            )
        return int(project.id), created

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """The project's tasks with annotations, as the JSON export format; annotators are
        named by email (the export holds only user ids)."""
        tasks = self._call("export the project", self._client.projects.exports.as_json, project_id)
        users = self._call("list users", self._client.users.list)
        emails = {user.id: user.email for user in users if getattr(user, "email", None)}
        for task in tasks:
            for annotation in task.get("annotations") or []:
                who = annotation.get("completed_by")
                if isinstance(who, int) and who in emails:
                    annotation["completed_by"] = {"id": who, "email": emails[who]}
        return tasks
