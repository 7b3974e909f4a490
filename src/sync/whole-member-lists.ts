import { sql } from 'drizzle-orm';
import { organizationMemberRoles, organizationMembers, organizations } from '../../db/schema.js';
import type { Database } from '../db/client.js';
import { namedRows } from '../db/prepared.js';
import type { LogtoOrganizationMember } from '../logto/index.js';

/** Organizations compared in one statement at most. */
const maxBatch = 64;

type Waiting = { organizationId: string; members: LogtoOrganizationMember[]; settle: (same: boolean) => void; fail: (error: unknown) => void };

/**
 * Tells whether an organization's whole member list (every member Logto has, with its roles) is exactly
 * what is stored, for several organizations in one statement. Most organizations of a tenant have one
 * small member page, and a reconcile of an unchanged tenant compared each in a statement of its own
 * (~1,500 at the bench's scale 1, each a round trip, a parse-bind-execute and a commit).
 *
 * Lists wait for no timer: the first goes at once, and those that come while a statement runs go
 * together in the next. A list found the same needs nothing (no write, no removal candidate); any other
 * answer is the caller's to apply as usual, so this only ever skips work that would write nothing.
 */
export class WholeMemberListComparer {
  readonly #db: Database;
  #waiting: Waiting[] = [];
  #running = false;

  constructor(db: Database) {
    this.#db = db;
  }

  /** True when the stored members and member roles of `organizationId` are exactly `members`. */
  sameAsStored(organizationId: string, members: LogtoOrganizationMember[]): Promise<boolean> {
    return new Promise((settle, fail) => {
      this.#waiting.push({ organizationId, members, settle, fail });
      if (!this.#running) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#running = true;
    try {
      while (this.#waiting.length > 0) {
        const batch = this.#waiting.splice(0, maxBatch);
        try {
          const differing = await differingOrganizations(this.#db, batch);
          for (const waiting of batch) waiting.settle(!differing.has(waiting.organizationId));
        } catch (error) {
          for (const waiting of batch) waiting.fail(error);
        }
      }
    } finally {
      this.#running = false;
    }
  }
}

/**
 * Of the organizations given with their whole member lists, those whose stored state differs: the
 * organization is not stored, a member is missing or extra, or a member role is missing or extra. A
 * stored membership holds its user and a stored member role its role (the apply functions remove them
 * together), so a list found the same has every user and role it names stored.
 */
const differingOrganizations = async (
  db: Database,
  lists: { organizationId: string; members: LogtoOrganizationMember[] }[],
): Promise<Set<string>> => {
  const organizationIds = lists.map((list) => list.organizationId);
  const memberOrganizations: string[] = [];
  const memberUsers: string[] = [];
  const roleOrganizations: string[] = [];
  const roleUsers: string[] = [];
  const roleIds: string[] = [];
  for (const { organizationId, members } of lists) {
    for (const member of members) {
      memberOrganizations.push(organizationId);
      memberUsers.push(member.id);
      for (const roleId of new Set(member.organizationRoles.map((role) => role.id))) {
        roleOrganizations.push(organizationId);
        roleUsers.push(member.id);
        roleIds.push(roleId);
      }
    }
  }
  const [row] = await namedRows<{ differing: string[] }>(
    db,
    sql`with listed as (
        select o from unnest(${sql.param(organizationIds)}::text[]) as t(o)
      ), page as (
        select o, u from unnest(${sql.param(memberOrganizations)}::text[], ${sql.param(memberUsers)}::text[]) as t(o, u)
      ), wanted as (
        select o, u, r from unnest(${sql.param(roleOrganizations)}::text[], ${sql.param(roleUsers)}::text[], ${sql.param(roleIds)}::text[]) as t(o, u, r)
      ), stored_members as (
        select organization_id as o, user_id as u from ${organizationMembers} where organization_id = any(${sql.param(organizationIds)}::text[])
      ), stored_roles as (
        select organization_id as o, user_id as u, organization_role_id as r from ${organizationMemberRoles}
        where organization_id = any(${sql.param(organizationIds)}::text[])
      ), differing as (
        select o from listed where not exists (select from ${organizations} where id = listed.o)
        union select o from (select o, u from page except select o, u from stored_members) as added
        union select o from (select o, u from stored_members except select o, u from page) as removed
        union select o from (select o, u, r from wanted except select o, u, r from stored_roles) as granted
        union select o from (select o, u, r from stored_roles except select o, u, r from wanted) as revoked
      )
      select to_json(array(select o from differing)) as differing`,
  );
  return new Set(row!.differing);
};
