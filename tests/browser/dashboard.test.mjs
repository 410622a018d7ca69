// The dashboard in a real browser: a real broker (--http on a free port) and worker daemon, jobs
// submitted with the real CLI, headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core. Checks that counts change live; pausing and resuming a queue from the page;
// a timed pause's end; schedules with their last job, paused and resumed from the page;
// batches with their state, progress and callback job (its link opens the job);
// browsing jobs with pages and totals, filters and search (error text, unique key, id); a job
// opened by its link (#job-N and /jobs/N) with payload, error, history and times in the
// browser's zone; bulk retry of dead jobs (selected, and all dead of a queue), run-now (bulk)
// and delete (a job's page, and bulk), each confirmed
// (POSTs that need the broker's token, which the page carries); the chart after a reload; a
// narrow window; that a page of another site can neither act nor read through DNS rebinding
// (Chromium resolves evil.test to 127.0.0.1). Screenshots of each page are kept as artifacts
// (scripts/dashboard-screenshots.sh copies them into docs/).
//
// Environment: ERRAND_BROKER_BIN, ERRAND_WORKER_BIN, ERRAND_CLI_BIN (set by meson test),
// ERRAND_ARTIFACTS_DIR (default: ./artifacts), CHROMIUM (default: /usr/bin/chromium).
// Exit codes: 0 passed, 1 failed, 77 skipped (no Chromium or no `npm ci` in tests/browser).
import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const SKIP = 77;
const here = dirname(fileURLToPath(import.meta.url));
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const bins = {
  broker: process.env.ERRAND_BROKER_BIN,
  worker: process.env.ERRAND_WORKER_BIN,
  cli: process.env.ERRAND_CLI_BIN,
};

function skip(why) {
  console.log(`SKIP: ${why}`);
  process.exit(SKIP);
}

if (!existsSync(chromiumPath)) skip(`${chromiumPath} not found (apt-get install chromium)`);
if (!existsSync(join(here, 'node_modules', 'playwright-core'))) skip('run `npm ci` in tests/browser');
for (const [name, path] of Object.entries(bins))
  if (!path || !existsSync(path)) skip(`ERRAND_${name.toUpperCase()}_BIN is not set`);

const { chromium } = await import('playwright-core');
const run = promisify(execFile);
const artifacts = process.env.ERRAND_ARTIFACTS_DIR || join(process.cwd(), 'artifacts');
mkdirSync(artifacts, { recursive: true });
const dir = mkdtempSync(join(tmpdir(), 'errand-browser-'));
const children = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function start(name, argv) {
  const out = openSync(join(dir, `${name}.log`), 'a');
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', out, out], detached: true });
  children.push({ name, child });
  return child;
}

function logs() {
  return children
    .map(({ name }) => `--- ${name} ---\n${readFileSync(join(dir, `${name}.log`), 'utf8').slice(-4000)}`)
    .join('\n');
}

// Polls `pred` until it returns a truthy value (returned) or `ms` pass (throws `what`).
async function until(what, pred, ms = 15000, every = 50) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      const v = await pred();
      if (v) return v;
    } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

