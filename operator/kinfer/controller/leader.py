"""Leader election over a ``coordination.k8s.io/v1`` Lease: only one operator process acts at a time.

Two replicas of the operator (a rolling restart, a second Deployment, a person running one by hand
beside the chart's) would both create Jobs and both write status. Before kopf starts, the process takes
the Lease ``kinfer-operator`` in its own namespace (waiting while another holder keeps renewing it), then
renews it every ``renew_s``; if it cannot renew before the lease runs out, it has lost leadership and
the process exits, as client-go's leader election does, so that it never acts beside a new leader.
Writes carry the Lease's ``resourceVersion``, so two candidates never both win.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from kinfer.controller.kube import LEASE, Conflict, Kube, KubeError

log = logging.getLogger("kinfer.operator.leader")
LEASE_NAME = "kinfer-operator"


class LostLeadership(Exception):
    """The Lease could not be renewed in time, or another holder took it."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _stamp(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text.replace("Z", "+00:00"), "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        try:
            return datetime.datetime.strptime(text.replace("Z", "+00:00"), "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return None


def default_identity() -> str:
    """``<host>_<pid>_<random>``: unique per process, readable in ``kubectl get lease -o yaml``."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


@dataclass
class LeaderElection:
    """One candidate for the Lease ``namespace/name``."""

    kube: Kube
    namespace: str
    lease_s: float = 15.0
    """How long a holder's claim lasts without renewal."""
    renew_s: float = 5.0
    """How often the holder renews."""
    name: str = LEASE_NAME
    identity: str = field(default_factory=default_identity)
    renewed: datetime.datetime | None = None

    def _spec(self, now: datetime.datetime, acquired: str | None, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_s)),
            "acquireTime": acquired or _stamp(now),
            "renewTime": _stamp(now),
            "leaseTransitions": transitions,
        }

    async def try_acquire(self) -> bool:
        """One attempt: take or renew the Lease if it is free, expired or ours."""
        now = _now()
        lease = await self.kube.get(LEASE, self.namespace, self.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, None, 0),
            }
            try:
                await self.kube.call("POST", LEASE.path(self.namespace), body=body)
            except Conflict:
                return False  # another candidate created it first
            self.renewed = now
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.lease_s)
        expired = renewed is None or (now - renewed).total_seconds() > duration
        if holder not in (None, "", self.identity) and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        acquired = spec.get("acquireTime") if holder == self.identity else None
        lease["spec"] = self._spec(now, acquired, transitions)
        try:
            await self.kube.call("PUT", LEASE.path(self.namespace, self.name), body=lease)
        except Conflict:
            return False  # changed since we read it: someone else renewed or took it
        if holder != self.identity:
            log.info("acquired the lease %s/%s (previous holder %s)", self.namespace, self.name, holder or "none")
        self.renewed = now
        return True

    async def acquire(self) -> None:
        """Wait until this process holds the Lease."""
        waiting_logged = False
        while True:
            try:
                if await self.try_acquire():
                    log.info("leading as %s (lease %s/%s)", self.identity, self.namespace, self.name)
                    return
            except KubeError as exc:
                log.warning("cannot take the lease %s/%s: %s", self.namespace, self.name, exc)
            if not waiting_logged:
                log.info("another operator holds the lease %s/%s: standing by", self.namespace, self.name)
                waiting_logged = True
            await asyncio.sleep(self.renew_s / 2)

    async def keep(self) -> None:
        """Renew until cancelled; raise :class:`LostLeadership` when the claim could not be kept."""
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                if await self.try_acquire():
                    continue
            except KubeError as exc:
                log.warning("renewing the lease failed: %s", exc)
            assert self.renewed is not None
            if (_now() - self.renewed).total_seconds() > self.lease_s * 2 / 3 or not await self._still_mine():
                raise LostLeadership(f"lost the lease {self.namespace}/{self.name}: no longer acting")

    async def release(self) -> None:
        """Give the Lease up on a clean exit, so that a standby takes over at once instead of waiting for
        it to run out."""
        try:
            lease = await self.kube.get(LEASE, self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": None, "renewTime": None, "leaseDurationSeconds": 1}
            await self.kube.call("PUT", LEASE.path(self.namespace, self.name), body=lease)
            log.info("released the lease %s/%s", self.namespace, self.name)
        except KubeError as exc:
            log.warning("could not release the lease %s/%s: %s", self.namespace, self.name, exc)

    async def _still_mine(self) -> bool:
        try:
            lease = await self.kube.get(LEASE, self.namespace, self.name)
        except KubeError:
            return True  # unknown: keep trying until the time runs out
        return ((lease or {}).get("spec") or {}).get("holderIdentity") == self.identity
