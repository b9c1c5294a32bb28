"""Property tests of the canary API (README "HTTP API") with any method, path segments, query and body.

Every answer has a documented status (503 the only 5xx) and, for an error, a JSON body naming it; only
a POST answered 200 may change a canary; /metrics still answers 200 and nothing is logged at ERROR.
"""

from __future__ import annotations

from urllib.parse import quote_from_bytes

from hypothesis import given
from hypothesis import strategies as st

from canaryd.server import VERBS
from fuzz_http import FUZZ, harness
from test_server import API_TOKEN, WEBHOOK_TOKEN

KNOWN_SEGMENTS = ["api", "v1", "canaries", "orion", "auth-service", "shop", "cart", *VERBS, "", ".", ".."]
METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS"]
LONE_SURROGATES = ("\ud800", "\udfff")


def _encode(segment: str) -> bytes:
    # surrogatepass: a lone surrogate becomes the percent-encoded bytes no UTF-8 decoder accepts
    return quote_from_bytes(segment.encode("utf-8", "surrogatepass"), safe="").encode("ascii")


SEGMENTS = st.one_of(
    st.sampled_from(KNOWN_SEGMENTS),
    st.text(st.one_of(st.characters(), st.sampled_from(LONE_SURROGATES)), max_size=10),
).map(_encode)


def _known_or(known: list[str]) -> st.SearchStrategy[bytes]:
    """A known segment three times in four, else any (encoded) text."""
    return st.integers(0, 3).flatmap(lambda n: SEGMENTS if n == 0 else st.sampled_from(known).map(_encode))


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    """Mostly a canary's path (namespace, name, maybe a verb, each mostly a real one), else 0-4 segments
    of anything after /api/v1/canaries or /; sometimes a query."""
    prefix = b"/api/v1/canaries"
    if draw(st.integers(0, 2)):
        segments = [draw(_known_or(["orion", "shop"])), draw(_known_or(["auth-service", "cart"]))]
        if draw(st.integers(0, 3)):
            segments.append(draw(_known_or(list(VERBS))))
    else:
        segments = draw(st.lists(SEGMENTS, max_size=4))
        prefix = draw(st.sampled_from([prefix, b""]))
    target = prefix + b"".join(b"/" + s for s in segments) or b"/"
    if draw(st.booleans()):
        query = draw(st.sampled_from([b"emergency=true", b"emergency=", b"emergency=1&emergency=0"])
                     | st.binary(max_size=12).map(lambda b: quote_from_bytes(b, safe="=&").encode("ascii")))
        target += b"?" + query
    return target


# The right token half of the time, so that commands run.
AUTHORIZATION = st.sampled_from([f"Bearer {API_TOKEN}"] * 4 + [None, f"Bearer {WEBHOOK_TOKEN}", "Bearer", "Basic x"])


def test_any_request_to_the_api_gets_a_documented_answer_and_only_a_command_changes_state() -> None:
    with harness(webhook_token=WEBHOOK_TOKEN, api_token=API_TOKEN) as h:
        seen: dict[int, int] = {}

        @FUZZ
        @given(method=st.sampled_from([b"GET", b"POST"]) | st.sampled_from(METHODS), target=targets(),
               auth=AUTHORIZATION,
               body=st.binary(max_size=64))
        def one(method: bytes, target: bytes, auth: str | None, body: bytes) -> None:
            headers = [(b"Authorization", auth.encode())] if auth is not None else []
            before = h.state()
            answer = h.request(method, target, headers, body)
            h.check(answer, head=method == b"HEAD")
            seen[answer.status] = seen.get(answer.status, 0) + 1
            if not (method == b"POST" and answer.status == 200):
                assert h.state() == before, (method, target, answer.status, answer.body[:200])
            if method == b"POST" and answer.status == 200:
                assert target.split(b"?")[0].rsplit(b"/", 1)[-1].decode() in VERBS
                assert auth == f"Bearer {API_TOKEN}"

        one()
        print(f"API: {dict(sorted(seen.items()))}")
        assert sum(seen.values()) >= FUZZ.max_examples, seen
        assert {200, 401, 404, 405, 409} <= seen.keys(), seen
