"""bptt: train recurrent sequence models with truncated backpropagation through time.

The package is a library first (data, streams, models, trainer, model files,
generation, metrics) and a command-line front end second (``bptt_cli.cli``).
Nothing here imports torch at import time, so ``bptt --help`` stays fast.
"""

__version__ = "0.1.0"
