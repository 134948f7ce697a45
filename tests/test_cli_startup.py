"""Start-up (issue 18): the command and `import healthgym` load no heavy module until a verb
or a name needs it. Checked on sys.modules in a fresh interpreter, not timed."""

import json
import subprocess
import sys

HEAVY = ("torch", "pandas", "scipy", "matplotlib", "sklearn")


def _modules_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_command_and_its_help_import_no_heavy_module():
    code = (
        "import healthgym.cli\n"
        "try:\n"
        "    healthgym.cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass"
    )
    loaded = _modules_after(code)
    assert not [m for m in HEAVY if m in loaded]


def test_import_healthgym_is_light_and_its_names_load_on_use():
    assert "torch" not in _modules_after("import healthgym")
    loaded = _modules_after(
        "import healthgym as hg\n"
        "assert hg.HealthGym.name == 'healthgym' and callable(hg.load)\n"
        "assert hg.datasets.demo and hg.Cohort and hg.evaluate\n"
        "from healthgym import Cohort, Schema, infer_schema\n"
        "assert 'HealthGym' in dir(hg)"
    )
    assert "torch" in loaded


def test_unknown_names_are_attribute_errors():
    import pytest

    import healthgym as hg
    import healthgym.models as models

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        hg.nothing  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        models.nothing  # noqa: B018
