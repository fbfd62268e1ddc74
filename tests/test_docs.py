"""Every Python code block of README.md and docs/*.md runs, in order, one test per block.

Sybil (https://sybil.readthedocs.io) parses the Markdown: a fenced block tagged ``python`` is executed,
the blocks of one document sharing one namespace as a reader's session would; other tags (``bash``,
``text``) are not run. A block that is only illustrative is preceded by Sybil's directive with its reason,
``<!-- skip: next "why" -->``, and a visible line saying it is not run; it is reported as skipped with that
reason. pytest's own doctest was not chosen: it runs only ``>>>`` sessions, and these blocks are programs
with their output in comments.

The blocks run in a temporary folder (README writes ``vae.npz``) except those of docs/*.md, which run from
the project's folder, as their relative paths assume. Downloads are disabled (the mirrors point at a
folder that does not exist), so a block that loads MNIST uses what is on disk or the offline 5,000 digits;
one that needs a data set absent from this machine is skipped, saying which.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from unittest import SkipTest

import pytest

import npvae

sybil = pytest.importorskip("sybil")
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser  # noqa: E402  (after the skip without sybil)

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SYBIL = sybil.Sybil(parsers=[PythonCodeBlockParser(), SkipParser()])
SHARED_DATA = Path(os.environ.get("NPVAE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _blocks() -> list[tuple[Path, int, int]]:
    """(document, index of the example, its line) for every Python block."""
    out = []
    for path in DOCUMENTS:
        for i, example in enumerate(SYBIL.parse(path)):
            if example.region.evaluator is not None and example.parsed is not None and \
                    type(example.region.evaluator).__name__ != "Skipper":
                out.append((path, i, example.line))
    return out


BLOCKS = _blocks()
_STATE: dict[Path, tuple[list, int]] = {}  # document -> (its examples, how many have been evaluated)


def _run_through(path: Path, index: int) -> None:
    """Evaluate the document's examples up to ``index`` (the earlier ones silently, once each)."""
    if path not in _STATE:
        _STATE[path] = (list(SYBIL.parse(path)), 0)
    examples, done = _STATE[path]
    if done > index:  # run again from the start: a fresh namespace
        examples, done = list(SYBIL.parse(path)), 0
    for i in range(done, index + 1):
        _STATE[path] = (examples, i + 1)
        try:
            examples[i].evaluate()
        except SkipTest:
            if i == index:
                raise
        except Exception:
            if i == index:
                raise
            pytest.fail(f"an earlier block of {path.name} (line {examples[i].line}) failed")


@pytest.fixture
def doc_env(tmp_path_factory, monkeypatch, request):
    path = request.node.callspec.params["path"]
    cwd = ROOT if path.parent == ROOT / "docs" else tmp_path_factory.mktemp(path.stem)
    monkeypatch.chdir(cwd)
    nowhere = (tmp_path_factory.getbasetemp() / "no-mirror-here").as_uri() + "/"
    monkeypatch.setenv("NPVAE_MNIST_MIRRORS", nowhere)
    monkeypatch.setenv("NPVAE_FASHION_MNIST_MIRRORS", nowhere)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if SHARED_DATA.is_dir():
        monkeypatch.setenv("NPVAE_DATA", str(SHARED_DATA))


@pytest.mark.parametrize("path, index, line", BLOCKS,
                         ids=[f"{p.relative_to(ROOT)}:{line}" for p, _, line in BLOCKS])
def test_block_runs(path, index, line, doc_env):
    try:
        _run_through(path, index)
    except SkipTest as exc:
        pytest.skip(f"{path.relative_to(ROOT)}:{line}: {exc}")
    except npvae.DataNotFoundError as exc:
        pytest.skip(f"{path.relative_to(ROOT)}:{line} needs data not on this machine: {exc.summary}")


FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_is_fenced_with_a_language_tag(path):
    """Every fenced block names its language, and every skip directive gives its reason and is visible."""
    lines = path.read_text().splitlines()
    inside = False
    for n, text in enumerate(lines, 1):
        m = FENCE.match(text)
        if m:
            if not inside:
                assert m.group(3).strip(), f"{path.name}:{n}: a fenced block without a language tag"
            inside = not inside
        elif "<!-- skip:" in text:
            assert re.search(r'skip: next "[^"]{10,}"', text), f"{path.name}:{n}: a skip without its reason"
            assert lines[n].startswith("*(") and "not run" in lines[n], \
                f"{path.name}:{n + 1}: a skipped block needs a visible line saying it is not run"


def test_readme_has_no_indented_code_blocks():
    """Indented code (four spaces after a blank line, outside lists) is what the fences replaced."""
    lines = (ROOT / "README.md").read_text().splitlines()
    inside = False
    for n, text in enumerate(lines, 1):
        if FENCE.match(text):
            inside = not inside
            continue
        prev = lines[n - 2] if n > 1 else ""
        if not inside and prev.strip() == "" and re.match(r"    \S", text) and not re.match(r"    [-*+] ", text):
            pytest.fail(f"README.md:{n}: indented code block; fence it with a language tag: {text.strip()!r}")


def test_every_python_block_is_collected():
    """The parser sees every ```python block (a block it missed would silently go unrun)."""
    for path in DOCUMENTS:
        fenced = len(re.findall(r"^```python\s*$", path.read_text(), flags=re.MULTILINE))
        assert fenced == sum(1 for p, _, _ in BLOCKS if p == path), path.name
