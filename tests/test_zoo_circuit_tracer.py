"""circuit-tracer's transcoder files, checked against its published formulas computed in numpy,
and jaxsae's writer read back. circuit-tracer itself (whose pins conflict with this environment's
transformers) reads what jaxsae writes in tests/test_circuit_tracer_agreement.py."""

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file, save_file
from zoo_helpers import go_offline, inputs, repo_snapshot

from jaxsae.errors import CheckpointError
from jaxsae.sae import export, zoo
from jaxsae.sae.zoo import circuit_tracer, transcoders

D, N, L = 6, 24, 3


def layer_tensors(seed, jump=True, skip=True):
  """A layer file as circuit-tracer's SingleLayerTranscoder.to_safetensors writes it."""
  rng = np.random.default_rng(seed)
  t = {
    "W_enc": rng.normal(size=(N, D)).astype(np.float32),
    "W_dec": rng.normal(size=(N, D)).astype(np.float32),
    "b_enc": rng.normal(size=N).astype(np.float32) * 0.3,
    "b_dec": rng.normal(size=D).astype(np.float32),
  }
  if jump:
    t["activation_function.threshold"] = (np.abs(rng.normal(size=N)) + 0.3).astype(np.float32)
  if skip:
    t["W_skip"] = rng.normal(size=(D, D)).astype(np.float32) * 0.2
  return t


def published_layer(t, x):
  """circuit-tracer: pre = F.linear(x, W_enc, b_enc); JumpReLU x·1[x > θ] (or ReLU);
  decode z W_dec + b_dec + x W_skipᵀ."""
  pre = x @ t["W_enc"].T + t["b_enc"]
  theta = t.get("activation_function.threshold")
  z = pre * (pre > theta) if theta is not None else np.maximum(pre, 0)
  y = z @ t["W_dec"] + t["b_dec"]
  return z, y + (x @ t["W_skip"].T if "W_skip" in t else 0)


def write_set(folder, jump=True, skip=True):
  folder.mkdir(parents=True, exist_ok=True)
  tensors = [layer_tensors(i, jump, skip) for i in range(L)]
  for i, t in enumerate(tensors):
    save_file(t, str(folder / f"layer_{i}.safetensors"))
  cfg = "model_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\n"
  cfg += "feature_output_hook: hook_mlp_out\nmodel_name: google/gemma-2-2b\n"
  (folder / "config.yaml").write_text(cfg)
  return tensors


@pytest.mark.parametrize("jump, skip", [(True, True), (False, False)])
def test_per_layer_transcoders_follow_circuit_tracers_formula(jump, skip, tmp_path):
  tensors = write_set(tmp_path / "tcs", jump, skip)
  x = inputs(D, seed=2)
  for layer in range(L):
    tc = zoo.load_transcoder(f"{tmp_path / 'tcs'}:{layer}")
    assert (tc.input_hook, tc.output_hook) == (f"blocks.{layer}.mlp.in", f"blocks.{layer}.mlp.out")
    assert tc.activation == ("jumprelu" if jump else "relu")
    assert tc.metadata["model"] == "google/gemma-2-2b" and tc.metadata["layer"] == layer
    z_ref, y_ref = published_layer(tensors[layer], x)
    z = transcoders.encode(tc, x)
    assert 0 < (z != 0).mean() < 1
    np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(transcoders.decode(tc, z, x), y_ref, atol=1e-4, rtol=1e-5)
  same = zoo.load_transcoder(tmp_path / "tcs" / "layer_1.safetensors")
  np.testing.assert_array_equal(same.W_enc, tensors[1]["W_enc"].T)


def test_a_set_folder_needs_its_layer_chosen_and_export_load_points_to_the_transcoder_loader(
  tmp_path,
):
  write_set(tmp_path / "tcs")
  with pytest.raises(CheckpointError, match=r"one transcoder per layer \[0, 1, 2\].*tcs:0"):
    zoo.load_transcoder(tmp_path / "tcs")
  with pytest.raises(CheckpointError, match=r"no layer '7'; its layers are \[0, 1, 2\]"):
    zoo.load_transcoder(f"{tmp_path / 'tcs'}:7")
  for path in (tmp_path / "tcs", tmp_path / "tcs" / "layer_0.safetensors"):
    with pytest.raises(CheckpointError, match="transcoder.*jaxsae.sae.zoo.load_transcoder"):
      export.load(path)


