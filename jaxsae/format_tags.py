"""The tag with which every file jaxsae saves names its format: "jaxsae-<kind>/<version>", in the
document's "format" field (an exported SAE also puts it in its safetensors header).

Writers stamp `tag(kind)`; readers call `check(doc, kind, ...)`. One scheme for every kind:

    kind            written by                              tag now
    lm              models.pretrained.save                  jaxsae-lm/1
    sae             sae.export.save                         jaxsae-sae/1
    activations     activations.store (store.json)          jaxsae-activations/1
    bridges         sparse.bridges.save_bridges             jaxsae-bridges/1
    circuit         sparse.pruned_circuit.Circuit.save      jaxsae-circuit/1
    circuit-view    sparse.views.circuit_document           jaxsae-circuit-view/1

Files saved before this scheme named four kinds "jaxsae.<kind>" with the version in a separate
"format_version" field (`LEGACY`: the shipped models in jaxsae/pretrained/ and the circuits in
docs/circuits/ are such files). Readers take those as the same version of the kind, so they load
unchanged; nothing rewrites them. A newer version, or another kind, is refused with the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from jaxsae.errors import CheckpointError

VERSIONS = {"lm": 1, "sae": 1, "activations": 1, "bridges": 1, "circuit": 1, "circuit-view": 1}
# The tags of files saved before the one scheme: kind -> ("format", "format_version") they hold.
LEGACY = {
  "lm": ("jaxsae.lm", 1),
  "bridges": ("jaxsae.bridges", 1),
  "circuit": ("jaxsae.circuit", 1),
  "circuit-view": ("jaxsae.circuit_view", 1),
}
_TAG = re.compile(r"jaxsae-(?P<kind>[a-z][a-z0-9-]*)/(?P<version>[0-9]+)")


def tag(kind: str) -> str:
  """The tag a writer of `kind` stamps, e.g. "jaxsae-lm/1"."""
  return f"jaxsae-{kind}/{VERSIONS[kind]}"


def parse(doc: Mapping) -> tuple[str, int] | None:
  """(kind, version) that `doc`'s "format" names, in the current scheme or a legacy one; None
  when it names no jaxsae format."""
  fmt = doc.get("format")
  match = _TAG.fullmatch(fmt) if isinstance(fmt, str) else None
  if match:
    return match["kind"], int(match["version"])
  for kind, (legacy, _) in LEGACY.items():
    if fmt == legacy:
      version = doc.get("format_version")
      return kind, version if isinstance(version, int) else -1
  return None


def problem(doc: Mapping, kind: str) -> str | None:
  """Why `doc` is not a `kind` document that this jaxsae reads (None when it is one)."""
  found = parse(doc)
  if found == (kind, VERSIONS[kind]):
    return None
  got = repr(doc.get("format"))
  if "format_version" in doc:
    got += f" version {doc.get('format_version')!r}"
  reads = repr(tag(kind))
  if kind in LEGACY:
    reads += f" (or the older {LEGACY[kind][0]!r} version {LEGACY[kind][1]})"
  if found is None or found[0] not in VERSIONS:
    return f"has format {got}, not a jaxsae {kind} file; this jaxsae reads {reads}"
  if found[0] != kind:
    return f"has format {got}: a jaxsae {found[0]} file, where this jaxsae reads {reads}"
  newer = found[1] > VERSIONS[kind]
  age = "a newer jaxsae (upgrade jaxsae to read it)" if newer else "an older jaxsae"
  return f"has format {got}, written by {age}; this jaxsae reads {reads}"


def check(doc: Mapping, kind: str, where: str, fix: str) -> None:
  """Raise CheckpointError naming `where`, what its format is, what this jaxsae reads and `fix`,
  unless `doc` is a `kind` document this jaxsae reads (its current tag or a legacy one)."""
  found = problem(doc, kind)
  if found:
    raise CheckpointError(f"{where} {found}; {fix}")
