"""``python -m flowlake.cli``: the same as the ``flowlake`` command."""

from flowlake.cli.main import main

main()
