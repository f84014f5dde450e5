"""Rebuilds keep podman's store the size of one build (images/build.sh's drop_replaced and drop_kept).

Each commit is a new revision label, so ``make test`` on every commit rebuilds all three images. The
rebuild must label the new commit, reuse the layer cache below the label, and remove the images the tags
named before. It once did neither: the label kept the first build's commit, and every build left ~2 GB
of untagged images, until a CI run's disk was full (581 images).

A module of its own: test_images.py keeps a model-server container running for the whole module, and an
image in use is (rightly) kept by a rebuild.
"""

from __future__ import annotations

import os

from tests.images.conftest import build_images, head_revision, podman_run


def _store(podman: str) -> set[str]:
    """Every image id in podman's store, intermediate layers included."""
    return set(podman_run(podman, "images", "--all", "--quiet", "--no-trunc").stdout.split())


def _ids_and_revisions(podman: str, tags: dict[str, str]) -> dict[str, tuple[str, str]]:
    fmt = '{{.Id}} {{index .Config.Labels "org.opencontainers.image.revision"}}'
    found = {name: podman_run(podman, "image", "inspect", "--format", fmt, tag).stdout.split()
             for name, tag in tags.items()}
    return {name: (f"sha256:{words[0].removeprefix('sha256:')}", words[1]) for name, words in found.items()}


def test_rebuilds_move_the_tags_and_leave_no_untagged_images(podman: str, images: dict[str, str]) -> None:
    users = podman_run(podman, "ps", "--all", "--format", "{{.Names}} {{.Image}}").stdout.strip()
    assert not users, f"containers left by earlier tests use images; this test needs none:\n{users}"
    store, before = _store(podman), _ids_and_revisions(podman, images)
    assert {rev for _, rev in before.values()} == {head_revision()}
    first, second = f"rebuild-probe-{os.getpid()}-1", f"rebuild-probe-{os.getpid()}-2"

    # a container holds the loadgen image while the build replaces it: that image is kept, the others go
    holder = f"kinfer-test-holder-{os.getpid()}"
    podman_run(podman, "create", "--name", holder, images["loadgen"])
    try:
        log = build_images(REVISION=first)
    finally:
        podman_run(podman, "rm", "-f", holder, check=False)
    probed = _ids_and_revisions(podman, images)
    assert {rev for _, rev in probed.values()} == {first}
    assert not {i for i, _ in before.values()} & {i for i, _ in probed.values()}
    assert f"kept {before['loadgen'][0].removeprefix('sha256:')[:12]}" in log, log[-3000:]
    now = _store(podman)
    assert before["loadgen"][0] in now
    assert {before["operator"][0], before["model-server"][0]} <= store - now
    # one new image (the label layer) per tag in place of the old one: nothing else new
    assert len(now) == len(store) + 1, (sorted(now - store), sorted(store - now))

    try:
        # the next build removes the kept image, now unused, and the ones the tags named
        build_images(REVISION=second)
        now = _store(podman)
        assert before["loadgen"][0] not in now
        assert not {i for i, _ in probed.values()} & now
        assert len(now) == len(store), (sorted(now - store), sorted(store - now))
    finally:
        build_images()
    assert {rev for _, rev in _ids_and_revisions(podman, images).values()} == {head_revision()}
    assert len(_store(podman)) == len(store)
