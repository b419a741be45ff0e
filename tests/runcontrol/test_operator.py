"""The Operator against a scripted ROUTER: replies matched by id, time-outs explicit."""

from __future__ import annotations

import msgpack
import pytest
import zmq

from larpixdaq import Operator
from larpixdaq.runcontrol import messages as m
from larpixdaq.runcontrol.operator import Ack, Result, Timeout


@pytest.fixture
def fake_core():
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    yield sock
    sock.close(0)


def _recv(sock):
    assert sock.poll(5000)
    identity, payload = sock.recv_multipart()
    return identity, m.decode(payload)


def _endpoint(sock):
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def test_timeout_is_an_explicit_final_response(fake_core):
    with Operator(_endpoint(fake_core), timeout=0.2) as op:
        responses = list(op.status())
    assert len(responses) == 1
    final = responses[0]
    assert isinstance(final, Timeout) and final.final and not final.success
    assert "no answer from the core" in final.message and final.after_s == 0.2


def test_late_reply_never_taken_for_another_answer(fake_core):
    with Operator(_endpoint(fake_core), timeout=0.3) as op:
        first = op.request("status")
        ident, cmd1 = _recv(fake_core)
        assert isinstance(op.wait(first), Timeout)
        second = op.request("clients", timeout=5)
        _, cmd2 = _recv(fake_core)
        assert cmd1.id != cmd2.id
        # The answer to the first request arrives only now, before the second's.
        fake_core.send_multipart([ident, m.encode(m.Result(id=cmd1.id, success=True,
                                                           message="late status"))])
        fake_core.send_multipart([ident, m.encode(m.Ack(id=cmd2.id))])
        fake_core.send_multipart([ident, m.encode(m.Result(id=cmd2.id, success=True,
                                                           message="clients"))])
        responses = list(second)
        assert [type(r) for r in responses] == [Ack, Result]
        assert responses[-1].message == "clients"
        assert all(r.request_id == cmd2.id for r in responses)
        assert op.late_replies == 1


def test_interleaved_requests_each_get_their_own(fake_core):
    with Operator(_endpoint(fake_core), timeout=5) as op:
        a = op.request("status")
        b = op.request("runs")
        ident, ca = _recv(fake_core)
        _, cb = _recv(fake_core)
        for cmd, text in ((cb, "B"), (ca, "A")):
            fake_core.send_multipart([ident, m.encode(m.Result(id=cmd.id, success=True,
                                                               message=text))])
        fake_core.send_multipart([ident, m.encode(m.Event(kind="lost", message="x"))])
        fake_core.send_multipart([ident, b"junk"])
        fake_core.send_multipart([ident, msgpack.packb({"v": 1, "type": "register"})])
        assert op.wait(a).message == "A"
        assert op.wait(b).message == "B"
        events = op.poll_events(0.5)
        assert [e.kind for e in events] == ["lost"]
        assert op.malformed_replies == 2


def test_invoke_params_on_the_wire(fake_core):
    with Operator(_endpoint(fake_core), timeout=0.1) as op:
        op.invoke("board", "scan", steps=3, label="q")
        _, cmd = _recv(fake_core)
    assert cmd.command == "invoke"
    assert cmd.params == {"component": "board", "action": "scan",
                          "params": {"steps": 3, "label": "q"}}


@pytest.fixture
def patient_core():
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)  # queues all it sends (set before bind to apply)
    sock.bind("tcp://127.0.0.1:*")
    yield sock
    sock.close(0)


def test_events_nobody_polled_for_are_counted_when_they_fall_out(patient_core):
    fake_core = patient_core
    with Operator(_endpoint(fake_core), timeout=5) as op:
        reply = op.request("ping")
        ident, cmd = _recv(fake_core)
        for i in range(op.events.maxlen + 5):
            fake_core.send_multipart([ident, m.encode(m.Event(kind="k", message=str(i)))])
        fake_core.send_multipart([ident, m.encode(m.Result(id=cmd.id, success=True,
                                                           message="pong"))])
        assert op.wait(reply).success
        events = op.poll_events()
        assert op.events_dropped == 5
        assert len(events) == op.events.maxlen and events[0].message == "5"