let browser;
let attackerSite;
let failed = false;
try {
  const zmqPort = await freePort();
  const httpPort = await freePort();
  const endpoint = `tcp://127.0.0.1:${zmqPort}`;
  const base = `http://127.0.0.1:${httpPort}`;
  const cli = async (...args) => (await run(bins.cli, ['--broker', endpoint, ...args], { timeout: 20000 })).stdout;

  start('broker', [bins.broker, '--listen', endpoint, '--db', join(dir, 'errand.db'),
                   '--http', `127.0.0.1:${httpPort}`, '--retry-delay', '100ms']);
  await until('the broker to answer /healthz', async () => (await fetch(`${base}/healthz`)).ok);
  const flag = join(dir, 'flag');
  start('worker', [bins.worker, '--broker', endpoint, '--name', 'browser-worker',
                   '--queue', 'emails=cat',
                   '--queue', `reports=test -e '${flag}' && cat || { echo 'report failed: no data' >&2; exit 99; }`,
                   '--queue', "thumbnails=echo '60% resizing' >&3; exec sleep 60",
                   '--concurrency', '4', '--permanent-exit-code', '99']);

  // A site of the attacker's, http://evil.test:PORT: Chromium resolves evil.test to 127.0.0.1,
  // as it would after a DNS rebinding.
  const attackerPort = await freePort();
  attackerSite = createHttpServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end('<!doctype html><title>evil</title><p>nothing to see</p>');
  });
  await new Promise((resolve) => attackerSite.listen(attackerPort, '127.0.0.1', resolve));
  browser = await chromium.launch({
    executablePath: chromiumPath, headless: true, timeout: 30000,
    args: ['--no-sandbox', '--host-resolver-rules=MAP evil.test 127.0.0.1'] });
  // Berlin time, so the page must say which zone its times are in (not assume UTC).
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 },
                                             timezoneId: 'Europe/Berlin' });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(base + '/');
  await page.waitForSelector('#health.ok');
  await page.waitForSelector('#workers tr[data-worker="browser-worker"]');
  const shot = (name) => page.screenshot({ path: join(artifacts, name), fullPage: true });
  // Clicks an action's button, then Confirm in the page's dialog.
  const confirmed = async (selector) => {
    await page.click(selector);
    await page.waitForSelector('#confirm[open]');
    await page.click('#confirm-yes');
    await page.waitForSelector('#confirm:not([open])', { state: 'attached' });
  };
  const status = async (id) => JSON.parse(await cli('status', id, '--json')).state;
  const pausedQueues = async () => {
    const q = JSON.parse(await cli('queues', '--json'));
    return (Array.isArray(q) ? q : q.queues).filter((x) => x.paused).map((x) => x.name);
  };

  const cell = (queue, state) => `#queues tr[data-queue="${queue}"] td[data-state="${state}"]`;
  const cellIs = (queue, state, n) =>
    page.waitForFunction(([sel, want]) => document.querySelector(sel)?.textContent === want,
                         [cell(queue, state), String(n)]);

  // Pause a queue from the page: its jobs wait (counts change live), then resume it.
  await cli('submit', '-q', 'emails', '--payload', 'first');
  await page.waitForSelector('#queues tr[data-queue="emails"] button.pause');
  await confirmed('#queues tr[data-queue="emails"] button.pause');
  await page.waitForSelector('#queues tr[data-queue="emails"][data-paused="true"]');
  await page.waitForFunction(() => document.querySelector('#action-msg').textContent.includes('emails paused'));
  assert((await pausedQueues()).includes('emails'), 'the broker has emails paused');
  for (let i = 0; i < 6; i++) await cli('submit', '-q', 'emails', '--payload', `mail ${i}`);
  await cellIs('emails', 'ready', 6);
  // Its latency (the oldest ready job's age) shows in the queue table.
  await page.waitForFunction(() =>
    Number(document.querySelector('#queues tr[data-queue="emails"] td.latency')?.dataset.latency) > 0);
  await confirmed('#queues tr[data-queue="emails"] button.resume');
  await cellIs('emails', 'succeeded', 7);
  await cellIs('emails', 'ready', 0);

  // A timed pause (errand pause Q --for 10m) shows when it ends, in the browser's zone.
  await cli('pause', 'emails', '--for', '10m');
  const badge = await page.waitForSelector('#queues tr[data-queue="emails"] [data-paused-until]');
  const untilIso = await badge.getAttribute('data-paused-until');
  const want = new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit',
                                                  second: '2-digit', hour12: false }).format(new Date(untilIso));
  assert((await badge.textContent()) === `paused until ${want}`,
         `"${await badge.textContent()}" is "paused until ${want}" (${untilIso})`);
  const untilMs = Date.parse(untilIso) - Date.now();
  assert(untilMs > 9 * 60000 && untilMs <= 10 * 60000, `the pause ends in about 10 min (${untilMs} ms)`);
  await cli('resume', 'emails');
  await page.waitForSelector('#queues tr[data-queue="emails"][data-paused="false"]');

  // Schedules: a daily one in Berlin time and an every-second one, whose last job shows with its
  // state; the every-second one paused and resumed from the page, as the broker then has it.
  await cli('schedule', 'add', 'nightly-report', '--cron', '0 3 * * *', '--tz', 'Europe/Berlin', '-q', 'reports');
  await cli('schedule', 'add', 'tick', '--cron', '* * * * * *', '-q', 'ticks');
  const srow = (name) => `#schedules tr[data-schedule="${name}"]`;
  await page.waitForSelector(`${srow('nightly-report')} td[data-field="next"] time`);
  const nightly = await page.textContent(srow('nightly-report'));
  assert(nightly.includes('0 3 * * *') && nightly.includes('Europe/Berlin') && nightly.includes('reports'),
         `the nightly row shows its cron, zone and queue: ${nightly}`);
  const lastJob = await page.waitForSelector(`${srow('tick')} td[data-field="job"] a.job`);
  const tickJob = await lastJob.getAttribute('data-job');
  await page.waitForSelector(`${srow('tick')} td[data-field="job"] [data-state="ready"]`);
  assert((await status(tickJob)) === 'ready', `the tick's last job ${tickJob} is ready`);
  assert(await page.$(`${srow('tick')} td[data-field="last"] time`), 'the tick schedule shows its last fire time');
  const schedPaused = async (name) => JSON.parse(await cli('schedule', 'show', name, '--json')).paused;
  await confirmed(`${srow('tick')} button.pause`);
  await page.waitForSelector(`${srow('tick')}[data-paused="true"]`);
  await page.waitForFunction(() => document.querySelector('#action-msg').textContent.includes('schedule tick paused'));
  assert((await schedPaused('tick')) === true, 'the broker has schedule tick paused');
  await confirmed(`${srow('tick')} button.resume`);
  await page.waitForSelector(`${srow('tick')}[data-paused="false"]`);
  assert((await schedPaused('tick')) === false, 'the broker has schedule tick resumed');
  await cli('schedule', 'rm', 'tick');
  await page.waitForSelector(srow('tick'), { state: 'detached' });

  // Batches: one whose members finish (one succeeds, one is cancelled) with its on_complete
  // job linked, as the broker has them; one still open. The description is text, never markup.
  const brow = (id) => `#batches tr[data-batch="${id}"]`;
  const desc = '<b>nightly</b> & "co"';
  const mixed = (await cli('batch', 'open', '--description', desc, '--on-complete', 'emails')).trim();
  await cli('submit', '-q', 'emails', '--batch', mixed, '--payload', 'member 1');
  const stuck = (await cli('submit', '-q', 'batch-wait', '--batch', mixed, '--payload', 'member 2')).trim();
  const waiting = (await cli('batch', 'open', '--description', 'waiting')).trim();
  await cli('submit', '-q', 'batch-wait', '--batch', waiting, '--payload', 'member 3');
  const progressIs = (id, done, total) =>
    page.waitForFunction(([sel, d, t]) => {
      const p = document.querySelector(sel);
      return p && p.dataset.done === d && p.dataset.total === t;
    }, [`${brow(id)} .batch-progress`, String(done), String(total)]);
  await progressIs(mixed, 1, 2);
  await page.waitForSelector(`${brow(mixed)}[data-state="open"]`);
  await cli('batch', 'seal', mixed);
  await page.waitForSelector(`${brow(mixed)}[data-state="sealed"]`);
  await cli('cancel', stuck);
  await page.waitForSelector(`${brow(mixed)}[data-state="complete"]`);
  await progressIs(mixed, 2, 2);
  const cbLink = await page.waitForSelector(`${brow(mixed)} [data-callback="complete"] a.job`);
  const cbJob = await cbLink.getAttribute('data-job');
  const shownBatch = JSON.parse(await cli('batch', 'status', mixed, '--json'));
  assert(shownBatch.state === 'complete' && String(shownBatch.complete_job) === cbJob,
         `the callback job ${cbJob} is the broker's: ${JSON.stringify(shownBatch)}`);
  const field = (id, f) => page.textContent(`${brow(id)} [data-field="${f}"]`);
  assert((await field(mixed, 'description')) === desc, `the description as text: ${await field(mixed, 'description')}`);
  assert(!(await page.$(`${brow(mixed)} b`)), 'no markup from the description');
  assert((await field(mixed, 'succeeded')) === '1' && (await field(mixed, 'failed')) === '1',
         'one succeeded, one failed (cancelled)');
  assert(!(await page.$(`${brow(mixed)} [data-callback="success"]`)), 'no success callback');
  await page.waitForSelector(`${brow(waiting)}[data-state="open"]`);
  await progressIs(waiting, 0, 1);
  // The callback's job opens from its link.
  await cbLink.click();
  await page.waitForFunction((id) => document.querySelector('#detail-id')?.textContent === id &&
                                     document.querySelector('#detail dd[data-field="queue"]')?.textContent === 'emails', cbJob);
  await page.click('#nav-overview');
  await page.waitForSelector(`#view-overview:not([hidden]) ${brow(mixed)}`);

  // Quiet the worker from its row (the state shows, the broker has it quiet), then resume it.
  const workerState = async () => JSON.parse(await cli('workers', '--json'))[0].state;
  await confirmed('#workers tr[data-worker="browser-worker"] button.quiet');
  await page.waitForSelector('#workers tr[data-worker="browser-worker"] td[data-state="quiet"]');
  assert((await workerState()) === 'quiet', 'the broker has browser-worker quiet');
  await confirmed('#workers tr[data-worker="browser-worker"] button.resume');
  await page.waitForSelector('#workers tr[data-worker="browser-worker"] td[data-state="active"]');
  assert((await workerState()) === 'active', 'the broker has browser-worker active again');

  // A running job with its progress.
  const thumb = (await cli('submit', '-q', 'thumbnails', '--payload', 'img')).trim();
  await page.waitForFunction((id) =>
    document.querySelector(`#running tr[data-job-id="${id}"]`)?.textContent.includes('60%'), thumb);

  // Three jobs that go dead, with their error text; one with a unique key.
  const dead = [];
  for (const what of ['q1', 'q2', 'q3'])
    dead.push((await cli('submit', '-q', 'reports', '--payload', `${what} report`, '--max-attempts', '2',
                         ...(what === 'q2' ? ['--unique', 'report-q2'] : []))).trim());
  await cellIs('reports', 'dead', 3);
  // 60 jobs nobody serves, to page through.
  for (let i = 0; i < 60; i++) await cli('submit', '-q', 'later', '--payload', `later ${i}`);
  await cellIs('later', 'ready', 60);
  await shot('dashboard.png');

  // Browse: the dead count links to those jobs.
  await page.click(`${cell('reports', 'dead')} a`);
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr[data-state="dead"]').length === 3);
  assert((await page.getAttribute('#jobs-total', 'data-total')) === '3', 'three dead jobs in reports');
  // Pages with real totals: 60 ready in later, 50 a page.
  await page.selectOption('#f-queue', 'later');
  await page.selectOption('#f-state', 'ready');
  await page.waitForFunction(() => document.querySelector('#page-range').textContent === '1–50 of 60');
  await page.click('#page-next');
  await page.waitForFunction(() => document.querySelector('#page-range').textContent === '51–60 of 60');
  assert((await page.$$('#jobs tbody tr')).length === 10, 'the second page has the last 10');
  await page.click('#page-prev');
  await page.waitForFunction(() => document.querySelector('#page-range').textContent === '1–50 of 60');

  // Search by error text, by unique key and by id.
  await page.click('#f-clear');
  await page.waitForFunction(() => !document.querySelector('#f-queue').value);
  await page.selectOption('#f-kind', 'error');
  await page.fill('#f-text', 'NO DATA');
  await page.click('#f-go');
  await page.waitForFunction(() => document.querySelector('#jobs-total')?.dataset.total === '3' &&
                                   document.querySelectorAll('#jobs tbody tr').length === 3);
  await page.selectOption('#f-kind', 'unique');
  await page.fill('#f-text', 'report-q2');
  await page.click('#f-go');
  await page.waitForFunction((id) => {
    const rows = document.querySelectorAll('#jobs tbody tr');
    return rows.length === 1 && rows[0].dataset.jobId === id;
  }, dead[1]);
  await page.selectOption('#f-kind', 'id');
  await page.fill('#f-text', dead[2]);
  await page.click('#f-go');
  await page.waitForFunction((id) => {
    const rows = document.querySelectorAll('#jobs tbody tr');
    return rows.length === 1 && rows[0].dataset.jobId === id;
  }, dead[2]);

  // Open a job by its link, in a fresh page load: fields, payload, error, history, times in
  // the browser's zone.
  await page.goto(`${base}/#job-${dead[0]}`);
  await page.waitForFunction((id) => document.querySelector('#detail-id')?.textContent === id &&
                                     document.querySelectorAll('#history tbody tr').length >= 3, dead[0]);
  assert(!(await page.isHidden('#view-job')), 'the job view is shown');
  assert((await page.textContent('#detail dd[data-field="state"]')) === 'dead', 'detail state is dead');
  assert((await page.textContent('#payload')) === 'q1 report', 'the payload is shown');
  assert((await page.textContent('#error')).includes('no data'), 'the error is shown');
  const history = await page.textContent('#history');
  assert(history.includes('submitted') && history.includes('dispatched'), `history shown: ${history}`);
  const created = await page.textContent('#detail dd[data-field="created_at"]');
  assert(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (CET|CEST|GMT\+1|GMT\+2)$/.test(created), `a time with its zone: ${created}`);
  assert((await page.textContent('#zone')).includes('Europe/Berlin'), 'the zone is named');
  await shot('dashboard-job.png');
  // The same job at /jobs/N.
  await page.goto(`${base}/jobs/${dead[1]}`);
  await page.waitForFunction((id) => document.querySelector('#detail-id')?.textContent === id &&
                                     document.querySelector('#payload')?.textContent === 'q2 report', dead[1]);
  await page.click('#nav-overview');  // and out of it again
  await page.waitForSelector('#view-overview:not([hidden]) #queues tr[data-queue="reports"]');

  // A job opens at the top of the window even when clicked far down a long page.
  await page.goto(`${base}/#jobs?queue=later`);
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 50);
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  const far = await page.$('#jobs tbody tr:last-child a.job');
  const farId = await far.textContent();
  await far.click();
  await page.waitForFunction((id) => document.querySelector('#detail-id')?.textContent === id &&
                                     document.querySelector('#detail dd[data-field="queue"]'), farId);
  const box = await page.locator('#detail h2').boundingBox();
  assert(box && box.y >= 0 && box.y < 1000, `the job shows in the window: y=${box && box.y}`);
  await page.goBack();
  await page.waitForSelector('#view-jobs:not([hidden])');

  // Bulk retry: one selected dead job, then "all dead in queue reports". With the flag file
  // the next attempts succeed.
  writeFileSync(flag, '');
  await page.goto(`${base}/#jobs?queue=reports&state=dead`);
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 3);
  await shot('dashboard-jobs.png');
  await page.check(`#jobs tr[data-job-id="${dead[0]}"] input.pick`);
  await page.waitForFunction(() => document.querySelector('#bulk-count').textContent === '1 selected');
  await confirmed('#bulk-retry');
  await page.waitForFunction(() => document.querySelector('#action-msg').textContent.includes('1 jobs retried'));
  await until(`job ${dead[0]} to succeed after the retry`, async () => (await status(dead[0])) === 'succeeded');
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 2);
  assert((await status(dead[1])) === 'dead', 'the unselected jobs stay dead');
  await confirmed('#bulk-retry-dead');
  await page.waitForFunction(() => document.querySelector('#action-msg').textContent.includes('2 dead jobs retried'));
  for (const id of dead.slice(1))
    await until(`job ${id} to succeed after the bulk retry`, async () => (await status(id)) === 'succeeded');
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 0);
  const retriedHistory = await cli('history', dead[2], '--json');
  assert(retriedHistory.includes('retried by request'), 'history has the retry');
  await page.goto(base + '/');
  await cellIs('reports', 'succeeded', 3);

  // The chart comes from the broker's per-minute counts, so it survives the reload.
  await page.reload();
  await page.waitForFunction(() => Number(document.querySelector('#chart')?.dataset.total) >= 70);
  assert((await page.getAttribute('#chart', 'data-points')) === '60', 'an hour of minutes');

  // A narrow window: one column, nothing wider than the window.
  await page.setViewportSize({ width: 400, height: 900 });
  await page.waitForTimeout(100);  // layout after the resize (no event to await for CSS)
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  assert(overflow <= 401, `the page fits a 400 px window: ${overflow}`);
  await shot('dashboard-narrow.png');
  await page.setViewportSize({ width: 1280, height: 1000 });

  // Run-now and delete. Two jobs scheduled an hour ahead in emails: run now in bulk (selected),
  // so they run at once; then one is deleted from its job page, and a finished report job in
  // bulk. Each confirmed; the broker then answers not_found for them.
  const gone = async (id) => {
    try { await cli('status', id); return false; } catch (e) { return e.code === 121; }
  };
  const soon = [];
  for (const i of [1, 2]) soon.push((await cli('submit', '-q', 'emails', '--delay', '1h', '--payload', `soon ${i}`)).trim());
  await page.goto(`${base}/#jobs?queue=emails&state=scheduled`);
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 2);
  await page.check('#select-all');
  await page.waitForFunction(() => document.querySelector('#bulk-count').textContent === '2 selected');
  await confirmed('#bulk-run-now');
  await page.waitForFunction(() => document.querySelector('#action-msg').textContent.includes('2 jobs ready now'));
  for (const id of soon)
    await until(`job ${id} to run after run-now`, async () => (await status(id)) === 'succeeded');
  assert((await cli('history', soon[0], '--json')).includes('run now by request'), 'history has the run-now');
  await page.goto(`${base}/#job-${soon[0]}`);
  await page.waitForFunction((id) => document.querySelector('#detail-id')?.textContent === id &&
                                     document.querySelector('#detail dd[data-field="state"]')?.textContent === 'succeeded', soon[0]);
  assert(await page.isHidden('#detail-run-now'), 'no run-now for a finished job');
  await confirmed('#detail-delete');
  await page.waitForFunction((id) => document.querySelector('#action-msg').textContent.includes(`job ${id}: deleted`), soon[0]);
  await until(`job ${soon[0]} to be gone`, () => gone(soon[0]));
  await page.waitForSelector('#view-jobs:not([hidden])');
  await page.goto(`${base}/#jobs?queue=reports&state=succeeded`);
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 3);
  await page.check(`#jobs tr[data-job-id="${dead[0]}"] input.pick`);
  await confirmed('#bulk-delete');
  await page.waitForFunction(() => document.querySelector('#action-msg').textContent.includes('1 jobs deleted'));
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 2);
  assert(await gone(dead[0]), `job ${dead[0]} deleted`);
  assert((await status(soon[1])) === 'succeeded', 'the other job stays');
  await page.goto(base + '/');
  await page.waitForSelector('#view-overview:not([hidden]) #queues tr[data-queue="reports"]');

  // The attacks, from a page of another site in the same browser. Cross-site request forgery:
  // a "simple" POST (no-cors, text/plain) and one with a guessed token header (preflighted).
  const attacker = await context.newPage();
  await attacker.goto(`http://evil.test:${attackerPort}/`);
  const csrf = await attacker.evaluate(async ([target, id]) => {
    const out = [];
    try {
      await fetch(`${target}/api/jobs/${id}/cancel`, { method: 'POST', mode: 'no-cors',
        headers: { 'Content-Type': 'text/plain' }, body: 'x' });
      out.push('simple POST sent');
    } catch (e) { out.push(`simple POST failed: ${e}`); }
    try {
      const r = await fetch(`${target}/api/jobs/${id}/cancel`, { method: 'POST',
        headers: { 'X-Errand-Token': 'guess' } });
      out.push(`POST with a header answered ${r.status}`);
    } catch (e) { out.push(`POST with a header failed: ${e}`); }
    for (const path of ['/api/queues/thumbnails/pause', '/api/jobs/cancel']) {
      try {
        await fetch(`${target}${path}`, { method: 'POST', mode: 'no-cors',
          headers: { 'Content-Type': 'text/plain' }, body: `{"ids": [${id}]}` });
        out.push(`simple POST ${path} sent`);
      } catch (e) { out.push(`simple POST ${path} failed: ${e}`); }
    }
    return out;
  }, [base, thumb]);
  console.log(`cross-site POSTs: ${csrf.join('; ')}`);
  const afterCsrf = JSON.parse(await cli('status', thumb, '--json')).state;
  assert(afterCsrf === 'running', `job ${thumb} still running after the cross-site POSTs: ${afterCsrf}`);
  assert((await pausedQueues()).length === 0, 'no queue paused by the cross-site POSTs');
  // DNS rebinding: the attacker's name now points at the broker; the broker refuses the name.
  const rebound = await attacker.goto(`http://evil.test:${httpPort}/`);
  assert(rebound.status() === 421, `the rebound page is refused: ${rebound.status()}`);
  const read = await attacker.evaluate(async (id) => {
    const r = await fetch(`/api/jobs/${id}`);
    return { status: r.status, body: await r.text() };
  }, thumb);
  assert(read.status === 421 && !read.body.includes('"payload"'),
         `a rebound read is refused: ${read.status} ${read.body}`);
  await attacker.close();

  // Cancel the long-running thumbnail from the API the page uses; the page follows.
  await cli('cancel', thumb);
  await page.waitForSelector(`#running tr[data-job-id="${thumb}"]`, { state: 'detached' });
  assert(pageErrors.length === 0, `no errors in the page: ${pageErrors.join('; ')}`);
  console.log(`PASS: dashboard test; screenshots in ${artifacts}`);
} catch (e) {
  failed = true;
  console.error(`FAIL: ${e.stack || e}`);
  console.error(logs());
} finally {
  if (browser) await browser.close().catch(() => {});
  if (attackerSite) attackerSite.close();
  for (const { child } of children) {
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
  }
  if (!process.env.ERRAND_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
  else console.log(`kept ${dir}`);
}
process.exit(failed ? 1 : 0);
