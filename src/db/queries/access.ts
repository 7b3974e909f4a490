import type { Database } from '../client.js';
import { prepared, preparedRows } from '../prepared.js';
import { isoSql } from './json-text.js';
import type { RoleRef } from './sql.js';

export type Access = {
  /** False when the user is unknown. */
  userExists: boolean;
  isSuspended: boolean;
  member: boolean;
  /** When the membership began (null when not a member). */
  since: Date | null;
  organizationRoles: RoleRef[];
};

const accessStatement = prepared(
  'find_access',
  `select
    u.id is not null as user_exists,
    u.is_suspended,
    ${isoSql('m.since')} as since,
    case when m.user_id is null then '[]'::json else coalesce((
      select json_agg(json_build_object('id', r.id, 'name', r.name) order by r.name, r.id)
      from organization_member_roles mr
      join organization_roles r on r.id = mr.organization_role_id
      where mr.organization_id = $2 and mr.user_id = $1
    ), '[]'::json) end as roles
  from (select 1) as one
  left join users u on u.id = $1
  left join organization_members m on m.organization_id = $2 and m.user_id = $1`,
);

/**
 * Whether a user is a member of an organization, with which roles and since when: the hot path of
 * the API, so one prepared statement over three primary keys (users, organization_members, and the
 * (organization_id, user_id) prefix of organization_member_roles).
 */
export const findAccess = async (db: Database, userId: string, organizationId: string): Promise<Access> => {
  const [row] = await preparedRows<{
    user_exists: boolean;
    is_suspended: boolean | null;
    since: string | null;
    roles: RoleRef[] | string;
  }>(db, accessStatement, [userId, organizationId]);
  // The drivers parse json columns; a transaction's raw query may hand back its text.
  const roles = typeof row?.roles === 'string' ? (JSON.parse(row.roles) as RoleRef[]) : row?.roles;
  return {
    userExists: row?.user_exists ?? false,
    isSuspended: row?.is_suspended ?? false,
    member: row?.since !== null && row?.since !== undefined,
    since: row?.since ? new Date(row.since) : null,
    organizationRoles: roles ?? [],
  };
};
