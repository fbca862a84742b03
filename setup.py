"""Package list for setuptools (everything else is in pyproject.toml).

The repository keeps the task adapters in a top-level ``tasks/`` folder; they install as
``moopt.tasks`` so that the distribution claims no generic top-level module name (a
``tasks.py`` in a user's working directory, or another distribution's ``tasks`` package,
cannot shadow them).
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["moopt", "moopt.*"])
    + ["moopt." + name for name in find_packages(include=["tasks", "tasks.*"])],
    package_dir={"moopt.tasks": "tasks"},
)
