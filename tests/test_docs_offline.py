"""Swagger UI (/docs) of both apps loads only from the app itself: no CDN, no favicon from
apiflask.com, so the page works offline and on networks that block CDNs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from swagger_ui_bundle import swagger_ui_path

from stldata.command.app import create_command_app
from stldata.runtime import Runtime

#: The pinned package's own copy of the files, read independently of the app.
PACKAGE = Path(str(swagger_ui_path))
ATTRIBUTE = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
ABSOLUTE = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""", re.IGNORECASE)
EXPECTED_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture
def command_client(runtime: Runtime) -> Any:
    app = create_command_app(runtime)
    app.config["TESTING"] = True
    return app.test_client()


def check_docs_page(client: Any) -> list[str]:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    # JavaScript comments aside (the template cites Swagger UI's docs in one), no address
    # of another host appears in the page: not in attributes, not in the UI's config.
    code = "\n".join(line for line in html.splitlines() if not line.strip().startswith("//"))
    assert ABSOLUTE.findall(code) == []
    for host in ("cdn.jsdelivr.net", "apiflask.com", "unpkg.com", "validator.swagger.io"):
        assert host not in html
    assert re.search(r"validatorUrl.{0,10}null", html), "the online validator badge is off"

    assets = ATTRIBUTE.findall(html)
    assert len(assets) == 4, assets  # stylesheet, favicon, the bundle and its preset
    for url in assets:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
        served = client.get(url)
        assert served.status_code == 200, url
        name = Path(parts.path).name
        assert served.mimetype == EXPECTED_TYPES[Path(name).suffix], (url, served.mimetype)
        # Byte for byte the pinned package's file, and cacheable.
        assert served.get_data() == (PACKAGE / name).read_bytes()
        assert "max-age" in served.headers["Cache-Control"]
    assert {Path(urlsplit(u).path).name for u in assets} == {
        "swagger-ui.css", "favicon-32x32.png", "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js"}
    # The spec the page loads is the app's own too.
    assert re.search(r'url:\s*"/openapi\.json"', html)
    assert client.get("/openapi.json").status_code == 200
    return assets


def test_read_api_docs_are_served_offline(client: Any) -> None:
    assets = check_docs_page(client)
    # The asset route is not part of the documented API.
    spec = client.get("/openapi.json").get_json()
    assert not [p for p in spec["paths"] if p.startswith("/docs")]
    # Only the page's files are served: not the rest of the package, nothing outside it.
    folder = assets[0].rsplit("/", 1)[0]
    for name in ("index.j2", "index.html", "oauth2-redirect.html", "../../../pyproject.toml",
                 "..%2f..%2fpyproject.toml", "nope.js"):
        refused = client.get(f"{folder}/{name}")
        assert refused.status_code == 404, name
        assert refused.mimetype == "application/problem+json", name


def test_command_api_docs_are_served_offline(command_client: Any) -> None:
    check_docs_page(command_client)
    spec = command_client.get("/openapi.json").get_json()
    assert not [p for p in spec["paths"] if p.startswith("/docs")]


def test_readme_search_example_finds_records(client: Any) -> None:
    """The README's cross-dataset search example answers with hits on the bundled data."""
    from urllib.parse import parse_qs

    from stldata.settings import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
    (url,) = re.findall(r"curl '(http://127\.0\.0\.1:5001/api/v1/search\?[^']+)'", readme)
    parts = urlsplit(url)
    response = client.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200
    found = response.get_json()["datasets"]
    # "vacant building" is both a 3-1-1 request type and a place crimes are reported at.
    assert {d["dataset"] for d in found} == {"csb-311", "slmpd-crime"}
    limit = int(parse_qs(parts.query)["limit"][0])
    words = parse_qs(parts.query)["q"][0].split()
    for dataset in found:
        assert dataset["total"] >= len(dataset["hits"]) >= 1
        assert len(dataset["hits"]) <= limit
        for hit in dataset["hits"]:
            text = " ".join(str(v) for v in hit["record"].values()).casefold()
            # English stemming: "building" also matches "buildings".
            assert all(word[:5] in text for word in words), hit
