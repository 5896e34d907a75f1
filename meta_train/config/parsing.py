"""Reading configurations: mappings -> dataclasses, old names, overrides.

Three jobs, each used only through ``meta_train.config``:

* typed conversion: a ConfigDict, or the JSON a run saved, becomes the
  dataclasses of ``schema``; an unknown field, a value of the wrong type or
  out of range raises ``ConfigError`` naming ``config.a.b``;
* migration: fields renamed since a workdir or manifest was written
  (``LEGACY_FIELDS``) are read under their new names, so old runs resume;
* config files and ``--config.a.b=VALUE`` overrides.

Why not ml_collections' config_flags for the overrides: its tuple parser
reads ``--config.suite.families=quadratic,mlp`` and ``=[quadratic]`` as the
one-element tuple of the whole string (``ast.literal_eval`` fails on bare
words and it falls back to the string), it cannot add a key to an open-ended
dict (``--config.lopt.kwargs.num_hidden_layers=1``), and it needs absl's
global FLAGS. The functions below read the same syntax (``--config=FILE[:ARG]``,
``--config.a.b=VALUE``) without those gaps.
"""

import ast
import collections.abc
import dataclasses
import importlib.util
import pathlib
import typing
from typing import Any

import ml_collections

from meta_train.config import schema

# (section, old name) -> new name: fields renamed since runs were written
# (config.json of a workdir, manifests of shipped checkpoints).
LEGACY_FIELDS = {
  ("suite", "num_tasks"): "num_specs",
  ("estimator", "num_tasks"): "num_pairs",
  ("eval", "num_tasks"): "num_eval_tasks",
}

# Dict fields whose keys are open-ended (constructor/optimizer kwargs): an
# override may add a key that the config file did not set.
_OPEN_DICTS = ("kwargs", "hparams")


def migrate(values: collections.abc.Mapping) -> dict[str, Any]:
  """A config mapping with the ``LEGACY_FIELDS`` under their new names.

  Raises:
    ConfigError: if a section sets a field under both its old and its new
      name to different values (e.g. a config file still setting
      ``c.suite.num_tasks`` after ``default_config_dict`` set ``num_specs``).
  """
  out = dict(values)
  for (section, old), new in LEGACY_FIELDS.items():
    sub = out.get(section)
    if not isinstance(sub, collections.abc.Mapping) or old not in sub:
      continue
    sub = dict(sub)
    value = sub.pop(old)
    if new in sub and sub[new] != value:
      raise schema.ConfigError(
        f"config.{section}.{old} was renamed config.{section}.{new}; set "
        "only the new name"
      )
    sub[new] = value
    out[section] = sub
  return out


def as_mapping(cd: Any, path: str) -> collections.abc.Mapping:
  """``cd`` (a ConfigDict or mapping) as a mapping; errors name ``path``."""
  if isinstance(
    cd, ml_collections.ConfigDict | ml_collections.FrozenConfigDict
  ):
    return cd.to_dict() if hasattr(cd, "to_dict") else dict(cd)
  if isinstance(cd, collections.abc.Mapping):
    return cd
  raise schema.ConfigError(
    f"{path} must be a ConfigDict or mapping, got {cd!r}"
  )


