"""Every notebook in colabs/ runs top to bottom in a fresh kernel (nbclient), and writes what it
says it writes. Committed notebooks carry no outputs."""

import csv
import json
import os
import pathlib

import nbclient
import nbformat
import pytest

COLABS = pathlib.Path(__file__).resolve().parent.parent / "colabs"
NOTEBOOKS = ("quickstart", "feature_explorer", "ablation", "circuits")


def test_every_notebook_is_listed_and_committed_without_outputs():
  assert sorted(p.stem for p in COLABS.glob("*.ipynb")) == sorted(NOTEBOOKS)
  for name in NOTEBOOKS:
    nb = nbformat.read(COLABS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), name
    assert "google.colab" in code[0].source and "pip install" in code[0].source, name


def _execute(name: str, workdir: pathlib.Path) -> nbformat.NotebookNode:
  nb = nbformat.read(COLABS / f"{name}.ipynb", as_version=4)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # One CPU device, as a user.
  env["JAXSAE_NOTEBOOK_WORKDIR"] = str(workdir)
  client = nbclient.NotebookClient(
    nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(COLABS)}}
  )
  client.execute(env=env)  # Raises CellExecutionError, with the cell and traceback, on failure.
  return nb


def _outputs(nb, kind: str) -> list:
  return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path):
  nb = _execute(name, tmp_path)
  assert not _outputs(nb, "error")
  if name == "quickstart":
    with open(tmp_path / "quickstart" / "results.csv", newline="") as f:
      sae, pca, rand = list(csv.DictReader(f))
    assert float(sae["fvu"]) < min(float(pca["fvu"]), float(rand["fvu"]))
    assert (tmp_path / "quickstart" / "sae" / "sae.safetensors").is_file()
    assert len(_outputs(nb, "display_data")) >= 3  # The table and two figures.
  elif name == "feature_explorer":
    index = tmp_path / "feature_browser" / "index.html"
    assert index.is_file() and len(list((index.parent / "latents").glob("*.html"))) == 40
  elif name == "ablation":
    assert len(list((tmp_path / "ablation_figures").glob("*.png"))) >= 3
  elif name == "circuits":
    (path,) = (tmp_path / "circuits" / "circuits" / "sparse").glob("*.json")
    assert json.loads(path.read_text())["task"] == "closing_quote"
    shown = [
      o.get("data", {}) for o in _outputs(nb, "display_data") + _outputs(nb, "execute_result")
    ]
    assert sum("text/html" in d for d in shown) == 2  # The pruned and the published circuit.
    assert sum("text/markdown" in d for d in shown) == 2  # Their metrics tables.
