import { parseLogtoUser } from '../../logto/index.js';
import { removeUsers } from '../apply/index.js';
import {
  baseContext,
  parseEnvelope,
  eventTime,
  isRecord,
  PermanentDeliveryError,
  refreshUser,
  stringField,
  trustsData,
  type EventHandler,
} from './common.js';

/** Routes whose `User.Data.Updated` carries only a part of the user (`data` = customData or profile). */
const partialRoute = /\/(custom-data|profile)\/?$/;

/**
 * `User.Created`, `User.Data.Updated`, `User.SuspensionStatus.Updated`: `data` is the whole user for most
 * routes, and then it is applied as it is (the apply function keeps a stored copy Logto updated later).
 * Partial or absent data (custom-data and profile routes, recovered bodies) is replaced by a fresh
 * `GET /users/:id`; a 404 there means the user is gone. So is an update of a user the database does not
 * know: only Logto can tell whether it still exists (an update is not a creation, so it must not create
 * a user on its own say-so).
 */
export const handleUserUpserted: EventHandler = async (deps, delivery) => {
  const payload = parseEnvelope(delivery);
  const base = baseContext(delivery, payload);
  const userId = stringField(payload.params, 'userId') ?? stringField(payload.data, 'id');
  const complete =
    trustsData(delivery) &&
    isRecord(payload.data) &&
    'id' in payload.data &&
    'createdAt' in payload.data &&
    !partialRoute.test(payload.matchedRoute ?? '');
  if (complete) {
    const user = parseLogtoUser(payload.data);
    if (user && (userId === undefined || user.id === userId)) {
      // Batched with the snapshots of the other deliveries in hand: one read and one transaction for all.
      const outcome = await deps.userSnapshots.add({
        user,
        context: { ...base, observedAt: eventTime(delivery, payload) },
        onlyIfStored: delivery.event !== 'User.Created',
      });
      if (outcome !== 'not_stored') return 'applied';
    }
  }
  if (!userId) throw new PermanentDeliveryError(`${delivery.event} names no user (params.userId or data.id)`);
  await refreshUser(deps, delivery, userId, base);
  return 'applied';
};

/** `User.Deleted`: the user goes with its memberships and roles (each revoked grant is recorded; Logto sends no membership event). */
export const handleUserDeleted: EventHandler = async (deps, delivery) => {
  const payload = parseEnvelope(delivery);
  const userId = stringField(payload.data, 'id') ?? stringField(payload.params, 'userId');
  if (!userId) throw new PermanentDeliveryError('User.Deleted names no user (data.id or params.userId)');
  await removeUsers(deps.database.db, [userId], { ...baseContext(delivery, payload), observedAt: eventTime(delivery, payload) });
  return 'applied';
};
