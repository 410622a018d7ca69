// errand dashboard: three views in one page, chosen by the URL's fragment (#, #jobs?…,
// #job-N; /jobs/N opens #job-N), polling the broker's JSON API every second. Plain DOM and a
// <canvas> chart; no framework, no network beyond this broker. Actions (retry, cancel,
// run-now, delete, pause, resume of a queue or a schedule) are POSTs that carry the page's
// token and are confirmed first.
'use strict';

// Times in the API are RFC 3339 UTC strings ("2026-12-01T10:00:00.123Z"); the job states come
// with /api/queues (`states`, in life-cycle order), so this file lists none of them.
let STATES = [];
const POLL_MS = 1000;
const PAGE = 50;

const $ = (sel) => document.querySelector(sel);

// The broker's HTTP token, which it wrote into this page: every POST carries it as the
// X-Errand-Token header (a page of another site can neither read it nor send a request with a
// custom header here). Empty: the broker runs with --http-readonly, and the page offers no
// actions.
const TOKEN = document.querySelector('meta[name="errand-token"]')?.content || '';

// el('td', {class: 'n', 'data-state': 'ready'}, 'text', childNode…)
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// ---- times: always with their zone ---------------------------------------------------------

const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
const timeFormat = new Intl.DateTimeFormat('en-CA', {
  year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
  second: '2-digit', hour12: false, timeZoneName: 'short'});

