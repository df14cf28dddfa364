"""The lake table format: layout, writer, reader, merge, compaction, cleaning."""
