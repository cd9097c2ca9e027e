"""Run configurations as YAML: read them strictly, write them so they reproduce a run.

A configuration maps option names (``batch-size`` or ``batch_size``) to values.
It comes from a YAML file or from the configuration stored in a bptt model
file. Unknown keys are errors that list the valid ones; the command line then
checks types and values as it does for flags.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from bptt_cli.errors import BpttError

NOT_STORED = ("config", "print_config", "resume")  # how a run was started, not what it computes


def option_key(name: str) -> str:
    """The form a key takes in YAML: the option name without dashes in front."""
    return name.replace("_", "-")


def read_config(path: str | Path, keys: dict[str, str]) -> dict[str, Any]:
    """Values by parameter name from ``path``; ``keys`` maps each accepted key to its parameter name."""
    path = Path(path)
    if not path.is_file():
        raise BpttError(f"--config {path}: no such file; check the path")
    if path.suffix in (".pt", ".pth", ".ckpt"):
        from bptt_cli.modelfile import read_payload

        values = read_payload(path).get("config") or {}
    else:
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            where = getattr(err, "problem_mark", None)
            line = f" at line {where.line + 1}" if where is not None else ""
            raise BpttError(f"--config {path}: not valid YAML{line}; fix the file") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise BpttError(f"--config {path}: must map option names to values (e.g. 'window: 50')")
    valid = {option_key(k): name for k, name in keys.items() if name not in NOT_STORED}
    shown = sorted({option_key(k) for k, name in keys.items() if name not in NOT_STORED and not k.count("_")})
    resolved = {}
    for key, value in values.items():
        name = valid.get(option_key(str(key)))
        if name is None:
            close = difflib.get_close_matches(option_key(str(key)), shown, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BpttError(f"--config {path}: unknown key '{key}'{hint}; valid keys: {', '.join(shown)}")
        resolved[name] = value
    return resolved


def plain_values(values: dict[str, Any]) -> dict[str, Any]:
    """Parameter values as plain data (enums by value, paths as text), without start-up switches."""
    plain = {}
    for name, value in values.items():
        if name in NOT_STORED:
            continue
        if hasattr(value, "value"):
            value = value.value
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, (list, tuple)):
            value = [v.value if hasattr(v, "value") else str(v) if isinstance(v, Path) else v for v in value]
        plain[name] = value
    return plain


def to_yaml(values: dict[str, Any], command: str, keys: dict[str, str] | None = None) -> str:
    """A YAML configuration whose header shows how to use it; ``keys`` renames parameters to option names."""
    keys = keys or {}
    body = yaml.safe_dump({keys.get(k, option_key(k)): v for k, v in plain_values(values).items()}, sort_keys=False)
    return f"# bptt {command} --config THIS_FILE  (flags on the command line override these values)\n{body}"
