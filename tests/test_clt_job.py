"""The CLT job end to end on the shipped model: a CLT (or per-layer transcoders) of all 4 MLPs
trained streamed, written in circuit-tracer's format, the replacement model and attribution
graphs reported."""

import json

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
  out = clt_job.run(c, tmp_path)
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


def test_a_topk_clt_is_refused_before_any_compute(tmp_path):
  c = clt_job.base_config("topk")
  with pytest.raises(ConfigError, match="circuit-tracer's CLTs are jumprelu or relu"):
    clt_job.run(c, tmp_path)
