"""Which rollout events a human must know, and how each receiver shows them.

`transitions` derives, from one transition of a canary's rollout, the events no effect carries:
started, advanced, paused (with why, a timeout included), awaiting promotion and promotion failed
(rolled back, promoted and restarted come from the rollout's own Notify effects). `body` renders an
event for a target's format: generic JSON, Slack, Microsoft Teams (an Adaptive Card, as Teams'
workflow webhooks take it) or Discord (an embed), each with links to the canary's status in the API
and to its Grafana dashboard when the target names them.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .config.model import NOTIFY_EVENTS
from .rollout import ACTIVE, Notify, Phase, Promote, Rollout, Trigger

if TYPE_CHECKING:
    from .notify import Event, NotifyTarget

# Every event kind, as the generic JSON's "kind" names it and a target's `events` filter selects it.
EVENT_KINDS: tuple[str, ...] = NOTIFY_EVENTS
FORMATS: tuple[str, ...] = ("json", "slack", "msteams", "discord")
_WHAT = {"started": "started", "advanced": "advanced", "paused": "paused", "awaiting_promotion":
         "is waiting for promotion", "promotion": "promoted", "promotion_failed": "promotion failed",
         "rollback": "rolled back", "restart": "restarted for a new canary version"}
# Discord embed colours (and Teams' text styles): bad news red, waiting amber, progress green.
_COLOUR = {"rollback": 0xD93F0B, "promotion_failed": 0xD93F0B, "paused": 0xFBCA04, "awaiting_promotion": 0xFBCA04}
_TEAMS_STYLE = {0xD93F0B: "attention", 0xFBCA04: "warning"}
_GOOD = 0x2EA44F


def transitions(old: Rollout, new: Rollout, effects: Sequence[object]) -> list[Notify]:
    """The events of the transition old → new (whose effects were `effects`) that no effect carries."""
    kind = _kind(old, new, effects)
    if kind is None:
        return []
    last = new.last_decision or {}
    reasons = tuple(str(r) for r in last.get("reasons") or ())
    if new.phase is Phase.PAUSED and new.paused_reason:
        reasons = (new.paused_reason,)  # why it stopped, a timeout included
    try:
        trigger = Trigger.START if kind == "started" else Trigger(str(last.get("trigger")))
    except ValueError:
        trigger = Trigger.MANUAL
    return [Notify(kind, trigger, reasons)]


def _kind(old: Rollout, new: Rollout, effects: Sequence[object]) -> str | None:
    if new.phase is Phase.PROGRESSING:
        if old.phase not in ACTIVE:
            return "started"
        return "advanced" if new.step > old.step else None
    if new.phase is not Phase.PAUSED:
        return None
    if any(isinstance(e, Promote) for e in effects):
        return "promotion_failed"
    if old.phase is Phase.PAUSED and old.awaiting_promotion == new.awaiting_promotion:
        return None
    return "awaiting_promotion" if new.awaiting_promotion else "paused"


def links(target: NotifyTarget, event: Event) -> dict[str, str]:
    """The canary's API status and Grafana dashboard, for the targets that name their base URLs."""
    out = {}
    quote = urllib.parse.quote
    if target.api_url:
        out["status"] = f"{target.api_url.rstrip('/')}/api/v1/canaries/{quote(event.namespace)}/{quote(event.canary)}"
    if target.grafana_url:
        out["dashboard"] = target.grafana_url.replace("{namespace}", quote(event.namespace)).replace(
            "{canary}", quote(event.canary))
    return out


def title(event: Event) -> str:
    return f"canaryd: {event.namespace}/{event.canary} {_WHAT.get(event.kind, event.kind)} at {event.weight:g}%"


def _colour(event: Event) -> int:
    return _COLOUR.get(event.kind, _GOOD)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def msteams_body(event: Event, urls: Mapping[str, str]) -> dict[str, Any]:
    """A message with one Adaptive Card (1.4), the form Teams' incoming-webhook workflows accept."""
    facts = [{"title": "Canary", "value": f"{event.namespace}/{event.canary}"},
             {"title": "Weight", "value": f"{event.weight:g}%"},
             {"title": "Trigger", "value": event.trigger},
             {"title": "At", "value": event.at.isoformat(timespec="seconds")}]
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title(event), "weight": "Bolder", "size": "Medium", "wrap": True,
         "color": _TEAMS_STYLE.get(_colour(event), "good")},
        {"type": "FactSet", "facts": facts},
    ]
    body += [{"type": "TextBlock", "text": r, "wrap": True} for r in event.reasons]
    card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                            "version": "1.4", "body": body}
    names = {"status": "Canary status", "dashboard": "Grafana dashboard"}
    if urls:
        card["actions"] = [{"type": "Action.OpenUrl", "title": names[k], "url": u} for k, u in urls.items()]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def discord_body(event: Event, urls: Mapping[str, str]) -> dict[str, Any]:
    """Discord's webhook: a short content line and one embed (within Discord's length limits)."""
    embed: dict[str, Any] = {
        "title": _clip(title(event), 256),
        "description": _clip("\n".join(event.reasons), 4096),
        "color": _colour(event),
        "timestamp": event.at.isoformat(),
        "fields": [{"name": "Trigger", "value": event.trigger, "inline": True},
                   {"name": "Weight", "value": f"{event.weight:g}%", "inline": True}],
    }
    if "status" in urls:
        embed["url"] = urls["status"]
    if urls:
        embed["fields"].append({"name": "Links", "value": _clip(" · ".join(
            f"[{'status' if k == 'status' else 'Grafana'}]({u})" for k, u in urls.items()), 1024)})
    return {"content": _clip(title(event), 2000), "embeds": [embed], "allowed_mentions": {"parse": []}}


def slack_links(urls: Mapping[str, str]) -> str:
    """Slack's <url|label> links (& < > escaped as Slack requires)."""
    def esc(s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    labels = {"status": "status", "dashboard": "dashboard"}
    return " ".join(f"<{esc(u)}|{labels[k]}>" for k, u in urls.items())
