"""circuit-tracer's transcoder files, read into and written from `Transcoder` records.

Per-layer transcoders (a "transcoder_set"): one `layer_{i}.safetensors` per layer holding W_enc
[n, d] (rows are features: pre = x W_encᵀ + b_enc), W_dec [n, d], b_enc [n], b_dec [d], and
optionally `activation_function.threshold` [n] (JumpReLU, else ReLU), `k` (TopK) and W_skip
[d_out, d_in] (ŷ += x W_skipᵀ). Cross-layer transcoders: `W_enc_{i}.safetensors` (W_enc_i [n, d],
b_enc_i, b_dec_i, threshold_i) and `W_dec_{i}.safetensors` (W_dec_i [n, L − i, d]). Beside
either, `config.yaml` (read with yaml.safe_load) names `model_kind`, `feature_input_hook`,
`feature_output_hook` (TransformerLens names inside a block, e.g. mlp.hook_in), `model_name`,
and for TopK sets `activation: topk` and `k`. Formulas: `jaxsae.sae.zoo.transcoders`.

Writers follow circuit-tracer 0.5.0's own savers: `write_layer`/`write_set` its
SingleLayerTranscoder.to_safetensors, `write_clt` its CrossLayerTranscoder.to_safetensors (which
stores no skip connection, so CLTs with W_skip are refused), each with the config.yaml its
`load_transcoders` reads (`model_kind`, both hooks, `model_name`).
"""

from __future__ import annotations

import pathlib
import re

import numpy as np

from jaxsae.errors import CheckpointError
from jaxsae.sae.zoo import hooknames
from jaxsae.sae.zoo.transcoders import CrossLayerTranscoder, Transcoder

CONFIG_FILE = "config.yaml"
LAYER_FILE = re.compile(r"layer_(\d+)\.safetensors")
THRESHOLD = "activation_function.threshold"


def _yaml():
  try:
    import yaml
  except ImportError as e:
    raise CheckpointError("circuit-tracer's config.yaml needs PyYAML: pip install pyyaml") from e
  return yaml


def _tensors(file: pathlib.Path) -> dict[str, np.ndarray]:
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  try:
    return {k: np.asarray(v) for k, v in load_file(str(file)).items()}
  except (SafetensorError, OSError, ValueError) as e:
    raise CheckpointError(f"{file} is not a readable safetensors file ({e})") from e


def read_config(folder: pathlib.Path) -> dict:
  """config.yaml of a circuit-tracer folder ({} when there is none)."""
  file = folder / CONFIG_FILE
  if not file.is_file():
    return {}
  yaml = _yaml()
  try:
    cfg = yaml.safe_load(file.read_text())
  except (OSError, yaml.YAMLError) as e:
    raise CheckpointError(f"{file} is not readable YAML ({e})") from e
  return cfg if isinstance(cfg, dict) else {}


def _hook(cfg: dict, key: str, layer: int | None) -> str | None:
  site = cfg.get(key)
  if layer is None or not isinstance(site, str):
    return None
  return hooknames.valid(f"blocks.{layer}.{site}")


def layers(folder: pathlib.Path) -> list[int]:
  """The layers of a per-layer set folder, from its layer_{i}.safetensors files."""
  found = (LAYER_FILE.fullmatch(f.name) for f in folder.iterdir())
  return sorted(int(m.group(1)) for m in found if m)


def read_layer(file: pathlib.Path, cfg: dict | None = None) -> Transcoder:
  """One layer_{i}.safetensors (its folder's config.yaml gives hooks and TopK's k)."""
  file = pathlib.Path(file)
  cfg = read_config(file.parent) if cfg is None else cfg
  t = _tensors(file)
  missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in t]
  if missing:
    raise CheckpointError(f"{file} lacks {missing}; circuit-tracer's layer files hold them")
  m = LAYER_FILE.fullmatch(file.name)
  layer = int(m.group(1)) if m else None
  f32 = {k: np.asarray(v, np.float32) for k, v in t.items() if k != "k"}
  activation, k = "relu", None
  if THRESHOLD in f32:
    activation = "jumprelu"
  if cfg.get("activation") == "topk" or "k" in t:
    activation, k = "topk", int(np.asarray(t.get("k", cfg.get("k"))))
  skip = f32.get("W_skip")
  meta = {"source_format": "circuit_tracer", "layer": layer, "model": cfg.get("model_name")}
  try:
    return Transcoder(
      W_enc=f32["W_enc"].T,
      b_enc=f32["b_enc"],
      W_dec=f32["W_dec"],
      b_dec=f32["b_dec"],
      activation=activation,
      threshold=f32.get(THRESHOLD),
      k=k,
      W_skip=None if skip is None else skip.T,
      input_hook=_hook(cfg, "feature_input_hook", layer),
      output_hook=_hook(cfg, "feature_output_hook", layer),
      metadata={**meta, "path": str(file)},
    )
  except ValueError as e:
    raise CheckpointError(f"{file}: {e}") from e


