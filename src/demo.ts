import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from './config.js';
import { startFullSync } from './jobs/full-sync-runner.js';
import { createLogger } from './logger.js';
import { createProgressReporter } from './progress.js';
import { startService } from './service.js';
import { startSimulatedTenant, type SimulatedTenant } from './simulator/index.js';

/**
 * `npm run demo`: a simulated Logto tenant, the service on the embedded database, a baseline sync, then
 * a stream of changes made through the tenant's Management API, arriving as signed webhooks.
 * `--duration SECONDS` stops it by itself (0, the default, runs until Ctrl-C).
 */
const { values } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.PORT ?? '3000' },
    users: { type: 'string', default: '2000' },
    organizations: { type: 'string', default: '80' },
    duration: { type: 'string', default: '0' },
    'change-every': { type: 'string', default: '2000' },
  },
});

const dataDir = join(process.env.DATA_DIR ?? './data', 'demo');
// Each demo starts from an empty embedded database, so what it shows is this run's sync.
rmSync(dataDir, { recursive: true, force: true });

const signingKey = randomBytes(24).toString('base64url');
const sim = await startSimulatedTenant({
  resource: 'self',
  seed: 42,
  signingKey,
  generate: { users: Number(values.users), organizations: Number(values.organizations), organizationRoles: 6 },
});
const apiKey = `las_demo_${randomBytes(18).toString('base64url')}`;
const config = loadConfig({
  LOGTO_BASE_URL: sim.baseUrl,
  LOGTO_TOKEN_URL: sim.tokenUrl,
  LOGTO_MANAGEMENT_API_RESOURCE: sim.resource,
  LOGTO_CLIENT_ID: sim.clientId,
  LOGTO_CLIENT_SECRET: sim.clientSecret,
  LOGTO_HOOK_ID: sim.hookId,
  LOGTO_WEBHOOK_SIGNING_KEYS: signingKey,
  DATA_DIR: dataDir,
  PORT: values.port,
  HOST: '127.0.0.1',
  API_KEYS: `demo:write:${apiKey}`,
  ROLE_SWEEP_INTERVAL: '30s',
  LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
});
const logger = createLogger(config.logLevel);
const service = await startService(config, { logger, initialSync: false });
sim.setWebhookEndpoints([{ url: `${service.url}/webhooks/logto` }]);

const counts = sim.state.counts();
console.log(
  `Simulated Logto tenant at ${sim.baseUrl}: ${counts.users} users, ${counts.organizations} organizations, ` +
    `${counts.organizationRoles} organization roles, ${counts.memberships} memberships.`,
);
console.log('Baseline sync into the embedded database…');
const progress = createProgressReporter(logger);
const baseline = await startFullSync(service.deps, { kind: 'baseline', trigger: 'demo', onProgress: (update) => progress.update(update) });
const { counts: synced } = await baseline.done;
progress.stop();
console.log(
  `Baseline done in ${(synced.durationMs / 1000).toFixed(1)} s: ${synced.users} users, ${synced.organizations} organizations, ` +
    `${synced.memberships} memberships, ${synced.memberRoles} member roles (${synced.requests} requests to Logto).`,
);

const someUser = sim.state.listUsers()[0]!;
const someOrganization = sim.state.listOrganizations()[0]!;
console.log(`
The service is running at ${service.url}
  API reference     ${service.url}/docs
  OpenAPI document  ${service.url}/openapi.json
  Metrics           ${service.url}/metrics
  API key (write)   ${apiKey}

Try:
  curl -H 'Authorization: Bearer ${apiKey}' '${service.url}/v1/access?userId=${someUser.id}&organizationId=${someOrganization.id}'
  curl -H 'Authorization: Bearer ${apiKey}' '${service.url}/v1/users/${someUser.id}/organizations'
  curl -H 'Authorization: Bearer ${apiKey}' '${service.url}/v1/changes?limit=10'
  curl -H 'Authorization: Bearer ${apiKey}' '${service.url}/v1/sync/status'

Changes now arrive from the tenant as webhooks (Ctrl-C to stop):`);

let stopping = false;
const changes = startChangeStream(sim, Number(values['change-every']));
const stop = async () => {
  if (stopping) return;
  stopping = true;
  changes.stop();
  await service.close();
  await sim.close();
  process.exit(0);
};
process.once('SIGINT', () => void stop());
process.once('SIGTERM', () => void stop());
if (Number(values.duration) > 0) setTimeout(() => void stop(), Number(values.duration) * 1000);

/** Random admin actions through the simulated Management API: each sends the webhooks Logto would. */
function startChangeStream(tenant: SimulatedTenant, everyMs: number) {
  let step = 0;
  const act = async () => {
    step += 1;
    const users = tenant.state.listUsers();
    const organizations = tenant.state.listOrganizations();
    const user = users[(step * 7919) % users.length]!;
    const organization = organizations[(step * 104_729) % organizations.length]!;
    switch (step % 5) {
      case 0: {
        const created = await tenant.api.post('/users', { username: `demo_user_${step}`, name: `Démo Üser ${step}` });
        console.log(`  + user ${created.body.username} created (User.Created)`);
        break;
      }
      case 1:
        if (tenant.state.isMember(organization.id, user.id)) {
          await tenant.api.delete(`/organizations/${organization.id}/users/${user.id}`);
          console.log(`  - ${user.username} removed from ${organization.name} (Organization.Membership.Updated)`);
        } else {
          await tenant.api.post(`/organizations/${organization.id}/users`, { userIds: [user.id] });
          console.log(`  + ${user.username} added to ${organization.name} (Organization.Membership.Updated)`);
        }
        break;
      case 2:
        await tenant.api.patch(`/users/${user.id}`, { name: `${user.name ?? user.username} ✓` });
        console.log(`  ~ ${user.username} renamed (User.Data.Updated)`);
        break;
      case 3:
        await tenant.api.patch(`/users/${user.id}/is-suspended`, { isSuspended: !user.isSuspended });
        console.log(`  ~ ${user.username} ${user.isSuspended ? 'unsuspended' : 'suspended'} (User.SuspensionStatus.Updated)`);
        break;
      default: {
        const memberIds = tenant.state.listMemberIds(organization.id);
        const role = tenant.state.listOrganizationRoles()[step % tenant.state.listOrganizationRoles().length]!;
        const memberId = memberIds[step % Math.max(memberIds.length, 1)];
        if (memberId) {
          await tenant.api.post(`/organizations/${organization.id}/users/${memberId}/roles`, { organizationRoleIds: [role.id] });
          console.log(`  ~ role ${role.name} granted in ${organization.name} (no webhook exists: the role sweep picks it up)`);
        }
        return false;
      }
    }
    return true;
  };
  const timer = setInterval(() => {
    const begun = performance.now();
    act()
      .then(async (announced) => {
        if (!announced) return;
        // The tenant delivers its webhooks; the service stores and applies them.
        await tenant.webhooks.idle();
        await service.drainInbox();
        console.log(`      in the database ${(performance.now() - begun).toFixed(0)} ms after the change`);
      })
      .catch((error: unknown) => console.log(`  ! change failed: ${error instanceof Error ? error.message : String(error)}`));
  }, everyMs);
  return { stop: () => clearInterval(timer) };
}
