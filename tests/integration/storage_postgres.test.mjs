// PostgreSQL stopped under load: two servers on one throw-away cluster of this test (durability
// sync and batched) while producers flood one run on each; `pg_ctl stop -m fast` → 503s and
// /health 503; `pg_ctl start` → both recover by themselves (same PIDs) and every acknowledged event
// is stored exactly once, in order, with no hole.
//
// Needs the PostgreSQL server binaries (Debian: postgresql; scripts/install-deps --test). Without
// them the test is skipped, unless RELAY_REQUIRE_POSTGRES=1 (then it fails).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { api, errorShape, metricSum, startServer, tokenFor, waitUntil } from './lib/server.mjs';
import { openSse } from './lib/sse.mjs';
import { checkAgainstFlood, startFlood } from './lib/flood.mjs';
import { pgBinDir, startPgCluster } from './lib/pg.mjs';

const alice = tokenFor('alice', 'user');
const service = tokenFor('producer', 'service');

const haveBinaries = pgBinDir() !== null;
const skip = !haveBinaries && process.env.RELAY_REQUIRE_POSTGRES !== '1'
  ? 'no PostgreSQL server binaries (scripts/install-deps --test); RELAY_REQUIRE_POSTGRES=1 makes this a failure'
  : false;

async function health(base) {
  const r = await api(base, 'GET', '/health', { timeoutMs: 5_000 });
  return { status: r.status, json: r.json, text: r.text };
}

