CREATE TABLE "event_outbox" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"subscription_id" text NOT NULL,
	"change_id" bigint NOT NULL,
	"waits_for" bigint[],
	"user_id" text,
	"organization_id" text,
	"status" text DEFAULT 'pending' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp with time zone DEFAULT now() NOT NULL,
	"lease_until" timestamp with time zone,
	"payload" text,
	"last_status" integer,
	"last_error" text,
	"last_attempt_at" timestamp with time zone,
	"delivered_at" timestamp with time zone,
	"replay" boolean DEFAULT false NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "event_subscriptions" (
	"id" text PRIMARY KEY NOT NULL,
	"url" text NOT NULL,
	"description" text,
	"event_types" text[],
	"kinds" text[],
	"enabled" boolean DEFAULT true NOT NULL,
	"disabled_reason" text,
	"secret" text NOT NULL,
	"previous_secret" text,
	"previous_secret_expires_at" timestamp with time zone,
	"start_change_id" bigint DEFAULT 0 NOT NULL,
	"failing_since" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "event_outbox" ADD CONSTRAINT "event_outbox_subscription_id_event_subscriptions_id_fk" FOREIGN KEY ("subscription_id") REFERENCES "public"."event_subscriptions"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "event_outbox_ready_idx" ON "event_outbox" USING btree ("next_attempt_at","id") WHERE "event_outbox"."status" in ('pending', 'processing');--> statement-breakpoint
CREATE INDEX "event_outbox_subscription_idx" ON "event_outbox" USING btree ("subscription_id","id");--> statement-breakpoint
CREATE INDEX "event_outbox_open_user_idx" ON "event_outbox" USING btree ("subscription_id","user_id","change_id") WHERE "event_outbox"."status" in ('pending', 'processing');--> statement-breakpoint
CREATE INDEX "event_outbox_open_organization_idx" ON "event_outbox" USING btree ("subscription_id","organization_id","change_id") WHERE "event_outbox"."status" in ('pending', 'processing');