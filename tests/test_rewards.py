"""Reward expressions: evaluated on whole columns, restricted to names and listed functions."""

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("simpleeval")
from healthgym.rl.rewards import Reward  # noqa: E402

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
