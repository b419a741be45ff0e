"""The run's admission table: what the core mints, what a producer picks, what is refused."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from larpixdaq.runcontrol.admitted import (
    EPOCH_BITS,
    EPOCH_LOW_BITS,
    AdmittedStreams,
    epoch_in_block,
    mint,
    parse,
)

names = st.text(min_size=1, max_size=12)
io_groups = st.integers(0, 255)


def _rng(seed: int):
    return random.Random(seed).getrandbits


@given(st.dictionaries(names, io_groups, min_size=1, max_size=8), st.integers(0, 2**32),
       st.integers(0, 2**32), st.integers(0, 10_000))
def test_every_epoch_a_producer_picks_in_its_block_is_admitted(producers, seed, pick, run):
    table = mint(producers, _rng(seed))
    admitted = AdmittedStreams.from_run(run, table)
    for source, io_group in producers.items():
        epoch = epoch_in_block(table[source][1], _rng(pick))
        assert 0 <= epoch < 2**EPOCH_BITS
        assert admitted.refusal(source, epoch, io_group, run) is None


@given(st.integers(0, 2**32), st.integers(0, 2**32), io_groups, st.integers(0, 100))
def test_each_wrong_field_is_refused_and_named(seed, pick, io_group, run):
    table = mint({"p": io_group}, _rng(seed))
    admitted = AdmittedStreams.from_run(run, table)
    epoch = epoch_in_block(table["p"][1], _rng(pick))
    assert "run" in admitted.refusal("p", epoch, io_group, run + 1)
    assert "source" in admitted.refusal("q", epoch, io_group, run)
    assert "io_group" in admitted.refusal("p", epoch, (io_group + 1) % 256, run)
    # Any epoch outside the block: a high bit flipped.
    for bit in (EPOCH_LOW_BITS, EPOCH_BITS - 1):
        assert "epoch" in admitted.refusal("p", epoch ^ (1 << bit), io_group, run)


def test_blocks_differ_per_source_and_restarts_pick_other_epochs():
    table = mint({f"p{i}": i for i in range(8)}, random.Random(1).getrandbits)
    bases = [base for _, base in table.values()]
    assert len(set(bases)) == 8
    assert all(base % (1 << EPOCH_LOW_BITS) == 0 for base in bases)
    picks = {epoch_in_block(bases[0], random.Random(s).getrandbits) for s in range(50)}
    assert len(picks) > 45  # a restarted producer does not reuse its predecessor's epoch


def test_a_producer_registered_without_io_group_is_refused_any():
    admitted = AdmittedStreams.from_run(1, mint({"p": None}, random.Random(2).getrandbits))
    base = admitted.sources["p"][1]
    assert "io_group" in admitted.refusal("p", base, 0, 1)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=4),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(
                        st.text(max_size=3), c, max_size=3), max_leaves=10))
def test_a_malformed_table_admits_nothing_it_cannot_read(table):
    for source, (io_group, base) in parse(table).items():
        assert isinstance(source, str) and isinstance(base, int)
        assert io_group is None or isinstance(io_group, int)


def test_an_empty_table_admits_any():
    # A run prepared while no producer was registered, or a run info built by hand.
    assert AdmittedStreams.from_run(3, {}) is None
    assert AdmittedStreams.from_run(3, mint({"p": 1}, random.Random(3).getrandbits)) is not None
