"""The ``flowlake`` command."""
