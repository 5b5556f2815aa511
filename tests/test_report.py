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
