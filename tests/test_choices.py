"""CLI choices come from the library's own names, and listing them needs no torch."""

import os
import subprocess
import sys

import pytest

from bptt_cli import choices
from bptt_cli.cells import CELL_SPECS
from bptt_cli.commands import options

PAIRS = [
    (options.Cell, tuple(CELL_SPECS)), (options.TokenizerKind, choices.TOKENIZERS),
    (options.OptimizerKind, choices.OPTIMIZERS), (options.ScheduleKind, choices.SCHEDULES),
    (options.OnNan, choices.ON_NAN), (options.SeriesTask, choices.SERIES_TASKS), (options.Missing, choices.MISSING),
    (options.SeriesLoss, choices.LOSSES), (options.Precision, choices.PRECISIONS),
]


@pytest.mark.parametrize(("enum", "names"), PAIRS, ids=[e.__name__ for e, _ in PAIRS])
def test_every_cli_choice_is_a_library_name(enum, names):
    assert tuple(m.value for m in enum) == names
    assert all(isinstance(m, str) and m == m.value for m in enum)  # str mixin: compares and prints as its name


def test_the_library_modules_check_against_the_same_tuples():
    from bptt_cli import device, losses, schedule, series, text, trainer

    assert text.TOKENIZERS is choices.TOKENIZERS and series.MISSING is choices.MISSING
    assert device.PRECISIONS is choices.PRECISIONS and schedule.SCHEDULES is choices.SCHEDULES
    assert trainer.OPTIMIZERS is choices.OPTIMIZERS and losses.REGRESSION_LOSSES is choices.LOSSES


def test_train_help_lists_every_choice_without_importing_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom bptt_cli.cli import app\n"
            "out = CliRunner().invoke(app, ['train', '--help']).output\n"
            "print(repr(out)); print('torch' in sys.modules)")
    env = {**os.environ, "COLUMNS": "400"}  # one option per line, so no choice list is wrapped
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env=env).stdout.splitlines()
    shown, torch_loaded = lines[0], lines[1]
    assert torch_loaded == "False"
    for enum, names in PAIRS:
        listed = "<" + "|".join(names) + ">"  # this Typer shows a choice option as <a|b|c>
        assert listed in shown, enum.__name__
