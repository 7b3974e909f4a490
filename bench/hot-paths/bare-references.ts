import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import express from 'express';
import pg from 'pg';

/**
 * The bare references of `bench/hot-paths.ts`: what each hot path costs with nothing but express and pg
 * (no auth, no validation, no logging, no metrics). Same pool size as the service (10). One process
 * serves them all; argv: <database url> <port> <webhook signing key>.
 */
const [url, port, signingKey] = process.argv.slice(2) as [string, string, string];
const pool = new pg.Pool({ connectionString: url, max: 10 });
const iso = (column: string) => `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
const userJson = `'id', u.id, 'username', u.username, 'primaryEmail', u.primary_email, 'primaryPhone', u.primary_phone,
  'name', u.name, 'avatar', u.avatar, 'isSuspended', u.is_suspended, 'customData', u.custom_data, 'profile', u.profile,
  'applicationId', u.application_id, 'lastSignInAt', ${iso('u.last_sign_in_at')}, 'createdAt', ${iso('u.created_at')},
  'updatedAt', ${iso('u.updated_at')}`;
const rolesJson = (organizationId: string, userId: string) => `coalesce((select json_agg(json_build_object('id', r.id, 'name', r.name,
  'since', ${iso('mr.since')}) order by r.name, r.id) from organization_member_roles mr join organization_roles r on r.id = mr.organization_role_id
  where mr.organization_id = ${organizationId} and mr.user_id = ${userId}), '[]'::json)`;
const page = (rows: string) => `select json_build_object('data', coalesce(json_agg(p.j), '[]'::json), 'nextCursor', null)::text as body from (${rows}) p`;

const statements = {
  access: `select u.is_suspended, ${iso('m.since')} as since, case when m.user_id is null then '[]'::json else coalesce((
      select json_agg(json_build_object('id', r.id, 'name', r.name) order by r.name, r.id) from organization_member_roles mr
      join organization_roles r on r.id = mr.organization_role_id where mr.organization_id = $2 and mr.user_id = $1), '[]'::json) end as roles
    from (select 1) one left join users u on u.id = $1 left join organization_members m on m.organization_id = $2 and m.user_id = $1`,
  user: `select json_build_object(${userJson}, 'organizations', coalesce((select json_agg(json_build_object('id', o.id, 'name', o.name,
      'description', o.description, 'since', ${iso('m.since')}, 'organizationRoles', ${rolesJson('m.organization_id', 'm.user_id')}) order by o.id)
      from organization_members m join organizations o on o.id = m.organization_id where m.user_id = u.id), '[]'::json))::text as body
    from users u where u.id = $1`,
  userOrganizations: page(`select json_build_object('id', o.id, 'name', o.name, 'description', o.description,
      'organizationRoles', ${rolesJson('m.organization_id', 'm.user_id')}, 'since', ${iso('m.since')}) j
    from organization_members m join organizations o on o.id = m.organization_id where m.user_id = $1 order by m.organization_id limit 100`),
  members: page(`select json_build_object(${userJson}, 'organizationRoles', ${rolesJson('m.organization_id', 'm.user_id')}, 'since', ${iso('m.since')}) j
    from organization_members m join users u on u.id = m.user_id where m.organization_id = $1 and m.user_id > $2 order by m.user_id limit 100`),
  roleMembers: page(`select json_build_object(${userJson}, 'organization', json_build_object('id', o.id, 'name', o.name),
      'since', ${iso('mr.since')}, 'memberSince', ${iso('m.since')}) j
    from organization_member_roles mr join organization_members m on m.organization_id = mr.organization_id and m.user_id = mr.user_id
    join users u on u.id = mr.user_id join organizations o on o.id = mr.organization_id
    where mr.organization_role_id = $1 and (mr.organization_id, mr.user_id) > ($2, $3) order by mr.organization_id, mr.user_id limit 100`),
  webhook: `insert into bench_bare_deliveries (dedup_key, payload) values ($1, $2) on conflict do nothing returning id`,
};
const run = (name: keyof typeof statements, values: unknown[]) => pool.query({ name, text: statements[name], values });
const text = (res: express.Response, rows: { body: string }[]) => {
  if (!rows[0]) res.status(404).end();
  else res.type('application/json').send(rows[0].body);
};
const param = (value: unknown) => (typeof value === 'string' ? value : '');

await pool.query(`create table if not exists bench_bare_deliveries (id bigserial primary key, dedup_key text not null unique,
  payload jsonb not null, received_at timestamptz not null default now())`);

const app = express();
app.get('/json', (_req, res) => {
  res.json({ member: true, organizationRoles: [{ id: 'role', name: 'member' }], since: new Date(0).toISOString(), isSuspended: false, asOf: null });
});
app.get('/access', async (req, res) => {
  const { rows } = await run('access', [param(req.query.userId), param(req.query.organizationId)]);
  const row = rows[0] as { is_suspended: boolean | null; since: string | null; roles: unknown[] };
  res.json({ member: row.since !== null, organizationRoles: row.roles, since: row.since, isSuspended: row.is_suspended ?? false, asOf: null });
});
app.get('/users/:id', async (req, res) => text(res, (await run('user', [req.params.id])).rows));
app.get('/users/:id/organizations', async (req, res) => text(res, (await run('userOrganizations', [req.params.id])).rows));
app.get('/organizations/:id/members', async (req, res) =>
  text(res, (await run('members', [req.params.id, param(req.query.after)])).rows),
);
app.get('/organization-roles/:id/members', async (req, res) =>
  text(res, (await run('roleMembers', [req.params.id, param(req.query.afterOrganization), param(req.query.afterUser)])).rows),
);
const keyBytes = Buffer.from(signingKey);
app.post('/webhooks', express.raw({ type: () => true, limit: 1024 * 1024 }), async (req, res) => {
  const raw = req.body as Buffer;
  const expected = createHmac('sha256', keyBytes).update(raw).digest();
  const given = Buffer.from(String(req.get('logto-signature-sha-256') ?? ''), 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    res.status(401).end();
    return;
  }
  const dedupKey = `sha256:${createHash('sha256').update(raw).digest('hex')}`;
  const { rows } = await run('webhook', [dedupKey, raw.toString('utf8')]);
  res.status(202).json({ id: Number((rows[0] as { id: string } | undefined)?.id ?? 0), duplicate: rows.length === 0 });
});
app.listen(Number(port), '127.0.0.1', () => process.stdout.write('listening\n'));
