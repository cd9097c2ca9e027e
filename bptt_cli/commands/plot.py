"""``bptt plot`` (placeholder until the real command lands)."""


def plot() -> None:
    """Plot training curves (not built yet).

    Example: bptt plot run.jsonl -o curves.png
    """
