"""docs/config.md is generated from the schema; this fails when it is stale."""

from pathlib import Path

from llmctl.schema import Experiment
from llmctl.schema_docs import schema_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_docs_config_md_is_current():
    expected = schema_markdown()
    actual = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/config.md is stale: run `llmctl config schema > docs/config.md`"


def test_every_field_has_a_description():
    def walk(model, prefix):
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, f"{prefix}.{name}")

    walk(Experiment, "")
