-- The rate budget shared by every process and machine using one API key: each upstream request is
-- granted here first (one row per request, under an advisory lock per key), so the upstream never
-- sees more than the budget in any window, however many processes there are, and a process killed
-- after a grant has its requests counted all the same.
CREATE TABLE rate_grants (
    owner  TEXT NOT NULL,
    at     DOUBLE PRECISION NOT NULL
);
CREATE INDEX rate_grants_owner_at ON rate_grants(owner, at);
