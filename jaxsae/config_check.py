"""Validate an ml_collections config against a schema, before any compute.

Every problem is collected and raised at once as a `ConfigError`; unknown keys get a close-match
suggestion. A schema is simply the experiment's default config: it names every allowed key and
its type. Value checks are small functions that append messages to a list.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jaxsae.errors import ConfigError

Check = Callable[[Any, list[str]], None]


def _items(tree: Any) -> Iterable[tuple[str, Any]]:
  if hasattr(tree, "items"):
    return tree.items()
  return ()


def _is_mapping(x: Any) -> bool:
  return isinstance(x, Mapping) or hasattr(x, "to_dict")


def unknown_keys(config: Any, schema: Any, prefix: str = "") -> list[str]:
  """Problems for keys of `config` that `schema` does not have, with a suggestion each."""
  problems = []
  allowed = {k for k, _ in _items(schema)}
  for key, value in _items(config):
    path = f"{prefix}{key}"
    if key not in allowed:
      close = difflib.get_close_matches(key, sorted(allowed), n=1)
      hint = (
        f'; did you mean "{prefix}{close[0]}"?' if close else f"; known keys: {sorted(allowed)}"
      )
      problems.append(f'unknown key "{path}"{hint}')
    elif _is_mapping(value) and _is_mapping(schema[key]):
      problems.extend(unknown_keys(value, schema[key], prefix=f"{path}."))
  return problems


def missing_keys(config: Any, schema: Any, prefix: str = "") -> list[str]:
  """Problems for keys of `schema` that `config` lacks."""
  problems = []
  present = {k for k, _ in _items(config)}
  for key, value in _items(schema):
    path = f"{prefix}{key}"
    if key not in present:
      problems.append(f'missing key "{path}"; add it (default: {value!r})')
    elif _is_mapping(value) and _is_mapping(config[key]):
      problems.extend(missing_keys(config[key], value, prefix=f"{path}."))
  return problems


def validate(config: Any, schema: Any, checks: Iterable[Check] = ()) -> None:
  """Raise one `ConfigError` listing every unknown or missing key and every failed check."""
  problems = unknown_keys(config, schema) + missing_keys(config, schema)
  if not problems:  # Value checks assume the keys are there.
    for check in checks:
      check(config, problems)
  if problems:
    raise ConfigError(problems)


def require(condition: bool, problems: list[str], message: str) -> None:
  """Append `message` to `problems` unless `condition` holds."""
  if not condition:
    problems.append(message)


def require_choice(value: Any, choices: Iterable[Any], name: str, problems: list[str]) -> None:
  choices = list(choices)
  if value not in choices:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    problems.append(f"{name}={value!r} is not one of {choices}{hint}")
