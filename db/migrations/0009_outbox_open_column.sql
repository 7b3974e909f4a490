DROP INDEX "event_outbox_ready_idx";--> statement-breakpoint
DROP INDEX "event_outbox_open_user_idx";--> statement-breakpoint
DROP INDEX "event_outbox_open_organization_idx";--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN "open" boolean GENERATED ALWAYS AS (status in ('pending', 'processing')) STORED NOT NULL;--> statement-breakpoint
CREATE INDEX "event_outbox_ready_idx" ON "event_outbox" USING btree ("next_attempt_at","id") WHERE "event_outbox"."open";--> statement-breakpoint
CREATE INDEX "event_outbox_open_user_idx" ON "event_outbox" USING btree ("subscription_id","user_id","change_id") WHERE "event_outbox"."open" and "event_outbox"."user_id" is not null;--> statement-breakpoint
CREATE INDEX "event_outbox_open_organization_idx" ON "event_outbox" USING btree ("subscription_id","organization_id","change_id") WHERE "event_outbox"."open" and "event_outbox"."organization_id" is not null;