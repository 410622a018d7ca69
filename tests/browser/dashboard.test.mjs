// The dashboard in a real browser: a real broker (--http on a free port) and worker daemon, jobs
// submitted with the real CLI, headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core. Checks that counts change live, that a dead job can be retried from the page
// (a POST that needs the broker's token, which the page carries), that a page of another site
// can neither cancel a job nor read one through DNS rebinding (Chromium resolves evil.test to
// 127.0.0.1), and keeps screenshots as artifacts.
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
                   '--queue', 'emails=cat', '--queue', `reports=test -e '${flag}' && cat || exit 99`,
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
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.setDefaultTimeout(15000);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(base + '/');
  await page.waitForSelector('#health.ok');
  await page.waitForSelector('#workers tr[data-worker="browser-worker"]');

  const cell = (queue, state) => `#queues tr[data-queue="${queue}"] td[data-state="${state}"]`;
  const cellIs = (queue, state, n) =>
    page.waitForFunction(([sel, want]) => document.querySelector(sel)?.textContent === want,
                         [cell(queue, state), String(n)]);

  // Counts change live: ready jobs in a paused queue, then succeeded ones once resumed.
  await cli('pause', 'emails');
  for (let i = 0; i < 6; i++) await cli('submit', '-q', 'emails', '--payload', `mail ${i}`);
  await cellIs('emails', 'ready', 6);
  await cli('resume', 'emails');
  await cellIs('emails', 'succeeded', 6);
  await cellIs('emails', 'ready', 0);

  // A running job with its progress.
  const thumb = (await cli('submit', '-q', 'thumbnails', '--payload', 'img')).trim();
  await page.waitForFunction((id) =>
    document.querySelector(`#running tr[data-job-id="${id}"]`)?.textContent.includes('60%'), thumb);

  // A job that goes dead shows up with its error and a Retry button.
  const dead = (await cli('submit', '-q', 'reports', '--payload', 'q3 report', '--max-attempts', '2')).trim();
  const row = `#failed tr[data-job-id="${dead}"]`;
  await page.waitForSelector(`${row}[data-state="dead"] button.retry`);
  await cellIs('reports', 'dead', 1);

  // Its detail view with the event history.
  await page.click(`${row} a.job`);
  await page.waitForFunction(() => document.querySelectorAll('#history tbody tr').length >= 3);
  const detail = await page.textContent('#detail');
  assert(detail.includes('submitted') && detail.includes('dispatched'), `history shown: ${detail}`);
  assert((await page.textContent('#detail dd[data-field="state"]')) === 'dead', 'detail state is dead');
  for (let i = 0; i < 8; i++) await cli('submit', '-q', 'emails', '--payload', `more ${i}`);
  await cellIs('emails', 'succeeded', 14);
  await page.screenshot({ path: join(artifacts, 'dashboard.png'), fullPage: true });

  // Retry it from the page; with the flag file the next attempt succeeds.
  writeFileSync(flag, '');
  await page.click(`${row} button.retry`);
  const state = await until(`job ${dead} to leave dead`, async () => {
    const job = JSON.parse(await cli('status', dead, '--json'));
    return job.state !== 'dead' ? job.state : null;
  });
  console.log(`job ${dead} after Retry: ${state}`);
  await until(`job ${dead} to succeed after the retry`, async () =>
    JSON.parse(await cli('status', dead, '--json')).state === 'succeeded');
  await page.waitForSelector(row, { state: 'detached' });
  await page.waitForFunction(() => document.querySelector('#action-msg').textContent.includes('retried'));
  const history = await cli('history', dead, '--json');
  assert(history.includes('retried by request'), 'history has the retry');
  await cellIs('reports', 'succeeded', 1);
  await page.screenshot({ path: join(artifacts, 'dashboard-after-retry.png'), fullPage: true });

  // The attacks, from a page of another site in the same browser. Cross-site request forgery:
  // a "simple" POST (no-cors, text/plain) and one with a guessed token header (preflighted).
  const attacker = await browser.newPage();
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
    return out;
  }, [base, thumb]);
  console.log(`cross-site POSTs: ${csrf.join('; ')}`);
  const afterCsrf = JSON.parse(await cli('status', thumb, '--json')).state;
  assert(afterCsrf === 'running', `job ${thumb} still running after the cross-site POSTs: ${afterCsrf}`);
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
