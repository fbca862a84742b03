"""Statistics over seeds (moopt.runner.stats): properties, closed forms, and recomputation
of the bootstrap distribution by full enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moopt.runner import stats as S

values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
samples = st.lists(values, min_size=2, max_size=12)
FAST = {"n_resamples": 999}  # properties that do not depend on the resample count


@settings(max_examples=40, deadline=None)
@given(samples)
def test_interval_contains_the_mean(xs):
    iv = S.mean_interval(xs, **FAST)
    scale = 1e-12 * max(1.0, max(abs(x) for x in xs))
    assert iv.n == len(xs)
    assert iv.estimate == pytest.approx(float(np.mean(xs)), rel=1e-12, abs=scale)
    assert iv.low - scale <= iv.estimate <= iv.high + scale
    assert min(xs) - scale <= iv.low and iv.high <= max(xs) + scale


@settings(max_examples=25, deadline=None)
@given(samples, st.randoms(use_true_random=False))
def test_permuting_the_seeds_changes_nothing(xs, rnd):
    ys = [x + 0.5 * i for i, x in enumerate(xs)]
    order = list(range(len(xs)))
    rnd.shuffle(order)
    assert S.mean_interval([xs[i] for i in order], **FAST) == S.mean_interval(xs, **FAST)
    assert (S.paired_difference([xs[i] for i in order], [ys[i] for i in order], **FAST)
            == S.paired_difference(xs, ys, **FAST))


@settings(max_examples=40, deadline=None)
@given(samples)
def test_identical_configurations_differ_by_exactly_zero(xs):
    cmp = S.paired_difference(xs, list(xs), **FAST)
    assert cmp.difference == S.Interval(0.0, 0.0, 0.0, len(xs))
    assert (cmp.wins, cmp.losses, cmp.ties, cmp.p_value) == (0, 0, len(xs), 1.0)
    assert cmp.covers_zero


@settings(max_examples=30, deadline=None)
@given(samples, st.floats(min_value=-100, max_value=100), st.floats(min_value=0.1, max_value=10))
def test_shift_and_scale_move_the_interval_with_the_data(xs, shift, scale):
    iv = S.mean_interval(xs, **FAST)
    moved = S.mean_interval([scale * x + shift for x in xs], **FAST)
    tol = 1e-9 * (1 + abs(shift) + scale * max(abs(x) for x in xs))
    assert moved.low == pytest.approx(scale * iv.low + shift, abs=tol)
    assert moved.high == pytest.approx(scale * iv.high + shift, abs=tol)


def test_same_inputs_same_interval_and_the_seed_is_used():
    xs = [0.31, 0.92, 0.15, 0.67, 0.48, 0.77]
    first = S.mean_interval(xs)
    assert S.mean_interval(list(xs)) == first
    other = S.mean_interval(xs, seed=1)
    assert S.mean_interval(xs, seed=1) == other
    assert (other.low, other.high) != (first.low, first.high)


def test_one_seed_has_no_interval_and_rules_nothing_out():
    iv = S.mean_interval([0.7])
    assert (iv.estimate, iv.low, iv.high, iv.n) == (0.7, None, None, 1)
    assert iv.covers(0.0) and iv.covers(123.0) and not iv.has_interval
    cmp = S.paired_difference([0.7], [0.9])
    assert cmp.difference.low is None and cmp.covers_zero
    assert (cmp.wins, cmp.p_value) == (1, 1.0)


def test_constant_values_give_a_degenerate_interval():
    iv = S.mean_interval([0.25] * 5)
    assert (iv.low, iv.high) == (iv.estimate, iv.estimate) == (0.25, 0.25)


def test_non_finite_values_give_no_interval():
    iv = S.mean_interval([1.0, float("nan"), 2.0])
    assert math.isnan(iv.estimate) and iv.low is None
    assert S.paired_difference([1.0, 2.0], [float("inf"), 3.0]).p_value is None


def test_two_seeds_interval_is_their_range():
    # Resampled means of (a, b) are a, (a+b)/2, b with probabilities 1/4, 1/2, 1/4: the
    # 2.5 % and 97.5 % quantiles are a and b.
    iv = S.mean_interval([3.0, 1.0])
    assert (iv.low, iv.high) == (1.0, 3.0)


def _exact_bootstrap_quantiles(xs: list[float], probs: list[float]) -> list[float]:
    """Quantiles of the exact bootstrap distribution of the mean: all n^n resamples."""
    n = len(xs)
    means = sorted(sum(xs[i] for i in idx) / n for idx in itertools.product(range(n), repeat=n))
    return [means[min(len(means) - 1, int(p * len(means)))] for p in probs]


@pytest.mark.parametrize("xs", [[0.1, 0.5, 0.2, 0.9, 0.35], [2.0, 2.0, 7.0, 1.0, 4.5],
                                [0.0, 0.0, 0.0, 0.0, 1.0]])
def test_monte_carlo_quantiles_match_the_enumerated_bootstrap(xs):
    # 9,999 resamples put the 2.5 % quantile within about 0.5 % of probability of the
    # exact one: between the exact 1.5 % and 3.5 % quantiles.
    lo15, lo35, hi965, hi985 = _exact_bootstrap_quantiles(xs, [0.015, 0.035, 0.965, 0.985])
    iv = S.mean_interval(xs)
    assert lo15 - 1e-12 <= iv.low <= lo35 + 1e-12
    assert hi965 - 1e-12 <= iv.high <= hi985 + 1e-12


def test_large_sample_interval_matches_the_normal_closed_form():
    # For many seeds the bootstrap distribution of the mean is close to a normal with the
    # plug-in standard error sd_pop / sqrt(n).
    xs = np.random.default_rng(7).normal(5.0, 2.0, size=400)
    half = 1.959964 * xs.std(ddof=0) / math.sqrt(xs.size)
    iv = S.mean_interval(xs.tolist())
    assert iv.low == pytest.approx(xs.mean() - half, abs=0.08 * half)
    assert iv.high == pytest.approx(xs.mean() + half, abs=0.08 * half)


def test_signed_rank_closed_forms():
    # All n differences of one sign: two-sided exact p = 2 / 2^n.
    for n in range(1, 9):
        assert S.min_p_value(n) == pytest.approx(2.0 / 2**n)
        assert S.signed_rank_p(list(range(1, n + 1))) == pytest.approx(min(1.0, 2.0 / 2**n))
    assert S.signed_rank_p([0.0, 0.0]) == 1.0
    assert S.signed_rank_p([]) is None
    # One negative among five: ranks 1..5 with rank 1 negative: W- = 1, P(W- <= 1) = 2/32.
    assert S.signed_rank_p([-1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 * 2 / 32)


def test_paired_difference_counts_and_interval():
    cmp = S.paired_difference([1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 2.5, 3.0, 5.0, 4.0])
    assert (cmp.wins, cmp.losses, cmp.ties) == (3, 1, 1)
    assert cmp.difference.estimate == pytest.approx(0.2)
    assert not cmp.difference.covers(-1.0)
    assert cmp.as_dict()["covers_zero"] == cmp.covers_zero


def test_spread_closed_forms():
    # Every seed the same: the spread of the lr means is exact and the interval degenerate.
    iv = S.spread_interval([[1.0, 3.0, 2.0]] * 4)
    assert (iv.estimate, iv.low, iv.high, iv.n) == (2.0, 2.0, 2.0, 4)
    # A seed offset common to all lrs cancels in the spread of means.
    table = [[s + 1.0, s + 3.0] for s in (0.0, 0.4, 1.3, 2.2)]
    iv = S.spread_interval(table)
    assert (iv.low, iv.high) == pytest.approx((2.0, 2.0))
    same = S.paired_spread_difference(table, table)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    flatter = [[s + 1.0, s + 1.5] for s in (0.0, 0.4, 1.3, 2.2)]
    d = S.paired_spread_difference(table, flatter)
    assert d.estimate == pytest.approx(-1.5) and not d.covers(0.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(values, min_size=3, max_size=3), min_size=2, max_size=6),
       st.randoms(use_true_random=False))
def test_spread_is_permutation_invariant_and_contains_its_estimate(table, rnd):
    iv = S.spread_interval(table, **FAST)
    means = np.mean(np.asarray(table), axis=0)
    assert iv.estimate == pytest.approx(float(means.max() - means.min()), abs=1e-9)
    shuffled = list(table)
    rnd.shuffle(shuffled)
    assert S.spread_interval(shuffled, **FAST) == iv
    assert iv.low >= -1e-9


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="equal length"):
        S.paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="level must be in"):
        S.mean_interval([1.0, 2.0], level=1.5)
    with pytest.raises(ValueError, match="at least one seed"):
        S.mean_interval([])
    with pytest.raises(ValueError, match="two learning rates"):
        S.spread_interval([[1.0], [2.0]])
    with pytest.raises(ValueError, match="differ in shape"):
        S.paired_spread_difference([[1.0, 2.0]] * 3, [[1.0, 2.0]] * 2)


def test_differences_that_cancel_give_exactly_zero():
    # Summed left to right these give 1e16 + 1 = 1e16, ..., a mean of -0.25; exactly 0.
    values = [1e16, 1.0, -1e16, -1.0]
    assert float(np.mean(values)) != 0.0
    assert S.mean_interval(values).estimate == 0.0
    assert S.paired_difference([0.0] * 4, values).difference.estimate == 0.0
    assert S.mean_interval(values[::-1]).estimate == 0.0
