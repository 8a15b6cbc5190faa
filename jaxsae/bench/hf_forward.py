"""The harvest's forward beside transformers' on the same windows, in one process.

jaxsae runs the harvest's own jitted capture (`harvest.capture_fn`: only the blocks up to the
hook). transformers runs `*ForCausalLM.model` (the backbone, no unembedding) built from the same
checkpoint in float32, with a forward hook on decoder layer L that keeps its output (the
residual stream after block L, our `blocks.L.resid_post`): once over every layer, and once
stopped by the hook after layer L (as SAELens and TransformerLens harvests stop early). The
three are timed in turns, `repeats` passes each over the same windows, and the median pass
gives tokens/s, so a busy machine slows all of them alike. torch and transformers are a test
and `peers` dependency, not a jaxsae one: they are imported here only.
"""

from __future__ import annotations

import pathlib
import statistics
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.activations import harvest as harvest_lib
from jaxsae.errors import JaxsaeError
from jaxsae.models import hooks as hooks_lib
from jaxsae.models.language_model import LanguageModel


def hf_checkpoint(lm: LanguageModel) -> tuple[dict[str, Any], Mapping[str, np.ndarray]]:
  """(config.json dict, transformers state dict as numpy) of the file `lm` was loaded from."""
  source, path = lm.metadata.get("source"), pathlib.Path(str(lm.metadata.get("path", "")))
  if source == "gguf":
    from jaxsae.models.formats import gguf

    checkpoint = gguf.read_gguf(path)
    return dict(checkpoint.config), checkpoint.tensors
  if source == "huggingface":
    from jaxsae.models.formats import hf_folder

    return dict(hf_folder.read_config(path)), hf_folder.read_weights(path)[0]
  raise JaxsaeError(
    f"the transformers comparison needs a model loaded from a GGUF file or a Hugging Face "
    f"folder; this one's source is {source!r}"
  )


def torch_model(config: Mapping[str, Any], tensors: Mapping[str, np.ndarray]):
  """transformers' `*ForCausalLM` for `config`, holding `tensors` (float32, eval mode)."""
  import torch
  import transformers

  hf_config = transformers.AutoConfig.for_model(**config)
  model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
  state = {name: torch.from_numpy(np.array(w, np.float32)) for name, w in tensors.items()}
  result = model.load_state_dict(state, strict=False)
  # A tied head is absent from the file (it is the embedding).
  missing = [k for k in result.missing_keys if k != "lm_head.weight"]
  if missing or result.unexpected_keys:
    raise JaxsaeError(
      f"transformers' {type(model).__name__} does not fit the checkpoint: missing {missing}, "
      f"unexpected {result.unexpected_keys}"
    )
  if "lm_head.weight" in result.missing_keys:
    model.tie_weights()
  return model.eval()


class _Stop(Exception):  # noqa: N818 (control flow, not an error)
  pass


def _layer_output(module, inputs, output):
  del module, inputs
  return output[0] if isinstance(output, tuple) else output


def torch_forward(model, layer: int, stop: bool):
  """`tokens (B, T) int -> (B, T, D)` numpy: decoder layer `layer`'s output, all layers run
  (the backbone's final norm too) or, with `stop`, none after it."""
  import torch

  kept = {}

  def hook(module, inputs, output):
    kept["x"] = _layer_output(module, inputs, output)
    if stop:
      raise _Stop

  def forward(tokens):
    handle = model.model.layers[layer].register_forward_hook(hook)
    try:
      with torch.inference_mode():
        model.model(input_ids=torch.from_numpy(np.asarray(tokens, np.int64)), use_cache=False)
    except _Stop:
      pass
    finally:
      handle.remove()
    return kept.pop("x").numpy()

  return forward


def compare(
  lm: LanguageModel,
  windows_NxT: np.ndarray,
  hook: str,
  *,
  batch_size: int = 16,
  repeats: int = 3,
  model=None,
) -> dict[str, Any]:
  """Tokens/s of jaxsae's harvest forward and of transformers' (all layers; stopped after the
  hook's layer) on the same windows, their ratios, and how far the activations differ.

  `model`: a transformers model to use instead of one built from `lm`'s checkpoint file.
  """
  import torch

  layer, site = hooks_lib.parse(hooks_lib.canonical(hook))
  if site != "resid_post" or layer is None:
    raise JaxsaeError(f"the transformers comparison reads decoder-layer outputs: a "
                      f"blocks.L.resid_post hook, not {hook!r}")  # fmt: skip
  if model is None:
    model = torch_model(*hf_checkpoint(lm))
  windows_NxT = np.asarray(windows_NxT, np.int32)
  batches = [windows_NxT[i : i + batch_size] for i in range(0, len(windows_NxT), batch_size)]
  capture = harvest_lib.capture_fn(lm.config, (hook,))

  def ours(tokens):
    return capture(lm.params, jnp.asarray(tokens))[hook]

  runs = {
    "jaxsae": lambda t: jax.block_until_ready(ours(t)),
    "transformers_stop": torch_forward(model, layer, stop=True),
    "transformers_all": torch_forward(model, layer, stop=False),
  }
  first = batches[0]
  reference = np.asarray(runs["jaxsae"](first))  # Compiles.
  diffs = {name: float(np.max(np.abs(run(first) - reference))) for name, run in runs.items()}
  seconds = {name: [] for name in runs}
  for _ in range(repeats):  # In turns: load on the machine falls on all three alike.
    for name, run in runs.items():
      start = time.perf_counter()
      for tokens in batches:
        run(tokens)
      seconds[name].append(time.perf_counter() - start)
  tokens = int(windows_NxT.size)
  tps = {name: tokens / statistics.median(s) for name, s in seconds.items()}
  return {
    "hook": hook,
    "windows": len(windows_NxT),
    "seq_len": int(windows_NxT.shape[1]),
    "tokens": tokens,
    "batch_size": batch_size,
    "repeats": repeats,
    "torch_threads": torch.get_num_threads(),
    "jax_devices": jax.device_count(),
    "transformers_model": type(model).__name__,
    "layers_total": len(model.model.layers),
    "jaxsae_tokens_per_s": tps["jaxsae"],
    "transformers_stop_tokens_per_s": tps["transformers_stop"],
    "transformers_all_tokens_per_s": tps["transformers_all"],
    "ratio_vs_stop": tps["jaxsae"] / tps["transformers_stop"],
    "ratio_vs_all": tps["jaxsae"] / tps["transformers_all"],
    "max_abs_diff": max(diffs["transformers_stop"], diffs["transformers_all"]),
    "max_abs": float(np.max(np.abs(reference))),
    # Mean residual norm at position 0 (a BOS or window start: the attention sink) and after.
    "norm_position0": float(np.linalg.norm(reference[:, 0], axis=-1).mean()),
    "norm_rest": float(np.linalg.norm(reference[:, 1:], axis=-1).mean()),
    "seconds": seconds,
  }
