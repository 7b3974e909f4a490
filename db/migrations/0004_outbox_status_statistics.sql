-- The outbox's open rows are a sliver of a table of delivered ones, and a burst makes them the bulk within
-- seconds, long before an analyze sees it. With statistics on "status" taken before the burst, the planner
-- believes the open-row indexes empty and walks the whole backlog once per claimed row (seconds per claim
-- at 25,000 open rows); without them it estimates a share of the table and probes the index of the row's
-- user or organization, whatever the moment the statistics were taken. No statistics are collected for the
-- column from now on, and the ones an earlier analyze left are dropped (a change of type to the same type
-- is the way to drop them; it rebuilds the outbox's indexes once).
ALTER TABLE "event_outbox" ALTER COLUMN "status" SET STATISTICS 0;--> statement-breakpoint
ALTER TABLE "event_outbox" ALTER COLUMN "status" TYPE text;
