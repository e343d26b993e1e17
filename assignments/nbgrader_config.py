"""nbgrader configuration of labvmm's graded assignments (nbgrader 0.9; run it from this folder).

Paths are absolute, computed from this file's location, so nbgrader finds the course from
any working directory and says nothing about relative roots. nbgrader 0.9 has no list of
assignments in its configuration: an assignment is a folder of source/, and
`generate_assignment` records it in the gradebook.
"""

import sys
import warnings
from pathlib import Path

COURSE_DIR = Path(__file__).resolve().parent  # traitlets gives a config file its own __file__
sys.path.insert(0, str(COURSE_DIR))  # nbgrader_ext.py beside this file
from nbgrader_ext import NamedSolutionStubs, RestoreHiddenTests  # noqa: E402

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "labvmm"
c.CourseDirectory.root = str(COURSE_DIR)
# The gradebook lives beside this file; `nbgrader generate_assignment` creates it.
c.CourseDirectory.db_url = f"sqlite:///{COURSE_DIR / 'gradebook.db'}"

# The student version: each solution region becomes a stub that raises inside the function
# the student writes, naming it (`raise NotImplementedError("write Stride.pick")`; in a
# %%guest C cell, a call to the runtime's todo()), instead of nbgrader's bare
# `raise NotImplementedError()`. Otherwise nbgrader's own pipeline, in its own order.
c.GenerateAssignment.preprocessors = NamedSolutionStubs.generate_assignment_pipeline()
# Autograde puts the hidden tests back without warning that an untouched test cell "changed"
# (nbgrader issue #1961); a test cell a student did edit is still reported and restored.
c.Autograde.sanitize_preprocessors = RestoreHiddenTests.autograde_sanitize_pipeline()

# nbgrader 0.9's gradebook code (nbgrader/api.py) trips SQLAlchemy's autoflush warning when
# autograde adds a student's submission; the gradebook is right all the same, and the warning
# is about nbgrader's code, not the course.
warnings.filterwarnings("ignore", message=r"Object of type <Submitted\w+> not in session", module="nbgrader")

# Each notebook runs headless in well under a minute; a cell gets 3 minutes on a slow machine.
c.Execute.timeout = 180
# The kernel that runs the notebooks: a Python with labvmm installed. nbgrader talks to it
# over TCP on localhost; jupyter_client >= 8.10 gives it CurveZMQ keys when its kernelspec
# says it can use them (ipykernel >= 7 does, and warns when the TCP link is unencrypted).
c.Execute.kernel_name = "python3"
c.KernelManager.transport_encryption = "auto"
