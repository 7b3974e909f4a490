export * from './changes.js';
export * from './users.js';
export * from './definitions.js';
export * from './members.js';
export * from './user-snapshots.js';
