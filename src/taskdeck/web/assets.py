"""Static assets, served by Taskdeck itself (pages load nothing from elsewhere).

Files are read once at import, hashed and gzipped in memory. Pages link them as
``/static/<name>?v=<hash>`` (see :func:`asset_url`), so a response can be cached
for a year: a new release changes the hash and therefore the URL.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

__all__ = ["ASSETS", "Asset", "asset_url", "router"]

STATIC = Path(__file__).parent / "static"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, max-age=0, must-revalidate"  # asked for without ?v=: check the ETag each time


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file: its bytes, gzipped bytes (when that is smaller), type and version hash."""

    body: bytes
    gzipped: bytes | None
    media_type: str
    version: str


def _load() -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    for path in sorted(STATIC.rglob("*")):
        if not path.is_file():
            continue
        body = path.read_bytes()
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type in ("application/javascript", "image/svg+xml"):
            media_type += "; charset=utf-8" if not media_type.startswith("image/") else ""
        packed = gzip.compress(body, 9, mtime=0)
        gzipped = packed if len(packed) < len(body) * 0.9 else None
        name = path.relative_to(STATIC).as_posix()
        assets[name] = Asset(body, gzipped, media_type, hashlib.sha256(body).hexdigest()[:12])
    return assets


ASSETS = _load()
router = APIRouter(include_in_schema=False)


def asset_url(name: str) -> str:
    """The URL of a static file, with its version, for templates."""
    return f"/static/{name}?v={ASSETS[name].version}"


def _serve(request: Request, asset: Asset) -> Response:
    etag = f'"{asset.version}"'
    cache = IMMUTABLE if request.query_params.get("v") == asset.version else REVALIDATE
    headers = {"etag": etag, "cache-control": cache, "vary": "accept-encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    accepts = request.headers.get("accept-encoding", "")
    if asset.gzipped is not None and "gzip" in accepts:
        return Response(asset.gzipped, media_type=asset.media_type, headers={**headers, "content-encoding": "gzip"})
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/static/{name:path}")
async def static(request: Request, name: str) -> Response:
    asset = ASSETS.get(name)
    if asset is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    return _serve(request, asset)


@router.get("/favicon.ico")
async def favicon(request: Request) -> Response:
    # Browsers ask for /favicon.ico whatever the page says; answer with the SVG icon.
    return _serve(request, ASSETS["favicon.svg"])
