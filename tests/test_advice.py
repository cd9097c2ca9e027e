"""gradcheck's advice comes from the figures printed beside it: every number a sentence gives is
one the table shows, or a ratio of two it shows (issue 17)."""

from __future__ import annotations

import re

import pytest

from bptt_cli import gradcheck as lib

NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?"
CHECK = ["gradcheck", "--window", "12", "--segment", "40", "--windows", "1,5,10,40"]  # a fresh LSTM, quick


def table(lines: list[str], title: str) -> tuple[list[list[float]], list[str]]:
    """The numeric rows of the plain table whose title starts with ``title``, and the caption lines after them."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# {title}"))
    rows, caption = [], []
    for line in lines[start + 2:]:
        if line.startswith("#"):
            break
        cells = line.split()
        if not caption and cells and all(re.fullmatch(NUMBER, c) for c in cells):
            rows.append([float(c.replace(",", "")) for c in cells])
        else:
            caption.append(line)
    return rows, caption


def numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in re.findall(rf"(?<![\w.\-]){NUMBER}", text)]


@pytest.fixture
def printed(run):
    code, _, stderr = run(*CHECK)
    assert code == 0, stderr
    return stderr.splitlines()


def test_the_truncation_advice_is_the_ratio_of_its_own_table(printed):
    rows, caption = table(printed, "4. cost of truncation")
    by_window = {int(r[0]): {"cosine": r[1], "seconds": r[4], "bytes": r[5]} for r in rows}
    advice = next(line for line in caption if line.startswith("recommended"))
    found = re.search(
        rf"recommended --window (\d+) .*cosine >= ({NUMBER})\): it saves (\d+) bytes .* full BPTT \((\d+) bytes, "
        rf".*an update takes ({NUMBER}) s, ({NUMBER}) of the ({NUMBER}) s of a full-BPTT update \(the window 40 row\)",
        advice)
    assert found, advice
    best, min_cosine, saved, full_bytes, seconds, fraction, full_seconds = (float(g) for g in found.groups())
    assert best == min(w for w, r in by_window.items() if r["cosine"] >= min_cosine)
    assert seconds == by_window[best]["seconds"] and full_seconds == by_window[40]["seconds"]
    assert fraction == pytest.approx(seconds / full_seconds, rel=2e-3)  # both printed to 4 figures
    assert full_bytes == by_window[40]["bytes"] and saved == full_bytes - by_window[best]["bytes"]


def test_the_flow_verdict_and_its_sentence_agree_with_the_flow_table(printed):
    rows, caption = table(printed, "3. gradient flow")
    norms = [r[2] for r in rows]  # steps back 0.. (a window of 12 shows every step)
    assert [r[0] for r in rows] == list(range(12))
    text = "\n".join(caption)
    rate = float(re.search(rf"per-step rate ({NUMBER})", text).group(1))
    jacobian_max = float(re.search(rf"spectral norm mean {NUMBER}, max ({NUMBER})", text).group(1))
    verdict, advice = re.search(r"^verdict: (\w+): (.*)$", text, re.MULTILINE).groups()
    faded = [j for j, n in enumerate(norms) if n < 1e-3 * norms[0]]
    measured = f"after {faded[0]} steps" in text and "extrapolated" not in text if faded else False
    assert verdict == ("vanishing" if measured or rate < 0.9 else "exploding" if rate > 1 / 0.9 else "stable")
    horizon = int(re.search(r"after (\d+) steps", text).group(1))
    assert set(numbers(advice)) <= {horizon, jacobian_max, rate, 1.0}  # nothing the table does not show
    assert f"fades within about {horizon} steps" in advice
    if jacobian_max > 1:  # beside a decaying gradient, a norm above 1 is named a bound, not a trend
        assert f"spectral norm (max {jacobian_max:.4g}) only bounds" in advice and f"shrinks by a factor {rate:.4g}" in advice
    first_min_last = re.search(rf"t=12\.\.1: first ({NUMBER}), min ({NUMBER}), last ({NUMBER})", text)
    assert [float(v) for v in first_min_last.groups()] == [norms[0], min(norms), norms[-1]]


# The cases behind the sentences, with figures chosen to match the report.

def test_a_decaying_gradient_beside_a_large_spectral_norm_is_vanishing_and_says_why():
    norms = [0.8 ** j for j in range(50)]
    verdict = lib.flow_verdict(rate=0.8, horizon=31, estimated=False)
    advice = lib.flow_advice(verdict, "lstm", norms, 0.8, 31, jacobian_max=4.48)
    assert verdict == "vanishing"
    assert advice == ("the gradient fades within about 31 steps; a --window much longer than that adds little "
                      "(training can lengthen it: recheck trained models); the Jacobian's spectral norm (max 4.48) "
                      "only bounds how much one step could stretch a gradient; this one shrinks by a factor 0.8 "
                      "per step back")


def test_a_fade_measured_inside_the_window_is_vanishing_whatever_the_fit():
    assert lib.flow_verdict(rate=0.95, horizon=6, estimated=False) == "vanishing"
    assert lib.flow_verdict(rate=0.95, horizon=135, estimated=True) == "stable"
    assert lib.flow_verdict(rate=1.2, horizon=None, estimated=False) == "exploding"


def test_stable_and_exploding_advice_carry_their_figures():
    norms = [1.0, 0.98, 0.97, 0.95]
    stable = lib.flow_advice("stable", "gru", norms, 0.983, None, jacobian_max=0.99)
    assert stable == ("the gradient carries across all 4 steps (at t=1 it is 0.95 of its value at t=4); a longer "
                      "--window can learn longer dependences; every step Jacobian has spectral norm at most 0.99, "
                      "so no gradient through the state can grow from one step to the one before")
    exploding = lib.flow_advice("exploding", "rnn", [1.0, 2.0, 4.0], 2.0, None, jacobian_max=2.5)
    assert exploding.startswith("the gradient grows by 2 per step back; clip the gradient norm")
    assert exploding.endswith("step Jacobians with spectral norm up to 2.5 let it grow")


def test_the_time_fraction_falls_back_to_the_full_gradient_timed_first():
    rows = [{"window": 5, "seconds_per_update": 0.002}, {"window": 10, "seconds_per_update": 0.004}]
    timed = lib.truncation_time(rows, rows[0], segment=40, full_seconds=0.016)
    assert timed == {"full_update_seconds": 0.016, "full_update_from_table": False, "time_per_update_fraction": 0.125}
    assert lib.truncation_time(rows, None, 40, 0.016)["time_per_update_fraction"] is None
