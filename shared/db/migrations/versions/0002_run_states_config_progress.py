"""Training runs: the state the API calls "training" is spelled "training" here too (was "running"), and the
trigger's settings and the progress notes move apart (``params`` -> ``config`` + ``progress``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Existing rows migrate both ways: "running" rows become "training" (and back), and the progress notes that
version 0001's code wrote into ``params`` (the epoch a resumed run restarted from, the promotion's re-index
cursor and start time) move into ``progress`` (and back into ``params`` on downgrade). The state CHECK
constraint and the one-active-run-per-key index name states, so both are rebuilt around the rename.

Self-contained like 0001 (no imports from shared.db.models): it describes the schema at this point in history.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TABLE = "training_runs"
ACTIVE_INDEX = "uq_training_runs_active_dedup_key"
PROGRESS_COMMENT = "notes while it advances: the epoch a resume started from, the re-index cursor"
# The keys 0001's code wrote into `params` that were progress, not settings.
PROGRESS_KEYS = ("resumed_from_epoch", "reindex_cursor", "reindex_started_at")
OLD, NEW = "running", "training"


def _states(active_only: bool, training: str) -> str:
    states = ["queued", training, "evaluating", "reindexing"] + ([] if active_only else
                                                                  ["promoted", "rejected", "failed"])
    return f"state IN ({', '.join(repr(s) for s in states)})"


def _drop_state_guards() -> None:
    op.drop_index(ACTIVE_INDEX, table_name=TABLE)
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f("ck_training_runs_state"), type_="check")


def _create_state_guards(training: str) -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.create_check_constraint(op.f("ck_training_runs_state"), _states(False, training))
    op.create_index(ACTIVE_INDEX, TABLE, ["dedup_key"], unique=True,
                    postgresql_where=sa.text(_states(True, training)), sqlite_where=sa.text(_states(True, training)))


def _rows() -> tuple[sa.Connection, sa.TableClause, list[sa.Row]]:
    """Every training run's (run_id, state, config, progress), with the table to update them through."""
    runs = sa.table(TABLE, sa.column("run_id", sa.String), sa.column("state", sa.String), sa.column("config", JSON),
                    sa.column("progress", JSON))
    connection = op.get_bind()
    return connection, runs, list(connection.execute(sa.select(*runs.c)))


def upgrade() -> None:
    _drop_state_guards()
    with op.batch_alter_table(TABLE) as batch:
        batch.alter_column("params", new_column_name="config", existing_type=JSON, existing_nullable=False,
                           existing_comment="the trigger's training settings")
        batch.add_column(sa.Column("progress", JSON, nullable=True, comment=PROGRESS_COMMENT))
    connection, runs, rows = _rows()
    for run_id, state, config, _ in rows:
        config = dict(config or {})
        progress = {key: config.pop(key) for key in PROGRESS_KEYS if key in config}
        connection.execute(runs.update().where(runs.c.run_id == run_id)
                           .values(state=NEW if state == OLD else state, config=config, progress=progress))
    with op.batch_alter_table(TABLE) as batch:
        batch.alter_column("progress", existing_type=JSON, nullable=False, existing_comment=PROGRESS_COMMENT)
    _create_state_guards(NEW)


def downgrade() -> None:
    _drop_state_guards()
    connection, runs, rows = _rows()
    for run_id, state, config, progress in rows:
        connection.execute(runs.update().where(runs.c.run_id == run_id)
                           .values(state=OLD if state == NEW else state, config={**(config or {}), **(progress or {})}))
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column("progress")
        batch.alter_column("config", new_column_name="params", existing_type=JSON, existing_nullable=False,
                           existing_comment="the trigger's training settings")
    _create_state_guards(OLD)
