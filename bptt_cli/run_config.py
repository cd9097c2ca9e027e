"""Run configurations as YAML: read them strictly, write them so they reproduce a run.

A configuration maps option names (``batch-size`` or ``batch_size``) to values.
It comes from a YAML file or from the configuration stored in a bptt model
file. Unknown keys are errors that list the valid ones; a key set twice (also
under both spellings), a true/false where a number goes and aliases that
expand into a huge document are errors naming the key; the command line then
checks types and values as it does for flags.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from bptt_cli.errors import BpttError
from bptt_cli.input_paths import check_input

NOT_STORED = ("config", "print_config", "resume")  # how a run was started, not what it computes
MAX_BYTES = 1 << 20  # a configuration is a few lines; anything this large is not one
MAX_VALUES = 10_000  # values after expanding aliases: a YAML alias bomb expands to billions


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise BpttError(f"key '{key}' is set twice (line {key_node.start_mark.line + 1}); keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _count_values(value: Any, budget: int) -> int:
    """How many values ``value`` holds once aliases are expanded, counting no further than ``budget``."""
    count, stack = 0, [value]
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def param_kinds(params) -> dict[str, str]:
    """``number``, ``flag`` or ``other`` for each of a command's parameters (``ctx.command.params``).

    Reads the annotation typer keeps (``type_descriptor``), or a click-style ``type.name``.
    """
    kinds = {}
    for param in params:
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        type_name = getattr(getattr(param, "type", None), "name", "")
        if getattr(param, "is_flag", False) or annotation is bool or type_name == "boolean":
            kinds[param.name] = "flag"
        elif annotation in (int, float) or type_name in ("integer", "float", "integer range", "float range"):
            kinds[param.name] = "number"
        else:
            kinds[param.name] = "other"
    return kinds


def _check_kind(key: str, value: Any, kind: str | None, path: Path) -> None:
    """YAML reads ``true`` as a boolean, which Python would take for 1: refuse it where a number goes."""
    if kind == "number" and isinstance(value, bool):
        raise BpttError(f"--config {path}: '{key}' takes a number, got {str(value).lower()}; write a number")
    if kind == "flag" and not isinstance(value, bool):
        raise BpttError(f"--config {path}: '{key}' is a switch, got {value!r}; write true or false")


def _load_yaml(path: Path) -> Any:
    if path.stat().st_size > MAX_BYTES:
        raise BpttError(f"--config {path}: {path.stat().st_size:,} bytes is too large for a configuration; "
                        "give a YAML file of option: value lines")
    try:
        values = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise BpttError(f"--config {path}: not valid YAML{line}; fix the file") from None
    except BpttError as err:
        raise BpttError(f"--config {path}: {err}") from None
    if _count_values(values, MAX_VALUES) > MAX_VALUES:
        raise BpttError(f"--config {path}: its aliases expand to more than {MAX_VALUES:,} values; "
                        "write the values out instead of nesting aliases")
    return values


def option_key(name: str) -> str:
    """The form a key takes in YAML: the option name without dashes in front."""
    return name.replace("_", "-")


def read_config(path: str | Path, keys: dict[str, str], kinds: dict[str, str] | None = None) -> dict[str, Any]:
    """Values by parameter name from ``path``; ``keys`` maps each accepted key to its parameter name.

    ``kinds`` (from ``param_kinds``) says which parameters take numbers and which are switches.
    """
    path = Path(path)
    if not path.exists():
        raise BpttError(f"--config {path}: no such file; check the path")
    check_input(path, "--config")
    if path.suffix in (".pt", ".pth", ".ckpt"):
        from bptt_cli.modelfile import read_payload

        values = read_payload(path).get("config") or {}
    else:
        values = _load_yaml(path)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise BpttError(f"--config {path}: must map option names to values (e.g. 'window: 50')")
    valid = {option_key(k): name for k, name in keys.items() if name not in NOT_STORED}
    shown = sorted({option_key(k) for k, name in keys.items() if name not in NOT_STORED and not k.count("_")})
    resolved: dict[str, Any] = {}
    spelt: dict[str, Any] = {}
    for key, value in values.items():
        name = valid.get(option_key(str(key)))
        if name is None:
            close = difflib.get_close_matches(option_key(str(key)), shown, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BpttError(f"--config {path}: unknown key '{key}'{hint}; valid keys: {', '.join(shown)}")
        if name in resolved:
            raise BpttError(f"--config {path}: '{key}' sets {option_key(name)} again (also spelt "
                            f"'{spelt[name]}'); keep one")
        _check_kind(str(key), value, (kinds or {}).get(name), path)
        resolved[name], spelt[name] = value, key
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


def plan_comment(plan: dict) -> str:
    """``memory.plan``'s figures as YAML comments under a printed configuration, so the file stays valid YAML.

    The data is not read for ``--print-config``: the embedding and the decoder, which grow with the vocabulary
    or the columns, are left out, and so are full BPTT's activations (they grow with the data).
    """
    def mib(n) -> str:
        return "unknown (full BPTT grows with the data)" if n is None else f"{n / 2**20:,.1f} MiB"

    available = f" of {plan['available'] / 2**30:,.1f} GiB available" if plan.get("available") else ""

    return (f"# memory plan (before the data is read: embedding and decoder not counted): "
            f"{plan['parameter_count']:,} recurrent parameters; weights {mib(plan['parameters'])}, gradients "
            f"{mib(plan['gradients'])}, optimizer state {mib(plan['optimizer'])}, activations per update "
            f"{mib(plan['activations'])}; total {mib(plan['total'])}{available}\n")
