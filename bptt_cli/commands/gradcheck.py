"""``bptt gradcheck`` (placeholder until the real command lands)."""


def gradcheck() -> None:
    """Check the gradients (not built yet).

    Example: bptt gradcheck --model lstm --hidden 16
    """
