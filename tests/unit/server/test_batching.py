"""Dynamic batching: concurrent submitters share model calls; errors reach every caller."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from kinfer.server.backends.base import Batch, Outputs
from kinfer.server.batching import Batcher


class _Model:
    """Records batch sizes; answers each row with its own first value, so splits can be checked."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, batch: Batch) -> Outputs:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        self.sizes.append(int(batch.shape[0]))
        return {"echo": batch.reshape(batch.shape[0], -1)[:, 0].copy(), "scalar": np.float32(7)[()]}


def _row(value: int) -> np.ndarray:
    return np.full((1, 2, 2, 3), value, dtype=np.uint8)


def test_batch_size_one_calls_the_model_directly_without_a_thread() -> None:
    model = _Model()
    batcher = Batcher(model, max_batch_size=1)
    result = batcher.submit(_row(5))
    assert model.sizes == [1]
    assert result.queue_s == 0.0
    assert result.outputs["echo"].tolist() == [5]


def test_concurrent_requests_are_stacked_into_one_call_and_split_back() -> None:
    gate = threading.Event()
    model = _Model(gate)
    batcher = Batcher(model, max_batch_size=4, max_delay_s=5.0)
    try:
        with ThreadPoolExecutor(max_workers=5) as pool:
            # the first call blocks in the model, so the next four gather into one full batch
            first = pool.submit(batcher.submit, _row(0))
            assert model.entered.wait(10)  # the first batch is in the model before the others arrive
            futures = [pool.submit(batcher.submit, _row(v)) for v in (1, 2, 3, 4)]
            _wait_until(lambda: batcher._queue.qsize() == 4)
            gate.set()
            results = [first.result(10)] + [f.result(10) for f in futures]
        assert model.sizes == [1, 4]
        assert [r.outputs["echo"].tolist() for r in results] == [[0], [1], [2], [3], [4]]
        assert results[1].batch_size == 4
        assert all(r.outputs["scalar"] == 7 for r in results)
    finally:
        batcher.close()


def test_a_lone_request_does_not_wait_for_the_batch_delay() -> None:
    model = _Model()
    batcher = Batcher(model, max_batch_size=8, max_delay_s=60.0)
    try:
        result = batcher.submit(_row(1))  # would take a minute if it waited for companions
        assert result.batch_size == 1
    finally:
        batcher.close()


def test_announced_requests_are_waited_for_up_to_the_delay() -> None:
    model = _Model()
    batcher = Batcher(model, max_batch_size=2, max_delay_s=10.0)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            announced, submitting = threading.Event(), threading.Event()

            def late() -> int:
                with batcher.expecting():  # announced before it decodes: the batcher waits for it
                    announced.set()
                    assert submitting.wait(10)
                    _wait_until(lambda: batcher._queue.qsize() == 0)
                    return batcher.submit(_row(2)).batch_size

            def early() -> int:
                assert announced.wait(10)
                with batcher.expecting():
                    submitting.set()
                    return batcher.submit(_row(1)).batch_size

            sizes = [pool.submit(early), pool.submit(late)]
            assert [f.result(10) for f in sizes] == [2, 2]
        assert model.sizes == [2]
    finally:
        batcher.close()


def test_a_request_larger_than_the_room_left_goes_to_the_next_batch() -> None:
    gate = threading.Event()
    model = _Model(gate)
    batcher = Batcher(model, max_batch_size=4, max_delay_s=5.0)
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            first = pool.submit(batcher.submit, _row(0))
            assert model.entered.wait(10)  # the first batch is in the model, the queue is empty
            a = pool.submit(batcher.submit, np.concatenate([_row(1)] * 3))
            _wait_until(lambda: batcher._queue.qsize() == 1)
            b = pool.submit(batcher.submit, np.concatenate([_row(2)] * 2))
            _wait_until(lambda: batcher._queue.qsize() == 2)
            gate.set()
            assert a.result(10).outputs["echo"].tolist() == [1, 1, 1]
            assert b.result(10).outputs["echo"].tolist() == [2, 2]
            first.result(10)
        assert model.sizes == [1, 3, 2]
    finally:
        batcher.close()


def test_a_model_error_reaches_every_request_of_the_batch() -> None:
    def broken(batch: Batch) -> Outputs:
        raise RuntimeError("boom")

    batcher = Batcher(broken, max_batch_size=4, max_delay_s=0.01)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            batcher.submit(_row(1))
        with pytest.raises(RuntimeError, match="boom"):
            batcher.submit(_row(2))
    finally:
        batcher.close()


def test_batch_sizes_are_reported() -> None:
    seen: list[int] = []
    batcher = Batcher(_Model(), max_batch_size=1, on_batch=seen.append)
    batcher.submit(np.concatenate([_row(1)] * 3))
    assert seen == [3]


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.001)