def read_clt(folder: pathlib.Path) -> CrossLayerTranscoder:
  """A CLT folder of W_enc_{i} / W_dec_{i} files (and config.yaml)."""
  folder = pathlib.Path(folder)
  cfg = read_config(folder)
  n_layers = len(list(folder.glob("W_enc_*.safetensors")))
  enc, dec = [], []
  for i in range(n_layers):
    files = (folder / f"W_enc_{i}.safetensors", folder / f"W_dec_{i}.safetensors")
    for f in files:
      if not f.is_file():
        raise CheckpointError(f"{f} is missing; a {n_layers}-layer CLT has W_enc_i and W_dec_i")
    enc.append(_tensors(files[0]))
    dec.append(np.asarray(_tensors(files[1])[f"W_dec_{i}"], np.float32))

  def stack(name: str) -> np.ndarray:
    return np.stack([np.asarray(e[f"{name}_{i}"], np.float32) for i, e in enumerate(enc)])

  jump = all(f"threshold_{i}" in e for i, e in enumerate(enc))
  try:
    return CrossLayerTranscoder(
      W_enc=np.swapaxes(stack("W_enc"), 1, 2),
      b_enc=stack("b_enc"),
      W_dec=tuple(dec),
      b_dec=stack("b_dec"),
      activation="jumprelu" if jump else "relu",
      threshold=stack("threshold") if jump else None,
      input_hooks=tuple(_hook(cfg, "feature_input_hook", i) for i in range(n_layers)),
      output_hooks=tuple(_hook(cfg, "feature_output_hook", i) for i in range(n_layers)),
      metadata={"source_format": "circuit_tracer_clt", "model": cfg.get("model_name")},
    )
  except (KeyError, ValueError) as e:
    raise CheckpointError(f"{folder} is not a readable circuit-tracer CLT ({e})") from e


def write_layer(file: str | pathlib.Path, tc: Transcoder) -> pathlib.Path:
  """layer_{i}.safetensors as circuit-tracer's SingleLayerTranscoder.to_safetensors writes it."""
  from safetensors.numpy import save_file

  if tc.activation not in ("jumprelu", "relu", "topk"):
    raise CheckpointError(
      f"circuit-tracer's transcoders are JumpReLU, ReLU or TopK without a ReLU; this one's "
      f"activation is {tc.activation!r} (sparsify's): write it with "
      "jaxsae.sae.sparsify_format.save_transcoder"
    )
  file = pathlib.Path(file)
  file.parent.mkdir(parents=True, exist_ok=True)
  t = {
    "W_enc": tc.W_enc.T,
    "W_dec": tc.W_dec,
    "b_enc": tc.b_enc,
    "b_dec": tc.b_dec,
  }
  if tc.activation == "jumprelu":
    t[THRESHOLD] = tc.threshold
  if tc.W_skip is not None:
    t["W_skip"] = tc.W_skip.T
  t = {k: np.ascontiguousarray(v, np.float32) for k, v in t.items()}
  if tc.activation == "topk":
    t["k"] = np.asarray(tc.k, np.int64)
  save_file(t, str(file))
  return file


