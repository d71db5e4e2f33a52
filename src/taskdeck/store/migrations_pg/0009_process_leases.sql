-- A process's lease on every task it holds: one row renewed per heartbeat instead of every held task row
-- (at 5,000 runs per worker, renewing each task row queued behind the writer's row locks and came late).
-- A task's lease holds while its own lease_expires or its holder's processes.lease_expires is ahead.
ALTER TABLE processes ADD COLUMN lease_expires DOUBLE PRECISION;
