"""Two nbgrader preprocessors for labvmm's course: named stubs, and hidden tests restored quietly.

**Named stubs.** nbgrader's ClearSolutions replaces every `### BEGIN SOLUTION` ... `### END SOLUTION` region
with one fixed stub, `raise NotImplementedError()`. Put in `__init__` or a helper, it makes the
first failure a student sees one in code they were not asked to write, and in a `%%guest`
cell of C it does not compile. NamedSolutionStubs writes, for each region:

* in Python, `raise NotImplementedError("write Stride.pick")`, naming the enclosing function
  (and its class);
* in a `%%guest` cell (C), `todo("handle_page_fault", cause, addr);`, the guest runtime's
  todo() (guests/common/todo.h) with the enclosing function's name and parameters: it
  compiles, and at run time prints which function is missing and fails the guest.

**Hidden tests restored without a false alarm.** At autograde, nbgrader's OverwriteCells
puts every locked cell back as the gradebook has it, and warns "Attribute 'checksum' ... has
changed" for each test cell with hidden tests, although the student changed nothing: the
gradebook's checksum was taken before the hidden tests were cut out (nbgrader issue #1961).
RestoreHiddenTests puts the hidden tests back first when the submitted cell is exactly the
released one, so the warning is left for cells a student really edited.

The course's nbgrader_config.py, beside this file, puts them in place of ClearSolutions and
OverwriteCells. They live with the course, not in the package: they are nbgrader plugins
for the instructor, and labvmm's core imports nothing of the Jupyter stack.
"""

from __future__ import annotations

import re

from nbformat import NotebookNode
from nbgrader import utils
from nbgrader.api import MissingEntry
from nbgrader.converters import Autograde, GenerateAssignment
from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions, OverwriteCells

_PY_DEF = re.compile(r"^(\s*)(?:async\s+)?def\s+(\w+)\s*\(")
_PY_CLASS = re.compile(r"^(\s*)class\s+(\w+)")
# A C function definition's head on one line, at the top level: `int name(type a, type *b)`.
_C_DEF = re.compile(r"^[A-Za-z_][\w\s\*]*?\b([A-Za-z_]\w*)\s*\(([^()]*)\)\s*\{?\s*$")
_C_IDENT = re.compile(r"[A-Za-z_]\w*")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def python_stub(before: list[str], indent: int) -> list[str]:
    """The stub for a Python region at `indent`, after the lines `before` it."""
    function, depth = None, indent
    for line in reversed(before):
        match = _PY_DEF.match(line) if function is None else _PY_CLASS.match(line)
        if match and len(match.group(1)) < depth:
            if function is not None:
                function = f"{match.group(2)}.{function}"
                break
            function, depth = match.group(2), len(match.group(1))
    what = f"write {function}" if function else "write the code of this cell"
    return ["# YOUR CODE HERE", f'raise NotImplementedError("{what}")']


def c_stub(before: list[str]) -> list[str]:
    """The stub for a region of a `%%guest` C cell: todo() with the enclosing function's name and parameters."""
    for line in reversed(before):
        match = _C_DEF.match(line)
        if match:
            params = []
            for piece in match.group(2).split(","):
                names = _C_IDENT.findall(piece.split("[")[0])
                if names and names != ["void"]:
                    params.append(names[-1])
            args = "".join(f", {p}" for p in params)
            return ["/* YOUR CODE HERE */", f'todo("{match.group(1)}"{args});']
    return ["/* YOUR CODE HERE */", 'todo("the code of this cell");']


class NamedSolutionStubs(ClearSolutions):
    """ClearSolutions whose stubs raise inside the function to write, with its name."""

    @classmethod
    def generate_assignment_pipeline(cls) -> list:
        """nbgrader's generate_assignment preprocessors, this class in place of ClearSolutions."""
        default = GenerateAssignment.class_traits()["preprocessors"].default()
        return [cls if p is ClearSolutions else p for p in default]

    def _replace_solution_region(self, cell, language: str) -> bool:
        """Replace each solution region of `cell` with its named stub; True when there was one."""
        if cell.cell_type != "code":
            return super()._replace_solution_region(cell, language)
        lines = cell.source.split("\n")
        guest_cell = lines[0].startswith("%%guest")
        out: list[str] = []
        in_solution = replaced = False
        for line in lines:
            if self.begin_solution_delimeter in line:
                if in_solution:
                    raise RuntimeError(f"nested solution regions in a cell:\n{cell.source}")
                in_solution = replaced = True
                stub = c_stub(out) if guest_cell else python_stub(out, _indent(line))
                out.extend(line[:_indent(line)] + s for s in stub)
            elif self.end_solution_delimeter in line:
                in_solution = False
            elif not in_solution:
                out.append(line)
        if in_solution:
            raise RuntimeError(f"a solution region without its end in a cell:\n{cell.source}")
        cell.source = "\n".join(out)
        return replaced


class RestoreHiddenTests(OverwriteCells):
    """OverwriteCells that restores an unchanged test cell's hidden tests without warning."""

    @classmethod
    def autograde_sanitize_pipeline(cls) -> list:
        """nbgrader's autograde sanitize preprocessors, this class in place of OverwriteCells."""
        default = Autograde.class_traits()["sanitize_preprocessors"].default()
        return [cls if p is OverwriteCells else p for p in default]

    def preprocess_cell(self, cell, resources, cell_index):
        """Put the hidden tests back into a test cell submitted as released, then check it as nbgrader does."""
        if utils.is_grade(cell) and utils.is_locked(cell):
            try:
                source = self.gradebook.find_source_cell(cell.metadata.nbgrader["grade_id"],
                                                         self.notebook_id, self.assignment_id)
            except MissingEntry:
                source = None
            if source is not None and cell.source == released_source(source.source, self.config):
                cell.source = source.source
        return super().preprocess_cell(cell, resources, cell_index)


def released_source(source: str, config) -> str:
    """What generate_assignment leaves of a test cell's `source`: its hidden tests cut out."""
    cell = NotebookNode(cell_type="code", source=source, metadata={})
    ClearHiddenTests(config=config)._remove_hidden_test_region(cell)
    return cell.source
