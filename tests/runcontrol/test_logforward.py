"""Log forwarding: the record codec, a forwarder that never blocks, drops that are counted."""

from __future__ import annotations

import logging
import sys

import msgpack
import pytest

from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.logforward import (
    LogForwarder,
    LogRecordError,
    decode_record,
    encode_record,
    format_record,
)


def test_record_codec():
    try:
        raise ValueError("bad")
    except ValueError:
        rec = logging.LogRecord("larpixdaq.y", logging.ERROR, __file__, 1, "oops", (),
                                sys.exc_info())
    decoded = decode_record(encode_record(rec, "c"))
    assert decoded["message"] == "oops" and "ValueError: bad" in decoded["exc"]
    assert "ERROR" in format_record(decoded) and "ValueError" in format_record(decoded)
    with pytest.raises(LogRecordError, match="version"):
        decode_record(msgpack.packb([1]))


def test_forwarder_never_blocks_without_a_collector():
    # Records queue up to the limit while nobody listens; beyond it they are counted, not
    # waited for.
    handler = LogForwarder("tcp://127.0.0.1:1", "nobody", queue_limit=2)
    try:
        rec = logging.LogRecord("larpixdaq.z", logging.INFO, __file__, 1, "x", (), None)
        for _ in range(50):
            handler.emit(rec)
        assert handler.dropped >= 40 and handler.sent + handler.dropped == 50
    finally:
        handler.close()


def test_records_a_component_could_not_forward_reach_its_counters():
    comp = Component("quiet", "tcp://127.0.0.1:9")
    try:
        comp._apply_services({"logs": "tcp://127.0.0.1:1"})  # nobody listens there
        assert comp._safe_counters()["log_records_dropped"] == 0
        for i in range(10_050):  # beyond the forwarder's queue limit
            comp.log.info("record %d", i)
        assert comp._safe_counters()["log_records_dropped"] >= 50
    finally:
        comp.stop()
