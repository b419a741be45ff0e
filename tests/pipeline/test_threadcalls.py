"""The mailbox through which other threads run code on a component's owning thread."""

from __future__ import annotations

import threading

import pytest

from larpixdaq.pipeline.threadcalls import ThreadCalls


def test_calls_run_on_the_owning_thread_with_results_and_exceptions() -> None:
    calls = ThreadCalls()
    stop = threading.Event()
    ran_on: list[str] = []

    def owner() -> None:
        while not stop.is_set():
            calls.run_pending()
            stop.wait(0.001)

    t = threading.Thread(target=owner, name="owner")
    t.start()
    try:
        assert calls.call(lambda: ran_on.append(threading.current_thread().name) or 42) == 42
        with pytest.raises(ZeroDivisionError):
            calls.call(lambda: 1 / 0)
        assert calls.call(lambda: "still serving") == "still serving"
    finally:
        stop.set()
        t.join()
    assert ran_on == ["owner"]


def test_call_times_out_when_the_owner_does_not_run_it() -> None:
    calls = ThreadCalls()
    with pytest.raises(TimeoutError):
        calls.call(lambda: None, timeout=0.05)
