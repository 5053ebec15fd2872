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
    (
        3,
        "curation report per run",
        "ALTER TABLE runs ADD COLUMN curation JSON;",
    ),
    (
        4,
        "students",
        """
        CREATE TABLE students (
            student_id VARCHAR PRIMARY KEY,
            base_model VARCHAR,
            recipe JSON,
            data_run_id VARCHAR,
            status VARCHAR,
            created_at TIMESTAMP,
            finished_at TIMESTAMP,
            train_seconds DOUBLE,
            final_loss DOUBLE,
            path VARCHAR,
            error VARCHAR
        );
        """,
    ),
    (
        5,
        "evaluation scores",
        """
        CREATE TABLE scores (
            eval_id VARCHAR,
            model VARCHAR,
            student_id VARCHAR,
            task VARCHAR,
            metric VARCHAR,
            value DOUBLE,
            n INTEGER,
            created_at TIMESTAMP,
            PRIMARY KEY (eval_id, metric)
        );
        CREATE TABLE item_scores (
            eval_id VARCHAR,
            task VARCHAR,
            item_id VARCHAR,
            idx INTEGER,
            score DOUBLE,
            extracted VARCHAR,
            detail JSON,
            PRIMARY KEY (eval_id, idx)
        );
        """,
    ),
    (
        6,
        "intrinsic metrics, PGR, leaderboard views",
        # intrinsic: one row per (run, metric, config key); ``key`` hashes the metric's version
        # and configuration (plus a fingerprint of the run's data), so a stored key means
        # "already computed". intrinsic_items: per-instance values (NULL + note when missing).
        # pgr: one computation per run (per task, and task '*' = the domain mean), with its
        # bootstrap replicates so overall CIs and separability need no recomputation.
        """
        CREATE TABLE intrinsic (
            run_id VARCHAR,
            metric VARCHAR,
            version VARCHAR,
            config JSON,
            key VARCHAR,
            value DOUBLE,
            n INTEGER,
            created_at TIMESTAMP,
            PRIMARY KEY (run_id, metric, key)
        );
        CREATE TABLE intrinsic_items (
            run_id VARCHAR,
            metric VARCHAR,
            key VARCHAR,
            idx INTEGER,
            value DOUBLE,
            note VARCHAR,
            PRIMARY KEY (run_id, metric, key, idx)
        );
        CREATE TABLE pgr (
            run_id VARCHAR,
            generator VARCHAR,
            method VARCHAR,
            domain VARCHAR,
            task VARCHAR,
            student_eval_id VARCHAR,
            base_eval_id VARCHAR,
            reference_eval_id VARCHAR,
            base_model VARCHAR,
            reference_model VARCHAR,
            student_score DOUBLE,
            base_score DOUBLE,
            reference_score DOUBLE,
            pgr DOUBLE,
            ci_low DOUBLE,
            ci_high DOUBLE,
            n_items INTEGER,
            items_key VARCHAR,
            n_boot INTEGER,
            seed BIGINT,
            boot DOUBLE[],
            created_at TIMESTAMP,
            PRIMARY KEY (run_id, task)
        );
        CREATE VIEW intrinsic_latest AS
        SELECT run_id, metric, arg_max(value, created_at) AS value, arg_max(n, created_at) AS n,
               max(created_at) AS created_at
        FROM intrinsic GROUP BY run_id, metric;
        CREATE VIEW run_intrinsic AS
        SELECT run_id,
            max(value) FILTER (WHERE metric = 'difficulty') AS difficulty,
            max(value) FILTER (WHERE metric = 'quality') AS quality,
            max(value) FILTER (WHERE metric = 'reward') AS reward,
            max(value) FILTER (WHERE metric = 'perplexity') AS perplexity,
            max(value) FILTER (WHERE metric = 'instruction_diversity') AS instruction_diversity,
            max(value) FILTER (WHERE metric = 'response_diversity') AS response_diversity,
            max(value) FILTER (WHERE metric = 'distinct_1') AS distinct_1,
            max(value) FILTER (WHERE metric = 'distinct_2') AS distinct_2,
            max(value) FILTER (WHERE metric = 'distinct_3') AS distinct_3,
            max(value) FILTER (WHERE metric = 'validity_rate') AS validity_rate,
            max(value) FILTER (WHERE metric = 'duplicate_rate') AS duplicate_rate,
            max(value) FILTER (WHERE metric = 'contamination_rate') AS contamination_rate,
            max(value) FILTER (WHERE metric = 'instruction_chars') AS instruction_chars,
            max(value) FILTER (WHERE metric = 'response_chars') AS response_chars,
            max(value) FILTER (WHERE metric = 'tokens_per_instance') AS tokens_per_instance,
            max(value) FILTER (WHERE metric = 'cost_per_instance') AS cost_per_instance
        FROM intrinsic_latest GROUP BY run_id;
        CREATE VIEW leaderboard AS
        SELECT p.method, p.domain,
            rank() OVER (PARTITION BY p.method, p.domain ORDER BY p.pgr DESC) AS rank,
            p.generator, p.run_id, p.pgr, p.ci_low, p.ci_high, p.n_items,
            p.base_model, p.reference_model, r.n_valid, r.cost_usd,
            p.pgr / nullif(r.cost_usd, 0) AS pgr_per_dollar,
            i.* EXCLUDE (run_id)
        FROM pgr p
        LEFT JOIN runs r USING (run_id)
        LEFT JOIN run_intrinsic i USING (run_id)
        WHERE p.task = '*';
        CREATE VIEW leaderboard_overall AS
        WITH cells AS (SELECT * FROM pgr WHERE task = '*'),
        sized AS (  -- replicate b of every cell, up to the generator's shortest vector
            SELECT generator, list_slice(boot, 1, min(len(boot)) OVER (PARTITION BY generator))
                   AS boot
            FROM cells
        ),
        reps AS (
            SELECT generator, b, avg(v) AS v
            FROM (SELECT generator, unnest(boot) AS v, unnest(range(len(boot))) AS b
                  FROM sized)
            GROUP BY generator, b
        ),
        ci AS (
            SELECT generator, quantile_cont(v, 0.025) AS ci_low,
                   quantile_cont(v, 0.975) AS ci_high
            FROM reps GROUP BY generator
        ),
        agg AS (
            SELECT c.generator, avg(c.pgr) AS pgr, count(*) AS n_cells,
                sum(r.n_valid) AS n_valid, sum(r.cost_usd) AS cost_usd,
                avg(i.quality) AS quality, avg(i.difficulty) AS difficulty,
                avg(i.reward) AS reward, avg(i.perplexity) AS perplexity,
                avg(i.instruction_diversity) AS instruction_diversity,
                avg(i.response_diversity) AS response_diversity,
                avg(i.validity_rate) AS validity_rate
            FROM cells c
            LEFT JOIN runs r USING (run_id)
            LEFT JOIN run_intrinsic i USING (run_id)
            GROUP BY c.generator
        )
        SELECT rank() OVER (ORDER BY agg.pgr DESC) AS rank, agg.generator, agg.pgr,
            ci.ci_low, ci.ci_high, agg.n_cells, agg.n_valid, agg.cost_usd,
            agg.pgr / nullif(agg.cost_usd, 0) AS pgr_per_dollar,
            agg.* EXCLUDE (generator, pgr, n_cells, n_valid, cost_usd)
        FROM agg LEFT JOIN ci USING (generator);
        """,
    ),
    (
        7,
        "request prompts, pair labels",
        # requests.prompt: the chat messages a request sent (NULL for rows stored before), so a
        # row can be shown beside the prompt that produced it. labels: a person's preference on
        # a pair (``datagen serve``'s labelling page): ``label`` is the side they preferred
        # ('chosen', 'rejected' or 'tie'), ``shown_first`` the side shown as A (sides are
        # shuffled per pair so the judge's order does not lead); one row per annotator.
        """
        ALTER TABLE requests ADD COLUMN prompt JSON;
        CREATE TABLE labels (
            run_id VARCHAR,
            pair_id VARCHAR,
            idx INTEGER,
            annotator VARCHAR,
            label VARCHAR,
            shown_first VARCHAR,
            created_at TIMESTAMP,
            PRIMARY KEY (run_id, pair_id, annotator)
        );
        """,
    ),
    (
        8,
        "issue bias beside PGR",
        # The issue-bias metric family (metrics.issue_bias) as columns of run_intrinsic, so the
        # leaderboard views show it beside PGR; the overall view averages issue_bias over a
        # generator's cells that have it. The other columns are unchanged.
        """
        CREATE OR REPLACE VIEW run_intrinsic AS
        SELECT run_id,
            max(value) FILTER (WHERE metric = 'difficulty') AS difficulty,
            max(value) FILTER (WHERE metric = 'quality') AS quality,
            max(value) FILTER (WHERE metric = 'reward') AS reward,
            max(value) FILTER (WHERE metric = 'perplexity') AS perplexity,
            max(value) FILTER (WHERE metric = 'instruction_diversity') AS instruction_diversity,
            max(value) FILTER (WHERE metric = 'response_diversity') AS response_diversity,
            max(value) FILTER (WHERE metric = 'distinct_1') AS distinct_1,
            max(value) FILTER (WHERE metric = 'distinct_2') AS distinct_2,
            max(value) FILTER (WHERE metric = 'distinct_3') AS distinct_3,
            max(value) FILTER (WHERE metric = 'validity_rate') AS validity_rate,
            max(value) FILTER (WHERE metric = 'duplicate_rate') AS duplicate_rate,
            max(value) FILTER (WHERE metric = 'contamination_rate') AS contamination_rate,
            max(value) FILTER (WHERE metric = 'instruction_chars') AS instruction_chars,
            max(value) FILTER (WHERE metric = 'response_chars') AS response_chars,
            max(value) FILTER (WHERE metric = 'tokens_per_instance') AS tokens_per_instance,
            max(value) FILTER (WHERE metric = 'cost_per_instance') AS cost_per_instance,
            max(value) FILTER (WHERE metric = 'issue_bias') AS issue_bias,
            max(value) FILTER (WHERE metric = 'issue_one_sided') AS issue_one_sided,
            max(value) FILTER (WHERE metric = 'issue_refusal_rate') AS issue_refusal_rate
        FROM intrinsic_latest GROUP BY run_id;
        CREATE OR REPLACE VIEW leaderboard AS
        SELECT p.method, p.domain,
            rank() OVER (PARTITION BY p.method, p.domain ORDER BY p.pgr DESC) AS rank,
            p.generator, p.run_id, p.pgr, p.ci_low, p.ci_high, p.n_items,
            p.base_model, p.reference_model, r.n_valid, r.cost_usd,
            p.pgr / nullif(r.cost_usd, 0) AS pgr_per_dollar,
            i.* EXCLUDE (run_id)
        FROM pgr p
        LEFT JOIN runs r USING (run_id)
        LEFT JOIN run_intrinsic i USING (run_id)
        WHERE p.task = '*';
        CREATE OR REPLACE VIEW leaderboard_overall AS
        WITH cells AS (SELECT * FROM pgr WHERE task = '*'),
        sized AS (  -- replicate b of every cell, up to the generator's shortest vector
            SELECT generator, list_slice(boot, 1, min(len(boot)) OVER (PARTITION BY generator))
                   AS boot
            FROM cells
        ),
        reps AS (
            SELECT generator, b, avg(v) AS v
            FROM (SELECT generator, unnest(boot) AS v, unnest(range(len(boot))) AS b
                  FROM sized)
            GROUP BY generator, b
        ),
        ci AS (
            SELECT generator, quantile_cont(v, 0.025) AS ci_low,
                   quantile_cont(v, 0.975) AS ci_high
            FROM reps GROUP BY generator
        ),
        agg AS (
            SELECT c.generator, avg(c.pgr) AS pgr, count(*) AS n_cells,
                sum(r.n_valid) AS n_valid, sum(r.cost_usd) AS cost_usd,
                avg(i.quality) AS quality, avg(i.difficulty) AS difficulty,
                avg(i.reward) AS reward, avg(i.perplexity) AS perplexity,
                avg(i.instruction_diversity) AS instruction_diversity,
                avg(i.response_diversity) AS response_diversity,
                avg(i.validity_rate) AS validity_rate,
                avg(i.issue_bias) AS issue_bias
            FROM cells c
            LEFT JOIN runs r USING (run_id)
            LEFT JOIN run_intrinsic i USING (run_id)
            GROUP BY c.generator
        )
        SELECT rank() OVER (ORDER BY agg.pgr DESC) AS rank, agg.generator, agg.pgr,
            ci.ci_low, ci.ci_high, agg.n_cells, agg.n_valid, agg.cost_usd,
            agg.pgr / nullif(agg.cost_usd, 0) AS pgr_per_dollar,
            agg.* EXCLUDE (generator, pgr, n_cells, n_valid, cost_usd)
        FROM agg LEFT JOIN ci USING (generator);
        """,
    ),
    (
        9,
        "embedding cache",
        # One vector per (embedding model, text) key (datagen select, RDS+): float32 bytes, so
        # a re-selection over the same rows, or a larger pool that contains them, embeds only
        # the rows not seen before.
        """
        CREATE TABLE embeddings (
            key VARCHAR PRIMARY KEY,
            dim INTEGER,
            vector BLOB,
            created_at TIMESTAMP
        );
        """,
    ),
]
