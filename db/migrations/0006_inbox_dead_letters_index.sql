DROP INDEX "webhook_deliveries_status_idx";--> statement-breakpoint
CREATE INDEX "webhook_deliveries_dead_idx" ON "webhook_deliveries" USING btree ("id") WHERE "webhook_deliveries"."status" = 'dead';