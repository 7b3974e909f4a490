CREATE TABLE "organization_resyncs" (
	"organization_id" text PRIMARY KEY NOT NULL,
	"requested_at" timestamp with time zone NOT NULL,
	"claim" text,
	"started_at" timestamp with time zone,
	"lease_until" timestamp with time zone,
	"done_started_at" timestamp with time zone
);
