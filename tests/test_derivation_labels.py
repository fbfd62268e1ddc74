"""The equation labels of docs/derivation.md and the code that cites them agree, both ways.

* Every label cited anywhere in npvae/ (``Eq. (D1)``, ``Eqs. (A1)-(A6)``, a comment ``# (K1)``) is defined
  in docs/derivation.md, as a heading ``### (D1) ...`` (which gives it an anchor).
* Every label defined there is cited somewhere in npvae/: no section describes code that does not exist.
* Every backward function in npvae/ (a function or method whose name contains "backward") cites its
  equation in its docstring, or delegates in its first words to one that does (``:meth:`backward` without
  the checks``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DERIVATION = ROOT / "docs" / "derivation.md"
SOURCES = sorted((ROOT / "npvae").rglob("*.py"))
LABEL = r"[A-Z]{1,2}\d"  # (D1), (IW2), (DB1); not (ILP64)
CITE = re.compile(rf"\(({LABEL})\)(?:\s*[-–]\s*\(({LABEL})\))?")


def defined() -> list[str]:
    return re.findall(rf"^#{{2,4}} \(({LABEL})\)", DERIVATION.read_text(), flags=re.MULTILINE)


def expand(first: str, last: str | None) -> list[str]:
    """``A1``, ``A6`` -> ``A1 .. A6``: a range of one letter prefix."""
    if last is None:
        return [first]
    p1, n1 = re.match(r"([A-Z]+)(\d+)", first).groups()
    p2, n2 = re.match(r"([A-Z]+)(\d+)", last).groups()
    assert p1 == p2 and int(n1) < int(n2), f"bad range ({first})-({last})"
    return [f"{p1}{i}" for i in range(int(n1), int(n2) + 1)]


def cited() -> dict[str, list[str]]:
    """label -> the files citing it."""
    out: dict[str, list[str]] = {}
    for path in SOURCES:
        for m in CITE.finditer(path.read_text()):
            for label in expand(m.group(1), m.group(2)):
                out.setdefault(label, []).append(str(path.relative_to(ROOT)))
    return out


def test_labels_are_defined_once():
    labels = defined()
    assert len(labels) == len(set(labels)), sorted(label for label in labels if labels.count(label) > 1)
    for needed in ("D1", "A1", "A6", "R1", "K1", "B1", "G1", "E1", "E2", "O1", "O2", "C1", "H1", "V1", "IW1",
                   "IW2", "L1", "W1", "DB1", "U1"):
        assert needed in labels, needed


def test_every_label_cited_in_the_code_is_defined():
    missing = {label: files for label, files in cited().items() if label not in defined()}
    assert not missing, f"cited in npvae/ but not a heading of docs/derivation.md: {missing}"


def test_every_defined_label_is_cited_in_the_code():
    uncited = [label for label in defined() if label not in cited()]
    assert not uncited, f"defined in docs/derivation.md but cited nowhere in npvae/: {uncited}"


def _backward_functions():
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "backward" in node.name:
                yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", ast.get_docstring(node) or ""


@pytest.mark.parametrize("where, doc", list(_backward_functions()), ids=lambda v: v if " " in str(v) else "")
def test_every_backward_function_cites_its_equation(where, doc):
    delegates = doc.startswith(":meth:`backward`")
    assert delegates or CITE.search(doc), f"{where}: the docstring cites no equation of docs/derivation.md"
