"""`hf:REPO/PATH` ids: a file or folder of a Hugging Face Hub model repo, fetched with
huggingface_hub into its cache (snapshot_download with allow_patterns: PATH, everything under
it, and the config.yaml beside it that circuit-tracer sets keep), then read as that local path
would be (`locate`). Examples:

  hf:google/gemma-scope-2-270m-pt/resid_post/layer_12_width_16k_l0_big   a folder
  hf:mwhanna/qwen3-4b-transcoders/layer_1.safetensors                      one file
  hf:EleutherAI/sae-pythia-70m-32k@main/layers.3                           at a revision
  hf:OWNER/REPO                                                            the whole repo

With HF_HUB_OFFLINE=1, or when the Hub does not answer, only the cache is read; when it lacks
the files, one error names the repo and the command that downloads them to a local folder.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re

from jaxsae.errors import CheckpointError
from jaxsae.sae.zoo.resolve import offline as hub_offline

PREFIX = "hf:"
_ID = re.compile(r"([\w.-]+/[\w.-]+)(?:@([^/]+))?(?:/(.*))?")


@dataclasses.dataclass(frozen=True)
class HubPath:
  """A path inside a Hub repo ("" is the whole repo), at a revision (None: main)."""

  repo_id: str
  path: str = ""
  revision: str | None = None

  def patterns(self) -> list[str] | None:
    """allow_patterns for snapshot_download (None: every file)."""
    if not self.path:
      return None
    parent = self.path.rpartition("/")[0]
    return [self.path, f"{self.path}/*", f"{parent}/config.yaml" if parent else "config.yaml"]

  def command(self) -> str:
    """The CLI line that downloads it to a local folder."""
    rev = f" --revision {self.revision}" if self.revision else ""
    include = f" --include '{self.path}' '{self.path}/*'" if self.path else ""
    return f"hf download {self.repo_id}{rev}{include} --local-dir DIR"


def is_hub_id(text) -> bool:
  return str(text).startswith(PREFIX)


def parse(text: str) -> HubPath:
  """HubPath of `hf:OWNER/REPO[@REVISION][/PATH]`."""
  m = _ID.fullmatch(str(text).removeprefix(PREFIX).strip("/"))
  if not m:
    raise CheckpointError(
      f"{text!r}: write a Hub file or folder as hf:OWNER/REPO/PATH (e.g. "
      "hf:google/gemma-scope-2-270m-pt/resid_post/layer_12_width_16k_l0_big), or "
      "hf:OWNER/REPO@REVISION/PATH"
    )
  repo_id, revision, path = m.groups()
  path = (path or "").strip("/")
  if ".." in path.split("/"):
    raise CheckpointError(f"{text!r}: a Hub PATH stays inside its repo; drop the '..'")
  return HubPath(repo_id, path, revision)


def fetch(text: str, cache_dir: str | pathlib.Path | None = None) -> pathlib.Path:
  """The local path (in the Hub cache) of an hf: id's file or folder, downloaded if needed."""
  where = parse(text)
  try:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
  except ImportError as e:
    raise CheckpointError(f"{text} needs huggingface_hub: pip install 'jaxsae[hf]'") from e
  offline = hub_offline()
  local = where.path or "."
  download = (
    f"On a machine that reaches the Hub run `{where.command()}` (`huggingface-cli download` "
    f"with the same arguments on huggingface_hub < 1.0), copy DIR here and pass the local "
    f"path DIR/{local} instead of {text}"
  )
  cache = cache_dir or os.environ.get("HF_HUB_CACHE") or "~/.cache/huggingface/hub"
  try:
    root = snapshot_download(
      where.repo_id,
      revision=where.revision,
      cache_dir=cache_dir,
      allow_patterns=where.patterns(),
      local_files_only=offline,
    )
  except GatedRepoError as e:
    raise CheckpointError(
      f"{where.repo_id} is gated on the Hub: accept its terms on its page, log in (`hf auth "
      "login` or HF_TOKEN) and load it again"
    ) from e
  except RepositoryNotFoundError as e:
    raise CheckpointError(
      f"the Hub has no model repo {where.repo_id} (or it is private: log in with `hf auth "
      "login`); check the name in hf:OWNER/REPO/PATH"
    ) from e
  except (HfHubHTTPError, OSError, ValueError) as e:
    state = "HF_HUB_OFFLINE is set" if offline else "the Hub did not answer"
    raise CheckpointError(
      f"cannot load {text}: {state} and the Hugging Face cache ({cache}) lacks "
      f"{where.repo_id} / {local}. {download} ({type(e).__name__})"
    ) from e
  target = pathlib.Path(root) / where.path
  if not target.exists():
    if offline:
      raise CheckpointError(
        f"cannot load {text}: HF_HUB_OFFLINE is set and the cached snapshot of "
        f"{where.repo_id} ({root}) lacks {local}. {download}"
      )
    raise CheckpointError(
      f"the Hub repo {where.repo_id} has no file or folder {where.path!r}; check the PATH in "
      "hf:OWNER/REPO/PATH against the repo's file list"
    )
  return target
