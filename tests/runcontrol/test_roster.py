"""The pure roster: name ownership, take-over by a restarted process, the rejoin grace.

The rules checked are those of docs/runcontrol.md ("Rejoining a run", "A new process while
the old one still seems alive"), kept here as a small record of who was told what.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from larpixdaq.runcontrol import messages as m
from larpixdaq.runcontrol.roster import ABSENT_AFTER_RESTART, Roster

NAMES = ["st", "p1"]
HOSTS = ["daq1", "daq2"]
ROLES = ["storage", "producer"]
PIDS = [10, 11, 12]
GRACE = 3.0
REFUSED_FOR = 60.0  # docs: "The old host/pid pair stays refused for 60 s."


def register(name, host, pid, role):
    return m.Register(name=name, role=role, host=host, pid=pid)


def identity(host, pid, name="st"):
    """A process's socket identity (one socket per component process)."""
    return f"{name}@{host}:{pid}".encode()


def test_a_restarted_process_on_the_same_host_takes_the_name_and_the_old_one_is_refused():
    roster = Roster(GRACE)
    roster.add(register("st", "daq1", 10, "storage"), identity("daq1", 10), 0.0)
    admission = roster.admit(register("st", "daq1", 11, "storage"), identity("daq1", 11), 1.0,
                             7)
    assert admission.refusal is None and admission.displaces.pid == 10
    roster.remove("st")
    roster.add(register("st", "daq1", 11, "storage"), identity("daq1", 11), 1.0)
    assert roster.name_of(identity("daq1", 10)) is None
    again = roster.admit(register("st", "daq1", 10, "storage"), identity("daq1", 10), 2.0, 7)
    assert "replaced by pid 11" in again.refusal and "should stop" in again.refusal


def test_another_host_or_role_never_takes_a_registered_name():
    roster = Roster(GRACE)
    roster.add(register("st", "daq1", 10, "storage"), identity("daq1", 10), 0.0)
    for host, role in (("daq2", "storage"), ("daq1", "producer")):
        admission = roster.admit(register("st", host, 11, role), identity(host, 11), 1.0, None)
        assert "already registered from daq1 pid 10" in admission.refusal


def test_without_grace_a_name_is_refused_until_its_holder_is_lost():
    roster = Roster(0.0)
    roster.add(register("st", "daq1", 10, "storage"), identity("daq1", 10), 0.0)
    admission = roster.admit(register("st", "daq1", 11, "storage"), identity("daq1", 11), 1.0,
                             None)
    assert admission.refusal is not None


def test_a_missing_name_is_kept_for_its_role_until_the_grace_runs_out():
    roster = Roster(GRACE)
    roster.hold("st", "storage", 100.0, "lost")
    refused = roster.admit(register("st", "daq1", 11, "producer"), identity("daq1", 11), 101.0,
                           5)
    assert "kept for storage st, lost during run 5" in refused.refusal
    assert "for 2.0 s" in refused.refusal
    assert roster.expired(103.0) == []  # the deadline itself is still within the grace
    assert [x.name for x in roster.expired(103.01)] == ["st"]
    assert roster.expired(200.0) == []  # handed out once
    assert roster.admit(register("st", "daq1", 11, "producer"), identity("daq1", 11), 104.0,
                        5).refusal is None


def test_absent_after_a_core_restart_is_told_apart():
    roster = Roster(GRACE)
    assert roster.hold("st", "storage", 0.0, ABSENT_AFTER_RESTART).after_restart
    assert not roster.hold("p1", "producer", 0.0, "lost").after_restart


