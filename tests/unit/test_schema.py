"""The metrics schema: patterns match what they should, and the README shows the table as it is."""

from pathlib import Path

from genlab.schema import SCHEMA, entry, markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_patterns_match_names_and_alternatives_only():
    assert entry("eval/ood_auroc_inverted")[0] == "eval/ood_auroc_<set>"
    assert entry("eval/probe_accuracy_100_std")[0] == "eval/probe_accuracy_<n>_std"
    assert entry("eval/density")[0].startswith("eval/{density,")
    assert entry("eval/densities") is None and entry("test/made_up") is None
    assert entry("eval/ood_auroc_") is None  # a name part is not empty


def test_every_row_is_complete_and_of_a_known_kind():
    kinds = {"exact", "bound", "estimate", "kind", "info"}
    assert all(len(row) == 4 and row[2] in kinds and row[3] for row in SCHEMA)
    assert len({row[0] for row in SCHEMA}) == len(SCHEMA)


def test_readme_holds_the_table_as_printed():
    assert markdown() in README.read_text()
