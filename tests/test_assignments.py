"""The graded assignments (assignments/) make the full nbgrader round trip, headless.

In a temporary copy of the course directory, nbgrader's own tools produce the student version
(`generate_assignment`) and the solution version (`generate_solution`) of every assignment;
`autograde` then grades two submissions of each: the solution, which must score full marks,
and the released student version unchanged, which must fail every graded test. A third
submission of the stride scheduler, with a mistake only the hidden tests catch, proves they
are restored and graded. The scores are read back from nbgrader's gradebook.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

nbgrader = pytest.importorskip("nbgrader", reason="nbgrader is in the test extra: pip install -e '.[test]'")

from nbgrader.api import Gradebook  # noqa: E402
from nbgrader.apps import NbGraderAPI  # noqa: E402
from nbgrader.converters import GenerateSolution  # noqa: E402
from nbgrader.coursedir import CourseDirectory  # noqa: E402
from nbgrader.preprocessors import ClearMarkScheme, ClearOutput, IncludeHeaderFooter, LockCells  # noqa: E402
from traitlets.config.loader import PyFileConfigLoader  # noqa: E402

ASSIGNMENTS_DIR = Path(__file__).resolve().parents[1] / "assignments"
ASSIGNMENTS = ("stride-scheduler", "rtc-device", "dirty-tracking")
TIE_BY_ID = "key=lambda vm: (self._pass.get(vm.name, 0), vm.id)"
TIE_BY_ORDER = "key=lambda vm: self._pass.get(vm.name, 0)"
GENERATED = ("release", "solution", "submitted", "autograded", "feedback", "gradebook.db", ".ipynb_checkpoints")

pytestmark = [
    pytest.mark.slow,
    # nbgrader's own gradebook code trips SQLAlchemy's autoflush warnings; not ours to fix.
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning"),
]


def source_notebook(name: str) -> nbformat.NotebookNode:
    return nbformat.read(ASSIGNMENTS_DIR / "source" / name / f"{name}.ipynb", as_version=4)


def cells_of(nb, kind: str) -> list:
    """The cells whose nbgrader metadata says `kind` ("grade" or "solution")."""
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get(kind)]


# -- the source notebooks: cheap checks, no kernel ---------------------------------------------
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_source_notebooks_are_nbgrader_assignments(name):
    """Each has instructions, solution regions, and autograded tests with points, visible and hidden."""
    nb = source_notebook(name)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# Assignment:")
    solutions = cells_of(nb, "solution")
    assert solutions and all("### BEGIN SOLUTION" in c.source and "### END SOLUTION" in c.source for c in solutions)
    tests = cells_of(nb, "grade")
    assert len(tests) >= 3 and all(c.metadata.nbgrader["points"] > 0 for c in tests)
    for cell in tests:
        visible, _, hidden = cell.source.partition("### BEGIN HIDDEN TESTS")
        assert "assert" in visible and "assert" in hidden and "### END HIDDEN TESTS" in hidden, cell.metadata.nbgrader
    ids = [c.metadata.nbgrader["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids)), "grade ids are unique within a notebook"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_source_notebooks_are_committed_without_outputs(name):
    """A student opens a clean notebook, and diffs stay readable."""
    nb = source_notebook(name)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


# -- the round trip -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Generate, submit (solution and unchanged student version) and autograde every assignment."""
    course = tmp_path_factory.mktemp("course")
    shutil.copytree(ASSIGNMENTS_DIR, course, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*GENERATED))
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    db_url = f"sqlite:///{course / 'gradebook.db'}"
    config.CourseDirectory.db_url = db_url
    # The solution version is graded below by autograde, which runs it: no need to run it twice.
    config.GenerateSolution.preprocessors = [IncludeHeaderFooter, LockCells, ClearOutput, ClearMarkScheme]
    coursedir = CourseDirectory(config=config)
    api = NbGraderAPI(coursedir, config=config)
    for name in ASSIGNMENTS:
        result = api.generate_assignment(name)
        assert result["success"], result.get("error") or result.get("log")
        coursedir.assignment_id = name
        GenerateSolution(coursedir=coursedir, config=config).start()
        for student, version in (("key", "solution"), ("blank", "release")):
            submitted = course / "submitted" / student / name
            submitted.mkdir(parents=True)
            shutil.copy(course / version / name / f"{name}.ipynb", submitted / f"{name}.ipynb")
            result = api.autograde(name, student)
            assert result["success"], result.get("error") or result.get("log")
    # A plausible mistake that every visible assert misses: ties broken by list order, not vm.id.
    nb = nbformat.read(course / "solution" / "stride-scheduler" / "stride-scheduler.ipynb", as_version=4)
    (cell,) = [c for c in cells_of(nb, "solution") if TIE_BY_ID in c.source]
    cell.source = cell.source.replace(TIE_BY_ID, TIE_BY_ORDER)
    (course / "submitted" / "tie" / "stride-scheduler").mkdir(parents=True)
    nbformat.write(nb, course / "submitted" / "tie" / "stride-scheduler" / "stride-scheduler.ipynb")
    result = api.autograde("stride-scheduler", "tie")
    assert result["success"], result.get("error") or result.get("log")
    scores = {}
    with Gradebook(db_url) as gb:
        submissions = [(n, student) for n in ASSIGNMENTS for student in ("key", "blank")] + [("stride-scheduler", "tie")]
        for name, student in submissions:
            sub = gb.find_submission(name, student)
            nb = gb.find_submission_notebook(name, name, student)
            scores[name, student] = {
                "score": sub.score,
                "max_score": sub.max_score,
                "tests": {g.name: (g.score, g.max_score) for g in nb.grades},
            }
    return course, scores


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_student_version_is_made_by_nbgrader_without_solutions_or_hidden_tests(graded, name):
    """The released notebook has stubs where the solution was, and only the visible tests."""
    course, _ = graded
    released = nbformat.read(course / "release" / name / f"{name}.ipynb", as_version=4)
    text = "\n".join(c.source for c in released.cells)
    assert "### BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert "raise NotImplementedError()" in text
    solution = nbformat.read(course / "solution" / name / f"{name}.ipynb", as_version=4)
    assert "raise NotImplementedError()" not in "\n".join(c.source for c in solution.cells)


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_solution_scores_full_marks(graded, name):
    """Autograding the solution gives every test its points, hidden tests included."""
    course, scores = graded
    key = scores[name, "key"]
    assert key["max_score"] >= 5 and key["score"] == key["max_score"], key
    autograded = nbformat.read(course / "autograded" / "key" / name / f"{name}.ipynb", as_version=4)
    assert all("BEGIN HIDDEN TESTS" in c.source for c in cells_of(autograded, "grade")), "hidden tests ran"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_unchanged_student_version_fails_every_graded_test(graded, name):
    """The released version, submitted as it is, scores 0 on every autograded test."""
    _, scores = graded
    blank = scores[name, "blank"]
    assert blank["max_score"] == scores[name, "key"]["max_score"]
    assert blank["score"] == 0 and all(score == 0 for score, _ in blank["tests"].values()), blank


def test_hidden_tests_catch_what_the_visible_ones_miss(graded):
    """A stride policy breaking ties by list order passes every visible assert but loses Part 1's points."""
    _, scores = graded
    tie = scores["stride-scheduler", "tie"]
    assert tie["tests"]["test_pick_charge"] == (0, 2), tie
    assert tie["score"] == tie["max_score"] - 2, tie
