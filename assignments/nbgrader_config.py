"""nbgrader configuration of labvmm's graded assignments (run nbgrader from this folder)."""

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "labvmm"
c.CourseDirectory.root = "."
# The gradebook lives beside this file; `nbgrader generate_assignment` creates it.
c.CourseDirectory.db_url = "sqlite:///gradebook.db"
c.CourseDirectory.assignments = [
    {"name": "stride-scheduler"},
    {"name": "rtc-device"},
    {"name": "dirty-tracking"},
]

# Each notebook runs headless in well under a minute; a cell gets 3 minutes on a slow machine.
c.ExecutePreprocessor.timeout = 180
c.Execute.timeout = 180
# The kernel that runs the notebooks: a Python with labvmm installed.
c.ExecutePreprocessor.kernel_name = "python3"
