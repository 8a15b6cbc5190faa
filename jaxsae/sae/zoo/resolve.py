"""SAELens release ids → files on this machine, through sae-lens's own table and Hub cache.

`saelens:RELEASE/SAE_ID` (release names have no "/", SAE ids may) is looked up in the
pretrained_saes.yaml that sae-lens ships (`get_pretrained_saes_directory`): the release gives
the Hub repo and the conversion (its format), the SAE id the folder or file inside it. Only the
files that format needs are fetched with huggingface_hub (hf_hub_download / snapshot_download
with patterns) into its cache. With HF_HUB_OFFLINE=1, or without a connection, the cache is
read; when it lacks a file, one error names the repo, the files and the command that downloads
them (on a machine with internet; then copy the cache here, or pass the --local-dir folder).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import pathlib

from jaxsae.errors import CheckpointError

PREFIX = "saelens:"
# sae-lens conversion → the files it needs, relative to the SAE's folder ("{}" = the path itself).
FILES = {
  None: ("cfg.json", "sae_weights.safetensors"),
  "sae_lens": ("cfg.json", "sae_weights.safetensors"),
  "gemma_2": ("params.npz",),
  "gemma_2_transcoder": ("params.npz",),
  "gemma_3": ("params.safetensors",),
  "sparsify": ("cfg.json", "sae.safetensors"),
  "mwhanna_transcoder": ("{}",),
  "mntss_clt_layer_transcoder": ("/config.yaml", "/W_enc_*.safetensors", "/W_dec_*.safetensors"),
}
# Fetched when present: Gemma Scope 2's config.json names the hook (else the folder does);
# circuit-tracer's config.yaml names hooks and the model (some repos lack it).
OPTIONAL = {"gemma_3": ("config.json",), "mwhanna_transcoder": ("/config.yaml",)}


@dataclasses.dataclass(frozen=True)
class Release:
  """Where a release's SAE lives on the Hub, and in which sae-lens conversion format."""

  release: str
  sae_id: str
  repo_id: str
  path: str
  conversion: str | None
  model: str | None = None
  # The input scale sae-lens folds into the weights of "expected_average_only_in" SAEs.
  norm_scaling_factor: float | None = None

  def files(self, names: tuple[str, ...] | None = None) -> list[str]:
    """Repo paths (glob patterns allowed) of `names` (default: the files this format needs),
    given relative to the SAE's folder, or to the repo's root when they start with "/"."""
    out = []
    for name in FILES[self.conversion] if names is None else names:
      if name == "{}":
        out.append(self.path)
      elif name.startswith("/"):
        out.append(name[1:])
      else:
        out.append(f"{self.path}/{name}" if self.path else name)
    return out


def is_release_id(text: str) -> bool:
  return str(text).startswith(PREFIX)


def lookup(text: str) -> Release:
  """The Release named by `saelens:RELEASE/SAE_ID` in the installed sae-lens's table."""
  release, _, sae_id = str(text).removeprefix(PREFIX).partition("/")
  if not release or not sae_id:
    raise CheckpointError(
      f"{text!r}: write a SAELens pretrained SAE as saelens:RELEASE/SAE_ID, e.g. "
      "saelens:gemma-scope-2b-pt-res-canonical/layer_20/width_16k/canonical"
    )
  try:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
  except ImportError as e:
    raise CheckpointError(
      f"resolving {text!r} needs sae-lens's table of releases: pip install sae-lens (or "
      "jaxsae[peers]); or download the SAE's folder and pass its path"
    ) from e
  table = get_pretrained_saes_directory()
  if release not in table:
    close = difflib.get_close_matches(release, list(table), n=3)
    raise CheckpointError(
      f"sae-lens has no release {release!r}" + (f"; did you mean {close}?" if close else "")
    )
  entry = table[release]
  if sae_id not in entry.saes_map:
    close = difflib.get_close_matches(sae_id, list(entry.saes_map), n=3)
    some = close or list(entry.saes_map)[:5]
    raise CheckpointError(f"release {release!r} has no SAE id {sae_id!r}; e.g. {some}")
  conversion = entry.conversion_func
  path = str(entry.saes_map[sae_id]).strip("/")
  if conversion == "gemma_3" and "clt" in path.split("/")[0]:
    folder = path.rsplit("/", 1)[0]
    raise CheckpointError(
      f"{release}/{sae_id} is one layer of a Gemma Scope 2 cross-layer transcoder: download its "
      f"folder (hf download {entry.repo_id} --include '{folder}/*') and read it with "
      "jaxsae.sae.zoo.load_transcoder(FOLDER)"
    )
  if conversion not in FILES:
    raise CheckpointError(
      f"release {release!r} is stored in sae-lens's {conversion!r} format, which jaxsae does not "
      'read. Convert it once with sae-lens: python -c "from sae_lens import SAE; '
      f"SAE.from_pretrained('{release}', '{sae_id}').save_model('FOLDER')\" and load FOLDER"
    )
  factor = (getattr(entry, "norm_scaling_factor", None) or {}).get(sae_id)
  return Release(release, sae_id, entry.repo_id, path, conversion, entry.model, factor)


def offline() -> bool:
  return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def fetch(release: Release, cache_dir: str | pathlib.Path | None = None) -> pathlib.Path:
  """The local path of the release's SAE (file or folder) in the Hub cache, downloading only
  the files its format needs; the cache alone when offline (see the module docstring)."""
  try:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError
  except ImportError as e:
    raise CheckpointError(
      f"fetching {release.repo_id} needs huggingface_hub: pip install 'jaxsae[hf]'"
    ) from e
  files = release.files()
  kwargs = dict(repo_id=release.repo_id, cache_dir=cache_dir, local_files_only=offline())
  try:
    if any("*" in f for f in files):
      root = pathlib.Path(snapshot_download(allow_patterns=files, **kwargs))
      if not list(root.glob(files[-1])):
        raise EntryNotFoundError(f"no {files[-1]} in the cached snapshot")
    else:
      local = [pathlib.Path(hf_hub_download(filename=f, **kwargs)) for f in files]
      root = local[0].parents[len(pathlib.PurePosixPath(files[0]).parts) - 1]
      for name in release.files(OPTIONAL.get(release.conversion, ())):
        try:
          hf_hub_download(filename=name, **kwargs)
        except (EntryNotFoundError, HfHubHTTPError, OSError):
          pass  # Optional: the readers fall back on the folder's name.
  except GatedRepoError as e:
    raise CheckpointError(
      f"{release.repo_id} is gated on the Hub: accept its terms on its page, log in (`hf auth "
      "login` or HF_TOKEN) and load it again"
    ) from e
  except (EntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
    where = cache_dir or os.environ.get("HF_HUB_CACHE") or "~/.cache/huggingface/hub"
    state = "HF_HUB_OFFLINE is set" if offline() else "the Hub did not answer"
    listed = " ".join(f"'{f}'" for f in files)
    command = f"hf download {release.repo_id} " + ("--include " if "*" in listed else "") + listed
    raise CheckpointError(
      f"cannot load {PREFIX}{release.release}/{release.sae_id}: it is {release.repo_id} / "
      f"{release.path}, {state} and the cache ({where}) lacks {listed}. On a machine with "
      f"internet run `{command}` (then copy its Hugging Face cache "
      f"to HF_HUB_CACHE here), or add --local-dir DIR and load DIR/{release.path} ({e})"
    ) from e
  if release.conversion == "mntss_clt_layer_transcoder":
    return root  # The SAE id names one layer; the CLT is the whole folder.
  return root / release.path if release.path else root