// "2026-12-01 17:20:01 GMT+1": the browser's zone, named.
function time(iso) {
  if (!iso) return '–';
  const p = Object.fromEntries(timeFormat.formatToParts(new Date(iso)).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour === '24' ? '00' : p.hour}:${p.minute}:${p.second} ${p.timeZoneName}`;
}

function timeEl(iso) {
  return el('time', {datetime: iso || '', title: iso || ''}, time(iso));
}

function ago(when, now) {
  const d = Math.max(0, (Date.parse(now) - Date.parse(when)) / 1000);
  if (d < 60) return d.toFixed(1) + ' s ago';
  if (d < 3600) return Math.floor(d / 60) + ' min ago';
  return Math.floor(d / 3600) + ' h ago';
}

function duration(seconds) {
  if (!seconds) return '–';
  if (seconds < 60) return seconds.toFixed(1) + ' s';
  if (seconds < 3600) return Math.floor(seconds / 60) + ' min ' + Math.floor(seconds % 60) + ' s';
  return Math.floor(seconds / 3600) + ' h ' + Math.floor((seconds % 3600) / 60) + ' min';
}

async function api(path, options) {
  const res = await fetch(path, Object.assign({cache: 'no-store'}, options));
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const msg = body.error ? body.error.message : res.statusText;
    throw new Error(`${res.status}: ${msg}`);
  }
  return body;
}

function post(path, body) {
  return api(path, {method: 'POST', headers: {'X-Errand-Token': TOKEN, 'Content-Type': 'application/json'},
                    body: body === undefined ? '' : JSON.stringify(body)});
}

function jobLink(id) {
  return el('a', {class: 'job', 'data-job': id, href: '#job-' + id}, id);
}

function say(text) {
  $('#action-msg').textContent = text;
}

// Resolves true when the user confirms `text` in the page's dialog.
function confirmAction(text) {
  const d = $('#confirm');
  $('#confirm-text').textContent = text;
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), {once: true});
    d.returnValue = '';
    d.showModal();
  });
}

// Confirms, POSTs, reports and redraws at once, so the page shows the action's effect.
async function act(question, path, body, done) {
  if (!(await confirmAction(question))) return;
  try {
    const r = await post(path, body);
    say(done(r));
  } catch (e) {
    say(`${question.replace(/\?$/, '')}: failed: ${e.message}`);
  }
  refresh(true);
}

// ---- routing -------------------------------------------------------------------------------

// The view and its parameters from the fragment: {view: 'overview'|'jobs'|'job', …}. The
// page's own links are absolute (/#overview, /#jobs), so they leave /jobs/N too.
function route() {
  const h = location.hash.replace(/^#/, '');
  let m = /^job-(\d+)$/.exec(h);
  if (m) return {view: 'job', id: m[1]};
  if (h === 'jobs' || h.startsWith('jobs?')) {
    const p = new URLSearchParams(h.slice(5));
    return {view: 'jobs', queue: p.get('queue') || '', state: p.get('state') || '',
            kind: p.get('kind') || 'id', text: p.get('q') || ''};
  }
  m = /^\/jobs\/(\d+)$/.exec(location.pathname);
  if (m && !h) return {view: 'job', id: m[1]};
  return {view: 'overview'};
}

const scrolls = {};  // view key -> scroll position when it was left
let current = null;

function viewKey(r) {
  return r.view === 'job' ? 'job-' + r.id : location.hash;
}

function show(r) {
  for (const v of ['overview', 'jobs', 'job']) $('#view-' + v).hidden = v !== r.view;
  $('#nav-overview').classList.toggle('on', r.view === 'overview');
  $('#nav-jobs').classList.toggle('on', r.view === 'jobs');
}

function navigate() {
  if (current) scrolls[current] = window.scrollY;
  const r = route();
  show(r);
  current = viewKey(r);
  if (r.view === 'jobs') {
    jobsCursor = [null];
    selected.clear();
    $('#f-queue').value = r.queue;
    $('#f-state').value = r.state;
    $('#f-kind').value = r.kind;
    $('#f-text').value = r.text;
  }
  if (r.view === 'job') { jobShown = null; renderJobLoading(r.id); }
  // A job opens at the top of the window, where the eye is after the click; a view returned to
  // opens where it was left.
  window.scrollTo(0, r.view === 'job' ? 0 : (scrolls[current] || 0));
  refresh(true);
}
window.addEventListener('hashchange', navigate);

// ---- overview ------------------------------------------------------------------------------

function renderSummary(stats) {
  $('#sum-workers').textContent = stats.workers;
  $('#sum-running').textContent = stats.jobs.running;
  $('#sum-ready').textContent = stats.jobs.ready;
  $('#sum-dead').textContent = stats.jobs.dead;
  $('#sum-rate').textContent = stats.finished_per_second.toFixed(2);
  $('#sum-commits').textContent = stats.commits.count;
}

function queueActions(q) {
  if (!TOKEN) return null;
  const out = [];
  out.push(q.paused
    ? el('button', {type: 'button', class: 'resume', 'data-queue': q.name,
                    onclick: () => act(`Resume queue ${q.name}?`, `/api/queues/${encodeURIComponent(q.name)}/resume`,
                                       undefined, () => `queue ${q.name} resumed`)}, 'Resume')
    : el('button', {type: 'button', class: 'pause', 'data-queue': q.name,
                    onclick: () => act(`Pause queue ${q.name}? Workers get no new jobs from it.`,
                                       `/api/queues/${encodeURIComponent(q.name)}/pause`, undefined,
                                       () => `queue ${q.name} paused`)}, 'Pause'));
  if (q.counts.dead)
    out.push(el('button', {type: 'button', class: 'retry retry-dead', 'data-queue': q.name,
                           onclick: () => retryAllDead(q.name, q.counts.dead)}, `Retry ${q.counts.dead} dead`));
  return el('span', {class: 'actions'}, ...out);
}

function retryAllDead(queue, n) {
  return act(`Retry all ${n} dead jobs of queue ${queue}?`, '/api/jobs/retry', {queue, state: 'dead'},
             (r) => `${r.retried.length} dead jobs of ${queue} retried`);
}

function stateLink(queue, state, n) {
  if (!n) return n;
  return el('a', {href: `#jobs?queue=${encodeURIComponent(queue)}&state=${state}`}, n);
}

// "paused", or for a timed pause (errand pause Q --for DUR) "paused until 14:05:09" in the
// browser's zone, the full time as its title.
function pausedBadge(q) {
  if (!q.paused_until)
    return el('span', {class: 'state paused', 'data-paused': 'paused'}, 'paused');
  const p = Object.fromEntries(timeFormat.formatToParts(new Date(q.paused_until)).map((x) => [x.type, x.value]));
  return el('span', {class: 'state paused', 'data-paused-until': q.paused_until, title: time(q.paused_until)},
            `paused until ${p.hour === '24' ? '00' : p.hour}:${p.minute}:${p.second}`);
}

