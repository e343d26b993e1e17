"""The graded assignments (assignments/) make the full nbgrader round trip, headless.

In a temporary copy of the course directory, nbgrader's own command line, as an instructor
runs it, produces the student version (`generate_assignment`) and the solution version
(`generate_solution`) of every assignment; `autograde` then grades two submissions of each:
the solution, which must score full marks, and the released student version unchanged, which
must fail every graded test. A third submission of the stride scheduler, with a mistake only
the hidden tests catch, proves they are restored and graded. The scores are read back from
nbgrader's gradebook, and no nbgrader command may print a warning.

Then each released notebook, copied alone into an empty folder, runs against labvmm
installed from a wheel (no checkout on the path): a student needs the notebook and
`pip install labvmm[lab]`, nothing else. Its graded cells fail, each first in the function
its part names; the solution version passes every cell.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

nbgrader = pytest.importorskip("nbgrader", reason="nbgrader is in the test extra: pip install -e '.[test]'")

from nbgrader.api import Gradebook  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS_DIR = ROOT / "assignments"
ASSIGNMENTS = ("stride-scheduler", "rtc-device", "dirty-tracking", "page-faults", "rate-limiter", "syscall-trace")
TIE_BY_ID = "key=lambda vm: (self._pass.get(vm.name, 0), vm.id)"
TIE_BY_ORDER = "key=lambda vm: self._pass.get(vm.name, 0)"
GENERATED = ("release", "solution", "submitted", "autograded", "feedback", "gradebook.db", ".ipynb_checkpoints")
# The solution version is graded below by autograde, which runs it: no need to run it twice.
SOLUTION_WITHOUT_EXECUTE = """
from nbgrader.preprocessors import ClearMarkScheme, ClearOutput, IncludeHeaderFooter, LockCells
c.GenerateSolution.preprocessors = [IncludeHeaderFooter, LockCells, ClearOutput, ClearMarkScheme]
"""
#: What the first error of each graded cell of an unchanged student version names: the
#: function (to write) that the part is about, never scaffolding such as __init__.
FIRST_FAILURE = {
    # On real guests the host first calls wake() as each VM becomes ready, then pick().
    "stride-scheduler": {"test_pick_charge": "write Stride.pick", "test_shares": "write Stride.wake",
                         "test_determinism": "write Stride.wake", "test_halt_and_wake": "write Stride.wake"},
    "rtc-device": {"test_time": "write GoldfishRtc.read", "test_alarm": "write GoldfishRtc.write",
                   "test_guest": "write GoldfishRtc.read", "test_hostile": "write GoldfishRtc.read"},
    "dirty-tracking": {"test_first": "write DirtyTracker.collect", "test_epochs": "write DirtyTracker.collect",
                       "test_working_set": "write WorkingSet.record"},
    "page-faults": {name: "todo: handle_page_fault is not written yet"
                    for name in ("test_demand_zero", "test_refused", "test_zero_page")},
    # The disk tests ask the limiter once by hand first: inside the device, a stub's error
    # would only stop the VM.
    "rate-limiter": {"test_bucket": "write TokenBucket.advance", "test_limiter": "write RateLimiter.consume",
                     "test_disk": "write RateLimiter.consume", "test_live": "write RateLimiter.consume"},
    "syscall-trace": {"test_names": "write syscall_names", "test_calls": "write system_calls",
                      "test_returns": "write return_values", "test_tree": "write process_tree"},
}

pytestmark = [
    pytest.mark.slow,
    # nbgrader's own gradebook code trips SQLAlchemy's autoflush warnings; not ours to fix.
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning"),
]


def nbgrader_cli(course: Path, *args: str) -> str:
    """Run `python -m nbgrader ARGS` in the course folder, as an instructor does; its output."""
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course,
                            capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


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
    assert solutions and all("BEGIN SOLUTION" in c.source and "END SOLUTION" in c.source for c in solutions)
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


def answered(course: Path, name: str) -> nbformat.NotebookNode:
    """The released notebook with the solution's code in its answer cells: what a student hands in."""
    nb = nbformat.read(course / "release" / name / f"{name}.ipynb", as_version=4)
    solution = nbformat.read(course / "solution" / name / f"{name}.ipynb", as_version=4)
    answers = {c.metadata.nbgrader["grade_id"]: c.source for c in cells_of(solution, "solution")}
    for cell in cells_of(nb, "solution"):
        cell.source = answers[cell.metadata.nbgrader["grade_id"]]
    return nb


