"""Which API refusals the operator gives up on (the resource is Failed with the server's words) and which
it retries: the Status bodies are the API server's own (seen on the real control plane)."""

from __future__ import annotations

import json

import pytest

from kinfer.controller.kube import Conflict, NotFound, _error


def status(code: int, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                       "message": message}).encode()  # fmt: skip


#: kube-apiserver 1.34's OwnerReferencesPermissionEnforcement answer for an object owned by a kind its
#: discovery has not learned yet (the CRD was installed a moment before): the same create passes seconds later.
NOT_MAPPED_YET = ('configmaps "watched-results" is forbidden: cannot set blockOwnerDeletion in this case because '
                  'cannot find RESTMapping for APIVersion kinfer.dev/v1alpha1 Kind LoadExperiment: no matches for '
                  'kind "LoadExperiment" in version "kinfer.dev/v1alpha1"')


@pytest.mark.parametrize(("code", "message"), [
    (403, 'jobs.batch is forbidden: User "system:serviceaccount:kinfer-system:kinfer" cannot create resource '
          '"jobs" in API group "batch" in the namespace "lab"'),
    (403, 'pods "p" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false'),
    (403, 'configmaps "x" is forbidden: unable to create new content in namespace lab because it is being terminated'),
    (422, 'LoadExperiment.kinfer.dev "x" is invalid: spec.schedule: Required value'),
    (400, "the body of the request was in an unknown format"),
])
def test_refusals_for_what_was_asked_are_permanent(code: int, message: str) -> None:
    error = _error(code, status(code, message))
    assert error.permanent and error.message == message


def test_an_owner_kind_the_api_server_has_not_mapped_yet_is_retried() -> None:
    error = _error(403, status(403, NOT_MAPPED_YET))
    assert error.status == 403 and not error.permanent


def test_passing_answers_are_retried() -> None:
    assert not _error(500, status(500, "etcdserver: leader changed")).permanent
    throttled = _error(429, status(429, "too many requests"), retry_after="2")
    assert not throttled.permanent and throttled.retry_after_s == 2.0
    assert isinstance(_error(404, status(404, "not found")), NotFound)
    assert isinstance(_error(409, status(409, "exists")), Conflict)
