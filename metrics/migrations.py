"""Numbered, append-only schema migrations for the workspace database.

Never edit or reorder an entry once it has shipped: add a new one. ``schema_migrations`` records
which have run, so opening an old workspace upgrades it in place and a new one is built by the same
path.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "runs, requests, instances",
        """
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            created_at TIMESTAMP,
            updated_at TIMESTAMP,
            status VARCHAR,
            generator VARCHAR,
            provider VARCHAR,
            model VARCHAR,
            method VARCHAR,
            method_version VARCHAR,
            domain VARCHAR,
            source VARCHAR,
            n_requests INTEGER,
            n_ok INTEGER,
            n_failed INTEGER,
            n_reused INTEGER,
            n_instances INTEGER,
            n_valid INTEGER,
            prompt_tokens BIGINT,
            completion_tokens BIGINT,
            cost_usd DOUBLE,
            error VARCHAR,
            manifest JSON
        );
        CREATE TABLE requests (
            run_id VARCHAR,
            idx INTEGER,
            key VARCHAR,
            status VARCHAR,
            error_kind VARCHAR,
            error_type VARCHAR,
            error_message VARCHAR,
            http_status INTEGER,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_s DOUBLE,
            cost_usd DOUBLE,
            attempts INTEGER,
            finish_reason VARCHAR,
            model VARCHAR,
            text VARCHAR,
            raw JSON,
            created_at DOUBLE,
            PRIMARY KEY (run_id, idx)
        );
        CREATE TABLE instances (
            run_id VARCHAR,
            idx INTEGER,
            instance_id VARCHAR,
            messages JSON,
            valid BOOLEAN,
            reject_reason VARCHAR,
            meta JSON,
            PRIMARY KEY (run_id, idx)
        );
        """,
    ),
    (
        2,
        "pairs",
        """
        CREATE TABLE pairs (
            run_id VARCHAR,
            idx INTEGER,
            pair_id VARCHAR,
            prompt JSON,
            chosen JSON,
            rejected JSON,
            attribute VARCHAR,
            margin DOUBLE,
            weight DOUBLE,
            evidence JSON,
            meta JSON,
            PRIMARY KEY (run_id, idx)
        );
        ALTER TABLE runs ADD COLUMN n_pairs INTEGER;
        """,
    ),
    # 3: curation counts (dedup, decontamination). 4: students, scores. 5: intrinsic metrics.
]
