"""What the web server refuses before the core (pure parts): strict JSON, Host names,
non-finite numbers on the way out; and sessions with their expiry."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from larpixdaq.runcontrol.credentials import Credential
from larpixdaq.web.guard import (
    MAX_DEPTH,
    BadRequest,
    allowed_hosts,
    dumps,
    host_name,
    parse_json,
)
from larpixdaq.web.sessions import Sessions, csrf_ok

_leaf = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
         | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
_json = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)


@given(_json)
def test_every_json_value_within_the_limits_is_accepted_as_it_is(value):
    assert parse_json(json.dumps(value).encode()) == value


@given(_json)
def test_dumps_writes_strict_json_whatever_the_value(value):
    text = dumps({"a": value, "b": [math.nan, math.inf, -math.inf]})
    parsed = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} written"))
    assert parsed["b"] == [None, None, None]


@pytest.mark.parametrize(("body", "reason"), [
    (b"NaN", "not_finite"), (b"[1, -Infinity]", "not_finite"), (b"1e400", "not_finite"),
    (b"18446744073709551616", "out_of_range"), (b"-9223372036854775809", "out_of_range"),
    (b"[" * (MAX_DEPTH + 2) + b"]" * (MAX_DEPTH + 2), "too_deep"),
    (b"{" + b'"a":{' * 50000 + b"}" * 50001, "too_deep"),
    (b"{oops", "bad_json"), (b"\xff\xfe", "bad_json"),
])
def test_refused_bodies_say_why(body, reason):
    with pytest.raises(BadRequest) as refused:
        parse_json(body)
    assert refused.value.status == 400 and refused.value.reason == reason


def test_the_limits_themselves_are_accepted():
    assert parse_json(b"[18446744073709551615, -9223372036854775808]") == [2**64 - 1, -(2**63)]
    deep = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    expected: list = []
    for _ in range(MAX_DEPTH - 1):
        expected = [expected]
    assert parse_json(deep) == expected


def test_host_names():
    assert host_name("Example.org:8080") == "example.org"
    assert host_name("[::1]:8080") == "::1" and host_name("::1") == "::1"
    allowed = allowed_hosts("127.0.0.1", ["daq.example.org"])
    assert {"127.0.0.1", "localhost", "::1", "daq.example.org"} <= allowed
    assert "attacker.example" not in allowed
    assert "10.1.2.3" in allowed_hosts("10.1.2.3")


def test_sessions_end_after_their_lifetime_or_when_unused():
    s = Sessions(ttl=100, idle=30)
    cred = Credential("alice", "ldq_x")
    a = s.create(cred, "operator", now=0.0)
    assert s.get(a.id, 20.0) is a and s.get(a.id, 45.0) is a  # used within 30 s each time
    assert s.get(a.id, 76.0) is None and s.expired == 1  # 31 s unused
    b = s.create(cred, "operator", now=200.0)
    for t in range(210, 300, 20):
        assert s.get(b.id, float(t)) is b
    assert s.get(b.id, 301.0) is None  # over 100 s since the login, however busy
    assert s.get("nonsense", 0.0) is None and s.get(None, 0.0) is None


def test_csrf_tokens_are_per_session_and_compared_exactly():
    s = Sessions()
    a = s.create(Credential("a", "t"), "viewer", 0.0)
    b = s.create(Credential("b", "t"), "viewer", 0.0)
    assert a.csrf != b.csrf and a.id != b.id
    assert csrf_ok(a, a.csrf) and not csrf_ok(a, b.csrf)
    assert not csrf_ok(a, None) and not csrf_ok(a, "") and not csrf_ok(a, a.csrf[:-1])
