"""The ``bptt`` command line: parse options, call the library, render the result.

Torch is imported inside the commands, never here, so ``bptt --help`` and
``bptt --version`` answer at once. Every library error reaches ``BpttGroup.main``,
which prints it as one line on stderr and exits with its code.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from bptt_cli import __version__
from bptt_cli.allocator import keep_freed_memory
from bptt_cli.commands import evaluate, export, generate, gradcheck, plot, train
from bptt_cli.errors import BpttError

EXIT_CODES = (
    "Exit codes: 0 success; 1 the run failed (diverged, gradcheck failed); 2 bad input or usage; "
    "3 stopped by --max-time or a signal with a resumable checkpoint saved (resume with --resume)."
)


class BpttGroup(TyperGroup):
    """Turns every error into one line on stderr and a meaningful exit code, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from bptt_cli.render.console import error_line

        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except BpttError as err:
            error_line(str(err))
            code = err.exit_code
        except typer.TyperException as err:
            message = err.format_message() if hasattr(err, "format_message") else str(err)
            hint = ""
            ctx = getattr(err, "ctx", None)
            if ctx is not None:
                hint = f" (see '{ctx.command_path} --help')"
            error_line(" ".join(message.split()) + hint)
            code = getattr(err, "exit_code", 2)
        except typer.Abort:
            error_line("aborted")
            code = 130
        except Exception as err:  # a bug or an environment failure: still one line, unless debugging
            if os.environ.get("BPTT_DEBUG"):
                raise
            error_line(f"unexpected {type(err).__name__}: {err} (set BPTT_DEBUG=1 to see where)")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=BpttGroup,
    name="bptt",
    help="Train GRU/LSTM/RNN sequence models with truncated backpropagation through time.\n\n" + EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bptt {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """Train GRU/LSTM/RNN sequence models with truncated backpropagation through time."""
    keep_freed_memory()  # every command runs the model; reusing freed buffers saves page faults per update


_COMMANDS = {"context_settings": {"help_option_names": ["-h", "--help"]}}
app.command("train", **_COMMANDS)(train.train)
app.command("evaluate", **_COMMANDS)(evaluate.evaluate)
app.command("generate", **_COMMANDS)(generate.generate)
app.command("gradcheck", **_COMMANDS)(gradcheck.gradcheck)
app.command("plot", **_COMMANDS)(plot.plot)
app.command("export", **_COMMANDS)(export.export)


def main() -> None:
    app()
