"""Generated docs must match the code they are generated from."""

from pathlib import Path

from itersg.cli.docs_gen import configuration_markdown, stale_docs
from itersg.config import params_schema

ROOT = Path(__file__).resolve().parents[1]


def test_generated_docs_are_current():
    assert stale_docs(ROOT) == [], "run `itersg docs` and commit the result"


def test_configuration_doc_lists_every_schema_key():
    text = configuration_markdown()
    schema = params_schema()
    for section in ("data", "train", "loss", "evaluate"):
        ref = schema["properties"][section]["$ref"].rsplit("/", 1)[-1]
        for key in schema["$defs"][ref]["properties"]:
            assert f"`{section}.{key}`" in text


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    for target in ("docs/reproduce.md", "docs/configuration.md", "docs/cli.md", "docs/troubleshooting.md",
                   "docs/benchmarks.md"):
        assert target in readme
        assert (ROOT / target).exists(), target
