import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdifftree.tasks.forecasting import ForecastTask
from specdifftree.tasks.serialize import Serializer, complete
from specdifftree.tasks.series import Series

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=1, max_size=40), st.integers(0, 4), st.sampled_from([", ", ";", " | "]))
def test_encode_parse_round_trip(values, decimals, sep):
    ser = Serializer(separator=sep, decimals=decimals)
    x = np.array(values)
    scale = ser.scale_for(x)
    text = ser.encode(x, scale)
    back, n_ok = ser.parse(text, len(x), scale)
    assert n_ok == len(x)
    # rounding to `decimals` in scaled units bounds the error
    assert np.all(np.abs(back - x) <= 0.5 * 10.0 ** (-decimals) * scale * (1 + 1e-9) + 1e-9 * np.abs(x))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789.,- x\n", max_size=60), st.integers(1, 10))
def test_parse_never_fails_and_counts(text, h):
    ser = Serializer()
    vals, n_ok = ser.parse(text, h, 2.0)
    assert vals.shape == (h,)
    assert n_ok == int(np.sum(~np.isnan(vals)))
    out = complete(vals, 7.0)
    assert np.all(np.isfinite(out))


def test_parse_rule_examples():
    ser = Serializer()
    vals, n = ser.parse("1.00, 2.50, abc, 4", 5, 10.0)
    assert n == 3
    assert np.allclose(vals[:2], [10.0, 25.0]) and np.isnan(vals[2]) and vals[3] == 40.0
    assert np.allclose(complete(vals, 99.0), [10, 25, 25, 40, 40])
    vals, n = ser.parse("", 3, 1.0)
    assert n == 0 and np.allclose(complete(vals, 5.0), [5, 5, 5])
    # extra values beyond the horizon are ignored
    vals, n = ser.parse("1, 2, 3, 4, 5", 2, 1.0)
    assert n == 2 and np.allclose(vals, [1, 2])


def test_forecast_task_marks_short_output_invalid_and_completes():
    s = Series("T1", np.arange(1.0, 25.0), np.arange(25.0, 29.0), horizon=4, period=12)
    task = ForecastTask(Serializer(), context_length=10)
    prompt = task.prompt_text(s)
    assert prompt.endswith(", ") and prompt.count(",") == 10
    scale = task.scale(s)
    good = task.parse(Serializer().encode(np.array([25.0, 26, 27, 28]), scale), s)
    assert good.valid and np.allclose(good.values, [25, 26, 27, 28], rtol=1e-3)
    short = task.parse(Serializer().encode(np.array([25.0, 26]), scale), s)
    assert not short.valid and short.n_parsed == 2
    assert np.allclose(short.values, [25, 26, 26, 26], rtol=1e-3)


@pytest.mark.parametrize("sep", ["", "  ", "1", ".", "-"])
def test_bad_separator_rejected(sep):
    with pytest.raises(ValueError):
        Serializer(separator=sep)


def test_chat_prompt_uses_the_tokenizer_template(tiny_lm):
    s = Series("T1", np.arange(1.0, 25.0), np.arange(25.0, 29.0), horizon=4, period=12)
    task = ForecastTask(Serializer(), context_length=6, chat=True)
    text = task.prompt_text(s, tiny_lm.tokenizer)
    assert text.startswith("user: Continue this time series") and text.endswith("assistant: ")
    assert "next 4 values" in text and Serializer().encode(task.context(s), task.scale(s)) in text
