"""circuit-tracer's side of the agreement test (tests/test_circuit_tracer_agreement.py).

Run as `python circuit_tracer_side.py SPEC.json` in an environment that holds circuit-tracer
0.5.0 (which pins transformers ≤ 4.57.3; see tracer_env.py). SPEC names:
  model_dir  where to save a tiny random Gemma 3 (transformers' Gemma3ForCausalLM, v4 config);
  prompt     token ids;
  sets       [{"name", "repo_id"}]: transcoder folders jaxsae wrote in circuit-tracer's format,
             each laid out as a Hub repo in the Hub cache HF_HUB_CACHE (offline), loaded with
             circuit-tracer's own `load_transcoder_from_hub`; or [{"name", "gemma_scope_2":
             "transcoders" | "clt", "paths"}]: Gemma Scope 2 files jaxsae wrote, one per layer,
             loaded with circuit-tracer's load_transcoder_set(special_load_fn="gemma-scope-2")
             or load_gemma_scope_2_clt;
  out_dir    where each set's graph goes as NAME.npz.
Nothing here imports jaxsae.
"""

import json
import pathlib
import sys

import numpy as np
import torch
import transformers
from char_tokenizer import tokenizer_json

VOCAB = 128


def tiny_gemma3(folder: pathlib.Path, seed: int) -> None:
  """Gemma 3 with local/global layers (their own rope thetas, linear scaling on global ones),
  QK-norm and MQA; every norm gain randomized, so a wrong freeze or a missing norm shows."""
  config = transformers.Gemma3TextConfig(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=16,
    sliding_window=5,
    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    rope_theta=1000.0,
    rope_local_base_freq=10.0,
    rope_scaling={"rope_type": "linear", "factor": 4.0},
    max_position_embeddings=64,
    initializer_range=0.2,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
  )
  torch.manual_seed(seed)
  model = transformers.Gemma3ForCausalLM(config).float().eval()
  with torch.no_grad():
    for key, p in model.named_parameters():
      if "norm" in key:
        p.add_(0.3 * torch.randn_like(p))
  model.save_pretrained(folder)
  tokenizer_json(folder / "tokenizer.json")
  fast = transformers.PreTrainedTokenizerFast(
    tokenizer_file=str(folder / "tokenizer.json"),
    bos_token="<bos>",
    eos_token="<eos>",
    unk_token="<unk>",
    pad_token="<unk>",
  )
  fast.save_pretrained(folder)


def graph_arrays(model, prompt) -> dict:
  from circuit_tracer import attribute
  from circuit_tracer.graph import compute_graph_scores, prune_graph

  graph = attribute(torch.tensor(prompt), model, batch_size=16)
  pruned = prune_graph(graph, node_threshold=0.8, edge_threshold=0.98)
  replacement, completeness = compute_graph_scores(graph)
  return {
    "active_features": graph.active_features.numpy(),
    "activation_values": graph.activation_values.float().numpy(),
    "selected_features": graph.selected_features.numpy(),
    "adjacency": graph.adjacency_matrix.float().numpy(),
    "logit_tokens": np.array([t.vocab_idx for t in graph.logit_targets]),
    "logit_probabilities": graph.logit_probabilities.float().numpy(),
    "node_mask": pruned.node_mask.numpy(),
    "edge_mask": pruned.edge_mask.numpy(),
    "cumulative_scores": pruned.cumulative_scores.float().numpy(),
    "scores": np.array([replacement, completeness]),
    "embed_scale": np.float32(model.cfg.d_model**0.5),
  }


def gemma_scope_2(kind: str, paths: list[str]):
  from circuit_tracer.transcoder.cross_layer_transcoder import load_gemma_scope_2_clt
  from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set

  hooks = dict(feature_input_hook="mlp.hook_in", feature_output_hook="hook_mlp_out")
  cpu = dict(device=torch.device("cpu"), dtype=torch.float32)
  by_layer = dict(enumerate(paths))
  if kind == "transcoders":
    return load_transcoder_set(
      by_layer, scan="gemma-scope-2", special_load_fn="gemma-scope-2", **hooks, **cpu
    )
  # circuit-tracer 0.5.0's load_gemma_scope_2_clt reads layers range(max(paths)): one key past
  # the last layer makes it read them all.
  by_layer[len(paths)] = paths[-1]
  return load_gemma_scope_2_clt(by_layer, scan="gemma-scope-2", **hooks, **cpu)


def main(spec_file: str) -> None:
  from circuit_tracer import ReplacementModel
  from circuit_tracer.utils.hf_utils import load_transcoder_from_hub

  spec = json.loads(pathlib.Path(spec_file).read_text())
  model_dir = pathlib.Path(spec["model_dir"])
  tiny_gemma3(model_dir, spec.get("seed", 0))
  out_dir = pathlib.Path(spec["out_dir"])
  for entry in spec["sets"]:
    if "gemma_scope_2" in entry:
      transcoders = gemma_scope_2(entry["gemma_scope_2"], entry["paths"])
    else:
      transcoders, _ = load_transcoder_from_hub(
        entry["repo_id"], device=torch.device("cpu"), dtype=torch.float32, lazy_decoder=False
      )
    model = ReplacementModel.from_pretrained_and_transcoders(
      str(model_dir), transcoders, backend="nnsight", device=torch.device("cpu")
    )
    np.savez(out_dir / f"{entry['name']}.npz", **graph_arrays(model, spec["prompt"]))


if __name__ == "__main__":
  main(sys.argv[1])
