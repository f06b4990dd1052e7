"""How tests start child Pythons: importing the same gptlab as the test process.

After `pip install .` the source tree's gptlab/ has no compiled _core, so a child whose
working directory is the repository root (sys.path[0] == '' for `python -c` / `-m`) would
import the source tree instead of the installed package. Children therefore run in the
folder that holds the gptlab under test, with that folder on PYTHONPATH.
"""

from __future__ import annotations

import os

import gptlab

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gptlab.__file__)))


def child_env(**extra: str) -> dict:
    """os.environ with the gptlab under test first on PYTHONPATH, plus ``extra``."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    return env
