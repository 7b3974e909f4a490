-- Inserts leave part of each page of the inbox free, so that the new version a claim writes (attempts,
-- lease) fits on the same page: with no indexed column changed (see "outcome"), it is then a HOT update.
ALTER TABLE "webhook_deliveries" SET (fillfactor = 70);