def submit(course: Path, student: str, name: str, nb: nbformat.NotebookNode) -> None:
    """Put `nb` where nbgrader's autograde looks for `student`'s submission of `name`."""
    folder = course / "submitted" / student / name
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{name}.ipynb")


@pytest.fixture(scope="module")
def nbgrader_ext():
    """assignments/nbgrader_ext.py, the course's nbgrader preprocessors."""
    sys.path.insert(0, str(ASSIGNMENTS_DIR))
    try:
        import nbgrader_ext as module
    finally:
        sys.path.remove(str(ASSIGNMENTS_DIR))
    return module


def test_a_python_stub_names_the_method_it_stands_in(nbgrader_ext):
    """A region inside a method becomes raise NotImplementedError("write Class.method")."""
    before = ["class Stride:", "    def __init__(self):", "        self.x = 1", "", "    def pick(self, ready):",
              '        """doc"""']
    assert nbgrader_ext.python_stub(before, 8) == ["# YOUR CODE HERE", 'raise NotImplementedError("write Stride.pick")']
    assert nbgrader_ext.python_stub(["x = 1"], 0)[1] == 'raise NotImplementedError("write the code of this cell")'


def test_a_c_stub_calls_todo_with_the_functions_name_and_parameters(nbgrader_ext):
    """A region inside a C function becomes todo("name", its parameters...), so -Wextra stays quiet."""
    before = ["#include <stdint.h>", "int handle_page_fault(uint64_t cause, const char *buf[], int n)", "{"]
    assert nbgrader_ext.c_stub(before) == ["/* YOUR CODE HERE */", 'todo("handle_page_fault", cause, buf, n);']
    assert nbgrader_ext.c_stub(["void tick(void)", "{"])[1] == 'todo("tick");'


# -- the round trip -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Generate, submit (solution and unchanged student version) and autograde every assignment."""
    course = tmp_path_factory.mktemp("course")
    shutil.copytree(ASSIGNMENTS_DIR, course, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*GENERATED))
    with open(course / "nbgrader_config.py", "a") as config:
        config.write(SOLUTION_WITHOUT_EXECUTE)
    outputs = []
    for name in ASSIGNMENTS:
        outputs.append(nbgrader_cli(course, "generate_assignment", name))
        outputs.append(nbgrader_cli(course, "generate_solution", name))
        released = nbformat.read(course / "release" / name / f"{name}.ipynb", as_version=4)
        submit(course, "blank", name, released)
        submit(course, "key", name, answered(course, name))
    # A plausible mistake that every visible assert misses: ties broken by list order, not vm.id.
    nb = answered(course, "stride-scheduler")
    (cell,) = [c for c in cells_of(nb, "solution") if TIE_BY_ID in c.source]
    cell.source = cell.source.replace(TIE_BY_ID, TIE_BY_ORDER)
    submit(course, "tie", "stride-scheduler", nb)
    for name in ASSIGNMENTS:
        outputs.append(nbgrader_cli(course, "autograde", name, "--create"))
    scores = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        submissions = [(n, student) for n in ASSIGNMENTS for student in ("key", "blank")] + [("stride-scheduler", "tie")]
        for name, student in submissions:
            sub = gb.find_submission(name, student)
            nb = gb.find_submission_notebook(name, name, student)
            scores[name, student] = {
                "score": sub.score,
                "max_score": sub.max_score,
                "tests": {g.name: (g.score, g.max_score) for g in nb.grades},
            }
    return course, scores, "\n".join(outputs)


