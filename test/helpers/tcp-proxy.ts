import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export type TcpProxy = {
  port: number;
  /** `url` with its host and port replaced by the proxy's. */
  rewrite(url: string): string;
  /**
   * The target becomes unreachable: live connections are reset and new ones are closed as soon as
   * they open, as when a database server goes down or restarts.
   */
  cut(): void;
  /**
   * A partition: live connections stay open but nothing passes any more, and new connections are
   * accepted and never answered, as when packets are dropped on the way.
   */
  stall(): void;
  /** Traffic flows again (stalled connections stay dead: they are reset). */
  restore(): void;
  /**
   * The partition ends and stalled connections carry what was held back, as when dropped packets get
   * through again (connections still waiting to be answered are closed).
   */
  heal(): void;
  /** Connections currently open through the proxy. */
  connections(): number;
  close(): Promise<void>;
};

type Pair = { client: Socket; upstream: Socket };

/** A TCP proxy on 127.0.0.1 in front of `target`, which a test can cut, stall and restore. */
export const startTcpProxy = async (target: { host: string; port: number }): Promise<TcpProxy> => {
  let mode: 'open' | 'cut' | 'stall' = 'open';
  const pairs = new Set<Pair>();
  const held = new Set<Socket>();

  const server: Server = createServer((client) => {
    client.on('error', () => {});
    if (mode === 'cut') {
      client.destroy();
      return;
    }
    if (mode === 'stall') {
      held.add(client);
      client.on('close', () => held.delete(client));
      return;
    }
    const upstream = connect(target.port, target.host);
    upstream.on('error', () => client.destroy());
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  const resetAll = () => {
    for (const { client, upstream } of pairs) {
      client.resetAndDestroy();
      upstream.destroy();
    }
    pairs.clear();
  };

  return {
    port,
    rewrite(url) {
      const parsed = new URL(url);
      parsed.hostname = '127.0.0.1';
      parsed.port = String(port);
      return parsed.toString();
    },
    cut() {
      mode = 'cut';
      resetAll();
      for (const socket of held) socket.destroy();
    },
    stall() {
      mode = 'stall';
      for (const { client, upstream } of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
    heal() {
      if (mode === 'stall') {
        for (const { client, upstream } of pairs) {
          client.pipe(upstream);
          upstream.pipe(client);
          client.resume();
          upstream.resume();
        }
      }
      for (const socket of held) socket.destroy();
      mode = 'open';
    },
    restore() {
      if (mode === 'stall') resetAll();
      for (const socket of held) socket.destroy();
      mode = 'open';
    },
    connections: () => pairs.size,
    close: () =>
      new Promise<void>((resolve) => {
        resetAll();
        for (const socket of held) socket.destroy();
        server.close(() => resolve());
      }),
  };
};
