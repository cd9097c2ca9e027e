"""``python -m bptt_cli`` runs the same app as the ``bptt`` command."""

from bptt_cli.cli import main

main()
