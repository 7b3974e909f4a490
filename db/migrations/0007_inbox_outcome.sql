DROP INDEX "webhook_deliveries_ready_idx";--> statement-breakpoint
DROP INDEX "webhook_deliveries_dead_idx";--> statement-breakpoint
DROP INDEX "webhook_deliveries_applied_idx";--> statement-breakpoint
ALTER TABLE "webhook_deliveries" ADD COLUMN "outcome" text GENERATED ALWAYS AS (case when status in ('pending', 'processing') then null else status end) STORED;--> statement-breakpoint
CREATE INDEX "webhook_deliveries_ready_idx" ON "webhook_deliveries" USING btree ("next_attempt_at","id") WHERE "webhook_deliveries"."outcome" is null;--> statement-breakpoint
CREATE INDEX "webhook_deliveries_dead_idx" ON "webhook_deliveries" USING btree ("id") WHERE "webhook_deliveries"."outcome" = 'dead';--> statement-breakpoint
CREATE INDEX "webhook_deliveries_applied_idx" ON "webhook_deliveries" USING btree ("processed_at") WHERE "webhook_deliveries"."outcome" = 'applied';