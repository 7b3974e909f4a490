-- The outbox's key leads with the subscription, and the index on (subscription_id, id) it replaces goes:
-- one btree entry per row inserted and one per row settled, instead of two of each.
ALTER TABLE "event_outbox" DROP CONSTRAINT "event_outbox_pkey";--> statement-breakpoint
ALTER TABLE "event_outbox" ADD CONSTRAINT "event_outbox_pkey" PRIMARY KEY("subscription_id","id");--> statement-breakpoint
DROP INDEX "event_outbox_subscription_idx";
