"""How ``bptt gradcheck`` looks: one table per check on stderr, or one JSON object on stdout."""

from __future__ import annotations

import math
from typing import Sequence

from bptt_cli.render.console import fmt, info, print_json, print_table
from bptt_cli.render.sparkline import first_min_last, on_terminal, sparkline

FLOW_ROWS_ALL_UP_TO = 30  # longer windows show a sample of steps (the sparkline shows them all)
FLOW_SAMPLE = 16


def render_gradcheck(result: dict, as_json: bool = False) -> None:
    if as_json:
        print_json(result)
        return
    if result.get("note"):
        info(f"note: {result['note']}")
    _finite_difference(result["finite_difference"])
    _forward_mode(result["forward_mode"])
    for title, key, draw in (("3. gradient flow through time", "flow", _flow),
                             ("4. cost of truncation", "truncation", _truncation)):
        if result[key].get("skipped"):  # a bidirectional model
            info(f"{title}: skipped ({result[key]['skipped']})")
        else:
            draw(result[key])
    info(_summary(result))


def _verdict(passed: bool | None) -> str:
    return "skipped" if passed is None else "passed" if passed else "FAILED"


def _finite_difference(check: dict) -> None:
    print_table(
        f"1. autograd vs finite differences (float64, window {check['window']}, central step {fmt(check['step'])})",
        ["tensor", "shape", "entries", "max abs error", "max rel error", "result"],
        [
            [t["name"], "x".join(map(str, t["shape"])), t["entries"], t["max_abs_error"], t["max_rel_error"],
             "ok" if t["passed"] else "FAIL"]
            for t in check["tensors"]
        ],
        caption=f"relative error: max |bptt - fd| / max(largest |fd|, {fmt(check['relative_floor'])}) per tensor; "
        f"tolerance {fmt(check['tolerance'])}: {_verdict(check['passed'])}",
    )


def _forward_mode(check: dict) -> None:
    title = "2. reverse mode (BPTT) vs forward mode (RTRL)"
    if check["skipped"]:
        print_table(title, ["result", "reason"], [["skipped", check["skipped"]]])
        return
    print_table(
        title,
        ["tensor", "max abs error", "max rel error"],
        [[t["name"], t["max_abs_error"], t["max_rel_error"]] for t in check["tensors"]],
        caption=f"{check['parameters']} parameters, one forward-mode pass each; max rel error "
        f"{fmt(check['max_rel_error'])}, tolerance {fmt(check['tolerance'])}: {_verdict(check['passed'])}",
    )


def _flow_rows(norms: Sequence[float]) -> list[int]:
    """Indices (steps back) to show: all of a short window, else a log-spaced sample with both ends."""
    if len(norms) <= FLOW_ROWS_ALL_UP_TO:
        return list(range(len(norms)))
    last = len(norms) - 1
    picks = {0, last} | {round(math.exp(i * math.log(last) / (FLOW_SAMPLE - 1))) for i in range(FLOW_SAMPLE)}
    return sorted(picks)


def _flow(check: dict) -> None:
    norms, steps = check["norms"], check["window"]
    jac = check["jacobian_spectral_norm"]
    horizon = check["horizon_steps"]
    fading = f"below {fmt(check['horizon_fraction'])} of its value at t={steps}"
    if horizon is None:
        reach = f"never falls {fading}"
    else:
        reach = f"falls {fading} after {horizon} steps" + (
            " (extrapolated from the rate)" if check["horizon_estimated"] else ""
        )
    print_table(
        f"3. gradient flow through time (loss at the last step, t={steps})",
        ["steps back", "t", "|dL/dh_t|"],
        [[j, steps - j, norms[j]] for j in _flow_rows(norms)],
        caption="\n".join(
            [
                (f"t={steps}..1  {sparkline(norms, log=True)}  (log scale)" if on_terminal()
                 else f"t={steps}..1: {first_min_last(norms)}"),
                f"per-step rate {fmt(check['rate_per_step'])} (fit of log |dL/dh_t| against steps back); "
                f"the signal {reach}",
                f"step Jacobian dh_t/dh_(t-1) ({jac['state']}, {jac['size']} values): spectral norm mean "
                f"{fmt(jac['mean'])}, max {fmt(jac['max'])} over {jac['steps']} steps",
                f"verdict: {check['verdict']}: {check['advice']}",
            ]
        ),
    )


def _truncation(check: dict) -> None:
    segment = check["segment"]
    best = check["recommended_window"]
    if best is None:
        advice = f"no window reaches cosine {fmt(check['min_cosine'])}; use full BPTT over the segment or longer windows"
    else:
        row = next(w for w in check["windows"] if w["window"] == best)
        advice = (
            f"recommended --window {best} (the shortest with cosine >= {fmt(check['min_cosine'])}): it saves "
            f"{check['memory_saved_bytes']} bytes of activations against full BPTT "
            f"({check['full_activation_bytes']} bytes, {check['batch_size']} stream(s), float32), and an update "
            f"takes {fmt(row['seconds_per_update'])} s, {fmt(check['time_per_update_fraction'])} of the "
            f"{fmt(check['full_update_seconds'])} s of a full-BPTT update "
            f"({'the window ' + str(segment) + ' row' if check['full_update_from_table'] else 'timed before the table'})"
        )
    print_table(
        f"4. cost of truncation (segment of {segment} steps, loss summed over every step)",
        ["window", "cosine", "relative norm", "updates", "s per update", "activation bytes"],
        [
            [w["window"], w["cosine"], w["relative_norm"], w["updates"], w["seconds_per_update"], w["activation_bytes"]]
            for w in check["windows"]
        ],
        caption=f"cosine and norm of the truncated gradient against full BPTT over the segment; "
        f"activation memory is an estimate, {check['activation_bytes_per_step']} bytes per step\n{advice}",
    )


def _summary(result: dict) -> str:
    if result["passed"]:
        return "gradcheck passed"
    failed = []
    if result["finite_difference"]["passed"] is False:
        names = [t["name"] for t in result["finite_difference"]["tensors"] if not t["passed"]]
        failed.append(f"finite differences ({', '.join(names)})")
    if result["forward_mode"]["passed"] is False:
        failed.append("forward mode")
    return f"gradcheck FAILED: {'; '.join(failed)} disagree with BPTT"