// A queue's limits (errand queue set) and why its ready jobs wait, as small badges.
function queueLimits(q) {
  const out = [];
  if (q.max_running != null)
    out.push(el('span', {class: 'limit', title: 'at most this many running at once'}, `max ${q.max_running}`));
  if (q.rate != null)
    out.push(el('span', {class: 'limit', title: 'at most this many started per window'},
                `${q.rate}/${duration(q.rate_per_ms / 1000)}`));
  if (q.retention_ms != null)
    out.push(el('span', {class: 'limit', title: 'its finished jobs (not dead ones) are kept this long'},
                `keep ${duration(q.retention_ms / 1000)}`));
  if (q.expires_in_ms != null)
    out.push(el('span', {class: 'limit', title: 'its jobs without an expiry expire this long after submission'},
                `expires ${duration(q.expires_in_ms / 1000)}`));
  if (q.held)
    out.push(el('span', {class: 'state held', 'data-held': q.held}, q.held));
  return out.length ? el('span', {class: 'limits'}, ...out) : null;
}

function renderQueues(data) {
  if (STATES.join() !== data.states.join()) {
    STATES = data.states;
    $('#queues-head').replaceChildren(el('th', {}, 'queue'), ...STATES.map((s) => el('th', {class: 'n'}, s)),
                                      el('th', {class: 'n'}, 'latency'), el('th', {class: 'n'}, 'slots'),
                                      el('th', {class: 'n'}, 'done/s'), el('th', {}, ''));
    $('#f-state').replaceChildren(el('option', {value: ''}, 'all'), ...STATES.map((s) => el('option', {value: s}, s)));
    const r = route();
    if (r.view === 'jobs') $('#f-state').value = r.state;
  }
  const names = data.queues.map((q) => q.name);
  const qsel = $('#f-queue');
  if ([...qsel.options].slice(1).map((o) => o.value).join() !== names.join()) {
    const keep = qsel.value || route().queue || '';
    qsel.replaceChildren(el('option', {value: ''}, 'all'), ...names.map((n) => el('option', {value: n}, n)));
    qsel.value = keep;
  }
  $('#queues tbody').replaceChildren(...data.queues.map((q) => el('tr', {'data-queue': q.name, 'data-paused': String(q.paused)},
    el('td', {}, q.name, q.paused ? pausedBadge(q) : null, queueLimits(q)),
    ...STATES.map((s) => el('td', {class: 'n' + (q.counts[s] ? '' : ' zero'), 'data-state': s},
                            stateLink(q.name, s, q.counts[s]))),
    el('td', {class: 'n latency' + (q.oldest_ready_age_seconds > 60 ? ' late' : ''), 'data-latency': q.oldest_ready_age_seconds},
       duration(q.oldest_ready_age_seconds)),
    el('td', {class: 'n' + (q.worker_slots ? '' : ' unserved'), 'data-slots': q.worker_slots}, q.worker_slots),
    el('td', {class: 'n'}, q.finished_per_second.toFixed(2)),
    el('td', {}, queueActions(q)))));
}

// Quiet/resume and stop, by instance id (the row is one process), as `errand worker ACTION`.
function workerActions(w) {
  if (!TOKEN) return null;
  const send = (action, question) => act(question,
    `/api/workers/${encodeURIComponent(w.instance)}/${action}`, undefined,
    (r) => `worker ${w.name}: ${r.workers.length ? r.workers[0].state : action}`);
  const out = [];
  if (w.state === 'quiet')
    out.push(el('button', {type: 'button', class: 'resume', 'data-worker': w.name},
                'Resume'));
  else if (w.state !== 'stopping')
    out.push(el('button', {type: 'button', class: 'quiet', 'data-worker': w.name}, 'Quiet'));
  if (w.state !== 'stopping')
    out.push(el('button', {type: 'button', class: 'stop', 'data-worker': w.name}, 'Stop'));
  for (const b of out) {
    const action = b.className;
    b.onclick = () => send(action, action === 'stop'
      ? `Stop worker ${w.name}? It drains (running jobs finish) and exits.`
      : action === 'quiet' ? `Quiet worker ${w.name}? It takes no new jobs until resumed.`
                           : `Resume worker ${w.name}?`);
  }
  return el('span', {class: 'actions'}, ...out);
}

