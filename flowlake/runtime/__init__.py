"""Running flowlake: the supervised local dev runner."""
