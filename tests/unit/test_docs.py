"""The documents: the generated reference pages match the code, the README stays a short introduction that
shows its two commands first, every relative link leads somewhere, and no page carries tracker or commit
references (history is CHANGELOG.md's, told without them)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CHANGELOG = ROOT / "CHANGELOG.md"
README_MAX_LINES = 200


def _gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_docs", module)
    spec.loader.exec_module(module)
    return module


GEN = _gen_docs()


def _pages() -> list[Path]:
    return [README, CHANGELOG, *sorted((ROOT / "docs").rglob("*.md"))]


FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`+[^`\n]*`+")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> str:
    """The text without code blocks and code spans: links and headings there are not links and headings."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(path: Path) -> list[str]:
    return LINK.findall(_prose(path.read_text(encoding="utf-8")))


# --- the generated pages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", sorted(GEN.PAGES))
def test_the_generated_page_is_current(page):
    path = ROOT / page
    assert path.is_file(), f"{page} is missing: run python scripts/gen_docs.py"
    assert path.read_text(encoding="utf-8") == GEN.render_all()[page], (
        f"{page} is stale: the code it is generated from changed; run python scripts/gen_docs.py")


def test_the_check_names_a_stale_page(tmp_path):
    pages = GEN.render_all()
    for page, text in pages.items():
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text(text, encoding="utf-8")
    assert GEN.stale(tmp_path) == []
    edited, removed = sorted(pages)[0], sorted(pages)[-1]
    (tmp_path / edited).write_text(pages[edited] + "an edit by hand\n", encoding="utf-8")
    (tmp_path / removed).unlink()
    assert sorted(GEN.stale(tmp_path)) == [edited, removed]


def test_the_generated_pages_are_deterministic_and_hold_no_machine_path():
    first, second = GEN.render_all(), GEN.render_all()
    assert first == second
    for page, text in first.items():
        assert str(ROOT) not in text, page
        assert not re.search(r"\b20\d\d-\d\d-\d\d[ T]\d\d:\d\d", text), f"{page} holds a timestamp"


def test_every_knob_and_command_is_in_the_reference():
    from connbench.cli import build_parser
    from connbench.scenario.knobs import Knobs

    pages = GEN.render_all()
    for name in Knobs.model_fields:
        assert f"| `{name}` |" in pages["docs/reference/knobs.md"], name
    commands = re.search(r"\{([a-z,]+)\}", build_parser().format_usage()).group(1).split(",")
    for command in commands:
        assert f"## `connbench {command}`" in pages["docs/reference/cli.md"], command


# --- the README -----------------------------------------------------------------------------------------------


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the rest belongs in docs/"


def test_the_readme_shows_make_demo_and_make_test_first():
    text = README.read_text(encoding="utf-8")
    block = FENCE.search(text)
    assert block, "README.md has no command block"
    assert "\n## " not in text[: block.start()], "the two commands come before the first section"
    commands = [line.split("#", 1)[0].strip() for line in block.group(0).splitlines()[1:-1]]
    assert [c for c in commands if c][:2] == ["make demo", "make test"]


def test_the_readme_images_exist():
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", README.read_text(encoding="utf-8"))
    assert images, "README.md shows what the demo found as images"
    for image in images:
        assert (README.parent / image).is_file(), image


# --- links and references -------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(page):
    bad = []
    for target in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:: not ours to check
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor}")
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


ISSUE = re.compile(r"\bissues?\s*#?\d+", re.I)
SESSION = re.compile(r"\bsessions?\s*#?\d+\b", re.I)
COMMIT = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b", re.I)


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_names_an_issue_a_session_or_a_commit(page):
    text = page.read_text(encoding="utf-8")
    found = [m.group(0) for pattern in (ISSUE, SESSION, COMMIT) for m in pattern.finditer(text)]
    assert not found, f"{page.relative_to(ROOT)} names {found[:5]}: describe the change instead"


def test_the_reference_patterns_catch_what_they_are_for():
    assert ISSUE.search("as measured in issue 15") and ISSUE.search("Issue #7")
    assert SESSION.search("the same script (session 2)")
    assert COMMIT.search("before commit 2d77275") and COMMIT.search("0abac058c16a584908735f1726a2fa7fc92694f0")
    assert not COMMIT.search("1796309905 and 10000000 and decade")  # digits alone or letters alone: not a hash
    assert not SESSION.search("120 sessions/s") and not ISSUE.search("issues with the pool")
