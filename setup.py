"""The one compiled part: the spawn engine (src/sluice/launcher/_spawnc.c, spawnc_core.c, spawnc.h), optional.

Everything else is in pyproject.toml. Where no C compiler exists the build goes on without it and the
launcher uses its pure-Python engine (sluice.launcher.tasks), which does the same work more slowly.
"""
from setuptools import Extension, setup

HERE = "src/sluice/launcher/"

setup(ext_modules=[Extension("sluice.launcher._spawnc", [HERE + "_spawnc.c", HERE + "spawnc_core.c"],
                             depends=[HERE + "spawnc.h"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                                 "-Wno-missing-field-initializers"])])
