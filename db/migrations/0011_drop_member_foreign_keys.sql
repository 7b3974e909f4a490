ALTER TABLE "organization_member_roles" DROP CONSTRAINT "organization_member_roles_organization_role_id_organization_roles_id_fk";
--> statement-breakpoint
ALTER TABLE "organization_member_roles" DROP CONSTRAINT "organization_member_roles_member_fk";
--> statement-breakpoint
ALTER TABLE "organization_members" DROP CONSTRAINT "organization_members_organization_id_organizations_id_fk";
--> statement-breakpoint
ALTER TABLE "organization_members" DROP CONSTRAINT "organization_members_user_id_users_id_fk";
