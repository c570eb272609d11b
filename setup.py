"""The one compiled part: the spawn engine (src/sluice/launcher/_spawnc.c), optional.

Everything else is in pyproject.toml. Where no C compiler exists the build goes on without it and the
launcher uses its pure-Python engine (sluice.launcher.tasks), which does the same work more slowly.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("sluice.launcher._spawnc", ["src/sluice/launcher/_spawnc.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                                 "-Wno-missing-field-initializers"])])
