"""Every notebook runs top to bottom with the fast settings (GPTLAB_FAST=1) and no error output.

The notebooks run in order in one checkpoint folder, as a reader would run them: each finds
the previous one's checkpoint. The PPO notebook must draw its plots (image outputs).
"""

from __future__ import annotations

import glob
import os

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs nbformat (pip install gptlab[notebooks])")
nbclient = pytest.importorskip("nbclient", reason="needs nbclient (pip install gptlab[notebooks])")
pytest.importorskip("ipykernel", reason="needs ipykernel (pip install gptlab[notebooks])")
pytest.importorskip("matplotlib", reason="needs matplotlib (pip install gptlab[notebooks])")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(NB_DIR, "0*.ipynb")))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return str(tmp_path_factory.mktemp("notebook_runs"))


def outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def test_the_four_notebooks_are_there():
    assert NOTEBOOKS == ["01_pretraining.ipynb", "02_sft.ipynb", "03_reward_model.ipynb",
                         "04_rlhf_ppo.ipynb"]


def test_committed_notebooks_hold_outputs_of_a_full_run_without_errors():
    for name in NOTEBOOKS:
        nb = nbformat.read(os.path.join(NB_DIR, name), as_version=4)
        outs = outputs(nb)
        assert outs, f"{name} has no outputs"
        assert not [o for o in outs if o.output_type == "error"], name
        text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
        assert "full settings" in text and "FAST settings" not in text, name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom_with_fast_settings(name, runs, monkeypatch):
    monkeypatch.setenv("GPTLAB_FAST", "1")
    monkeypatch.setenv("GPTLAB_RUNS", runs)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    import gptlab  # the kernel must import the same gptlab as this process

    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(gptlab.__file__)))
    monkeypatch.setenv("PYTHONPATH", pkg_root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(os.path.join(NB_DIR, name), as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": NB_DIR}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outs = outputs(nb)
    errors = [o for o in outs if o.output_type == "error"]
    assert not errors, [f"{o.ename}: {o.evalue}" for o in errors]
    tracebacks = [o.text for o in outs if o.output_type == "stream" and o.name == "stderr"
                  and "Traceback" in o.text]
    assert not tracebacks, tracebacks
    assert "FAST settings" in "".join(o.get("text", "") for o in outs)
    if name.startswith("04"):
        images = [o for o in outs if "image/png" in o.get("data", {})]
        assert len(images) >= 4, f"the PPO notebook drew {len(images)} images"
    assert os.path.isfile(os.path.join(runs, "fast", name_to_stage(name), "stage.json"))


def name_to_stage(name: str) -> str:
    return {"01": "pretrain", "02": "sft", "03": "reward", "04": "ppo"}[name[:2]]
