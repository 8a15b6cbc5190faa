"""A character-level tokenizer.json for tiny Hugging Face checkpoints: <unk>, <bos>, <eos>, then
printable ASCII (ids below 128). Imports neither jaxsae nor transformers, so the circuit-tracer
side (tests/circuit_tracer_side.py, another transformers) shares it with test_families."""

import tokenizers


def tokenizer_json(path) -> None:
  chars = [chr(c) for c in range(32, 127)]
  vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2} | {c: i + 3 for i, c in enumerate(chars)}
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
  tok.add_special_tokens(["<unk>", "<bos>", "<eos>"])
  tok.save(str(path))
