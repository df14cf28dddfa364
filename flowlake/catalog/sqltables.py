"""The catalog's own SQL tables (SQLAlchemy Core definitions), shared by SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 6
"""Version of the catalog's own tables; bumped with a migration whenever they change."""

FIRST_ADMIN = "first_admin"
"""``flowlake_meta`` key: the principal that became the catalog's admin by writing to it first."""

metadata = sa.MetaData()

meta = sa.Table(
    "flowlake_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
namespaces = sa.Table(
    "flowlake_namespaces",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)
tables = sa.Table(
    "flowlake_tables",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("namespace", sa.String(63), nullable=False),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("location", sa.Text, nullable=False),
    sa.Column("primary_key", sa.Text, nullable=False),
    sa.Column("buckets", sa.Integer, nullable=False),
    sa.Column("bucket_map", sa.Text, nullable=True),
    sa.Column("properties", sa.Text, nullable=False),
    sa.Column("current_version", sa.BigInteger, nullable=False),
    sa.Column("oldest_version", sa.BigInteger, nullable=False),
    sa.Column("schema_id", sa.Integer, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("namespace", "name", name="uq_flowlake_tables_name"),
    sqlite_autoincrement=True,  # ids are never reused: caches keyed by table id stay valid
)
schemas = sa.Table(
    "flowlake_schemas",
    metadata,
    sa.Column("table_id", sa.Integer, primary_key=True),
    sa.Column("schema_id", sa.Integer, primary_key=True),
    sa.Column("arrow_schema", sa.LargeBinary, nullable=False),
)
commits = sa.Table(
    "flowlake_commits",
    metadata,
    sa.Column("table_id", sa.Integer, primary_key=True),
    sa.Column("instant", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=True),
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("committed_at", sa.BigInteger, nullable=True),
    sa.Column("schema_id", sa.Integer, nullable=True),
    sa.Column("summary", sa.Text, nullable=True),
    sa.Column("token", sa.String(255), nullable=True),
    sa.Column("principal", sa.String(255), nullable=False),
    sa.UniqueConstraint("table_id", "version", name="uq_flowlake_commits_version"),
    sa.UniqueConstraint("table_id", "token", name="uq_flowlake_commits_token"),
)
sa.Index("ix_flowlake_commits_time", commits.c.table_id, commits.c.committed_at)
files = sa.Table(
    "flowlake_files",
    metadata,
    sa.Column("table_id", sa.Integer, primary_key=True),
    sa.Column("path", sa.String(512), primary_key=True),
    sa.Column("bucket", sa.Integer, nullable=False),
    sa.Column("content", sa.String(8), nullable=False),
    sa.Column("added_version", sa.BigInteger, nullable=False),
    sa.Column("removed_version", sa.BigInteger, nullable=True),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("stats", sa.LargeBinary, nullable=True),
    sa.Column("checksum", sa.BigInteger, nullable=True),
)
sa.Index("ix_flowlake_files_added", files.c.table_id, files.c.added_version)
sa.Index("ix_flowlake_files_removed", files.c.table_id, files.c.removed_version)


positions = sa.Table(
    "flowlake_positions",
    metadata,
    sa.Column("table_id", sa.Integer, primary_key=True),
    sa.Column("source", sa.String(512), primary_key=True),
    sa.Column("position", sa.Text, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)
consumers = sa.Table(
    "flowlake_consumers",
    metadata,
    sa.Column("table_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.String(255), nullable=True),  # who registered it (null: before schema 5)
)
commit_keys = sa.Table(
    "flowlake_commit_keys",
    metadata,
    sa.Column("table_id", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("key_hashes", sa.LargeBinary, nullable=False),
    sa.Column("columns", sa.Text, nullable=False),
)
principals = sa.Table(
    "flowlake_principals",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(128), nullable=True, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)
grants = sa.Table(
    "flowlake_grants",
    metadata,
    sa.Column("principal", sa.String(255), primary_key=True),
    sa.Column("object", sa.String(160), primary_key=True),
    sa.Column("privilege", sa.String(16), primary_key=True),
    sa.Column("granted_by", sa.String(255), nullable=False),
    sa.Column("granted_at", sa.BigInteger, nullable=False),
)
audit = sa.Table(
    "flowlake_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("principal", sa.String(255), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("object", sa.String(160), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)
sa.Index("ix_flowlake_audit_at", audit.c.at)
table_jobs = sa.Table(
    "flowlake_table_jobs",
    metadata,
    sa.Column("table_id", sa.Integer, primary_key=True),
    sa.Column("job", sa.String(32), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=True),  # null: no lease held
    sa.Column("epoch", sa.BigInteger, nullable=False),  # +1 per acquisition (a fencing token)
    sa.Column("expires_at", sa.BigInteger, nullable=True),  # ms, the database's clock
    sa.Column("last_holder", sa.String(255), nullable=True),
    sa.Column("last_started_at", sa.BigInteger, nullable=True),
    sa.Column("last_finished_at", sa.BigInteger, nullable=True),
    sa.Column("last_outcome", sa.String(16), nullable=True),
    sa.Column("last_detail", sa.Text, nullable=True),
    sa.Column("runs", sa.BigInteger, nullable=False),
    sa.Column("failures", sa.BigInteger, nullable=False),
)
"""Table services: one row per (table, job kind) holding the job's lease and its last run."""
