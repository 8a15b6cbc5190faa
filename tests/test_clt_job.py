"""The CLT job end to end on the shipped model: a CLT (or per-layer transcoders) of all 4 MLPs
trained streamed, written in circuit-tracer's format, the replacement model and attribution
graphs reported."""

import json

import numpy as np
import pytest

from jaxsae import clt_job
from jaxsae.errors import ConfigError
from jaxsae.sae import zoo


@pytest.mark.slow
@pytest.mark.parametrize("cross_layer", [True, False])
def test_a_streamed_clt_of_every_mlp_replaces_them_and_draws_graphs(cross_layer, tmp_path):
  c = clt_job.base_config()
  c.clt.features_per_layer, c.clt.prompts = 32, ("x = [1, 2",)
  c.clt.cross_layer = cross_layer
  c.train.steps, c.train.batch_size, c.train.log_every, c.train.checkpoint_every = 30, 128, 10, 30
  c.harvest.train_windows, c.harvest.eval_windows, c.harvest.seq_len = 16, 4, 32
  (out,) = clt_job.run(c, tmp_path).values()
  if cross_layer:
    clt = zoo.load_replacement(str(tmp_path / "clt"))
    assert clt.n_layers == 4 and clt.W_enc.shape[-1] == 32 and clt.activation == "jumprelu"
  else:  # Per-layer transcoders, written as circuit-tracer's set.
    tcs = zoo.load_replacement(out["dictionaries"])
    assert [tc.W_enc.shape for tc in tcs] == [(128, 32)] * 4
    assert [tc.output_hook for tc in tcs] == [f"blocks.{i}.mlp.out" for i in range(4)]
  assert [r["hook"] for r in out["layers"]] == [f"blocks.{i}.mlp.out" for i in range(4)]
  assert all(0 < r["fvu"] < 1 for r in out["layers"])  # Better than the mean, after 30 steps.
  assert out["ce_replacement"] > out["ce_original"]
  (graph,) = out["graphs"]
  assert graph["features"] > 0 and 0 < graph["replacement"] < 1 and 0 < graph["completeness"] <= 1
  assert json.loads((tmp_path / "results.json").read_text())["graphs"][0]["prompt"] == "'x = [1, 2'"
  assert "## Attribution graphs" in (tmp_path / "results.md").read_text()


def _tiny(c):
  c.clt.features_per_layer, c.clt.prompts = 16, ()
  c.train.steps, c.train.batch_size, c.train.log_every, c.train.checkpoint_every = 12, 64, 6, 12
  c.harvest.train_windows, c.harvest.eval_windows, c.harvest.seq_len = 16, 2, 32
  return c


@pytest.mark.slow
def test_a_sweep_trains_clts_and_per_layer_sets_in_one_pass_each_as_if_alone(tmp_path):
  c = _tiny(clt_job.base_config())
  c.sweep.architecture, c.sweep.k = ("per-layer", "cross-layer"), (4, 12)
  c.variants = {
    "per-layer": {"architecture": "jumprelu", "cross_layer": False},
    "cross-layer": {"architecture": "jumprelu", "cross_layer": True},
  }
  reports = clt_job.run(c, tmp_path / "sweep")
  names = ["per-layer_k4", "per-layer_k12", "cross-layer_k4", "cross-layer_k12"]
  assert list(reports) == names
  assert [(r["cross_layer"], r["target_l0"]) for r in reports.values()] == [
    (False, 4), (False, 12), (True, 4), (True, 12)
  ]  # fmt: skip
  assert (tmp_path / "sweep" / "cross-layer_k12" / "clt").is_dir()
  assert (tmp_path / "sweep" / "per-layer_k4" / "transcoders").is_dir()
  # The CLT at 12, trained alone from the same stream, is the sweep's member.
  alone = _tiny(clt_job.base_config())
  alone.sae.k = 12
  (solo,) = clt_job.run(alone, tmp_path / "alone").values()
  for mine, theirs in zip(solo["layers"], reports["cross-layer_k12"]["layers"], strict=True):
    np.testing.assert_allclose(mine["fvu"], theirs["fvu"], rtol=1e-4)
    np.testing.assert_allclose(mine["l0"], theirs["l0"], rtol=1e-4)


def test_a_sweep_naming_a_topk_variant_is_refused(tmp_path):
  c = clt_job.base_config()
  c.sweep.architecture, c.variants = ("wide",), {"wide": {"architecture": "topk"}}
  with pytest.raises(ConfigError, match="variants.wide.architecture='topk'"):
    clt_job.run(c, tmp_path)


def test_a_topk_clt_is_refused_before_any_compute(tmp_path):
  c = clt_job.base_config("topk")
  with pytest.raises(ConfigError, match="circuit-tracer's CLTs are jumprelu or relu"):
    clt_job.run(c, tmp_path)
