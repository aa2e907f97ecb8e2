"""The docs: figures match the results files, links resolve, the README stays short."""
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path) -> set[str]:
    """GitHub-style anchors of a Markdown file's headings."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_every_figure_block_matches_its_results_file():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "render_docs.py"), "--check"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    blocks = sum(doc.read_text().count("<!-- figures:") for doc in DOCS)
    assert blocks >= 6  # sequences, training, stabilize, MovieLens stability, serving, service


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_resolve(doc):
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        assert file.exists(), f"{doc.name}: broken link {target}"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{doc.name}: no heading for #{anchor} in {file.name}"


def test_readme_is_short_and_has_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "make run" in text and "make test" in text


# How an issue's goal reads ("(target 10)", "target at most 2", "targets met"): not for users.
INTERNAL_GOAL = re.compile(r"\(target|\btargets? *(?:[:=<>]|at (?:most|least)|\d|(?:not )?met)", re.I)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_user_docs_state_no_internal_goals(doc):
    assert not INTERNAL_GOAL.findall(doc.read_text())
