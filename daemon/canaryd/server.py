"""aiohttp: the Alertmanager webhook, the canary API, /metrics, /healthz and /readyz.

Status codes follow docs/contracts.md: 200 done (for the webhook: every action's weights are
written) or duplicate/ignored, 202 queued (not done within COMMAND_TIMEOUT; it will be applied: look
at the canary's status), 400 malformed, 401 bad token, 413 over 1 MiB, 503 when the change cannot
be made now (route unreachable; start, resume or promote sent to a replica that does not lead) so
that the caller retries. Every error body is JSON: {"error": "..."}. Any replica takes the webhook.

/readyz answers 200 while the server runs with its config loaded: a replica that can take webhooks
and commands must stay in its Service. The health of what it depends on (Prometheus, the API server,
watches, each canary's route, the leader election) is detail in the body, in /metrics and in the
Canaryd* alerts, never the probe's status.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from html import escape
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from .actuator import ActuationError
from .alerts import PayloadError, parse_webhook
from .config import ServerConfig
from .controller import CommandQueued, Controller, NotLeader, UnknownCanary
from .health import Health
from .leadership import Leadership
from .metrics import render
from .report.index import render_index
from .report.page import Report, render_page
from .report.theme import HEADER_POLICY, document
from .rollout import AlreadyDone, TransitionError

log = logging.getLogger("canaryd.server")

MAX_BODY = 1024 * 1024  # 1 MiB
VERBS = ("start", "promote", "rollback", "pause", "resume")
SCRAPE_TURN = "metrics scrape"  # the pacer's key for a step of /metrics: no canary's

CONTROLLER: web.AppKey[Controller] = web.AppKey("controller", Controller)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
TOKENS: web.AppKey[dict[str, str | None]] = web.AppKey("tokens", dict)
HEALTH: web.AppKey[Health] = web.AppKey("health", Health)
LEADERSHIP: web.AppKey[Leadership] = web.AppKey("leadership", Leadership)


def read_token(path: str | None) -> str | None:
    """A token file's content, stripped; None when no file is configured."""
    if path is None:
        return None
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"{path}: the token file is empty")
    return token


def token_problems(server: ServerConfig) -> list[str]:
    """What `read_token` would stop `canaryd run` at, for each token file: `canaryd validate` says it too."""
    problems = []
    for key in ("webhook_token_file", "api_token_file"):
        try:
            read_token(getattr(server, key))
        except OSError as e:
            problems.append(f"server.{key}: cannot read {e.filename or getattr(server, key)}: "
                            f"{e.strerror or type(e).__name__}")
        except ValueError as e:
            problems.append(f"server.{key}: {e}")
    return problems


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _authorized(request: web.Request, expected: str | None) -> bool:
    if expected is None:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    try:
        # aiohttp decodes header bytes that are not UTF-8 as surrogates; surrogateescape gives them back.
        given_bytes = given.strip().encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    # Constant-time comparison: the token must not leak through response timing.
    return scheme.lower() == "bearer" and hmac.compare_digest(given_bytes, expected.encode())


async def _body(request: web.Request) -> bytes | web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, f"body of {request.content_length} bytes is over the 1 MiB limit")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "body is over the 1 MiB limit")


# ---------------------------------------------------------------------------------------------- handlers


async def webhook(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER]
    if not _authorized(request, request.app[TOKENS].get("webhook")):
        controller.metrics.alert_received("unknown", "unknown", "unauthorized")
        return _error(401, "missing or wrong bearer token")
    body = await _body(request)
    if isinstance(body, web.Response):
        controller.metrics.alert_received("unknown", "unknown", "too_large")
        return body
    try:
        message = parse_webhook(body)
    except PayloadError as e:
        controller.metrics.alert_received("unknown", "unknown", "malformed")
        return _error(400, f"malformed Alertmanager payload: {e}")
    report = await controller.handle_alerts(message)
    if report.retry:
        return web.json_response({"error": "some actions could not be applied now; retry",
                                  "alerts": report.outcomes}, status=503)
    if report.queued:  # accepted and will be applied, but not written yet: not a 200
        return web.json_response({"alerts": report.outcomes}, status=202)
    return web.json_response({"alerts": report.outcomes})


async def list_canaries(request: web.Request) -> web.Response:
    return web.json_response({"canaries": request.app[CONTROLLER].canaries()})


async def get_canary(request: web.Request) -> web.Response:
    try:
        w = request.app[CONTROLLER].worker(request.match_info["namespace"], request.match_info["name"])
    except UnknownCanary as e:
        return _error(404, str(e))
    return web.json_response(w.status())


def _html(text: str, status: int = 200) -> web.Response:
    resp = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    resp.headers["Content-Security-Policy"] = HEADER_POLICY
    resp.headers["Cache-Control"] = "no-store"  # a reload shows the latest ticks
    return resp


async def ui_index(request: web.Request) -> web.Response:
    # Open like every GET of the API: api_token_file guards the changes (POST), not the reads.
    return _html(render_index(request.app[CONTROLLER].canaries()))


