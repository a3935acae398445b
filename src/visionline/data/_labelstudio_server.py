"""A Label Studio server reached through `label-studio-sdk` (push tasks, pull exports), with
one-sentence errors for the ways a server can fail."""

from __future__ import annotations

from typing import Any

from visionline.errors import ConfigError


def _start_hint(url: str) -> str:
    return (
        f"Label Studio at {url} did not answer; start it ('pip install label-studio; "
        "label-studio start') or fix --url."
    )


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
                    "copy a token from Account & Settings > Access Token."
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

    def push(
        self, title: str, label_config: str, tasks: list[dict[str, Any]], model_version: str
    ) -> int:
        """Create a project whose prediction model version matches the tasks; return its id."""
        project = self._call(
            "create a project",
            self._client.projects.create,
            title=title,
            label_config=label_config,
            model_version=model_version,
        )
        self._call("import tasks", self._client.projects.import_tasks, project.id, request=tasks)
        return int(project.id)

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """The project's tasks with annotations, as the JSON export format."""
        return self._call("export the project", self._client.projects.exports.as_json, project_id)
