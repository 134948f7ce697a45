"""The schema's `rows` block: inferred where the data show it, written and read back as YAML,
declarations checked, and a table that breaks it refused before training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

import healthgym as hg
from healthgym.data.inference import infer_schema
from healthgym.data.row_rules import RowRules, check_rows
from healthgym.datasets.known_mdp import known_mdp_cohort
from healthgym.datasets.pk_oral import pk_oral
from helpers import one_line_error, run


def test_inferred_where_the_data_show_it() -> None:
    pk = infer_schema(pk_oral(200).table, "pid", "step")
    assert pk.rows == RowRules(exclusive=(("DOSE", "CONC"),))
    stays = infer_schema(known_mdp_cohort(600).table, "stay", "step")
    assert stays.rows.last == ("died=1", "discharged=1")
    assert ("Treat", "died=1") in stays.rows.exclusive and ("Treat=0", "died=1") not in (
        stays.rows.exclusive
    )
    demo = infer_schema(hg.datasets.demo().table, "RecordID", "step")
    assert demo.rows.exclusive == (("RespRate", "MechVent=1"),)
    # an admission row that only weighs the patient: no single item marks it, the whole row
    assert ("MechVent=0", "Weight") in demo.rows.first_patterns
    assert not demo.rows.last_patterns and not stays.rows.last_patterns  # items place those
    assert RowRules.from_dict(yaml.safe_load(yaml.safe_dump(demo.rows.to_dict()))) == demo.rows


def test_printed_by_healthgym_schema_and_read_back(tmp_path: Path) -> None:
    pk_oral(200).to_csv(tmp_path / "pk.csv")
    r = run("schema", tmp_path / "pk.csv", "--id", "pid", "--time", "step")
    assert r.exit_code == 0, r.output
    assert "rows:\n  exclusive:\n  - [DOSE, CONC]\n" in r.output
    (tmp_path / "pk.yaml").write_text(r.output)
    assert hg.Schema.from_yaml(tmp_path / "pk.yaml").rows == RowRules((("DOSE", "CONC"),))


@pytest.mark.parametrize(
    "rows, message",
    [
        ({"exclusive": [["DOSE", "NOPE"]]}, "names no dynamic variable"),
        ({"exclusive": [["DOSE", "WT"]]}, "names no dynamic variable"),  # a static
        ({"exclusive": [["SEX=F", "CONC"]]}, "names no dynamic variable"),
        ({"exclusive": [["DOSE", "DOSE"]]}, "both items are of one variable"),
        ({"exclusive": [["CONC=3", "DOSE"]]}, "CONC has no level"),
        ({"last": ["CONC"], "first": ["CONC"]}, "both last-only and first-only"),
        ({"exclusive": ["DOSE"]}, "pairs"),
        ({"kinds": []}, "unknown keys ['kinds']"),
        ({"first_patterns": ["DOSE"]}, "list of [item, ...] rows"),
        ({"first_patterns": [["CONC", "DOSE=100"]]}, "DOSE has no level"),
        ({"last_patterns": [["CONC"]], "first_patterns": [["CONC"]]}, "both last-only"),
    ],
)
def test_bad_declarations_are_named(rows: dict, message: str) -> None:
    d = pk_oral(20).schema.to_dict() | {"rows": rows}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        hg.Schema.from_dict(d)


def test_a_table_that_breaks_the_rules_is_refused_before_training(tmp_path: Path) -> None:
    cohort = pk_oral(60)
    table = cohort.table.copy()
    table.loc[table.index[1], "DOSE"] = 100.0  # a sample row now also holds a dose
    schema = cohort.schema
    schema_dict = schema.to_dict() | {"rows": {"exclusive": [["DOSE", "CONC"]]}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(schema_dict))
    table.to_csv(tmp_path / "pk.csv", index=False)
    r = run("train", tmp_path / "pk.csv", "--schema", tmp_path / "s.yaml", "--out",
            tmp_path / "run", "--max-minutes", 1)  # fmt: skip
    one_line_error(r, "DOSE and CONC together in 1 rows (stays 0)")
    assert not (tmp_path / "run").exists()
    outcome = pd.DataFrame({"id": [1, 1, 2, 2], "t": [0, 1, 0, 1], "x": [1.0, 2.0, 3.0, 4.0],
                            "died": [1, 0, 0, 1]})  # fmt: skip
    rules = hg.Cohort(outcome, id="id", time="t").schema
    rules = hg.Schema(rules.id, rules.time, rules.variables, RowRules(last=("died=1",)))
    with pytest.raises(ValueError, match="died=1 before a stay's last row in 1 rows"):
        check_rows(outcome, rules)
    rules = hg.Schema(
        rules.id, rules.time, rules.variables, RowRules(first_patterns=(("x", "died=0"),))
    )
    with pytest.raises(ValueError, match=r"exactly \['x', 'died=0'\] after a stay's first row"):
        check_rows(outcome, rules)  # the second row of stay 1
