"""Reward expressions: evaluated on whole columns, restricted to names and listed functions."""

import numpy as np
import pandas as pd
import pytest

from healthgym.rl.rewards import Reward

NOW = pd.DataFrame({"MAP": [70.0, 60.0, np.nan], "unit": ["ICU", "CCU", "ICU"]})
NEXT = pd.DataFrame({"MAP": [64.0, 80.0, 50.0], "unit": ["ICU", "ICU", "ICU"]})
LAST = np.array([False, False, True])


def test_expressions_over_now_next_and_last():
    assert Reward("-(MAP_next < 65)", ["MAP", "unit"])(NOW, NEXT, LAST).tolist() == [-1, 0, -1]
    up = Reward("MAP_next - MAP", ["MAP"])(NOW, NEXT, LAST)
    assert up[:2].tolist() == [-6, 20] and np.isnan(up[2])
    assert Reward("where(unit == 'CCU', 1, 0) + 10 * last", ["MAP", "unit"])(
        NOW, NEXT, LAST
    ).tolist() == [0, 1, 10]
    assert Reward(lambda now, nxt: nxt["MAP"] > now["MAP"], ["MAP"])(NOW, NEXT, LAST).tolist() == [
        0,
        1,
        0,
    ]


@pytest.mark.parametrize(
    "expr, match",
    [
        ("__import__('os').system('echo hi')", "names"),
        ("MAP.__class__", "attributes"),
        ("BP_next < 65", r"names \['BP_next'\]"),
        ("MAP <", "not an expression"),
        ("", "an expression"),
    ],
)
def test_anything_but_an_expression_over_the_variables_is_refused(expr, match):
    with pytest.raises(ValueError, match=match):
        Reward(expr, ["MAP"])


def test_the_documented_operators_work_on_columns():
    """Issue 29: and/or/not element by element, powers, levels compared by name, chains."""
    names = ["MAP", "unit"]
    r = Reward("(MAP_next < 65) and (unit == 'ICU')", names)(NOW, NEXT, LAST)
    assert r.tolist() == [1, 0, 1]
    assert Reward("(MAP_next > 70) or last", names)(NOW, NEXT, LAST).tolist() == [0, 1, 1]
    assert Reward("not (unit != 'ICU')", names)(NOW, NEXT, LAST).tolist() == [1, 0, 1]
    assert Reward("-(MAP_next - 60) ** 2", names)(NOW, NEXT, LAST).tolist() == [-16, -400, -100]
    assert Reward("60 <= MAP_next < 70", names)(NOW, NEXT, LAST).tolist() == [1, 0, 0]


@pytest.mark.parametrize(
    "expr, match",
    [
        ("[x for x in MAP]", "ListComp is not allowed"),
        ("MAP ** MAP", "exponent of \\*\\* must be a number"),
        ("3999999**3999999*3999999**3999999", "exponents are at most 16"),
        ("exp(x=MAP)", "keyword is not allowed"),
        ("'a' + 'b'" + " + 'c'" * 2000, "at most 2000"),
    ],
)
def test_unsafe_or_unbounded_constructs_are_refused_up_front(expr, match):
    with pytest.raises(ValueError, match=match):
        Reward(expr, ["MAP"])


def test_arithmetic_on_levels_names_the_column_and_stays_small():
    import time

    for expr in ("((((unit*30)*30)*30)*30)*30", "unit + 1", "unit < 'X'"):
        began = time.monotonic()
        with pytest.raises(ValueError, match="unit holds levels \\(text\\)"):
            Reward(expr, ["MAP", "unit"])(NOW, NEXT, LAST)
        assert time.monotonic() - began < 5  # bounded: no string grows, whatever the load
