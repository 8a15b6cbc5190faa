"""Models on the Hugging Face Hub, through huggingface_hub's cache.

`snapshot("google/gemma-3-270m")` downloads the files a model needs (config, safetensors weights,
tokenizer) when online, reads the cache when offline (HF_HUB_OFFLINE=1, or no connection), and
with neither raises one error naming the repo, the files and how to put them in place.
"""

from __future__ import annotations

import os
import pathlib
import re

from jaxsae.errors import CheckpointError

# The files a model folder needs; weights are safetensors only (nothing pickled is fetched).
PATTERNS = (
  "config.json",
  "generation_config.json",
  "model.safetensors",
  "model-*.safetensors",
  "model.safetensors.index.json",
  "tokenizer.json",
  "tokenizer.model",  # Read only where tokenizer.json is absent.
  "tokenizer_config.json",
  "special_tokens_map.json",
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_repo_id(name: str) -> bool:
  """ "owner/name" with Hub-legal characters, and not an existing local path."""
  return bool(_REPO_ID.match(name)) and not pathlib.Path(name).expanduser().exists()


def _offline() -> bool:
  return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def snapshot(
  repo_id: str, revision: str | None = None, cache_dir: str | pathlib.Path | None = None
) -> pathlib.Path:
  """The local folder holding `repo_id`'s model files (see the module docstring)."""
  try:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
      GatedRepoError,
      HfHubHTTPError,
      LocalEntryNotFoundError,
      RepositoryNotFoundError,
    )
  except ImportError as e:
    raise CheckpointError(
      f"loading {repo_id} from the Hub needs huggingface_hub: pip install 'jaxsae[hf]'"
    ) from e
  kwargs = dict(revision=revision, cache_dir=cache_dir, allow_patterns=list(PATTERNS))
  try:
    if not _offline():
      try:
        return pathlib.Path(snapshot_download(repo_id, **kwargs))
      except GatedRepoError as e:
        raise CheckpointError(
          f"{repo_id} is gated on the Hub: accept its license on its model page, then log in "
          "(`huggingface-cli login` or HF_TOKEN) and load it again"
        ) from e
      except RepositoryNotFoundError as e:
        raise CheckpointError(
          f"the Hub has no model {repo_id} (or it is private: log in with `huggingface-cli "
          "login`); check the id"
        ) from e
      except (HfHubHTTPError, OSError, LocalEntryNotFoundError):
        pass  # No connection: fall back to the cache below.
    return pathlib.Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
  except LocalEntryNotFoundError as e:
    where = cache_dir or os.environ.get("HF_HUB_CACHE") or "~/.cache/huggingface/hub"
    raise CheckpointError(
      f"cannot load {repo_id}: the Hub is out of reach and the cache ({where}) does not hold "
      f"it. It needs {', '.join(PATTERNS[:1] + PATTERNS[2:6])} (the weights as one "
      "model.safetensors or an index and its shards). On a machine with internet run "
      f"`huggingface-cli download {repo_id} --include 'config.json' '*.safetensors' "
      f"'*.json' --local-dir DIR`, copy DIR here and pass DIR as the model; or copy that "
      "machine's Hugging Face cache to HF_HOME here"
    ) from e
