"""How ``bptt export`` looks: one line on stderr with the parity figure, and the record as JSON on stdout."""

from __future__ import annotations

from bptt_cli.render.console import fmt, info, print_json


def render_export(result: dict, as_json: bool = False) -> None:
    windows = "+".join(map(str, result["windows"]))
    info(f"wrote {result['output']} and {result['sidecar']}; parity with bptt over 2 windows ({windows} steps, "
         f"batch {result['batch']}, state carried): max abs diff {fmt(result['max_abs_diff'])} "
         f"<= {fmt(result['tolerance'])}")
    if as_json:
        print_json(result)
