"""Storage access: filesystems by URI and Parquet files."""