describe('PostgreSQL stopped under load', { timeout: 120_000, skip }, () => {
  let pg;
  const servers = {};
  before(async () => {
    pg = await startPgCluster();
    // Both servers start before any run exists (a server takes over the running runs it finds in
    // the database at start: with one shared database, that would be the other server's).
    const common = {
      'storage.backend': 'postgres', 'storage.postgres': pg.conninfo, 'runs.ring_capacity': 100,
    };
    servers.sync = await startServer({ ...common, 'storage.durability': 'sync' });
    servers.batched = await startServer({ ...common, 'storage.durability': 'batched', 'storage.max_pending_events': 2000 });
  });
  after(async () => {
    const errors = [];
    for (const s of Object.values(servers)) {
      try { await s.stop(); } catch (e) { errors.push(e); }
    }
    if (pg) {
      try { await pg.destroy(); } catch (e) { errors.push(e); }
    }
    if (errors.length) throw errors[0];
  });

  test('sync and batched: 503 and /health 503 while down, recovery without a restart, no acked event lost', async () => {
    for (const [mode, s] of Object.entries(servers)) {
      const h = await health(s.url);
      assert.equal(h.status, 200, `${mode}: ${h.text}`);
      assert.equal(h.json.storage, 'ok');
      assert.equal(h.json.storage_backend, 'postgres');
    }
    const runs = {};
    const floods = {};
    for (const [mode, s] of Object.entries(servers)) {
      const r = await api(s.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {}, inactivity_s: 120 } });
      assert.equal(r.status, 201, r.text);
      runs[mode] = r.json.id;
    }
    for (const [mode, s] of Object.entries(servers)) {
      floods[mode] = startFlood(s.url, runs[mode], service, { workers: 4, batch: 5 });
    }
    try {
      await waitUntil(() => floods.sync.check() && floods.batched.check() &&
        floods.sync.maxAcked >= 300 && floods.batched.maxAcked >= 300,
        { timeoutMs: 15_000, what: '300 acked events on each server before the outage' });

      // --- PostgreSQL goes away.
      const stoppedAt = Date.now();
      await pg.pause();
      const pausedAt = Date.now();
      const ackedBefore = { sync: floods.sync.ackedEvents, batched: floods.batched.ackedEvents };
      // sync: refused as soon as a commit fails; batched: accepted until 2000 events are pending.
      await waitUntil(() => floods.sync.check() && floods.sync.first503At !== null && floods.sync.first503At >= stoppedAt,
        { timeoutMs: 15_000, what: 'a 503 for the sync producer' });
      await waitUntil(() => floods.batched.check() && floods.batched.first503At !== null,
        { timeoutMs: 15_000, what: 'a 503 for the batched producer (past max_pending_events)' });
      for (const mode of ['sync', 'batched']) {
        const f = floods[mode];
        assert.equal(errorShape(f.last503), null);
        assert.equal(f.last503.json.error.code, 'unavailable', f.last503.text);
      }
      for (const [mode, s] of Object.entries(servers)) {
        const h = await waitUntil(async () => { const x = await health(s.url); return x.status === 503 && x; },
          { timeoutMs: 10_000, what: `${mode}: /health 503` });
        assert.equal(h.json.storage, 'unavailable', h.text);
        assert.equal((await metricSum(s.url, /^relay_storage_up$/)).sum, 0, `${mode}: relay_storage_up`);
      }
      const pending = (await health(servers.batched.url)).json.storage_pending_events;
      assert.ok(pending >= 1 && pending <= 2000 + 4 * 5, `batched: pending events bounded: ${pending}`);
      const down = {
        sync: floods.sync.ackedEvents - ackedBefore.sync,
        batched: floods.batched.ackedEvents - ackedBefore.batched,
      };
      console.log(`postgres down: first 503 after ${floods.sync.first503At - stoppedAt} ms (sync), ` +
                  `${floods.batched.first503At - stoppedAt} ms (batched); pg_ctl stop took ${pausedAt - stoppedAt} ms; ` +
                  `acked meanwhile: sync ${down.sync}, batched ${down.batched} (pending ${pending})`);

      // --- PostgreSQL comes back: both servers catch up by themselves.
      await pg.resume();
      const resumedAt = Date.now();
      for (const [mode, s] of Object.entries(servers)) {
        const h = await waitUntil(async () => { const x = await health(s.url); return x.status === 200 && x; },
          { timeoutMs: 20_000, what: `${mode}: /health 200 after postgres is back` });
        assert.equal(h.json.storage, 'ok');
        assert.equal(s.exited(), null, `${mode}: still the same process`);
      }
      for (const mode of ['sync', 'batched']) {
        const f = floods[mode];
        const base = f.ackedEvents;
        await waitUntil(() => f.check() && f.lastAckAt > resumedAt && f.ackedEvents >= base + 200,
          { timeoutMs: 20_000, what: `${mode}: 202s again after postgres is back` });
      }
      console.log(`postgres back: health 200 and producers acked again within ${Date.now() - resumedAt} ms`);
    } finally {
      await Promise.all(Object.values(floods).map((f) => f.stop()));
    }

    // --- Everything acknowledged is there exactly once, in order, with no hole (read from 0:
    // beyond the 100-event ring, so from PostgreSQL).
    for (const [mode, s] of Object.entries(servers)) {
      const f = floods[mode];
      const c = await api(s.url, 'POST', `/v1/runs/${runs[mode]}/complete`, { token: service, body: { data: 'end' } });
      assert.equal(c.status, 200, c.text);
      const sse = openSse(`${s.url}/v1/runs/${runs[mode]}/events`, { token: alice });
      try {
        assert.equal(await sse.waitEnd({ timeoutMs: 20_000 }), 'end', sse.describe());
        const n = checkAgainstFlood(sse.events, f, { extra: (e) => e.event === 'complete', what: `${mode} after the outage` });
        assert.equal(sse.events.at(-1).event, 'complete');
        const state = await api(s.url, 'GET', `/v1/runs/${runs[mode]}`, { token: alice });
        assert.equal(state.json.last_seq, n);
        const unacked = n - 1 - f.ackedEvents;
        console.log(`${mode}: ${f.ackedEvents} events acked (202), ${f.statuses[503] ?? 0} posts answered 503, ` +
                    `${n - 1} stored (${unacked} of them from 503-answered or unanswered posts)`);
      } finally {
        sse.destroy();
      }
      const errors = await metricSum(s.url, /^relay_storage_errors_total$/);
      assert.ok(errors.sum >= 1, `${mode}: relay_storage_errors_total counts the failed commits`);
      assert.equal((await metricSum(s.url, /^relay_storage_up$/)).sum, 1);
    }
  });
});
