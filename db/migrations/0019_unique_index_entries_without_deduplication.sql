-- Every entry of these indexes is unique (each ends in a key of its table's primary key), so deduplication
-- can never merge two: it only copied a full leaf page's items before each split, for nothing.
ALTER INDEX "access_changes_user_idx" SET (deduplicate_items = off);--> statement-breakpoint
ALTER INDEX "access_changes_organization_idx" SET (deduplicate_items = off);--> statement-breakpoint
ALTER INDEX "organization_members_user_idx" SET (deduplicate_items = off);--> statement-breakpoint
ALTER INDEX "organization_member_roles_role_idx" SET (deduplicate_items = off);