function renderWorkers(data) {
  $('#workers tbody').replaceChildren(...data.workers.map((w) => el('tr', {'data-worker': w.name},
    el('td', {}, w.name), el('td', {}, w.host), el('td', {class: 'n'}, w.pid),
    el('td', {}, w.queues.join(', ')),
    el('td', {class: 'worker-state ' + (w.state || 'active'), 'data-state': w.state || 'active'},
       w.state || 'active'),
    el('td', {class: 'n'}, w.concurrency),
    el('td', {}, ...w.jobs.map((j) => el('span', {}, jobLink(j.id), ' '))),
    el('td', {}, ago(w.last_seen, data.time)), el('td', {}, workerActions(w)))));
}

// Pause/resume of a schedule, as `errand schedule pause|resume NAME`.
function scheduleActions(s) {
  if (!TOKEN) return null;
  const path = (a) => `/api/schedules/${encodeURIComponent(s.name)}/${a}`;
  return el('span', {class: 'actions'}, s.paused
    ? el('button', {type: 'button', class: 'resume', 'data-schedule': s.name,
                    onclick: () => act(`Resume schedule ${s.name}? It fires from its next tick on.`, path('resume'),
                                       undefined, () => `schedule ${s.name} resumed`)}, 'Resume')
    : el('button', {type: 'button', class: 'pause', 'data-schedule': s.name,
                    onclick: () => act(`Pause schedule ${s.name}? Its ticks submit nothing until resumed.`,
                                       path('pause'), undefined, () => `schedule ${s.name} paused`)}, 'Pause'));
}

function renderSchedules(data) {
  $('#schedules-empty').hidden = data.schedules.length > 0;
  $('#schedules tbody').replaceChildren(...data.schedules.map((s) => el('tr', {'data-schedule': s.name, 'data-paused': String(s.paused)},
    el('td', {}, s.name), el('td', {}, el('code', {}, s.cron)), el('td', {}, s.zone), el('td', {}, s.queue),
    el('td', {}, el('span', {class: 'state ' + (s.paused ? 'paused' : 'active'), 'data-field': 'state'},
                    s.paused ? 'paused' : 'active')),
    el('td', {'data-field': 'last'}, s.last_at ? timeEl(s.last_at) : '–'),
    el('td', {'data-field': 'next'}, s.paused ? '–' : timeEl(s.next_at)),
    el('td', {'data-field': 'job'}, s.last_job ? jobLink(s.last_job) : '–', s.last_state
      ? el('span', {class: 'state ' + s.last_state, 'data-state': s.last_state}, s.last_state) : null),
    el('td', {}, scheduleActions(s)))));
}

// Batches (errand batch), newest first: how many members have finished (succeeded in green,
// failed in red, of the bar's whole width), and the jobs their callbacks made.
const BATCHES_SHOWN = 20;

function batchBar(b) {
  const done = b.total - b.pending;
  const failed = b.dead + b.cancelled + b.expired;
  const pct = (n) => (b.total ? (100 * n) / b.total : 0).toFixed(1);
  return el('span', {class: 'batch-progress', 'data-done': done, 'data-total': b.total},
            el('span', {class: 'bar split', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': b.total,
                        'aria-valuenow': done, 'aria-label': `batch ${b.id}: ${done} of ${b.total} finished`},
               el('span', {class: 'ok', style: `width:${pct(b.succeeded)}%`}),
               el('span', {class: 'bad', style: `width:${pct(failed)}%`})),
            `${done}/${b.total}`);
}

function batchCallbacks(b) {
  const out = [];
  for (const [which, id] of [['complete', b.complete_job], ['success', b.success_job]])
    if (id != null) out.push(el('span', {class: 'callback', 'data-callback': which}, `${which} `, jobLink(id)));
  return out.length ? out : ['–'];
}

function renderBatches(data) {
  $('#batches-empty').hidden = data.batches.length > 0;
  $('#batches tbody').replaceChildren(...data.batches.map((b) => {
    const failed = b.dead + b.cancelled + b.expired;
    return el('tr', {'data-batch': b.id, 'data-state': b.state},
      el('td', {class: 'n'}, b.id),
      el('td', {class: 'desc', 'data-field': 'description', title: b.description}, b.description || '–'),
      el('td', {}, el('span', {class: 'state ' + b.state, 'data-field': 'state'}, b.state)),
      el('td', {'data-field': 'progress'}, batchBar(b)),
      el('td', {class: 'n' + (b.succeeded ? '' : ' zero'), 'data-field': 'succeeded'}, b.succeeded),
      el('td', {class: 'n' + (failed ? ' failed' : ' zero'), 'data-field': 'failed',
                title: `${b.dead} dead, ${b.cancelled} cancelled, ${b.expired} expired`}, failed),
      el('td', {}, timeEl(b.created_at)),
      el('td', {'data-field': 'callbacks'}, ...batchCallbacks(b)));
  }));
}

