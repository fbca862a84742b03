import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moopt.errors import StateMismatchError
from moopt.schedules import Alternating, FromIterator, RoundRobin, make_schedule


def test_one_to_five():
    s = Alternating({"forget": 1, "retain": 5})
    assert s.take(13) == ["forget"] + ["retain"] * 5 + ["forget"] + ["retain"] * 5 + ["forget"]


@given(st.dictionaries(st.sampled_from("abcde"), st.integers(0, 4), min_size=1),
       st.integers(0, 40), st.integers(1, 30))
def test_alternating_counts_and_resume(freqs, split, extra):
    if not any(freqs.values()):
        with pytest.raises(ValueError, match="every frequency is 0"):
            Alternating(freqs)
        return
    s = Alternating(freqs)
    names = s.take(split + extra)
    period = sum(freqs.values())
    full = names[: (len(names) // period) * period]
    for k, c in freqs.items():  # each name appears freq times per period
        assert full.count(k) == c * (len(full) // period)
    resumed = Alternating(freqs)
    first = resumed.take(split)
    saved = resumed.state_dict()
    again = Alternating(freqs)
    again.load_state_dict(saved)
    assert first + again.take(extra) == names


def test_round_robin():
    assert RoundRobin(["a", "b", "c"]).take(5) == ["a", "b", "c", "a", "b"]


def test_custom_iterator_resumes_by_replay():
    def factory():
        return itertools.cycle(["x", "y", "y"])

    s = FromIterator(factory, ["x", "y"])
    head = s.take(4)
    t = FromIterator(factory, ["x", "y"])
    t.load_state_dict(s.state_dict())
    assert head + t.take(3) == FromIterator(factory, ["x", "y"]).take(7)


def test_custom_iterator_rejects_unknown_names():
    s = FromIterator(lambda: iter(["x", "q"]), ["x"])
    assert next(s) == "x"
    with pytest.raises(ValueError, match="yielded 'q' at step 1"):
        next(s)


def test_errors():
    with pytest.raises(ValueError, match="frequency of 'a' must be an int >= 0, got -1"):
        Alternating({"a": -1})
    with pytest.raises(ValueError, match="unknown objectives"):
        make_schedule({"a": 1, "zz": 2}, ["a", "b"])
    with pytest.raises(ValueError, match="unknown schedule 'weekly'"):
        make_schedule("weekly", ["a"])
    with pytest.raises(StateMismatchError, match="does not match"):
        Alternating({"a": 1}).load_state_dict(Alternating({"a": 2}).state_dict())


def test_make_schedule_forms():
    assert make_schedule({"a": 2, "b": 1}, ["a", "b"]).take(3) == ["a", "a", "b"]
    assert make_schedule("round_robin", ["a", "b"]).take(3) == ["a", "b", "a"]
    assert make_schedule(lambda: iter("ab" * 5), ["a", "b"]).take(2) == ["a", "b"]
