# syntax=docker/dockerfile:1
# Build stage: the same scripts CI runs (npm ci, then the TypeScript build).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json drizzle.config.ts ./
COPY db ./db
COPY src ./src
RUN npm run build

# Runtime stage: production dependencies only, non-root.
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production PORT=3000 DATA_DIR=/app/data
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY db/migrations ./db/migrations
# The package's bin entry on the PATH: `docker exec <container> logto-access-sync keys create --name ops --scope write`
# (the same as `npm run cli -- keys create …`, which also works here).
RUN chmod +x dist/src/cli.js && ln -s /app/dist/src/cli.js /usr/local/bin/logto-access-sync \
  && mkdir -p /app/data && chown -R node:node /app/data
USER node
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# `npm start` without npm in between, so SIGTERM reaches the service itself and it shuts down gracefully; with its
# node flags (see README "Running it against your tenant": 64 MB young-generation semi-spaces).
CMD ["node", "--max-semi-space-size=64", "dist/src/server.js"]