function progress(j) {
  const p = j.progress;
  if (p === null || p === undefined) return el('span', {class: 'zero'}, '–');
  return el('span', {}, el('span', {class: 'bar'}, el('span', {style: `width:${p}%`})),
            `${p}%`, j.progress_message ? ' ' + j.progress_message : '');
}

function renderRunning(page) {
  $('#running tbody').replaceChildren(...page.jobs.map((j) => el('tr', {'data-job-id': j.id},
    el('td', {}, jobLink(j.id)), el('td', {}, j.queue), el('td', {class: 'n'}, j.attempts),
    el('td', {}, j.worker || ''), el('td', {}, progress(j)))));
}

let lastSeq = 0;
function renderEvents(data) {
  const list = $('#events');
  for (const e of data.events) {
    lastSeq = Math.max(lastSeq, e.seq);
    list.prepend(el('li', {}, `${time(e.at)}  job `, jobLink(e.id),
                    `  ${e.queue}  ${e.from || 'new'} → ${e.to}  #${e.attempt}`,
                    e.worker ? `  ${e.worker}` : '', `  ${e.reason}`));
  }
  while (list.children.length > 200) list.lastChild.remove();
}

// The broker's per-minute counts (/api/throughput): the chart is the same after a reload.
let minutes = [];
function drawChart() {
  const canvas = $('#chart');
  if (!canvas.clientWidth) return;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const pad = {l: 40, r: 10, t: 22, b: 20};
  const n = Math.max(1, minutes.length);
  const max = Math.max(1, ...minutes.map((m) => Math.max(m.submitted, m.failed, m.succeeded + m.dead)));
  const x = (i) => pad.l + (w - pad.l - pad.r) * (n === 1 ? 1 : i / (n - 1));
  const y = (v) => h - pad.b - (h - pad.t - pad.b) * (v / max);
  g.strokeStyle = '#e3e6eb'; g.fillStyle = '#6b7280'; g.font = '11px system-ui'; g.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    g.beginPath(); g.moveTo(pad.l, y(max * f)); g.lineTo(w - pad.r, y(max * f)); g.stroke();
    g.fillText(String(Math.round(max * f)), 4, y(max * f) + 4);
  }
  if (minutes.length) {
    g.fillText(time(minutes[0].at).slice(11, 16), pad.l, h - 4);
    const last = time(minutes[minutes.length - 1].at);
    g.fillText(last.slice(11, 16) + ' ' + last.slice(20), w - pad.r - 90, h - 4);
  }
  // Finished jobs as bars (succeeded, dead on top), submitted and failed attempts as lines.
  const bw = Math.max(1, (w - pad.l - pad.r) / n - 1);
  minutes.forEach((m, i) => {
    const bx = x(i) - (n === 1 ? bw : bw / 2);
    g.fillStyle = '#86efac'; g.fillRect(bx, y(m.succeeded), bw, y(0) - y(m.succeeded));
    g.fillStyle = '#7f1d1d'; g.fillRect(bx, y(m.succeeded + m.dead), bw, y(m.succeeded) - y(m.succeeded + m.dead));
  });
  for (const [key, color] of [['submitted', '#d97706'], ['failed', '#dc2626']]) {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    minutes.forEach((m, i) => (i ? g.lineTo(x(i), y(m[key])) : g.moveTo(x(i), y(m[key]))));
    g.stroke();
  }
  let lx = pad.l;
  for (const [key, color] of [['submitted', '#d97706'], ['succeeded', '#16a34a'], ['failed attempts', '#dc2626'], ['dead', '#7f1d1d']]) {
    const label = key + '/min';
    g.fillStyle = color; g.fillText(label, lx, 12); lx += g.measureText(label).width + 14;
  }
  canvas.dataset.points = String(minutes.length);
  canvas.dataset.total = String(minutes.reduce((a, m) => a + m.succeeded + m.submitted, 0));
}

