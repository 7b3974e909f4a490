-- A claim rewrites its rows without touching an indexed column: the new version of a row is a HOT update,
-- without index entries, only if it fits on the row's page. A claim takes the rows of a page together,
-- in one transaction, while their old versions are still live; the free space kept on each page when
-- rows are inserted is what holds those versions (pruning reclaims it once the claim has committed).
ALTER TABLE "event_outbox" SET (fillfactor = 50);--> statement-breakpoint
-- As for "status" before it (0004): statistics on "open" taken before a burst make the planner believe the
-- open-row indexes empty; without them it estimates a share of the table.
ALTER TABLE "event_outbox" ALTER COLUMN "open" SET STATISTICS 0;
