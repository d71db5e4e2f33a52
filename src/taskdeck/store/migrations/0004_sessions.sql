-- Browser sessions, kept on the server (like Django's): the cookie holds a random token, this table
-- only its SHA-256, so a stolen database cannot be replayed as a cookie. Signing out deletes the row.

CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,          -- SHA-256 of the cookie's token (hex)
    owner       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX sessions_owner ON sessions(owner);