@pytest.mark.parametrize("activation", ["jumprelu", "topk", "relu"])
def test_written_sets_read_back_equal_in_circuit_tracers_layout(activation, tmp_path):
  tensors = write_set(tmp_path / "theirs", jump=activation == "jumprelu")
  read = {i: zoo.load_transcoder(f"{tmp_path / 'theirs'}:{i}") for i in range(L)}
  if activation == "topk":
    read = {
      i: transcoders.Transcoder(**{**vars(tc), "activation": "topk", "k": 5})
      for i, tc in read.items()
    }
  circuit_tracer.write_set(tmp_path / "ours", read, model_name="google/gemma-2-2b")
  cfg = yaml.safe_load((tmp_path / "ours" / "config.yaml").read_text())
  assert cfg["model_kind"] == "transcoder_set" and cfg["model_name"] == "google/gemma-2-2b"
  assert (cfg["feature_input_hook"], cfg["feature_output_hook"]) == ("mlp.hook_in", "hook_mlp_out")
  x = inputs(D, seed=3)
  for i in range(L):
    written = load_file(str(tmp_path / "ours" / f"layer_{i}.safetensors"))
    if activation != "topk":  # The file itself, tensor by tensor, as circuit-tracer writes it.
      assert set(written) == set(tensors[i])
      for k in written:
        np.testing.assert_array_equal(written[k], tensors[i][k])
    back = zoo.load_transcoder(f"{tmp_path / 'ours'}:{i}")
    assert (back.activation, back.k) == (read[i].activation, read[i].k)
    z = transcoders.encode(back, x)
    np.testing.assert_array_equal(z, transcoders.encode(read[i], x))
    if activation == "topk":
      assert int(written["k"]) == 5 and cfg["activation"] == "topk"
      pre = x @ tensors[i]["W_enc"].T + tensors[i]["b_enc"]
      top = np.argsort(-pre, axis=1)[:, :5]
      expected = np.zeros_like(pre)
      np.put_along_axis(expected, top, np.take_along_axis(pre, top, 1), 1)
      np.testing.assert_allclose(z, expected, atol=1e-6)  # circuit-tracer's TopK: no ReLU.


