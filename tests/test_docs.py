"""The pages a reader follows: the README is a short front door whose course map links every notebook, every
relative link of the README, of docs/ and of the notebooks' text leads somewhere, and the tables the pipeline
writes hold the same text wherever their markers are."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

from helpers import paths
from helpers.course.course_map import COURSE_MAP_SECTION, NOTEBOOKS, course_map
from helpers.course.pipeline import discover_notebooks
from helpers.course.report import published_pages, section_text

README = paths.REPO_ROOT / "README.md"
MAX_README_LINES = 250
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
MARKER = re.compile(r"^<!-- ([\w.-]+):start -->$", re.M)


def _prose(markdown: str) -> str:
    """The text without code blocks and code spans, where a bracket is code, not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", markdown))


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a page: lower case, punctuation dropped, spaces as hyphens, and
    -1, -2 ... after a repeated one."""
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


def _markdown_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    return path.read_text()


def pages_to_check() -> list[Path]:
    return published_pages() + discover_notebooks()


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(_prose(_markdown_of(page))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not a file of the repository
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix in (".md", ".ipynb") and anchor not in anchors(_markdown_of(linked)):
            broken.append(f"{target}: no heading with the anchor #{anchor}")
    return broken


def test_the_anchors_are_githubs():
    text = "# Results and experiment log: `cpu-smollm2`, the default profile\n## A\n## A\n```\n# not a heading\n```"
    assert anchors(text) == {"results-and-experiment-log-cpu-smollm2-the-default-profile", "a", "a-1"}


def test_a_broken_link_or_anchor_is_found(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n")
    page.write_text("# Here\n[ok](other.md#other-page) [self](#here) [web](https://example.com) `[code](nowhere.md)`\n"
                    "[missing](gone.md) [bad anchor](other.md#elsewhere) ![figure](figures/none.svg)\n")
    assert broken_links(page) == ["gone.md: no such file", "other.md#elsewhere: no heading with the anchor #elsewhere",
                                  "figures/none.svg: no such file"]


@pytest.mark.parametrize("page", pages_to_check(), ids=lambda p: str(p.relative_to(paths.REPO_ROOT)))
def test_every_relative_link_resolves(page):
    assert not broken_links(page), f"{page.relative_to(paths.REPO_ROOT)}: {broken_links(page)}"


def test_the_readme_is_a_short_front_door_that_leads_to_every_page():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES, f"README.md has {len(text.splitlines())} lines"
    linked = {target.partition("#")[0] for target in LINK.findall(_prose(text))}
    unlinked = [p.name for p in sorted(paths.DOCS_DIR.glob("*.md")) if f"docs/{p.name}" not in linked]
    assert not unlinked, f"the README links no way to {unlinked}"


def test_the_course_map_links_every_notebook_and_describes_it():
    course = section_text(COURSE_MAP_SECTION, README)
    assert course is not None, f"README.md has no {COURSE_MAP_SECTION} markers"
    for notebook in discover_notebooks():
        assert f"(notebooks/{notebook.name})" in course, f"the course map does not link {notebook.name}"
        assert notebook.stem in NOTEBOOKS, f"add {notebook.stem} to NOTEBOOKS in helpers/course/course_map.py"


def test_the_course_map_shows_the_minutes_of_a_run_and_every_notebook_even_one_not_described():
    run = {"profile": "cpu-smollm2", "seconds": 600.0, "git_commit": "0123456789abcdef",
           "notebooks": [{"notebook": "00_world_tour", "seconds": 90.0}, {"notebook": "07_new", "seconds": 30.0}]}
    rows = course_map(run, cpus=2).splitlines()
    assert rows[2].startswith("| [00 World tour](notebooks/00_world_tour.ipynb) |") and "| 1.5 |" in rows[2]
    assert "| not run |" in rows[3]  # 01 was not in this run
    assert rows[-3].startswith("| [07 new](notebooks/07_new.ipynb) |  | 0.5 |")
    assert rows[-1] == "Minutes: the whole run of `cpu-smollm2` at commit `0123456789ab` on 2 CPU cores, 10.0 in all."


def test_a_table_written_into_several_pages_reads_the_same_in_each():
    holders: dict[str, dict[str, str]] = {}
    for page in published_pages():
        for name in MARKER.findall(page.read_text()):
            holders.setdefault(name, {})[page.name] = section_text(name, page)
    assert holders.get("results-cpu-smollm2", {}).keys() >= {"README.md", "results-cpu-smollm2.md"}
    differing = {name: sorted(texts) for name, texts in holders.items() if len(set(texts.values())) > 1}
    assert not differing, f"these sections differ between pages: {differing}"


def test_the_license_and_the_citation_file_agree():
    citation = yaml.safe_load((paths.REPO_ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["message"] and citation["title"]
    assert citation["authors"] and all(a.get("name") or a.get("family-names") for a in citation["authors"])
    assert (paths.REPO_ROOT / "LICENSE").read_text().startswith(f"{citation['license']} License")


def test_the_episode_figure_is_what_its_script_draws_today(tmp_path):
    """The README's figure is drawn from a real expert episode: a changed expert, world or example task shows
    here, and `python docs/figures/episode_figure.py` draws it again."""
    import subprocess
    import sys

    figure = paths.DOCS_DIR / "figures" / "episode.svg"
    drawn = tmp_path / "episode.svg"
    subprocess.run([sys.executable, str(paths.DOCS_DIR / "figures" / "episode_figure.py"), str(drawn)], check=True,
                   capture_output=True, timeout=120)
    assert drawn.read_bytes() == figure.read_bytes(), "the figure is stale: run docs/figures/episode_figure.py"
