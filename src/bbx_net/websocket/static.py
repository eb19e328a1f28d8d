"""The phone page and the browser client, served over HTTP on the WebSocket's port."""

from __future__ import annotations

import http
import mimetypes
from collections.abc import Callable
from importlib import resources

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

__all__ = ["StaticFiles"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class StaticFiles:
    """Serves the files of `bbx_net/web` for plain HTTP requests.

    WebSocket upgrade requests pass through untouched. Files are read once, at start,
    so serving never touches the disk. Only the files of that folder are reachable:
    paths are looked up in a dict, never joined onto the file system.
    """

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, str]] = {}
        # Paths answered by a function (body, content type), or None for 404.
        self.dynamic: dict[str, Callable[[], tuple[bytes, str] | None]] = {}
        root = resources.files("bbx_net") / "web"
        if root.is_dir():
            for entry in root.iterdir():
                if entry.is_file() and not entry.name.startswith("."):
                    suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
                    ctype = _TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0]
                    self._files["/" + entry.name] = (
                        entry.read_bytes(),
                        ctype or "application/octet-stream",
                    )
        if "/index.html" in self._files:
            self._files["/"] = self._files["/index.html"]
        if "/show.html" in self._files:
            self._files["/show"] = self._files["/show.html"]

    def respond(self, request: Request) -> Response | None:
        """A Response for a plain HTTP request; None for a WebSocket upgrade."""
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return None
        path = request.path.split("?", 1)[0]
        make = self.dynamic.get(path)
        found = self._files.get(path) if make is None else make()
        if found is None:
            return _response(http.HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        body, ctype = found
        return _response(http.HTTPStatus.OK, body, ctype)


def _response(status: http.HTTPStatus, body: bytes, ctype: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)
