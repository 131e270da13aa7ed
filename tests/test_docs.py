"""Every python example in docs/*.md runs as written, so the docs cannot rot.

A page's blocks run in order in one namespace (a page reads like a notebook), in a temporary
working directory. The README's "Python API" block needs the shipped Breakout agent: it runs when
``agents/breakout_ppo.zip`` exists and is skipped otherwise, or when an ``<!-- no-test -->``
comment precedes it. Docs pages have no such escape.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
NO_TEST = "<!-- no-test -->"


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, code, marked no-test) of each ```python block."""
    found = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip()
        found.append((text.count("\n", 0, match.start()) + 1, match.group(1), before.endswith(NO_TEST)))
    return found


def run_blocks(blocks: list[tuple[int, str, bool]], source: str) -> None:
    namespace: dict = {"__name__": "__docs__"}
    for line, code, _ in blocks:
        exec(compile(code, f"{source}:{line}", "exec"), namespace)


def test_the_feature_pages_exist():
    assert {"api.md", "wrappers.md", "callback.md"} <= {page.name for page in PAGES}


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_doc_examples_run(page, tmp_path, monkeypatch):
    blocks = python_blocks(page.read_text())
    if not blocks:
        pytest.skip(f"{page.name} has no python examples")
    monkeypatch.chdir(tmp_path)
    run_blocks(blocks, page.name)


def test_readme_python_api_block(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Python API\n(.*?)(?=^## |\Z)", readme, re.DOTALL | re.MULTILINE)
    assert section, "the README has no '## Python API' section"
    blocks = python_blocks(section.group(1))
    assert len(blocks) == 1
    if blocks[0][2]:
        pytest.skip("the README's Python API block is marked no-test")
    if not (ROOT / "agents" / "breakout_ppo.zip").exists():
        pytest.skip("agents/breakout_ppo.zip is not there yet")
    (tmp_path / "agents").symlink_to(ROOT / "agents")  # the block's relative paths, outputs in tmp
    monkeypatch.chdir(tmp_path)
    run_blocks(blocks, "README.md")
