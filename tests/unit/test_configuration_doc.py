"""docs/configuration.md is generated from ENV_VARS in invsaga/runtime/config.py and kept current."""

import importlib.util
from pathlib import Path

from invsaga.runtime.config import ENV_VARS

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gen_config_doc.py"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_doc", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_doc_matches_env_vars():
    gen = _generator()
    expected = gen.render()
    current = gen.DOC.read_text(encoding="utf-8") if gen.DOC.exists() else ""
    assert current == expected, f"docs/configuration.md is out of date: run `{gen.COMMAND}` and commit the result"


def test_every_variable_has_a_row_with_a_default():
    rows = {
        line.split("|")[1].strip().strip("`"): line.split("|")[2].strip()
        for line in _generator().render().splitlines()
        if line.startswith("| `INVSAGA_")
    }
    assert list(rows) == list(ENV_VARS)
    unknown = [name for name, value in rows.items() if value in ("", "—")]
    assert not unknown, f"no default known for {unknown}: add them to SETTING or FIXED in scripts/gen_config_doc.py"
