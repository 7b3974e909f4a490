-- Logto ids compared byte by byte (see `id` in db/schema.ts): each index on them is rebuilt once, one
-- statement per table. Ids are lowercase letters and digits, so no stored order changes.
ALTER TABLE "access_changes" ALTER COLUMN "user_id" SET DATA TYPE text COLLATE "C", ALTER COLUMN "organization_id" SET DATA TYPE text COLLATE "C", ALTER COLUMN "organization_role_id" SET DATA TYPE text COLLATE "C";--> statement-breakpoint
ALTER TABLE "organization_member_roles" ALTER COLUMN "organization_id" SET DATA TYPE text COLLATE "C", ALTER COLUMN "user_id" SET DATA TYPE text COLLATE "C", ALTER COLUMN "organization_role_id" SET DATA TYPE text COLLATE "C";--> statement-breakpoint
ALTER TABLE "organization_members" ALTER COLUMN "organization_id" SET DATA TYPE text COLLATE "C", ALTER COLUMN "user_id" SET DATA TYPE text COLLATE "C";--> statement-breakpoint
ALTER TABLE "organization_roles" ALTER COLUMN "id" SET DATA TYPE text COLLATE "C";--> statement-breakpoint
ALTER TABLE "organizations" ALTER COLUMN "id" SET DATA TYPE text COLLATE "C";--> statement-breakpoint
ALTER TABLE "users" ALTER COLUMN "id" SET DATA TYPE text COLLATE "C";
