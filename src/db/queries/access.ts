import { sql } from 'drizzle-orm';
import { rows, type Database } from '../client.js';
import { isoText, type RoleRef } from './sql.js';

export type Access = {
  /** False when the user is unknown. */
  userExists: boolean;
  isSuspended: boolean;
  member: boolean;
  /** When the membership began (null when not a member). */
  since: Date | null;
  organizationRoles: RoleRef[];
};

/**
 * Whether a user is a member of an organization, with which roles and since when: the hot path of
 * the API, so one statement over three primary keys (users, organization_members, and the
 * (organization_id, user_id) prefix of organization_member_roles).
 */
export const findAccess = async (db: Database, userId: string, organizationId: string): Promise<Access> => {
  const [row] = await rows<{
    user_exists: boolean;
    is_suspended: boolean | null;
    since: string | null;
    roles: RoleRef[];
  }>(
    db,
    sql`select
      u.id is not null as user_exists,
      u.is_suspended,
      ${isoText(sql`m.since`)} as since,
      case when m.user_id is null then '[]'::json else coalesce((
        select json_agg(json_build_object('id', r.id, 'name', r.name) order by r.name, r.id)
        from organization_member_roles mr
        join organization_roles r on r.id = mr.organization_role_id
        where mr.organization_id = ${organizationId} and mr.user_id = ${userId}
      ), '[]'::json) end as roles
    from (select 1) as one
    left join users u on u.id = ${userId}
    left join organization_members m on m.organization_id = ${organizationId} and m.user_id = ${userId}`,
  );
  return {
    userExists: row?.user_exists ?? false,
    isSuspended: row?.is_suspended ?? false,
    member: row?.since !== null && row?.since !== undefined,
    since: row?.since ? new Date(row.since) : null,
    organizationRoles: row?.roles ?? [],
  };
};
