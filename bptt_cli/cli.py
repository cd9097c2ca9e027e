"""The ``bptt`` command line: parse options, call the library, render the result.

Torch is imported inside the commands, never here, so ``bptt --help`` and
``bptt --version`` answer at once, and the root callback can still set the
environment OpenMP reads when torch loads it. Every library error reaches
``BpttGroup.main``, which prints it as one line on stderr and exits with its code.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from bptt_cli import __version__
from bptt_cli.allocator import keep_freed_memory
from bptt_cli.commands import evaluate, export, generate, gradcheck, plot, predict, train
from bptt_cli.errors import BpttError

EXIT_CODES = (
    "Exit codes: 0 success; 1 the run failed (diverged, gradcheck failed); 2 bad input or usage; "
    "3 stopped by --max-time or a signal with a resumable checkpoint saved (resume with --resume)."
)


class ReadableHelp:
    """Help that reads like Click's: flags without a type, ``DATA`` in the usage line, one type per value.

    Typer 0.29 (which vendors Click) shows a ``<bool>`` placeholder beside every flag,
    ``<list[str]>`` beside a repeatable option or argument, ``<int range>`` beside a
    bounded one, and required arguments as ``{data}`` in the usage line. Each
    parameter's placeholder is fixed here once, for every command: an option's
    through its ``metavar``, an argument's type column (which ignores the metavar)
    on the parameter itself.
    """

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if param.param_type_name == "argument":
                param.metavar = param.metavar or param.name.upper()
                param.display_type_rich = functools.partial(_value_type, param)
            elif param.metavar is None:
                param.metavar = "" if param.is_flag or param.count else _value_type(param, ctx)
        return params


def _value_type(param, ctx) -> str:
    """``<int>``, ``<path>``, ``<char|byte|word>``: one value's type; repeats show in the help or as ``...``."""
    shown = type(param).display_type_rich(param, ctx) if param.param_type_name == "argument" else param.display_type(ctx)
    shown = shown.strip("<>")  # int, int range, path, char|byte|word, list[str]
    if shown.startswith("list[") and shown.endswith("]"):
        shown = shown[len("list["):-1]
    return f"<{shown.removesuffix(' range').lower()}>"  # bounds follow as [x>=1]


class BpttCommand(ReadableHelp, TyperCommand):
    """Every ``bptt`` command: ``Usage: bptt evaluate [OPTIONS] MODEL DATA``, ``bptt gradcheck [OPTIONS] [MODEL] [DATA]``."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = param.metavar + ("..." if param.nargs != 1 and not param.metavar.endswith("...") else "")
            pieces.append(name if param.required else f"[{name}]")
        return pieces


class BpttGroup(ReadableHelp, TyperGroup):
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
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bptt {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """Train GRU/LSTM/RNN sequence models with truncated backpropagation through time."""
    if ctx.invoked_subcommand is None:  # a bare ``bptt`` asks what there is: the help, and success
        text = ctx.get_help()  # the rich formatter prints it and returns ""
        if text:
            typer.echo(text)
        raise typer.Exit()
    keep_freed_memory()  # every command runs the model; reusing freed buffers saves page faults per update
    quiet_openmp_wait()


OPENMP_SPIN_COUNT = "3000"  # spins before an idle OpenMP thread sleeps: libgomp's default is 300,000 (about 3 ms)


def quiet_openmp_wait() -> None:
    """Let OpenMP's idle threads spin briefly, then sleep, unless the user chose OMP_WAIT_POLICY or GOMP_SPINCOUNT.

    libgomp reads these once, when torch loads it, so this runs before any
    command imports torch. By default each idle thread spins for about 3 ms at
    every wait; on cores that other processes need, the spinning threads and the
    other work slow each other down many times over (17.6x with a busy loop on
    every core, ``benchmarks/threads.py``). Sleeping at once (a spin count of 0)
    costs a wake-up at every one of the many small parallel regions of a small
    model: on an Intel Xeon VM a 64-unit series model trained 13x slower with 2
    threads than with this spin. A spin of 3,000 rounds keeps both: it catches the next
    region of a busy update and sleeps soon after the work stops.
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ["GOMP_SPINCOUNT"] = OPENMP_SPIN_COUNT


_COMMANDS = {"cls": BpttCommand, "context_settings": {"help_option_names": ["-h", "--help"]}}
app.command("train", **_COMMANDS)(train.train)
app.command("evaluate", **_COMMANDS)(evaluate.evaluate)
app.command("generate", **_COMMANDS)(generate.generate)
app.command("gradcheck", **_COMMANDS)(gradcheck.gradcheck)
app.command("plot", **_COMMANDS)(plot.plot)
app.command("predict", **_COMMANDS)(predict.predict)
app.command("export", **_COMMANDS)(export.export)


def main() -> None:
    app(prog_name="bptt")  # ``python -m bptt_cli`` is the same program: its usage lines say ``bptt`` too
