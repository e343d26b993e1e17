"""What labvmm's graded assignments (assignments/ in the repository) use beyond the core.

`labvmm.course.checks` has the helpers the notebooks' test cells share: running a guest to
its end, reading the figures a guest prints. A released notebook needs nothing but
`pip install labvmm[lab]`: the guests, the guest runtime and these helpers ship in the package.
"""