async def ui_canary(request: web.Request) -> web.Response:
    ns, name = request.match_info["namespace"], request.match_info["name"]
    try:
        w = request.app[CONTROLLER].worker(ns, name)
    except UnknownCanary as e:
        return _html(document("no such canary", f'<p><a href="/ui/">all canaries</a></p><p>{escape(str(e))}</p>'),
                     404)
    r = w.rollout
    report = Report(title=f"{ns}/{name}", status=w.status(), ticks=r.ticks, alpha=r.settings.alpha, now=w.clock(),
                    links=(("/ui/", "all canaries"),))
    return _html(render_page(report))


async def canary_command(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER]
    if not _authorized(request, request.app[TOKENS].get("api")):
        return _error(401, "missing or wrong bearer token")
    verb = request.match_info["verb"]
    emergency = request.query.get("emergency", "").lower() in ("1", "true", "yes")
    try:
        status = await controller.command(request.match_info["namespace"], request.match_info["name"], verb,
                                          emergency=emergency)
    except UnknownCanary as e:
        return _error(404, str(e))
    except AlreadyDone as e:  # a repeated verb: 200 with the canary as it is, and why nothing changed
        w = controller.worker(request.match_info["namespace"], request.match_info["name"])
        return web.json_response({**w.status(), "unchanged": str(e)})
    except TransitionError as e:
        return _error(409, str(e))
    except NotLeader as e:
        return _error(503, str(e))
    except ActuationError as e:
        return _error(503, f"the change could not be made: {e}")
    except CommandQueued as e:  # it will be applied: a "retry" would meet a state that already moved
        return web.json_response({"queued": e.verb, "message": str(e), "status_url": e.status_url},
                                 status=202, headers={"Location": e.status_url})
    return web.json_response(status)


async def metrics(request: web.Request) -> web.StreamResponse:
    registry, accept = request.app[REGISTRY], request.headers.get("Accept")
    controller = request.app[CONTROLLER]
    m = controller.metrics
    if m.registry is not registry:  # an app built on a registry of its own
        body, content_type = await asyncio.to_thread(render, registry, accept)
        return web.Response(body=body, headers={"Content-Type": content_type})
    # In steps, each a turn of the pacer (a judgement or a step a pass of the loop), each sent as made.
    pieces = m.stream(accept, pause=functools.partial(controller.pacer.step, SCRAPE_TURN))
    first = await anext(pieces)  # a failure before the headers still gets the JSON 500
    resp = web.StreamResponse(headers={"Content-Type": m.content_type(accept)})
    await resp.prepare(request)
    try:
        await resp.write(first)
        async for piece in pieces:
            await resp.write(piece)
        await resp.write_eof()
    except (ConnectionError, TimeoutError):
        log.info("a /metrics scraper went away during the answer")  # nothing to tell it
    except Exception:
        log.exception("a /metrics answer failed after its headers were sent", extra={"path": request.path})
        if request.transport is not None:
            request.transport.close()  # cut short, not ended: the scrape fails rather than reading a part
    finally:
        await pieces.aclose()
    return resp


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 whenever this answers: the webhook and the API work. `healthy` and `problems` say what is
    degraded; `?verbose` adds each component's problem by name."""
    health = request.app[HEALTH]
    healthy, problems = health.readiness()
    body: dict[str, object] = {"ready": True, "healthy": healthy, "leader": request.app[LEADERSHIP].is_leader,
                               "problems": problems, "last_tick_at": request.app[CONTROLLER].last_tick_at}
    if "verbose" in request.query:
        body["components"] = health.components()
    return web.json_response(body)


@web.middleware
async def _json_errors(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """No traceback reaches a client: unknown paths and methods get JSON, a bug gets a logged 500."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status == 413:
            return _error(413, "body is over the 1 MiB limit")
        if e.status >= 400:
            return _error(e.status, e.reason)
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("request failed", extra={"path": request.path})
        return _error(500, "internal error; see the daemon's logs")


def make_app(controller: Controller, registry: CollectorRegistry, *, webhook_token: str | None = None,
             api_token: str | None = None, health: Health | None = None,
             leadership: Leadership | None = None) -> web.Application:
    """The daemon's HTTP app; health and leadership default to the ones the controller was given."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_json_errors])
    app[CONTROLLER] = controller
    app[HEALTH] = health or controller.health
    app[LEADERSHIP] = leadership or controller.leadership
    app[REGISTRY] = registry
    app[TOKENS] = {"webhook": webhook_token, "api": api_token}
    app.router.add_post("/webhooks/alertmanager", webhook)
    app.router.add_get("/api/v1/canaries", list_canaries)
    app.router.add_get("/api/v1/canaries/{namespace}/{name}", get_canary)
    app.router.add_post("/api/v1/canaries/{namespace}/{name}/{verb:" + "|".join(VERBS) + "}", canary_command)
    app.router.add_get("/ui/", ui_index)
    app.router.add_get("/ui/canaries/{namespace}/{name}", ui_canary)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(app: web.Application, host: str, port: int, *, ready: asyncio.Event | None = None) -> None:
    """Run the app until cancelled; cleans up in `finally`."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("listening", extra={"host": host, "port": port})
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
