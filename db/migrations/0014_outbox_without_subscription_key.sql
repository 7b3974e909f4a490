ALTER TABLE "event_outbox" DROP CONSTRAINT "event_outbox_subscription_id_event_subscriptions_id_fk";