def test_nbgrader_runs_without_a_warning(graded):
    """generate_assignment, generate_solution and autograde print no warning with the course's config."""
    _, _, output = graded
    assert "Converting notebook" in output and "Autograding" in output, output[-2000:]
    warnings = [line for line in output.splitlines() if re.search(r"WARNING|Warning\b|\| ERROR", line)]
    assert warnings == []


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_student_version_is_made_by_nbgrader_without_solutions_or_hidden_tests(graded, name):
    """The released notebook has stubs where the solution was, and only the visible tests."""
    course, _, _ = graded
    released = nbformat.read(course / "release" / name / f"{name}.ipynb", as_version=4)
    text = "\n".join(c.source for c in released.cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    stubs = re.findall(r'raise NotImplementedError\("write [\w.]+"\)|todo\("\w+"(?:, \w+)*\);', text)
    assert stubs and "raise NotImplementedError()" not in text, "every stub names its function"
    solution = nbformat.read(course / "solution" / name / f"{name}.ipynb", as_version=4)
    assert not any(stub in "\n".join(c.source for c in solution.cells) for stub in stubs)


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_solution_scores_full_marks(graded, name):
    """Autograding the solution gives every test its points, hidden tests included."""
    course, scores, _ = graded
    key = scores[name, "key"]
    assert key["max_score"] >= 5 and key["score"] == key["max_score"], key
    autograded = nbformat.read(course / "autograded" / "key" / name / f"{name}.ipynb", as_version=4)
    assert all("BEGIN HIDDEN TESTS" in c.source for c in cells_of(autograded, "grade")), "hidden tests ran"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_unchanged_student_version_fails_every_graded_test(graded, name):
    """The released version, submitted as it is, scores 0 on every autograded test."""
    _, scores, _ = graded
    blank = scores[name, "blank"]
    assert blank["max_score"] == scores[name, "key"]["max_score"]
    assert blank["score"] == 0 and all(score == 0 for score, _ in blank["tests"].values()), blank


def test_hidden_tests_catch_what_the_visible_ones_miss(graded):
    """A stride policy breaking ties by list order passes every visible assert but loses Part 1's points."""
    _, scores, _ = graded
    tie = scores["stride-scheduler", "tie"]
    assert tie["tests"]["test_pick_charge"] == (0, 2), tie
    assert tie["score"] == tie["max_score"] - 2, tie


# -- a released notebook alone, against the installed package --------------------------------------
RUN_NOTEBOOK = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True).execute()
nbformat.write(nb, sys.argv[1])
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """labvmm built as a wheel and installed into a folder of its own: (that folder, environment)."""
    work = tmp_path_factory.mktemp("wheel")
    checkout = work / "labvmm"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "*.egg-info", "__pycache__", *GENERATED))
    site = work / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(checkout)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.rmtree(checkout)  # nothing of the repository is left to find
    env = dict(os.environ, PYTHONPATH=str(site), LABVMM_CACHE_DIR=str(work / "cache"))
    return site, env


def test_the_installed_package_is_what_a_notebook_imports(installed, tmp_path):
    """With the wheel on the path, labvmm, its guests, its guest runtime and the course helpers come from it."""
    site, env = installed
    probe = ("import labvmm, labvmm.course.checks, labvmm.guests as g, labvmm.toolchain as t;"
             "print(labvmm.__file__); print(g.images_dir()); print(t.runtime_dir()); print(len(g.hostile_guests()))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    *paths, hostile = out.split()
    assert all(Path(p).is_relative_to(site) for p in paths), out
    assert int(hostile) > 30


@pytest.mark.parametrize("version", ("release", "solution"))
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_a_notebook_alone_runs_against_the_installed_package(graded, installed, tmp_path, name, version):
    """Copied alone into an empty folder: the student version fails each graded cell first in the
    function its part names, and runs every other cell; the solution version runs every cell."""
    course, _, _ = graded
    _, env = installed
    notebook = tmp_path / f"{name}.ipynb"
    shutil.copy(course / version / name / f"{name}.ipynb", notebook)
    subprocess.run([sys.executable, "-c", RUN_NOTEBOOK, str(notebook)], cwd=tmp_path, env=env, check=True, timeout=900)
    errors = {}
    for cell in nbformat.read(notebook, as_version=4).cells:
        failed = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if failed:
            errors[cell.metadata.nbgrader.get("grade_id")] = f"{failed[0].ename}: {failed[0].evalue}"
    if version == "solution":
        assert errors == {}
        return
    assert set(errors) == set(FIRST_FAILURE[name]), errors
    for grade_id, message in FIRST_FAILURE[name].items():
        assert message in errors[grade_id], (grade_id, errors[grade_id])
