import math

import numpy as np
import pytest

from ftlab import costs
from ftlab.checks import WrongTypeError, number, positive_int, whole
from ftlab.rlhf import ppo
from ftlab.train import TrainConfig

WRONG_TYPES_FOR_INT = [True, False, 2.0, 2.5, "3", None, np.float32(2.0)]
WRONG_TYPES_FOR_NUMBER = [True, False, "0.5", None, [1.0]]


@pytest.mark.parametrize("value", WRONG_TYPES_FOR_INT)
@pytest.mark.parametrize("check", [lambda v: whole("steps", v, low=0), lambda v: positive_int("steps", v)])
def test_integer_checks_refuse_other_types_naming_the_argument(check, value):
    with pytest.raises(WrongTypeError, match=r"^steps must be an integer .*, got .*\(" + type(value).__name__):
        check(value)


@pytest.mark.parametrize("value", WRONG_TYPES_FOR_NUMBER)
def test_number_refuses_other_types_naming_the_argument(value):
    with pytest.raises(WrongTypeError, match=r"^alpha must be a finite number"):
        number("alpha", value, above=0)


def test_wrong_type_is_both_type_error_and_value_error():
    """Old callers caught ValueError for every bad value, TrainConfig's tests catch TypeError: both keep working."""
    assert issubclass(WrongTypeError, TypeError) and issubclass(WrongTypeError, ValueError)


@pytest.mark.parametrize("value, low, high, words", [
    (0, 1, None, "n must be an integer >= 1, got 0"),
    (-3, 0, None, "n must be an integer >= 0, got -3"),
    (5, 0, 4, r"n must be an integer in \[0, 4\], got 5"),
    (-1, 0, 4, r"n must be an integer in \[0, 4\], got -1"),
    (9, None, 8, "n must be an integer <= 8, got 9"),
])
def test_whole_refuses_out_of_range_with_a_value_error(value, low, high, words):
    with pytest.raises(ValueError, match=words) as info:
        whole("n", value, low, high)
    assert not isinstance(info.value, TypeError)  # the type was right; only the range was wrong


def test_positive_int_refuses_zero_and_negatives():
    for bad in (0, -1, np.int64(0)):
        with pytest.raises(ValueError, match="n_virtual_tokens must be an integer >= 1"):
            positive_int("n_virtual_tokens", bad)


def test_integer_checks_accept_numpy_integers_and_return_plain_ints():
    for got in (whole("k", np.int64(0), low=0, high=3), whole("k", np.int32(3), low=0, high=3),
                positive_int("k", np.uint8(7)), whole("k", -2)):
        assert type(got) is int
    assert positive_int("r", 8) == 8 and whole("k", np.int64(3), low=0, high=3) == 3


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float64("nan"), np.float32("inf")])
def test_number_refuses_nan_and_infinity_even_without_bounds(value):
    with pytest.raises(ValueError, match="lr must be a finite number, got"):
        number("lr", value)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        number("lr", value, above=0)


@pytest.mark.parametrize("value, bounds, words", [
    (0.0, dict(above=0), "p must be a finite number > 0, got 0.0"),
    (-0.1, dict(low=0), "p must be a finite number >= 0, got -0.1"),
    (1.0, dict(low=0, below=1), r"p must be a finite number in \[0, 1\), got 1.0"),
    (1.5, dict(low=0, high=1), r"p must be a finite number in \[0, 1\], got 1.5"),
    (0, dict(above=0, high=1), r"p must be a finite number in \(0, 1\], got 0"),
    (2, dict(high=1), "p must be a finite number <= 1, got 2"),
])
def test_number_refuses_out_of_range_saying_what_is_allowed(value, bounds, words):
    with pytest.raises(ValueError, match=words):
        number("p", value, **bounds)


def test_number_accepts_the_bounds_it_includes_and_returns_floats():
    assert number("p", 0, low=0, below=1) == 0.0 and number("p", 1, low=0, high=1) == 1.0
    assert type(number("p", 3)) is float and type(number("p", np.float32(0.5), above=0)) is float
    assert number("p", -1e300) == -1e300  # no bound given: any finite number


def test_number_refuses_two_lower_or_two_upper_bounds():
    with pytest.raises(TypeError, match="at most one lower bound"):
        number("p", 0.5, low=0, above=0)
    with pytest.raises(TypeError, match="one upper bound"):
        number("p", 0.5, high=1, below=1)


def test_hint_follows_the_message():
    with pytest.raises(ValueError, match=r"r must be an integer >= 1, got 0 \(the rank\)$"):
        positive_int("r", 0, "(the rank)")
    with pytest.raises(WrongTypeError, match=r"got 2.5 \(float\) \(the rank\)$"):
        positive_int("r", 2.5, "(the rank)")


# --- the callers: values the old hand-written checks let through ---------------------------------------------

@pytest.mark.parametrize("field, value", [("kl_coef", math.nan), ("cliprange", math.inf), ("gamma", True),
                                          ("temperature", math.nan), ("response_length", 24.0),
                                          ("num_mini_batches", 1.0)])
def test_ppo_config_refuses_nan_infinity_bool_and_float_counts(field, value):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        ppo.PPOConfig(**{field: value})


def test_ppo_config_stores_plain_types():
    cfg = ppo.PPOConfig(kl_coef=0, response_length=np.int64(8))
    assert type(cfg.kl_coef) is float and type(cfg.response_length) is int


@pytest.mark.parametrize("call, name", [(lambda: costs.storage_gb(math.inf, 2), "n_params"),
                                        (lambda: costs.Workload(requests_per_day=10, days=math.inf), "days"),
                                        (lambda: costs.storage_gb(1e9, True), "bytes_per_param")])
def test_costs_refuse_infinity_and_bool(call, name):
    with pytest.raises(ValueError, match=f"^{name} must be a finite number"):
        call()


def test_train_config_messages_keep_their_prefix_and_types():
    with pytest.raises(TypeError, match=r"^TrainConfig.steps must be an integer >= 1, got 3.0 \(float\)"):
        TrainConfig(steps=3.0)
    with pytest.raises(ValueError, match=r"^TrainConfig.micro_batch_size .* got 0 \(None: the whole batch at once\)"):
        TrainConfig(micro_batch_size=0)