def build(cls: type, cd: Any, path: str) -> Any:
  """Builds dataclass ``cls`` from mapping ``cd``; errors name ``path.x``."""
  values = as_mapping(cd, path)
  hints = typing.get_type_hints(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  kwargs = {}
  for key, value in values.items():
    if key not in hints:
      raise schema.ConfigError(
        f"{path}.{key}: unknown field; valid: {', '.join(names)}"
      )
    kwargs[key] = _convert(value, hints[key], f"{path}.{key}")
  try:
    return cls(**kwargs)
  except schema.ConfigError as e:
    raise schema.ConfigError(f"{path}.{e}") from None
  except (ValueError, TypeError) as e:  # from another module's dataclass
    message = str(e)
    prefix = f"{cls.__name__}."
    if message.startswith(prefix):
      raise schema.ConfigError(f"{path}.{message[len(prefix) :]}") from None
    raise schema.ConfigError(f"{path}: {message}") from None


def _type_error(path: str, hint: Any, value: Any) -> schema.ConfigError:
  name = getattr(hint, "__name__", str(hint))
  return schema.ConfigError(
    f"{path} must be of type {name}, got {value!r} ({type(value).__name__})"
  )


def _convert(value: Any, hint: Any, path: str) -> Any:
  """Checks ``value`` against the type ``hint``; returns the typed value."""
  if dataclasses.is_dataclass(hint):
    return build(hint, value, path)
  if hint is bool:
    if not isinstance(value, bool):
      raise _type_error(path, hint, value)
    return value
  if hint is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise _type_error(path, hint, value)
    return int(value)
  if hint is float:
    if isinstance(value, bool) or not isinstance(value, int | float):
      raise _type_error(path, hint, value)
    return float(value)
  if hint is str:
    if not isinstance(value, str):
      raise _type_error(path, hint, value)
    return value
  if typing.get_origin(hint) is tuple:
    (elem, _) = typing.get_args(hint)
    if isinstance(value, str) or not isinstance(value, list | tuple):
      raise _type_error(path, hint, value)
    return tuple(_convert(v, elem, f"{path}[{i}]") for i, v in enumerate(value))
  if hint is dict:
    return dict(as_mapping(value, path))
  raise TypeError(f"{path}: unsupported field type {hint}")  # a bug here


# ------------------------------------------------- config files, overrides


class UsageError(ValueError):
  """A malformed command line or override."""


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Runs ``get_config(arg)`` of ``path[:arg]`` (a configs/*.py file).

  Raises:
    UsageError: if the file is missing or defines no get_config.
  """
  path, _, arg = spec.partition(":")
  if not pathlib.Path(path).is_file():
    raise UsageError(f"--config: no such file {path!r}")
  module_spec = importlib.util.spec_from_file_location("_lopt_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UsageError(f"--config: {path} defines no get_config(arg=None)")
  return module.get_config(arg or None)


def _parse_value(text: str, old: Any, path: str) -> Any:
  """Parses ``text`` as a value of the type of ``old`` (the field's value)."""
  try:
    if isinstance(old, bool):
      lowered = text.lower()
      if lowered not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return lowered in ("true", "1")
    if isinstance(old, int):
      return int(text)
    if isinstance(old, float):
      return float(text)
    if isinstance(old, str):
      return text
    if isinstance(old, tuple):
      return _parse_tuple(text)
    return ast.literal_eval(text)  # a new key of an open-ended dict
  except (ValueError, SyntaxError):
    kind = type(old).__name__ if old is not None else "a Python literal"
    raise UsageError(f"{path} must be of type {kind}, got {text!r}") from None


def _parse_tuple(text: str) -> tuple:
  """``a,b``, ``[a,b]``, ``(a,b)``, ``['a', 1.0]`` -> a tuple.

  A Python literal is read as such; otherwise the brackets are dropped and
  the comma-separated words become strings (``[quadratic]`` ->
  ``("quadratic",)``).
  """
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    inner = text.strip()
    if inner[:1] + inner[-1:] in ("[]", "()"):
      inner = inner[1:-1]
    words = (t.strip() for t in inner.split(","))
    value = tuple(w.strip("'\"") for w in words if w)
  return tuple(value) if isinstance(value, list | tuple) else (value,)


def apply_override(cd: ml_collections.ConfigDict, path: str, text: str):
  """Sets ``config.a.b`` (``path``) from the command-line text ``text``.

  Raises:
    UsageError: naming the field if it does not exist or the value does
      not parse as the field's type.
  """
  *parents, name = path.split(".")[1:]
  node, where = cd, "config"
  for part in parents:
    if part not in node or not isinstance(
      node[part], ml_collections.ConfigDict
    ):
      raise UsageError(
        f"{where}.{part}: unknown section; valid: {', '.join(sorted(node))}"
      )
    node, where = node[part], f"{where}.{part}"
  if name not in node:
    if parents and parents[-1] in _OPEN_DICTS:
      with node.unlocked():
        node[name] = _parse_value(text, None, path)
      return
    renamed = LEGACY_FIELDS.get((parents[-1] if parents else "", name))
    hint = f" (renamed config.{parents[-1]}.{renamed})" if renamed else ""
    raise UsageError(
      f"{path}: unknown field{hint}; valid: {', '.join(sorted(node))}"
    )
  if isinstance(node[name], ml_collections.ConfigDict):
    raise UsageError(f"{path} is a section; set one of its fields")
  node[name] = _parse_value(text, node[name], path)


def flag_pairs(argv: list[str], usage: str) -> list[tuple[str, str]]:
  """``(name, value)`` of each ``--name=value`` or ``--name value``, in order.

  Raises:
    UsageError: for a bare argument or a flag without a value.
  """
  pairs, i = [], 0
  while i < len(argv):
    arg = argv[i]
    if not arg.startswith("--"):
      raise UsageError(f"unexpected argument {arg!r}\n{usage}")
    name, eq, value = arg[2:].partition("=")
    if not eq:
      if i + 1 >= len(argv):
        raise UsageError(f"--{name} needs a value\n{usage}")
      i, value = i + 1, argv[i + 1]
    i += 1
    pairs.append((name, value))
  return pairs


def parse_command_line(
  argv: list[str],
  usage: str,
  required: tuple[str, ...] = (),
  optional: tuple[str, ...] = (),
) -> tuple[ml_collections.ConfigDict, dict[str, str]]:
  """``--config FILE[:ARG]``, ``--config.a.b=VALUE`` and other options.

  Args:
    argv: the arguments after the subcommand.
    usage: the subcommand's usage line, shown with every error.
    required: names of the other ``--name=value`` options that must be
      given (``lopt meta-train``'s ``workdir``).
    optional: names of those that may be.

  Returns:
    ``(config, {option: value})``: the config file's ConfigDict, locked,
    with the overrides applied in order.

  Raises:
    UsageError: naming the bad argument, option or field.
  """
  spec, values, overrides = None, {}, []
  for name, value in flag_pairs(argv, usage):
    if name == "config":
      spec = value
    elif name.startswith("config."):
      overrides.append((name, value))
    elif name in required + optional:
      values[name] = value
    else:
      raise UsageError(f"unknown option --{name}\n{usage}")
  if spec is None or any(not values.get(o) for o in required):
    names = " and --".join(["config", *required])
    raise UsageError(f"--{names} are required\n{usage}")
  cd = load_config_file(spec)
  cd.lock()
  for path, text in overrides:
    apply_override(cd, path, text)
  return cd, values