async function refreshOverview() {
  const [workers, stats, running, events, tp, schedules, batches] = await Promise.all([
    api('/api/workers'), api('/api/stats'), api('/api/jobs?state=running&limit=50'),
    api(`/api/events?after=${lastSeq}`), api(`/api/throughput?minutes=${$('#chart-window').value}`),
    api('/api/schedules'), api(`/api/batches?limit=${BATCHES_SHOWN}`)]);
  renderSummary(stats);
  renderSchedules(schedules);
  renderBatches(batches);
  renderWorkers(workers);
  renderRunning(running);
  renderEvents(events);
  minutes = tp.minutes;
  drawChart();
}

// ---- jobs: browse, filter, search, select, act ---------------------------------------------

let jobsCursor = [null];  // the `after` of each page shown so far; the last is this page's
const selected = new Set();
let jobsPage = null;

function jobsQuery() {
  const r = route();
  const p = new URLSearchParams({limit: String(PAGE)});
  if (r.queue) p.set('queue', r.queue);
  if (r.state) p.set('state', r.state);
  if (r.text) p.set(r.kind, r.kind === 'id' ? r.text.replace(/^#/, '') : r.text);
  const after = jobsCursor[jobsCursor.length - 1];
  if (after) p.set('after', after);
  return '/api/jobs?' + p.toString();
}

function renderJobs(page) {
  jobsPage = page;
  const r = route();
  const tbody = $('#jobs tbody');
  tbody.replaceChildren(...page.jobs.map((j) => el('tr', {'data-job-id': j.id, 'data-state': j.state},
    el('td', {}, TOKEN ? el('input', {type: 'checkbox', class: 'pick', 'data-job': j.id, checked: selected.has(j.id),
                                      'aria-label': `select job ${j.id}`,
                                      onchange: (ev) => { ev.target.checked ? selected.add(j.id) : selected.delete(j.id); bulkState(); }})
                       : null),
    el('td', {}, jobLink(j.id)), el('td', {}, j.queue),
    el('td', {}, el('span', {class: 'state ' + j.state}, j.state)),
    el('td', {class: 'n'}, `${j.attempts}/${j.max_attempts}`),
    el('td', {}, timeEl(j.created_at)),
    el('td', {class: 'err', title: j.error || ''}, j.error || ''))));
  const first = (jobsCursor.length - 1) * PAGE;
  const total = page.total_capped ? `${page.total}+` : page.total;
  $('#jobs-total').textContent = `${total} ${r.state || ''} job${page.total === 1 ? '' : 's'}` +
    (r.queue ? ` in ${r.queue}` : '') + (r.text ? ` matching “${r.text}”` : '');
  $('#jobs-total').dataset.total = String(page.total);
  $('#page-range').textContent = page.jobs.length
    ? `${first + 1}–${first + page.jobs.length} of ${total}` : `0 of ${total}`;
  $('#page-prev').disabled = jobsCursor.length <= 1;
  $('#page-next').disabled = page.next === null;
  const dead = $('#bulk-retry-dead');
  dead.hidden = !TOKEN || r.state !== 'dead' || !page.total;
  dead.textContent = `Retry all ${page.total} dead` + (r.queue ? ` in ${r.queue}` : '');
  $('#bulk').hidden = !TOKEN;
  bulkState();
}

function bulkState() {
  $('#bulk-count').textContent = `${selected.size} selected`;
  $('#bulk-retry').disabled = selected.size === 0;
  $('#bulk-cancel').disabled = selected.size === 0;
  $('#bulk-run-now').disabled = selected.size === 0;
  $('#bulk-delete').disabled = selected.size === 0;
  const picks = [...document.querySelectorAll('#jobs .pick')];
  $('#select-all').checked = picks.length > 0 && picks.every((p) => p.checked);
}

function bulkDone(verb, r, key) {
  selected.clear();
  const bad = r.failed.length ? `; ${r.failed.length} refused (${r.failed.map((f) => `${f.id}: ${f.message}`).join('; ')})` : '';
  return `${r[key].length} jobs ${verb}${bad}`;
}

$('#select-all').addEventListener('change', (ev) => {
  for (const p of document.querySelectorAll('#jobs .pick')) {
    p.checked = ev.target.checked;
    const id = Number(p.dataset.job);
    ev.target.checked ? selected.add(id) : selected.delete(id);
  }
  bulkState();
});
$('#bulk-retry').addEventListener('click', () =>
  act(`Retry ${selected.size} selected jobs?`, '/api/jobs/retry', {ids: [...selected]},
      (r) => bulkDone('retried', r, 'retried')));
$('#bulk-cancel').addEventListener('click', () =>
  act(`Cancel ${selected.size} selected jobs?`, '/api/jobs/cancel', {ids: [...selected]},
      (r) => bulkDone('cancelled', r, 'cancelled')));
$('#bulk-run-now').addEventListener('click', () =>
  act(`Run ${selected.size} selected jobs now (scheduled or retrying ones)?`, '/api/jobs/run-now',
      {ids: [...selected]}, (r) => bulkDone('ready now', r, 'ready')));
// Finished jobs only: an unfinished one is refused (and listed); its job page deletes with force.
$('#bulk-delete').addEventListener('click', () =>
  act(`Delete ${selected.size} selected finished jobs with their history?`, '/api/jobs/delete',
      {ids: [...selected]}, (r) => bulkDone('deleted', r, 'deleted')));
$('#bulk-retry-dead').addEventListener('click', () => {
  const r = route();
  const body = r.queue ? {queue: r.queue, state: 'dead'} : {state: 'dead'};
  act(`Retry all ${jobsPage ? jobsPage.total : ''} dead jobs${r.queue ? ' of queue ' + r.queue : ''}?`,
      '/api/jobs/retry', body, (x) => `${x.retried.length} dead jobs retried`);
});
$('#jobs-filter').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const p = new URLSearchParams();
  for (const [k, id] of [['queue', '#f-queue'], ['state', '#f-state']]) if ($(id).value) p.set(k, $(id).value);
  const text = $('#f-text').value.trim();
  if (text) { p.set('kind', $('#f-kind').value); p.set('q', text); }
  location.hash = 'jobs' + (p.toString() ? '?' + p.toString() : '');
});
for (const id of ['#f-queue', '#f-state']) $(id).addEventListener('change', () => $('#f-go').click());
$('#f-clear').addEventListener('click', () => { location.hash = 'jobs'; });
$('#page-next').addEventListener('click', () => {
  if (jobsPage && jobsPage.next !== null) { jobsCursor.push(jobsPage.next); refresh(true); }
});
$('#page-prev').addEventListener('click', () => {
  if (jobsCursor.length > 1) { jobsCursor.pop(); refresh(true); }
});

