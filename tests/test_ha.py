"""Two replicas, one Lease: any replica takes any alert, and the answers say what happened.

Against the stand-in API server (fake_kube.py). Any replica writes a rollback or a pause straight to
the route, as a compare-and-set on the route's saved state; only the leader starts, advances, resumes
and promotes (docs/contracts.md, "High availability"). The Deployment paths say the truth: a failed
promotion is not a success, and a canary Deployment that is gone needs no scaling down.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from canaryd.actuator import ActuationError, RouteChanged
from fake_kube import FakeKube
from http_helpers import request, wait_for
from servers import free_port
from test_cluster_e2e import (
    NS,
    Daemon,
    add_canary_objects,
    alert_payload,
    annotation,
    canary,
    in_process,
    route_writes,
    state_in,
    weights,
)

HA_ALERTS = 50


def test_alerts_alternating_between_two_replicas_all_roll_back_with_200(tmp_path: Path,
                                                                         daemons: list[Daemon]) -> None:
    """The Service's address alternates between the leader and the follower: every alert is answered
    200 by whichever replica it reaches, and its canary's route says 0 % when it is."""
    names = [f"ha-{i:03d}" for i in range(HA_ALERTS)]
    dead_prometheus = f"http://127.0.0.1:{free_port()}"  # no judging needed: every canary holds at 5 %
    with FakeKube().in_thread() as fake:
        for n in names:
            add_canary_objects(fake, n)
        config = [canary(n) for n in names]
        for token in ("replica-a", "replica-b"):
            daemons.append(Daemon(tmp_path, fake, token, dead_prometheus, config, leader_election=True))
        for d in daemons:
            d.wait_ready()
        leader = wait_for(lambda: next((d for d in daemons if d.metric("canaryd_is_leader") == 1), None),
                          timeout=15, interval=0.1, what="a leader")
        for n in names:
            status, body = leader.command(n, "start")
            assert status == 200 and body["weight"] == 5, body

        service = itertools.cycle(daemons)  # one Service address, two endpoints, round robin
        answers = []
        for n in names:
            status, body = request("POST", next(service).url + "/webhooks/alertmanager", alert_payload(n))
            answers.append(status)
            assert status == 200 and body["alerts"][0]["result"] == "rollback applied", (n, body)
            assert weights(fake, n) == (100, 0), n  # the 200 means the weights are written
        assert answers == [200] * HA_ALERTS
        assert all(annotation(fake, n)["phase"] == "rolled_back" for n in names)
        follower = next(d for d in daemons if d is not leader)
        assert len([n for n in names if route_writes(fake, follower.token, n)]) == HA_ALERTS // 2
        for d in daemons:  # both replicas' views follow the route
            wait_for(lambda d=d: all(c["phase"] == "rolled_back" for c in d.get("/api/v1/canaries")[1]["canaries"]),
                     timeout=15, what=f"{d.token} to see every rollback")


async def test_a_decision_of_another_replica_is_never_overwritten(tmp_path: Path) -> None:
    """The leader read the route at 5 % progressing; a follower pauses it; the leader's write that was
    computed from the old state is refused (RouteChanged), nothing is written, and it adopts the pause."""
    async with FakeKube() as fake:
        add_canary_objects(fake, "cas")
        async with in_process(fake, tmp_path, "cas", leader=True) as leader, \
                in_process(fake, tmp_path, "cas", leader=False) as follower:
            await leader.command(NS, "cas", "start")
            status = await follower.command(NS, "cas", "pause")  # the follower re-reads before it decides
            assert (status["phase"], status["weight"]) == ("paused", 5), status
            assert annotation(fake, "cas")["phase"] == "paused"

            worker = leader.workers[f"{NS}/cas"]
            assert worker.status()["phase"] == "progressing"  # stale: not refreshed yet
            state = {**worker.rollout.persisted(), "step": 1, "weight": 25}
            before = len(route_writes(fake, "me", "cas"))
            with pytest.raises(RouteChanged):
                await worker.actuator.set_weight(25, state)  # an advance decided on the old state
            assert len(route_writes(fake, "me", "cas")) == before and weights(fake, "cas") == (95, 5)
            status = await leader.command(NS, "cas", "resume")  # decided again on what the route says
            assert status["phase"] == "progressing" and annotation(fake, "cas")["phase"] == "progressing"
            # The follower may not advance, even with a fresh view.
            with pytest.raises(ActuationError, match="not the leader"):
                await follower.workers[f"{NS}/cas"].actuator.set_weight(25, state)


async def test_a_failed_promotion_is_an_error_not_a_success(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        add_canary_objects(fake, "nopromo")
        async with in_process(fake, tmp_path, "nopromo") as controller:
            await controller.command(NS, "nopromo", "start")
            fake.remove("deployments", NS, "nopromo-canary")
            with pytest.raises(ActuationError, match="promotion failed"):
                await controller.command(NS, "nopromo", "promote")
            status = controller.workers[f"{NS}/nopromo"].status()
            assert status["phase"] != "succeeded" and weights(fake, "nopromo") == (95, 5), status


async def test_a_deleted_canary_deployment_needs_no_scale_down(tmp_path: Path) -> None:
    """Scaling down a Deployment that is gone (404) is done: no endless retry, no 503 to redeliveries."""
    async with FakeKube() as fake:
        add_canary_objects(fake, "gone")
        async with in_process(fake, tmp_path, "gone") as controller:
            await controller.command(NS, "gone", "start")
            fake.remove("deployments", NS, "gone-canary")
            status = await controller.command(NS, "gone", "rollback")
            assert (status["phase"], status["weight"], status["pending"]) == ("rolled_back", 0, None), status
            assert weights(fake, "gone") == (100, 0)
            worker = controller.workers[f"{NS}/gone"]
            assert worker.pending_rollback is None and worker.error is None
            assert [state_in(r)["phase"] for r in route_writes(fake, "me", "gone")][-1] == "rolled_back"  # type: ignore[index]
