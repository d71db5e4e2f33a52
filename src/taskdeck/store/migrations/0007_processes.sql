-- Every Taskdeck process registers itself here and refreshes its row at each heartbeat, so
-- `taskdeck status` can say which processes are alive, what they follow and how far behind
-- the shared feed they are.
CREATE TABLE processes (
    holder      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,             -- serve, web (serve --no-engine) or worker
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    seen_at     REAL NOT NULL,
    following   INTEGER NOT NULL,          -- runs it follows
    feed_lag    REAL                       -- seconds between a shared-feed note's commit and its delivery here
);
