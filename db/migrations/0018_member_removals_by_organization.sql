-- A page of memberships and grants reads its organization's removals and revokes recorded after it was
-- observed once (organization, observed_at), where it looked up each written row by (user, organization).
DROP INDEX "access_changes_member_removals_idx";--> statement-breakpoint
CREATE INDEX "access_changes_member_removals_idx" ON "access_changes" USING btree ("organization_id","observed_at") WHERE "access_changes"."kind" in ('member.removed', 'member_role.revoked');
