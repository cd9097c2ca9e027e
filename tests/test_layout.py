"""The package's layout rules, as tests: the library imports no front-end package, and no function
grows past a cyclomatic complexity of 15."""

from __future__ import annotations

import importlib.util
import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bptt_cli

FRONT_END = ("bptt_cli.cli", "bptt_cli.__main__", "bptt_cli.commands", "bptt_cli.render")
PACKAGE = Path(bptt_cli.__file__).parent


def library_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages([str(PACKAGE)], "bptt_cli.")]
    return sorted(n for n in names if not n.startswith(FRONT_END))


def test_no_library_module_imports_typer_rich_or_matplotlib():
    script = (
        "import importlib, json, sys\n"
        f"for name in {library_modules()!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in ('typer', 'rich', 'matplotlib') if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert len(library_modules()) > 20 and json.loads(done.stdout) == []


def test_help_imports_no_torch():
    """``bptt train --help`` answers at once: the commands import torch inside their bodies only."""
    script = ("import sys\nfrom bptt_cli.cli import app\n"
              "try:\n    app(['train', '--help'])\nexcept SystemExit:\n    pass\n"
              "sys.stderr.write('torch' + str('torch' in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "--window" in done.stdout and done.stderr.endswith("torchFalse")


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None and shutil.which("ruff") is None,
                    reason="ruff is not installed (it comes with the test extra)")
def test_no_function_is_more_complex_than_15():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "C901", "--config",
                           "lint.mccabe.max-complexity=15", "--output-format", "concise", str(PACKAGE)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
