import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** A simulated Logto tenant in a child process, so the bench process's CPU and memory stay its own. */
export type Simulator = { child: ChildProcess; env: Record<string, string>; cpuSeconds(): number; close(): void };

/**
 * Starts `src/simulator/main.ts` with `args` and resolves once it has printed its settings (`NAME=value`
 * lines, the signing keys last): those are the environment a service or client needs to reach it.
 */
export const startSimulator = async (args: string[]): Promise<Simulator> => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/simulator/main.ts', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, LOG_LEVEL: 'warn' },
  });
  const env: Record<string, string> = {};
  let output = '';
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`simulator exited with ${code}`)));
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      for (const line of output.split('\n')) {
        const match = /^([A-Z_]+)=(.*)$/.exec(line);
        if (match) env[match[1]!] = match[2]!;
      }
      if (env.LOGTO_WEBHOOK_SIGNING_KEYS) resolve();
    });
  });
  // utime + stime of the child, in clock ticks (100 per second on Linux).
  const cpuSeconds = () => {
    try {
      const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return (Number(fields[11]) + Number(fields[12])) / 100;
    } catch {
      return NaN;
    }
  };
  return { child, env, cpuSeconds, close: () => child.kill('SIGTERM') };
};
