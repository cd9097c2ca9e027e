"""How evaluation results look: a table on stderr, or one JSON object on stdout."""

from __future__ import annotations

from bptt_cli.render.console import print_json, print_table


def render_text_scores(figures: dict, as_json: bool) -> None:
    if as_json:
        print_json(figures)
        return
    unit = "char" if figures["tokenizer"] == "char" else "token"
    print_table(
        "evaluation",
        ["", "value"],
        [
            ["loss (nats/token)", figures["loss"]],
            ["perplexity", figures["perplexity"]],
            [f"bits per {unit}", figures["bits_per_token"]],
            ["tokens scored", figures["tokens"]],
            ["unknown tokens skipped", figures["unknown_tokens"]],
            *scoring_rows(figures),
        ],
    )


def scoring_rows(figures: dict) -> list[list]:
    """How a text was scored: in one exact stream, or in streams side by side each warmed up on a context."""
    if "exact" not in figures:  # a corpus: every document scored from its first token
        return []
    if figures["exact"]:
        how = "one stream, exact"
    else:
        how = f"{figures['streams']} streams, each after {figures['context']} tokens of context (--exact for one stream)"
    if figures.get("precision") == "bf16":
        how += "; the recurrence in bf16 (--precision fp32 for fp32)"
    return [["scored in", how]]


def render_baselines(figures: dict) -> None:
    """The model beside its baselines on the same points (files from before baselines were stored have none)."""
    rows = figures.get("baselines")
    if not rows:
        return
    if "task" in figures:  # labels: accuracy on the sequences or frames the model was scored on
        unit = "sequences" if "sequences" in figures else "frames"
        model = ["this model", figures["accuracy"], figures["macro_f1"], figures[unit]]
        table = [model, *([r["name"], r["accuracy"], r["macro_f1"], r["points"]] for r in rows)]
        print_table("baselines (fitted on the training data)", ["", "accuracy", "macro-F1", f"{unit} scored"], table)
        return
    unit = "char" if figures["tokenizer"] == "char" else "token"
    model = ["this model", figures["bits_per_token"], figures["perplexity"], figures["tokens"]]
    table = [model, *([r["name"], r["bits_per_token"], r["perplexity"], r["tokens"]] for r in rows)]
    print_table("baselines (fitted on the training text)", ["", f"bits per {unit}", "perplexity", "tokens scored"],
                table)


def render_scores(figures: dict, as_json: bool) -> None:
    """Any model's scores: series and feature models' figures name their task, token models' do not."""
    if "task" in figures:
        from bptt_cli.render.forecast import render_sequence_scores

        render_sequence_scores(figures, as_json)
    else:
        render_text_scores(figures, as_json)
    if not as_json:
        render_baselines(figures)
