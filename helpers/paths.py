"""Where things live in the repository, computed once from this file's location."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PROFILES_DIR = NOTEBOOKS_DIR / "profiles"
DATA_DIR = REPO_ROOT / "data"
TASKS_DIR = DATA_DIR / "tasks"
RESULTS_DIR = REPO_ROOT / "results"
SCREENSHOTS_DIR = REPO_ROOT / "screenshots"
DOCS_DIR = REPO_ROOT / "docs"


def results_dir(profile: str) -> Path:
    """The folder that holds one profile's outputs, created on first use."""
    path = RESULTS_DIR / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def profile_data_dir(profile: str) -> Path:
    """The folder that holds one profile's generated data (task suites, datasets)."""
    path = DATA_DIR / profile
    path.mkdir(parents=True, exist_ok=True)
    return path