def write_set(
  folder: str | pathlib.Path, transcoders: dict[int, Transcoder], model_name: str | None = None
) -> pathlib.Path:
  """A per-layer set folder: layer_{i}.safetensors for layers 0..L−1 and config.yaml (without
  a `transcoders` list, so circuit-tracer globs layer_*.safetensors, locally or on the Hub)."""
  folder = pathlib.Path(folder)
  if sorted(transcoders) != list(range(len(transcoders))):
    raise CheckpointError(
      f"circuit-tracer needs a transcoder for every layer 0..L−1; got {sorted(transcoders)}"
    )
  first = transcoders[0]
  cfg = _config("transcoder_set", first.input_hook, first.output_hook, model_name)
  if first.activation == "topk":
    cfg.update(activation="topk", k=int(first.k))
  for layer, tc in transcoders.items():
    write_layer(folder / f"layer_{layer}.safetensors", tc)
  _write_config(folder, cfg)
  return folder


def _config(kind: str, input_hook, output_hook, model_name: str | None) -> dict:
  """config.yaml's fields; hooks must have TransformerLens names inside a block."""
  cfg = {"model_kind": kind}
  for key, hook in (("feature_input_hook", input_hook), ("feature_output_hook", output_hook)):
    site = hooknames.to_tl_site(hook)
    if site is None:
      raise CheckpointError(
        f"no TransformerLens name for hook {hook!r}; circuit-tracer's {key} needs one of "
        f"{sorted(hooknames.TL_SITES)} (set the record's hooks with dataclasses.replace)"
      )
    cfg[key] = site
  if model_name:
    cfg["model_name"] = model_name
  return cfg


def _write_config(folder: pathlib.Path, cfg: dict) -> None:
  yaml = _yaml()
  folder.mkdir(parents=True, exist_ok=True)
  (folder / CONFIG_FILE).write_text(yaml.safe_dump(cfg, sort_keys=False))


def write_clt(
  folder: str | pathlib.Path, clt: CrossLayerTranscoder, model_name: str | None = None
) -> pathlib.Path:
  """A CLT folder as circuit-tracer's CrossLayerTranscoder.to_safetensors writes it:
  W_enc_{i}.safetensors (W_enc_i [n, d], b_enc_i, b_dec_i, threshold_i if JumpReLU) and
  W_dec_{i}.safetensors (W_dec_i [n, L − i, d]) per layer, plus config.yaml (model_kind
  cross_layer_transcoder; hooks from layer 0's, which must name the same site on every layer)."""
  from safetensors.numpy import save_file

  folder = pathlib.Path(folder)
  if clt.W_skip is not None:
    raise CheckpointError(
      "circuit-tracer's CLT files hold no skip connection (its to_safetensors drops W_skip), "
      "so this affine CLT cannot be written in its format; drop W_skip only if you mean to"
    )
  d, d_out = clt.W_enc.shape[1], clt.b_dec.shape[-1]
  if d != d_out:
    raise CheckpointError(
      f"circuit-tracer's CLTs read and write d_model; this one maps {d} → {d_out}"
    )
  hooks = [(hooknames.to_tl_site(a), hooknames.to_tl_site(b)) for a, b in _hook_pairs(clt)]
  if len(set(hooks)) > 1:
    raise CheckpointError(
      f"circuit-tracer names one input and one output site for all layers; got {hooks}"
    )
  in0, out0 = _hook_pairs(clt)[0]
  cfg = _config("cross_layer_transcoder", in0, out0, model_name)
  folder.mkdir(parents=True, exist_ok=True)
  f32 = lambda a: np.ascontiguousarray(a, np.float32)  # noqa: E731
  for i in range(clt.n_layers):
    enc = {
      f"W_enc_{i}": f32(clt.W_enc[i].T),
      f"b_enc_{i}": f32(clt.b_enc[i]),
      f"b_dec_{i}": f32(clt.b_dec[i]),
    }
    if clt.activation == "jumprelu":
      enc[f"threshold_{i}"] = f32(clt.threshold[i])
    save_file(enc, str(folder / f"W_enc_{i}.safetensors"))
    save_file({f"W_dec_{i}": f32(clt.W_dec[i])}, str(folder / f"W_dec_{i}.safetensors"))
  _write_config(folder, cfg)
  return folder


def _hook_pairs(clt: CrossLayerTranscoder) -> list[tuple[str | None, str | None]]:
  n = clt.n_layers
  ins = clt.input_hooks or (None,) * n
  outs = clt.output_hooks or (None,) * n
  return list(zip(ins, outs, strict=True))
