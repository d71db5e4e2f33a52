-- Every Taskdeck process registers itself here and refreshes its row at each heartbeat (taskdeck status).
CREATE TABLE processes (
    holder      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    seen_at     DOUBLE PRECISION NOT NULL,
    following   INTEGER NOT NULL,
    feed_lag    DOUBLE PRECISION
);
