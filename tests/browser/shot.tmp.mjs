// one-off: a docs screenshot with a minute of traffic (not committed)
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
const run = promisify(execFile);
const B = '/work/wt-http/build';
const dir = mkdtempSync(join(tmpdir(), 'errand-shot-'));
const ep = 'tcp://127.0.0.1:27744', base = 'http://127.0.0.1:27780';
const kids = [];
const start = (n, a) => { const o = openSync(join(dir, n + '.log'), 'a'); const c = spawn(a[0], a.slice(1), {stdio: ['ignore', o, o], detached: true}); kids.push(c); };
start('broker', [B + '/broker/errand-broker', '--listen', ep, '--db', join(dir, 'e.db'), '--http', '127.0.0.1:27780', '--retry-delay', '2s']);
await new Promise((r) => setTimeout(r, 500));
start('w1', [B + '/worker/errand-worker', '--broker', ep, '--name', 'build-1', '--queue', 'emails=sleep 0.05; cat', '--queue', "thumbnails=for p in 20 40 60 80; do echo \"$p% resizing\" >&3; sleep 2; done", '--concurrency', '4']);
start('w2', [B + '/worker/errand-worker', '--broker', ep, '--name', 'build-2', '--queue', 'reports=grep -q ok || { echo \"report template missing\" >&2; exit 99; }', '--queue', 'emails=sleep 0.1; cat', '--concurrency', '2']);
const cli = (...a) => run(B + '/client/errand', ['--broker', ep, ...a]);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
await page.goto(base + '/');
for (let s = 0; s < 70; s++) {
  const n = Math.round(6 + 5 * Math.sin(s / 8) + (s % 7 === 0 ? 6 : 0));
  const jobs = [];
  for (let i = 0; i < n; i++) jobs.push(cli('submit', '-q', 'emails', '--payload', 'hi'));
  if (s % 9 === 0) jobs.push(cli('submit', '-q', 'thumbnails', '--payload', 'img'));
  if (s % 20 === 5) jobs.push(cli('submit', '-q', 'reports', '--payload', 'q3', '--max-attempts', '2'));
  if (s === 40) jobs.push(cli('submit', '-q', 'reports', '--payload', 'q4', '--max-attempts', '3'));
  await Promise.all(jobs);
  await new Promise((r) => setTimeout(r, 1000));
}
await cli('pause', 'emails');
for (let i = 0; i < 12; i++) await cli('submit', '-q', 'emails', '--payload', 'later');
await new Promise((r) => setTimeout(r, 1500));
const dead = await page.$('#failed tr[data-state="dead"] a.job');
if (dead) await dead.click();
await new Promise((r) => setTimeout(r, 1500));
await page.screenshot({ path: '/work/wt-http/docs/dashboard.png', fullPage: true });
await browser.close();
for (const c of kids) try { process.kill(-c.pid, 'SIGKILL'); } catch {}
console.log('done', dir);
