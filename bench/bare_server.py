"""The floor for bench/alert_latency.py: an aiohttp server whose webhook handler only answers 200.

Same Python, same aiohttp, same default asyncio loop and the same AppRunner options as canaryd's
server (no access log), so the ratio canaryd / bare is the cost of canaryd's own work.

    python bench/bare_server.py --port 9999
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiohttp import web

MAX_BODY = 1024 * 1024  # canaryd's limit, so both servers are configured alike


async def answer(request: web.Request) -> web.Response:
    del request  # the point: no parsing, no work
    return web.Response(status=200)


async def healthz(request: web.Request) -> web.Response:
    del request
    return web.Response(text="ok\n")


def make_app() -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/webhooks/alertmanager", answer)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None,
                handle_signals=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
