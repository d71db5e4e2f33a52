-- Upstream requests per key per second, as each process last reported them at its heartbeat.
-- Lets a restarted process, or several processes sharing one key, stay inside one rate budget.

CREATE TABLE rate_usage (
    owner       TEXT NOT NULL,
    holder      TEXT NOT NULL,             -- the process that made the requests
    buckets     TEXT NOT NULL,             -- JSON {"<unix second>": count} for the last minute
    updated_at  REAL NOT NULL,
    final       INTEGER NOT NULL DEFAULT 0, -- 1: the process stopped cleanly after this report
    PRIMARY KEY (owner, holder)
);