// ---- one job -------------------------------------------------------------------------------

let jobShown = null;

function renderJobLoading(id) {
  $('#detail-id').textContent = id;
  $('#detail-state').textContent = '';
  $('#detail-fields').replaceChildren();
  for (const s of ['#payload', '#result', '#error']) $(s).textContent = '';
  $('#history tbody').replaceChildren();
}

// A payload the API sent as base64 (not printable UTF-8), as a hex dump.
function hexdump(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const lines = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const row = bytes.slice(i, i + 16);
    const hex = [...row].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = [...row].map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${i.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return lines.join('\n');
}

function renderJob(j) {
  jobShown = j;
  $('#detail-id').textContent = j.id;
  const st = $('#detail-state');
  st.textContent = j.state; st.className = 'state ' + j.state;
  const fields = ['queue', 'state', 'attempts', 'max_attempts', 'priority', 'worker', 'exit_code',
                  'unique', 'created_at', 'run_at', 'started_at', 'finished_at', 'timeout_ms', 'progress',
                  'progress_message', 'argv'];
  $('#detail-fields').replaceChildren(...fields.filter((f) => f in j).flatMap((f) => [
    el('dt', {}, f),
    el('dd', {'data-field': f},
       f.endsWith('_at') ? timeEl(j[f])
       : j[f] === null || j[f] === undefined ? '–'
       : f === 'queue' ? el('a', {href: `#jobs?queue=${encodeURIComponent(j.queue)}`}, j.queue)
       : f === 'progress' ? progress(j)
       : Array.isArray(j[f]) ? j[f].join(' ') : j[f])]));
  const p = j.payload;
  $('#payload-info').textContent = p
    ? `${p.size} bytes${p.truncated ? `, first ${p.shown} shown` : ''}${p.encoding === 'base64' ? ', binary: hex dump' : ''}` : '';
  $('#payload').textContent = !p ? '' : p.encoding === 'base64' ? hexdump(p.data) : p.data;
  $('#payload').dataset.encoding = p ? p.encoding : '';
  $('#result').textContent = j.result ?? '–';
  $('#error').textContent = j.error ?? '–';
  $('#history tbody').replaceChildren(...j.events.map((e) => el('tr', {},
    el('td', {}, timeEl(e.at)), el('td', {}, e.from || '–'), el('td', {}, e.to),
    el('td', {class: 'n'}, e.attempt), el('td', {}, e.worker || ''), el('td', {}, e.reason))));
  const terminal = ['succeeded', 'dead', 'cancelled', 'expired'].includes(j.state);
  $('#detail-retry').hidden = !TOKEN || j.state !== 'dead';
  $('#detail-cancel').hidden = !TOKEN || terminal;
  $('#detail-run-now').hidden = !TOKEN || !['scheduled', 'retrying'].includes(j.state);
  $('#detail-delete').hidden = !TOKEN;
  $('#detail-delete').textContent = terminal ? 'Delete' : 'Cancel and delete';
}

$('#detail-retry').addEventListener('click', () => {
  const id = jobShown.id;
  act(`Retry job ${id}?`, `/api/jobs/${id}/retry`, undefined, () => `job ${id}: retried`);
});
$('#detail-cancel').addEventListener('click', () => {
  const id = jobShown.id;
  act(`Cancel job ${id}?`, `/api/jobs/${id}/cancel`, undefined, () => `job ${id}: cancelled`);
});

$('#detail-run-now').addEventListener('click', () => {
  const id = jobShown.id;
  act(`Run job ${id} now?`, `/api/jobs/${id}/run-now`, undefined, () => `job ${id}: ready now`);
});
$('#detail-delete').addEventListener('click', () => {
  const id = jobShown.id;
  const live = !['succeeded', 'dead', 'cancelled', 'expired'].includes(jobShown.state);
  act(live ? `Cancel job ${id} and delete it with its history?` : `Delete job ${id} with its history?`,
      `/api/jobs/${id}/delete`, live ? {force: true} : undefined, () => {
        location.hash = '#jobs';  // its page is gone
        return `job ${id}: deleted`;
      });
});

// ---- polling -------------------------------------------------------------------------------

let busy = false;
async function refresh(now) {
  if (busy) { if (now) setTimeout(() => refresh(true), 100); return; }
  busy = true;
  try {
    const r = route();
    const queues = await api('/api/queues');
    renderQueues(queues);
    if (r.view === 'overview') {
      await refreshOverview();
    } else {
      renderSummary(await api('/api/stats'));
    }
    if (r.view === 'jobs') {
      // A bad search (an id that is not a number, a scan cut short) is said, not fatal.
      renderJobs(await api(jobsQuery()).catch((e) => {
        say(`search: ${e.message}`);
        return {jobs: [], next: null, total: 0, total_capped: false};
      }));
    }
    if (r.view === 'job') {
      try {
        renderJob(await api(`/api/jobs/${r.id}`));
      } catch (e) {
        $('#detail-fields').replaceChildren(el('dt', {}, 'error'), el('dd', {'data-field': 'error'}, e.message));
      }
    }
    const health = await fetch('/healthz', {cache: 'no-store'}).then((x) => x.ok).catch(() => false);
    $('#health').textContent = health ? 'live' : 'broker stalled';
    $('#health').className = 'pill ' + (health ? 'ok' : 'bad');
    document.body.dataset.updated = String(queues.time);
    document.body.dataset.view = r.view;
  } catch (e) {
    $('#health').textContent = 'unreachable';
    $('#health').className = 'pill bad';
  } finally {
    busy = false;
  }
}

$('#zone').textContent = 'times: ' + ZONE;
$('#chart-window').addEventListener('change', () => refresh(true));
if (!TOKEN) $('#bulk').hidden = true;
navigate();
setInterval(refresh, POLL_MS);
window.addEventListener('resize', drawChart);
