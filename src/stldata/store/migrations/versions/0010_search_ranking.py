"""Search ranking tables: the trigger function that keeps each one in step with its
dataset table.

A dataset with text columns has, beside its table, a narrow *ranking table* of
``(_key, _document)`` (see :mod:`stldata.projection.search_index`). Statement-level
triggers on the dataset table call this function with the ranking table's name and the
order its rows are kept in (the catalog's ``search_order``, as quoted column names, or
empty), and the rows each statement inserted, updated or deleted (its transition tables
``came`` and ``gone``) are copied across, so every write path of the projection (and any
hand edit) keeps the two tables equal in the same transaction.

Revision ID: 0010_search_ranking
Revises: 0004
"""

from alembic import op

revision = "0010_search_ranking"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION stldata_sync_ranking() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                EXECUTE format('TRUNCATE %I', TG_ARGV[0]);
                RETURN NULL;
            END IF;
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                EXECUTE format('DELETE FROM %I r USING gone g WHERE r._key = g._key',
                               TG_ARGV[0]);
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                EXECUTE format('INSERT INTO %I (_key, _document) '
                               'SELECT _key, _document FROM came %s', TG_ARGV[0],
                               CASE WHEN TG_NARGS > 1 AND TG_ARGV[1] <> ''
                                    THEN 'ORDER BY ' || TG_ARGV[1] ELSE '' END);
            END IF;
            RETURN NULL;
        END
        $$""")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS stldata_sync_ranking() CASCADE")
