"""A listing's seen-ids memory answers exactly as a set would, for any arrival order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.brevo.client import SeenIds

_ids = st.one_of(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond int64: the set takes them
)


@given(st.lists(_ids, max_size=300), st.lists(_ids, max_size=50))
def test_seen_ids_behaves_as_a_set(arrivals: list[int], probes: list[int]) -> None:
    seen, model = SeenIds(), set[int]()
    for i in arrivals:
        assert seen.add(i) == (i not in model)
        model.add(i)
    assert len(seen) == len(model)
    for i in arrivals + probes:
        assert (i in seen) == (i in model)


def test_ascending_ids_stay_in_the_compact_array() -> None:
    seen = SeenIds()
    for i in range(1, 100_001):
        assert seen.add(i)
    assert not seen.add(50_000)  # the overlap contact of a page, read twice
    assert seen.add(0)  # out of order: kept aside
    assert len(seen) == 100_001 and 0 in seen and 100_000 in seen and 100_001 not in seen
    assert len(seen._others) == 1
