"""Running experiment files: absl flags, ml_collections config files, and clean errors.

`run(main)` parses `--config=FILE` and `--config.a.b=value` overrides; a mistyped key, a bad
value or any `JaxsaeError` is printed as one message naming the fix (exit status 2), not as a
stack trace.

It also gives XLA's CPU backend one device per usable core (`--cpu_devices` sets another count;
an XLA_FLAGS device count wins). XLA runs some operations on one thread per device, top_k among
them (a 1024 × 4096 top-32 takes 14 ms on one device of a 2-core machine, against 7 ms for
torch.topk on 2 threads), so a CPU step splits its batch over the cores as the data axis of the
mesh, the same code path as a pod's. On GPU and TPU it changes nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from absl import app, flags, logging

from jaxsae.errors import JaxsaeError

_CPU_DEVICES = flags.DEFINE_integer(
  "cpu_devices", 0, "XLA CPU devices to split a batch over (0: one per usable core)."
)
FORCED_COUNT = "xla_force_host_platform_device_count"


def configure_cpu_devices(count: int = 0) -> int | None:
  """Give XLA's CPU backend `count` devices (0: one per usable core), before JAX starts it.
  Returns the count set; None when XLA_FLAGS names one or the backends have started."""
  import jax

  if FORCED_COUNT in os.environ.get("XLA_FLAGS", ""):
    return None
  count = count or len(os.sched_getaffinity(0))
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # Backends already initialized: keep what they have.
    return None
  return count


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections reports an unknown override key as AttributeError("'key'\nDid you mean...").
    message = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    _fail(f"bad config override: {message}")
  return []


def run(main: Callable[[list[str]], None]) -> None:
  """absl.app.run with config-override and JaxsaeError messages instead of tracebacks."""

  def guarded(argv):
    # Library INFO logs (Orbax writes several per checkpoint) drown the progress bar; show
    # warnings and errors unless --verbosity asks for more.
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    configure_cpu_devices(_CPU_DEVICES.value)
    try:
      main(argv)
    except JaxsaeError as e:
      _fail(str(e))

  app.run(guarded, flags_parser=_parse_flags)
