"""Trained SAEs on disk: `config.json` + `sae.safetensors`, input scale folded into the weights.

An exported SAE takes raw activations (`normalization.fold_scale`); an exported transcoder takes
raw inputs and writes raw targets (both its scales folded). Tensors are named
"params/<name>" and "buffers/<name>" (BatchTopK's threshold); nothing is pickled. `load`
checks the format, the config and every tensor's shape before returning anything. The SAELens
format (for SAEBench, SAE-Vis, Neuronpedia) is written from the same folded parameters.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsae import format_tags, saved
from jaxsae.errors import CheckpointError
from jaxsae.sae import registry
from jaxsae.sae.config import SAEConfig
from jaxsae.sae.normalization import fold_scale

FORMAT = format_tags.tag("sae")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "sae.safetensors"
PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent.parent / "pretrained"
NAMED = {
  # TopK SAE (n = 1024, k = 16) on the default model's blocks.1.resid_post, trained by the main
  # job (python -m experiments.main) and exported; its config.json records the run.
  "default": "sae_stdlib_bytes_topk",
}


def member_variables(params: Any, extras: Any, index: int) -> dict[str, Any]:
  """One member's {"params", "buffers"?} out of a sweep group's stacked state, as numpy."""
  take = lambda tree: jax.tree.map(lambda a: np.asarray(a[index]), jax.device_get(tree))  # noqa: E731
  variables = {"params": take(params)}
  if extras.get("buffers"):
    variables["buffers"] = take(extras["buffers"])
  return variables


def save(
  path: str | pathlib.Path,
  config: SAEConfig,
  variables: dict[str, Any],
  scale: float,
  metadata: dict | None = None,
  target_scale: float | None = None,
) -> pathlib.Path:
  """Write one SAE (trained on scale·x) so that it acts on raw x; a transcoder (trained on
  targets target_scale·y) so that it also writes raw y."""
  from safetensors.numpy import save_file

  if target_scale is not None and target_scale != scale and not config.transcode:
    raise ValueError(
      "an SAE subtracts b_dec from its input, so its input and target must share one scale"
    )
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  folded = fold_scale(variables["params"], scale, target_scale)
  tensors = {f"params/{k}": np.asarray(v, np.float32) for k, v in folded.items()}
  tensors.update(
    {f"buffers/{k}": np.asarray(v, np.float32) for k, v in variables.get("buffers", {}).items()}
  )
  save_file(tensors, str(path / WEIGHTS_FILE), metadata={"format": FORMAT})
  doc = {"format": FORMAT, "sae": config.to_dict(), "folded_scale": scale}
  if target_scale is not None:
    doc["folded_target_scale"] = target_scale
  doc.update(metadata or {})
  (path / CONFIG_FILE).write_text(json.dumps(doc, indent=2))
  return path


def expected_shapes(config: SAEConfig) -> dict[str, tuple[int, ...]]:
  sae = registry.build(config)
  abstract = jax.eval_shape(sae.init, jax.random.key(0), jnp.zeros((1, config.d_in)))
  flat = {}
  for collection, values in nn.meta.unbox(abstract).items():
    flat.update({f"{collection}/{k}": tuple(v.shape) for k, v in values.items()})
  return flat


def resolve(name_or_path: str | pathlib.Path) -> pathlib.Path:
  """A shipped SAE's name ("default") or a folder path -> the folder."""
  if str(name_or_path) in NAMED:
    return PRETRAINED_DIR / NAMED[str(name_or_path)]
  return pathlib.Path(name_or_path)


def load(path_or_id: str | pathlib.Path) -> tuple[SAEConfig, dict[str, Any], dict]:
  """(config, variables, metadata) of an SAE: a jaxsae folder or a shipped SAE's name such as
  "default", or any published format `jaxsae.sae.zoo` reads (SAELens folders and
  saelens:RELEASE/SAE_ID, Gemma Scope 1 and 2, sparsify), locally or as hf:OWNER/REPO/PATH (a
  Hub file or folder, downloaded through huggingface_hub's cache). The variables act on raw
  activations; metadata has "source_format" and "hook" (jaxsae's name, None if unknown)."""
  from jaxsae.sae import zoo  # zoo reads jaxsae folders with load_folder below.

  return zoo.load(path_or_id)


def load_folder(path: str | pathlib.Path) -> tuple[SAEConfig, dict[str, Any], dict]:
  """(config, variables, metadata) of a folder `save` wrote."""
  path = resolve(path)
  config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
  for f in (config_file, weights_file):
    if not f.is_file():
      raise CheckpointError(f"{f} is missing; export the SAE with jaxsae.sae.export.save")
  doc = saved.read_document(config_file, "sae", "re-export the SAE with this jaxsae")
  try:
    config = SAEConfig.from_dict(doc["sae"])
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{config_file} holds an invalid SAE config: {e}") from e
  flat = saved.read_tensors(weights_file, expected_shapes(config), "the config")
  variables: dict[str, dict] = {}
  for key, value in flat.items():
    collection, name = key.split("/", 1)
    variables.setdefault(collection, {})[name] = jnp.asarray(value)
  metadata = {k: v for k, v in doc.items() if k not in ("format", "sae")}
  return config, variables, metadata
