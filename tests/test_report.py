"""The README sections written by the code: filled between their markers, whether empty or not."""
from helpers.course.report import timings_table, update_readme_section


def test_a_section_is_written_between_empty_markers_and_rewritten_in_place(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results-x:start -->\n<!-- results-x:end -->\noutro\n")
    assert update_readme_section("results-x", "| a |\n|---|", readme)
    assert readme.read_text() == "intro\n<!-- results-x:start -->\n| a |\n|---|\n<!-- results-x:end -->\noutro\n"
    assert update_readme_section("results-x", "| b |\n", readme)
    assert readme.read_text() == "intro\n<!-- results-x:start -->\n| b |\n<!-- results-x:end -->\noutro\n"
    assert not update_readme_section("results-y", "| c |", readme)


def test_the_timings_table_lists_every_notebook_and_the_whole_run():
    run = {"profile": "p", "seconds": 600.0, "git_commit": "abcdef1234567890", "finished_at": "2026-01-01T00:00:00",
           "python": "3.11", "notebooks": [{"notebook": "00_world_tour", "seconds": 60.0},
                                            {"notebook": "01_data_generation", "seconds": 540.0}]}
    table = timings_table(run)
    assert "| `00_world_tour` | 1.0 |" in table and "| `01_data_generation` | 9.0 |" in table
    assert "| **whole profile** | **10.0** |" in table and "`abcdef123456`" in table


def test_a_section_is_written_in_every_page_that_holds_its_markers(tmp_path, monkeypatch):
    from helpers import paths
    from helpers.course.report import pages_with_section, section_text

    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(paths, "DOCS_DIR", tmp_path / "docs")
    (tmp_path / "docs").mkdir()
    readme, page, other = tmp_path / "README.md", tmp_path / "docs" / "results.md", tmp_path / "docs" / "other.md"
    readme.write_text("a\n<!-- results-p:start -->\nold\n<!-- results-p:end -->\n")
    page.write_text("<!-- results-p:start -->\n<!-- results-p:end -->\nb\n")
    other.write_text("Quoted in a sentence, `<!-- results-p:start -->` and `<!-- results-p:end -->`\nare no section.\n")
    assert pages_with_section("results-p") == [readme, page]
    assert update_readme_section("results-p", "| new |")
    assert section_text("results-p", readme) == section_text("results-p", page) == "| new |"
    assert readme.read_text() == "a\n<!-- results-p:start -->\n| new |\n<!-- results-p:end -->\n"
    assert "are no section." in other.read_text() and section_text("results-p", other) is None
    assert not update_readme_section("results-q", "| x |")


def test_the_results_table_gains_the_chat_success_rate_of_each_model():
    import pandas as pd

    from helpers.course.report import markdown_table

    summaries = pd.DataFrame([
        {"model": m, "split": s, "tgc": t, "sgc": t, "mean_pass_pct": t}
        for m, t in (("sft_full", 79.5), ("base", 0.0), ("expert", 100.0)) for s in ("test_normal", "test_challenge")])
    chats = pd.DataFrame([{"model": "sft_full", "success_rate": 35.0}, {"model": "expert", "success_rate": 100.0},
                          {"model": "gpt-4o", "success_rate": 50.0}])
    lines = markdown_table(summaries, chats).splitlines()
    assert lines[0].endswith("| test_challenge pass % | chat success % |") and lines[1].count("---") == 8
    assert lines[2:] == ["| base | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 |  |",  # no chats evaluated: an empty cell
                         "| sft_full | 79.5 | 79.5 | 79.5 | 79.5 | 79.5 | 79.5 | 35.0 |",
                         "| expert | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |"]
    assert "chat" not in markdown_table(summaries)  # without chat summaries, the table of earlier runs
    chats["asked_rate_missing"] = [0.0, 100.0, None]  # summaries that count questions gain a column
    lines = markdown_table(summaries, chats).splitlines()
    assert lines[0].endswith("| chat success % | chats lacking a detail: asked % |") and lines[1].count("---") == 9
    assert lines[2:] == ["| base | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 |  |  |",
                         "| sft_full | 79.5 | 79.5 | 79.5 | 79.5 | 79.5 | 79.5 | 35.0 | 0.0 |",
                         "| expert | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |"]
