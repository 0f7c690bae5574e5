"""The view's web app (FastAPI): two pages, their JSON endpoints, the model downloads.

    GET /                       federation (SuperNodes) and runs
    GET /run/{key}              one run, live (key: its folder name, or a Flower run id)
    GET /api/federation         SuperNodes known to the SuperLink, hospitals seen in run folders
    GET /api/runs               Flower's runs joined with the run folders
    GET /api/runs/{key}         one run: series, privacy, timings, summary, downloads (ETag: 304 if unchanged)
    GET /files/{folder}/{file}  a final model file (final_model.*) of a run folder

Read-only: only GET routes, no form, no state kept but caches. Everything served is what the
server holds already; the page loads its scripts, styles and Plotly from this server only
(Content-Security-Policy ``default-src 'self'``).
"""

from __future__ import annotations

import threading
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from fedheart.colours import colour, ordered
from webview.flower import FINISHED, FlowerState
from webview.folders import RunFolders

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'none'")
SETTINGS = ("strategy", "privacy", "aggregation", "model", "rounds_planned")


def plotly_js() -> Path:
    """plotly.js as shipped inside the ``plotly`` Python package (nothing fetched from a CDN)."""
    return Path(str(files("plotly") / "package_data" / "plotly.min.js"))


class Overrides:
    """Settings of a run from its Hydra overrides (a run with no folder yet, or a failed one)."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()  # Hydra's composition is process-global state

    def settings(self, overrides: str) -> dict[str, Any]:
        with self._lock:
            if overrides not in self._seen:
                from fedheart.config import ConfigError, load_config

                try:
                    cfg = load_config(overrides)
                    self._seen[overrides] = {"strategy": cfg.strategy.name, "privacy": cfg.privacy.mode,
                                             "aggregation": cfg.aggregation.mode, "model": cfg.model.name,
                                             "rounds_planned": cfg.rounds}
                except ConfigError:
                    self._seen[overrides] = {}
            return self._seen[overrides]


class View:
    """Flower's state joined with the run folders."""

    def __init__(self, runs_root: Path, flower: FlowerState) -> None:
        self.folders = RunFolders(runs_root)
        self.flower = flower
        self.overrides = Overrides()

    def runs(self) -> dict[str, Any]:
        flower = self.flower.get("runs")
        overviews = [self.folders.overview(p) for p in self.folders.folders()]
        by_id = {rid: o for o in overviews for rid in o["run_ids"]}
        rows, used = [], set()
        for run in flower.get("runs", []):
            folder = by_id.get(run["run_id"])
            used.add(folder["folder"] if folder else None)
            settings = folder or self.overrides.settings(run["overrides"])
            rows.append({**dict.fromkeys(SETTINGS), "rounds_done": None, **(folder or {}),
                         **{k: settings.get(k) for k in SETTINGS}, "flower": run,
                         "key": folder["folder"] if folder else run["run_id"]})
        for o in overviews:  # folders of runs this SuperLink does not know (another or a restarted one)
            if o["folder"] not in used:
                rows.append({**o, "flower": None, "key": o["folder"]})
        return {"superlink": self.flower.describe(), "flower_ok": flower["ok"], "flower_error": flower.get("error"),
                "runs_root": str(self.folders.root), "runs": rows}

    def federation(self) -> dict[str, Any]:
        nodes = self.flower.get("nodes")
        seen: dict[str, dict[str, Any]] = {}
        for path in self.folders.folders():  # sorted by name: a later run's node id wins
            for row in self.folders.timings(path):
                if row.get("node") and row.get("hospital") not in (None, "all"):
                    seen[row["hospital"]] = {"hospital": row["hospital"], "node_id": row["node"], "run": path.name}
        listed = nodes.get("nodes", [])
        colours = {n: colour(n) for n in ordered([*seen, *(n["name"] for n in listed if n["name"])])}
        return {"superlink": self.flower.describe(), "flower_ok": nodes["ok"], "flower_error": nodes.get("error"),
                "nodes": listed, "seen": [seen[n] for n in ordered(seen)], "colours": colours}

    def run(self, key: str) -> tuple[dict[str, Any], str] | None:
        """One run's page data and its version (changes when its files or Flower status change)."""
        flower = self.flower.get("runs").get("runs", [])
        path = self.folders.folder(key)
        if path is None:
            path = next((p for p in reversed(self.folders.folders()) if key in self.folders.run_ids(p)), None)
        ids = self.folders.run_ids(path) if path else [key]
        record = next((r for r in flower if r["run_id"] in ids), None)
        if path is None and record is None:
            return None
        data: dict[str, Any] = self.folders.detail(path) if path else {
            **dict.fromkeys(("folder", "metrics", "timings", "summary")), "hospitals": [], "downloads": [],
            "colours": {}, **self.overrides.settings(record["overrides"] if record else "")}
        data["flower"] = record
        data["live"] = bool(record and not record["status"].startswith(FINISHED))
        version = f"{self.folders.stamp(path) if path else ''}-{record['status'] if record else ''}"
        return data, version


def create_app(runs_root: Path, connection: str | None = None, host: str = "127.0.0.1",
               flower: FlowerState | None = None) -> FastAPI:
    """The app serving ``runs_root`` and the SuperLink of Flower connection ``connection``."""
    view = View(runs_root, flower or FlowerState(connection))
    app = FastAPI(title="fedheart view", docs_url=None, redoc_url=None, openapi_url=None)
    loopback = host in ("127.0.0.1", "localhost", "::1")
    app.add_middleware(TrustedHostMiddleware,  # a page on another site cannot read this one (DNS rebinding)
                       allowed_hosts=["127.0.0.1", "localhost", "[::1]"] if loopback else ["*"])

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response("read-only view", status_code=405)
        response: Response = await call_next(request)
        response.headers.update({"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"})
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/run/{key}")
    def run_page(key: str) -> FileResponse:
        return FileResponse(STATIC / "run.html")

    @app.get("/static/plotly.min.js")
    def plotly() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/federation")
    def federation() -> JSONResponse:
        return JSONResponse(view.federation())

    @app.get("/api/runs")
    def runs() -> JSONResponse:
        return JSONResponse(view.runs())

    @app.get("/api/runs/{key}")
    def run(key: str, request: Request) -> Response:
        found = view.run(key)
        if found is None:
            raise HTTPException(404, f"no run {key!r} in {view.folders.root} or on the SuperLink")
        data, version = found
        etag = f'"{version}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return JSONResponse(data, headers={"ETag": etag, "Cache-Control": "no-cache"})

    @app.get("/files/{folder}/{filename}")
    def download(folder: str, filename: str) -> FileResponse:
        path = view.folders.download(folder, filename)
        if path is None:
            raise HTTPException(404, "no such model file")
        return FileResponse(path, filename=filename, media_type="application/octet-stream")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
