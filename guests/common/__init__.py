"""The common guest runtime (startup code, linker scripts, console and SBI headers).

Every built-in guest links it (guests/build.py), and it ships inside the package as
`labvmm.runtime`, so `labvmm.toolchain.compile_guest` builds guests without the repository.
"""