def test_cross_layer_transcoders_follow_circuit_tracers_formula(tmp_path):
  rng = np.random.default_rng(0)
  enc, dec = [], []
  for i in range(L):
    e = {
      f"W_enc_{i}": rng.normal(size=(N, D)).astype(np.float32),
      f"b_enc_{i}": rng.normal(size=N).astype(np.float32) * 0.3,
      f"b_dec_{i}": rng.normal(size=D).astype(np.float32),
      f"threshold_{i}": (np.abs(rng.normal(size=N)) + 0.3).astype(np.float32),
    }
    d = {f"W_dec_{i}": rng.normal(size=(N, L - i, D)).astype(np.float32)}
    save_file(e, str(tmp_path / f"W_enc_{i}.safetensors"))
    save_file(d, str(tmp_path / f"W_dec_{i}.safetensors"))
    enc.append(e)
    dec.append(d[f"W_dec_{i}"])
  (tmp_path / "config.yaml").write_text(
    "model_kind: cross_layer_transcoder\nfeature_input_hook: hook_resid_mid\n"
    "feature_output_hook: hook_mlp_out\nmodel_name: meta-llama/Llama-3.2-1B\n"
  )
  clt = zoo.load_transcoder(tmp_path)
  assert isinstance(clt, transcoders.CrossLayerTranscoder) and clt.n_layers == L
  assert clt.input_hooks == tuple(f"blocks.{i}.resid_mid" for i in range(L))
  assert clt.output_hooks[2] == "blocks.2.mlp.out"
  x = np.stack([inputs(D, rows=5, seed=10 + i) for i in range(L)])
  # circuit-tracer: features einsum("lbd,lfd->lbf") + b_enc, JumpReLU per layer; the output of
  # layer j sums every source layer i <= j through W_dec_i[:, j - i], plus b_dec_j.
  z_ref = []
  for i in range(L):
    pre = x[i] @ enc[i][f"W_enc_{i}"].T + enc[i][f"b_enc_{i}"]
    z_ref.append(pre * (pre > enc[i][f"threshold_{i}"]))
  y_ref = [
    sum(z_ref[i] @ dec[i][:, j - i] for i in range(j + 1)) + enc[j][f"b_dec_{j}"] for j in range(L)
  ]
  z = transcoders.clt_encode(clt, x)
  np.testing.assert_allclose(z, np.stack(z_ref), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(transcoders.clt_decode(clt, z), np.stack(y_ref), atol=1e-4)
  with pytest.raises(CheckpointError, match="transcoder.*load_transcoder"):
    export.load(tmp_path)


@pytest.mark.parametrize("with_config", [True, False])
@pytest.mark.slow
def test_a_circuit_tracer_release_loads_from_the_cache_with_or_without_config_yaml(
  with_config, tmp_path, monkeypatch
):
  go_offline(monkeypatch, tmp_path / "hub")
  snapshot = repo_snapshot(tmp_path / "hub", "mwhanna/qwen3-4b-transcoders")
  tensors = write_set(snapshot / "x")[1]
  (snapshot / "x" / "layer_1.safetensors").rename(snapshot / "layer_1.safetensors")
  if with_config:
    (snapshot / "x" / "config.yaml").rename(snapshot / "config.yaml")
  tc = zoo.load_transcoder("saelens:mwhanna-qwen3-4b-transcoders/layer_1")
  hooks = ("blocks.1.mlp.in", "blocks.1.mlp.out") if with_config else (None, None)
  assert (tc.input_hook, tc.output_hook) == hooks
  assert tc.metadata["repo_id"] == "mwhanna/qwen3-4b-transcoders"
  x = inputs(D, seed=4)
  np.testing.assert_allclose(
    transcoders.encode(tc, x), published_layer(tensors, x)[0], atol=1e-5, rtol=1e-5
  )


def test_gemma_scope_2_clts_follow_circuit_tracers_reading_of_them(tmp_path):
  """circuit-tracer's load_gemma_scope_2_clt: W_enc = w_encᵀ, layer i's decoder w_dec[:, i:],
  W_skip = affine_skip_connection used as x_j W_skip[j]."""
  rng = np.random.default_rng(1)
  folder = tmp_path / "clt" / "width_16k_l0_big_affine"
  folder.mkdir(parents=True)
  files = []
  for i in range(L):
    t = {
      "w_enc": rng.normal(size=(D, N)).astype(np.float32),
      "w_dec": rng.normal(size=(N, L, D)).astype(np.float32),
      "b_enc": rng.normal(size=N).astype(np.float32) * 0.3,
      "b_dec": rng.normal(size=D).astype(np.float32),
      "threshold": (np.abs(rng.normal(size=N)) + 0.3).astype(np.float32),
      "affine_skip_connection": rng.normal(size=(D, D)).astype(np.float32) * 0.2,
    }
    save_file(t, str(folder / f"params_layer_{i}.safetensors"))
    files.append(t)
  clt = zoo.load_transcoder(folder)
  assert isinstance(clt, transcoders.CrossLayerTranscoder) and clt.W_skip is not None
  assert clt.input_hooks[1] == "blocks.1.mlp.in" and clt.output_hooks[2] == "blocks.2.mlp.out"
  x = np.stack([inputs(D, rows=5, seed=20 + i) for i in range(L)])
  z_ref = []
  for i, t in enumerate(files):
    pre = x[i] @ t["w_enc"] + t["b_enc"]
    z_ref.append(pre * (pre > t["threshold"]))
  y_ref = [
    sum(z_ref[i] @ files[i]["w_dec"][:, j] for i in range(j + 1))
    + files[j]["b_dec"]
    + x[j] @ files[j]["affine_skip_connection"]
    for j in range(L)
  ]
  z = transcoders.clt_encode(clt, x)
  np.testing.assert_allclose(z, np.stack(z_ref), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(transcoders.clt_decode(clt, z, x), np.stack(y_ref), atol=1e-4)
  with pytest.raises(CheckpointError, match="one layer of a Gemma Scope 2 CLT: pass its folder"):
    zoo.load_transcoder(folder / "params_layer_0.safetensors")
  with pytest.raises(CheckpointError, match="gemma_scope_2_clt.*load_transcoder"):
    export.load(folder)


def published_clt(folder, x):
  """circuit-tracer 0.5.0's CLT read straight from the files (its load_clt and forward, in
  numpy): z_i = JumpReLU(einsum("bd,fd->bf", x_i, W_enc_i) + b_enc_i), threshold_i as the mask
  (ReLU without one); ŷ_j = Σ_{i ≤ j} z_i W_dec_i[:, j − i] + b_dec_j."""
  n_layers = len(list(folder.glob("W_enc_*.safetensors")))
  enc = [load_file(str(folder / f"W_enc_{i}.safetensors")) for i in range(n_layers)]
  dec = [load_file(str(folder / f"W_dec_{i}.safetensors"))[f"W_dec_{i}"] for i in range(n_layers)]
  z = []
  for i, e in enumerate(enc):
    pre = np.einsum("bd,fd->bf", x[i], e[f"W_enc_{i}"]) + e[f"b_enc_{i}"]
    theta = e.get(f"threshold_{i}")
    z.append(pre * (pre > theta) if theta is not None else np.maximum(pre, 0))
  y = [sum(z[i] @ dec[i][:, j - i] for i in range(j + 1)) + enc[j][f"b_dec_{j}"] for j in range(L)]
  return np.stack(z), np.stack(y)


@pytest.mark.parametrize("activation", ["jumprelu", "relu"])
def test_a_written_clt_has_circuit_tracers_layout_and_reads_back_equal(activation, tmp_path):
  """circuit-tracer is not installable beside this environment's transformers 5 (it pins
  transformers <= 4.57.3 and huggingface_hub < 1), so the written folder is checked against the
  file layout of its CrossLayerTranscoder.to_safetensors and its published formula."""
  import dataclasses

  rng = np.random.default_rng(5)
  clt = transcoders.CrossLayerTranscoder(
    W_enc=rng.normal(size=(L, D, N)).astype(np.float32),
    b_enc=rng.normal(size=(L, N)).astype(np.float32) * 0.3,
    W_dec=tuple(rng.normal(size=(N, L - i, D)).astype(np.float32) for i in range(L)),
    b_dec=rng.normal(size=(L, D)).astype(np.float32),
    activation=activation,
    threshold=(np.abs(rng.normal(size=(L, N))) + 0.3).astype(np.float32)
    if activation == "jumprelu"
    else None,
    input_hooks=tuple(f"blocks.{i}.resid_mid" for i in range(L)),
    output_hooks=tuple(f"blocks.{i}.mlp.out" for i in range(L)),
  )
  folder = circuit_tracer.write_clt(tmp_path / "clt", clt, model_name="meta-llama/Llama-3.2-1B")
  cfg = yaml.safe_load((folder / "config.yaml").read_text())
  assert cfg == {
    "model_kind": "cross_layer_transcoder",
    "feature_input_hook": "hook_resid_mid",
    "feature_output_hook": "hook_mlp_out",
    "model_name": "meta-llama/Llama-3.2-1B",
  }
  for i in range(L):
    enc = load_file(str(folder / f"W_enc_{i}.safetensors"))
    names = {f"W_enc_{i}", f"b_enc_{i}", f"b_dec_{i}"} | (
      {f"threshold_{i}"} if activation == "jumprelu" else set()
    )
    assert set(enc) == names and enc[f"W_enc_{i}"].shape == (N, D)
    assert load_file(str(folder / f"W_dec_{i}.safetensors"))[f"W_dec_{i}"].shape == (N, L - i, D)
  back = zoo.load_transcoder(folder)
  assert (back.activation, back.input_hooks, back.output_hooks) == (
    activation,
    clt.input_hooks,
    clt.output_hooks,
  )
  np.testing.assert_array_equal(back.W_enc, clt.W_enc)
  x = np.stack([inputs(D, rows=5, seed=30 + i) for i in range(L)])
  z_ref, y_ref = published_clt(folder, x)
  z = transcoders.clt_encode(back, x)
  assert 0 < (z != 0).mean() < 1
  np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(transcoders.clt_decode(back, z), y_ref, atol=1e-4)
  np.testing.assert_allclose(z, transcoders.clt_encode(clt, x), atol=1e-5, rtol=1e-5)

  skip = dataclasses.replace(clt, W_skip=np.zeros((L, D, D), np.float32))
  with pytest.raises(CheckpointError, match="hold no skip connection"):
    circuit_tracer.write_clt(tmp_path / "skip", skip)
  unnamed = dataclasses.replace(clt, input_hooks=(), output_hooks=())
  with pytest.raises(CheckpointError, match="no TransformerLens name for hook None"):
    circuit_tracer.write_clt(tmp_path / "unnamed", unnamed)
  assert not (tmp_path / "skip").exists() and not (tmp_path / "unnamed").exists()
