"""Swagger UI's files, served by the apps themselves so ``/docs`` works offline.

APIFlask's defaults load Swagger UI from cdn.jsdelivr.net (whatever version is newest) and
its favicon from apiflask.com, so the page is blank on a machine without internet or on a
city network that blocks CDNs. The files come instead from the pinned ``swagger-ui-bundle``
package and are served under a path that names their version, so browsers may keep them.
"""

from __future__ import annotations

from pathlib import Path

from apiflask import APIFlask
from flask import Response, send_from_directory
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from stldata.api.problems import NotFound

ASSETS = Path(str(swagger_ui_path))
VERSION = ASSETS.name.removeprefix("swagger-ui-")
#: Where the files are served; a new version is a new path, so caching them long is safe.
PREFIX = f"/docs/assets/{VERSION}"
#: The files the docs page loads (and the source maps a browser's developer tools ask for);
#: nothing else of the package is served.
PAGE_FILES = {
    "SWAGGER_UI_CSS": "swagger-ui.css",
    "SWAGGER_UI_BUNDLE_JS": "swagger-ui-bundle.js",
    "SWAGGER_UI_STANDALONE_PRESET_JS": "swagger-ui-standalone-preset.js",
    "DOCS_FAVICON": "favicon-32x32.png",
}
SERVED = frozenset({*PAGE_FILES.values(), *(f"{name}.map" for name in PAGE_FILES.values()
                                             if name.endswith((".js", ".css")))})
CACHE_SECONDS = 7 * 24 * 3600


def serve_docs_assets(app: APIFlask) -> None:
    """Point the app's Swagger UI at its own copy of the files and serve them."""
    app.config.update({setting: f"{PREFIX}/{name}" for setting, name in PAGE_FILES.items()})
    # Swagger UI would otherwise send the spec's URL to validator.swagger.io for a badge.
    app.config["SWAGGER_UI_CONFIG"] = {**(app.config.get("SWAGGER_UI_CONFIG") or {}),
                                       "validatorUrl": None}

    # Named like Flask's own static route: these are files, not part of the data API
    # (tests that probe every API route skip static endpoints).
    @app.get(f"{PREFIX}/<name>", endpoint="static_swagger_ui")
    @app.doc(hide=True)
    def docs_asset(name: str) -> Response:
        if name not in SERVED or not (ASSETS / name).is_file():
            raise NotFound(f"no documentation asset {name!r}")
        return send_from_directory(ASSETS, name, max_age=CACHE_SECONDS)
