// A throw-away PostgreSQL cluster of one test, which the test can stop and start again under load.
//
// Created and destroyed by scripts/pg-test-cluster with RELAY_PG_CLUSTER_DIR set to a fresh temp
// dir of its own (initdb on 127.0.0.1 at a free port, fsync off, trust auth on loopback; as the
// `postgres` user when run as root), so it never touches another test's or a developer's cluster.
// In between, pause() and resume() run `pg_ctl stop -m fast` / `pg_ctl start` on its data dir as
// its owner, with the options the script starts it with (same port and socket dir).

import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { TESTS_DIR } from './server.mjs';

const SCRIPT = path.resolve(TESTS_DIR, '../../scripts/pg-test-cluster');

/// The directory of initdb / pg_ctl: $PG_BINDIR, the newest /usr/lib/postgresql/N/bin, or null.
export function pgBinDir() {
  if (process.env.PG_BINDIR) return process.env.PG_BINDIR;
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const versions = readdirSync(base).filter((v) => existsSync(path.join(base, v, 'bin', 'initdb')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions.length) return path.join(base, versions[0], 'bin');
  }
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'pg_ctl'))) return dir;
  }
  return null;
}

function run(cmd, args, { env, timeoutMs = 60_000, cwd } = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env, timeout: timeoutMs, cwd, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) {
        err.message += `\n$ ${cmd} ${args.join(' ')}\nstdout: ${stdout}\nstderr: ${stderr}`;
        reject(err);
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

/// Starts a cluster. Resolves {conninfo, port, dir, pause(), resume(), destroy(), log()}.
export async function startPgCluster() {
  const bindir = pgBinDir();
  if (!bindir) throw new Error('no PostgreSQL server binaries (scripts/install-deps --test installs them)');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'relay-it-pg-'));
  const env = { ...process.env, RELAY_PG_CLUSTER_DIR: dir, PG_BINDIR: bindir };
  let destroyed = false;
  // Should the test process exit without destroy() (a crash of the runner), stop the cluster
  // anyway (synchronously: an exit handler cannot wait).
  const onExit = () => {
    if (destroyed) return;
    try { execFileSync(SCRIPT, ['stop'], { env, timeout: 30_000, stdio: 'ignore' }); } catch { /* best effort */ }
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', onExit);
  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    process.off('exit', onExit);
    try {
      await run(SCRIPT, ['stop'], { env, timeoutMs: 90_000 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  let out;
  try {
    out = await run(SCRIPT, ['start'], { env, timeoutMs: 90_000 });
  } catch (e) {
    await destroy().catch(() => {});
    throw e;
  }
  const m = /RELAY_TEST_POSTGRES="([^"]+)"/.exec(out.stdout);
  const port = m && /\bport=(\d+)/.exec(m[1]);
  if (!port) {
    await destroy().catch(() => {});
    throw new Error(`pg-test-cluster start printed no conninfo: ${out.stdout} ${out.stderr}`);
  }
  // The owner the script chose (root cannot run postgres): its state file says it.
  const owner = /^owner=(\S+)$/m.exec(readFileSync(path.join(dir, 'state'), 'utf8'))?.[1];
  const asOwner = (prog, args) => (process.getuid?.() === 0
    ? run('runuser', ['-u', owner, '--', path.join(bindir, prog), ...args], { cwd: dir })
    : run(path.join(bindir, prog), args, { cwd: dir }));
  const data = path.join(dir, 'data');
  return {
    conninfo: m[1],
    port: Number(port[1]),
    dir,
    /// pg_ctl stop -m fast (waits for the shutdown, bounded): connections are cut, none accepted.
    pause: () => asOwner('pg_ctl', ['stop', '-D', data, '-m', 'fast', '-w', '-t', '30']),
    /// pg_ctl start with the script's options (waits until it accepts connections, bounded).
    resume: () => asOwner('pg_ctl', ['start', '-D', data, '-w', '-t', '30', '-l', path.join(data, 'server.log'),
      '-o', `-k ${path.join(dir, 'socket')} -c listen_addresses=127.0.0.1 -p ${port[1]} -c fsync=off ` +
            '-c synchronous_commit=off -c full_page_writes=off -c max_connections=200']),
    log: () => { try { return readFileSync(path.join(data, 'server.log'), 'utf8'); } catch { return ''; } },
    destroy,
  };
}