class RosterMachine(RuleBasedStateMachine):
    """Random registrations, losses and time against the documented rules of a name."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.roster = Roster(GRACE)
        self.holders: dict[str, tuple[str, int, str]] = {}  # name -> host, pid, role
        self.kept: dict[str, tuple[str, float]] = {}  # name -> role, until
        self.stop_told: dict[tuple[str, str, int], float] = {}  # replaced process -> since
        self.forgotten: set[bytes] = set()  # identities of processes no longer registered
        self.sockets: dict[str, bytes] = {}  # name -> the identity its holder registered with
        self.connections = 0

    @rule(name=st.sampled_from(NAMES), host=st.sampled_from(HOSTS), pid=st.sampled_from(PIDS),
          role=st.sampled_from(ROLES))
    def register(self, name, host, pid, role):
        self.connections += 1  # every registration comes on a fresh socket
        ident = identity(host, pid, f"{name}#{self.connections}")
        adm = self.roster.admit(register(name, host, pid, role), ident, self.now, 1)
        holder = self.holders.get(name)
        replaced_at = self.stop_told.get((name, host, pid))
        if replaced_at is not None and self.now - replaced_at < REFUSED_FOR:
            assert adm.refusal is not None and "should stop" in adm.refusal
            return
        other_process = holder is not None and holder[:2] != (host, pid)
        if other_process and (holder[0] != host or holder[2] != role):
            assert adm.refusal is not None and "already registered" in adm.refusal
            return
        kept = self.kept.get(name)
        if kept is not None and kept[1] >= self.now and kept[0] != role:
            assert adm.refusal is not None and "kept for" in adm.refusal
            return
        assert adm.refusal is None, adm.refusal
        if holder is not None and holder[:2] != (host, pid):
            # Same host, same role, another pid: the newcomer wins.
            assert adm.displaces is not None and adm.displaces.pid == holder[1]
            self.stop_told[(name, holder[0], holder[1])] = self.now
            self.roster.remove(name)
            self.forgotten.add(self.sockets[name])
        elif holder is not None:
            assert adm.reconnects is not None and adm.displaces is None
            self.forgotten.add(self.sockets[name])  # its old socket is not its any more
        else:
            assert adm.displaces is None and adm.reconnects is None
        member, missing = self.roster.add(register(name, host, pid, role), ident, self.now)
        assert (missing is not None) == (kept is not None and kept[1] >= self.now)
        self.kept.pop(name, None)
        self.holders[name] = (host, pid, role)
        self.sockets[name] = ident

    @precondition(lambda self: self.holders)
    @rule(data=st.data(), hold=st.booleans())
    def lose(self, data, hold):
        name = data.draw(st.sampled_from(sorted(self.holders)))
        host, pid, role = self.holders.pop(name)
        self.roster.remove(name)
        self.forgotten.add(self.sockets.pop(name))
        if hold:
            self.roster.hold(name, role, self.now, "lost")
            self.kept[name] = (role, self.now + GRACE)

    @rule(dt=st.sampled_from([0.5, 2.9, 3.1, 61.0]))
    def wait(self, dt):
        self.now += dt
        expired = {x.name for x in self.roster.expired(self.now)}
        due = {n for n, (_, until) in self.kept.items() if until < self.now}
        assert expired == due
        for n in due:
            del self.kept[n]

    @invariant()
    def one_process_per_name(self):
        assert {n: (x.host, x.pid, x.role) for n, x in self.roster.members.items()} == \
            self.holders
        for name, x in self.roster.members.items():
            assert self.roster.name_of(x.identity) == name
        for ident in self.forgotten:
            assert self.roster.name_of(ident) is None

    @invariant()
    def kept_names_are_not_registered(self):
        assert set(self.roster.missing) == set(self.kept)
        assert not set(self.roster.missing) & set(self.roster.members)


RosterMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30,
                                           deadline=None)
TestRosterMachine = RosterMachine.TestCase


def test_with_keys_a_name_belongs_to_the_key_that_registered_it():
    roster = Roster(rejoin_grace=3.0)
    first = register("storage", "daq1", 100, "storage")
    assert roster.admit(first, b"a", 0.0, None, "KEY-A").refusal is None
    roster.add(first, b"a", 0.0, "KEY-A")
    # Same host and role, a made-up pid: a take-over (rule 2) with the same key only.
    forged = register("storage", "daq1", 999, "storage")
    refusal = roster.admit(forged, b"b", 1.0, None, "KEY-B").refusal
    assert refusal is not None and "another key" in refusal
    assert roster.admit(forged, b"b", 1.0, None, None).refusal is not None  # no key either
    assert roster.admit(forged, b"c", 1.0, None, "KEY-A").displaces is not None
    # A name kept for a missing participant is kept for its key too.
    member = roster.remove("storage")
    roster.hold(member.name, member.role, 2.0, "lost", key=member.key)
    assert "another key" in roster.admit(forged, b"d", 2.5, 1, "KEY-B").refusal
    assert roster.admit(forged, b"d", 2.5, 1, "KEY-A").refusal is None
