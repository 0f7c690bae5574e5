"""``fedheart view [--runs DIR] [--superlink CONNECTION] [--host H] [--port P]``: serve the view."""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_PORT = 8642
LOOPBACK = "127.0.0.1"


def serve(runs: str | None, superlink: str | None, port: int = DEFAULT_PORT, host: str = LOOPBACK) -> int:
    """Run the view until interrupted; 2 with a message when the runs folder or port is unusable."""
    import uvicorn

    from fedheart.runs import output_root
    from webview.app import create_app
    from webview.flower import FlowerState

    root = Path(runs).expanduser().resolve() if runs else output_root("outputs")
    if root.exists() and not root.is_dir():
        print(f"error: --runs {root} is not a folder", file=sys.stderr)
        return 2
    flower = FlowerState(superlink)
    where = flower.describe()
    if superlink and where.startswith("no SuperLink"):
        print(f"error: --superlink {superlink}: {where}", file=sys.stderr)
        return 2
    print(f"fedheart view: run folders {root}; {where}", flush=True)
    print(f"fedheart view: open http://{host if ':' not in host else f'[{host}]'}:{port}/", flush=True)
    if host != LOOPBACK:
        print(f"warning: serving on {host}, not loopback only: put it behind the same authentication as "
              "the Control API", file=sys.stderr)
    config = uvicorn.Config(create_app(root, superlink, host=host, flower=flower), host=host, port=port,
                            log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        return 0
    finally:
        flower.close()
    return 0 if server.started else 2
