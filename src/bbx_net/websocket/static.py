"""The phone page and the browser client, served over HTTP on the WebSocket's port."""

from __future__ import annotations

import http
import mimetypes
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

__all__ = ["StaticFiles"]

_MAX_HOST_FILES = 2_000
_MAX_HOST_BYTES = 16 << 20

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
    so serving never touches the disk. Only the files of that folder (and of the
    host's `host_dir`, hidden files left out) are reachable: paths are looked up in a
    dict, never joined onto the file system.
    """

    def __init__(self, host_dir: str | Path | None = None) -> None:
        # Paths answered by a function (body, content type), or None for 404.
        self.dynamic: dict[str, Callable[[], tuple[bytes, str] | None]] = {}
        package: dict[str, tuple[bytes, str]] = {}
        root = resources.files("bbx_net") / "web"
        if root.is_dir():
            for entry in root.iterdir():
                if entry.is_file() and not entry.name.startswith("."):
                    package["/" + entry.name] = _read(entry)
        host = {} if host_dir is None else _host_files(Path(host_dir))
        # The host's files, then the package's over them (so /bbx-client.js is always
        # ours), except that the host's index.html replaces the phone page.
        self._files = dict(host)
        for path, found in package.items():
            if not (path == "/index.html" and path in host):
                self._files[path] = found
        if "/index.html" in self._files:
            self._files["/"] = self._files["/index.html"]
        for page in ("show", "admin"):
            if f"/{page}.html" in self._files:
                self._files[f"/{page}"] = self._files[f"/{page}.html"]

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


def _host_files(root: Path) -> dict[str, tuple[bytes, str]]:
    if not root.is_dir():
        raise ValueError(f"static_dir {str(root)!r} is not a folder")
    files: dict[str, tuple[bytes, str]] = {}
    total = 0
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if len(files) >= _MAX_HOST_FILES:
            raise ValueError(f"static_dir has more than {_MAX_HOST_FILES} files")
        found = _read(path)
        total += len(found[0])
        if total > _MAX_HOST_BYTES:
            raise ValueError(f"static_dir holds more than {_MAX_HOST_BYTES >> 20} MiB")
        files["/" + rel.as_posix()] = found
    return files


def _read(entry: Any) -> tuple[bytes, str]:
    name = entry.name
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    ctype = _TYPES.get(suffix) or mimetypes.guess_type(name)[0]
    return entry.read_bytes(), ctype or "application/octet-stream"


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
