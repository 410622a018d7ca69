// errand dashboard: polls the broker's JSON API every second and redraws. Plain DOM and a
// <canvas> chart; no framework, no network beyond this broker.
'use strict';

// Times in the API are RFC 3339 UTC strings ("2026-12-01T10:00:00.123Z"); the job states come
// with /api/queues (`states`, in life-cycle order), so this file lists none of them.
let STATES = [];
const POLL_MS = 1000;
const CHART_SECONDS = 120;

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

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function ago(when, now) {
  const d = Math.max(0, (Date.parse(now) - Date.parse(when)) / 1000);
  if (d < 60) return d.toFixed(1) + ' s ago';
  if (d < 3600) return Math.floor(d / 60) + ' min ago';
  return Math.floor(d / 3600) + ' h ago';
}

function time(iso) {
  return iso ? iso.replace('T', ' ').replace('Z', '') : '–';
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

function jobLink(id) {
  return el('a', {class: 'job', 'data-job': id, href: '#job-' + id,
                  onclick: (ev) => { ev.preventDefault(); showJob(id); }}, id);
}

// ---- throughput chart ----------------------------------------------------------------------

const samples = [];  // {t, finished, submitted}: cumulative totals at each poll

function recordSample(queues, now) {
  let finished = 0, submitted = 0;
  for (const q of queues) {
    const t = q.totals || {};
    finished += (t.succeeded || 0) + (t.dead || 0) + (t.cancelled || 0);
    submitted += t.submitted || 0;
  }
  samples.push({t: now, finished, submitted});
  while (samples.length > 2 && samples[0].t < now - CHART_SECONDS * 1000) samples.shift();
}

function drawChart() {
  const canvas = $('#chart');
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const pad = {l: 40, r: 10, t: 10, b: 20};
  // Rates between consecutive samples.
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    if (dt <= 0) continue;
    rates.push({t: samples[i].t,
                finished: Math.max(0, samples[i].finished - samples[i - 1].finished) / dt,
                submitted: Math.max(0, samples[i].submitted - samples[i - 1].submitted) / dt});
  }
  const now = samples.length ? samples[samples.length - 1].t : Date.now();
  const max = Math.max(1, ...rates.map((r) => Math.max(r.finished, r.submitted)));
  const x = (t) => pad.l + (w - pad.l - pad.r) * (1 - (now - t) / (CHART_SECONDS * 1000));
  const y = (v) => h - pad.b - (h - pad.t - pad.b) * (v / max);
  g.strokeStyle = '#e3e6eb'; g.fillStyle = '#6b7280'; g.font = '11px system-ui'; g.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    g.beginPath(); g.moveTo(pad.l, y(max * f)); g.lineTo(w - pad.r, y(max * f)); g.stroke();
    g.fillText((max * f).toFixed(max < 10 ? 1 : 0), 4, y(max * f) + 4);
  }
  g.fillText(`-${CHART_SECONDS}s`, pad.l, h - 4);
  g.fillText('now', w - pad.r - 22, h - 4);
  const line = (key, color) => {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    rates.forEach((r, i) => (i ? g.lineTo(x(r.t), y(r[key])) : g.moveTo(x(r.t), y(r[key]))));
    g.stroke();
  };
  line('submitted', '#d97706');
  line('finished', '#16a34a');
  g.fillStyle = '#16a34a'; g.fillText('finished/s', w - 150, 16);
  g.fillStyle = '#d97706'; g.fillText('submitted/s', w - 80, 16);
}

// ---- sections ------------------------------------------------------------------------------

function renderSummary(stats) {
  $('#sum-workers').textContent = stats.workers;
  $('#sum-running').textContent = stats.jobs.running;
  $('#sum-ready').textContent = stats.jobs.ready;
  $('#sum-dead').textContent = stats.jobs.dead;
  $('#sum-rate').textContent = stats.finished_per_second.toFixed(2);
  $('#sum-commits').textContent = stats.commits.count;
}

function renderQueues(data) {
  if (STATES.join() !== data.states.join()) {
    STATES = data.states;
    $('#queues-head').replaceChildren(el('th', {}, 'queue'), ...STATES.map((s) => el('th', {}, s)),
                                      el('th', {}, 'done/s'));
  }
  replaceRows($('#queues tbody'), data.queues.map((q) => el('tr', {'data-queue': q.name},
    el('td', {}, q.name, q.paused ? el('span', {class: 'state'}, ' paused') : null),
    ...STATES.map((s) => el('td', {class: 'n' + (q.counts[s] ? '' : ' zero'), 'data-state': s},
                            q.counts[s])),
    el('td', {class: 'n'}, q.finished_per_second.toFixed(2)))));
}

function renderWorkers(data) {
  replaceRows($('#workers tbody'), data.workers.map((w) => el('tr', {'data-worker': w.name},
    el('td', {}, w.name), el('td', {}, w.host), el('td', {class: 'n'}, w.pid),
    el('td', {}, w.queues.join(', ')), el('td', {class: 'n'}, w.concurrency),
    el('td', {}, ...w.jobs.map((j) => el('span', {}, jobLink(j.id), ' '))),
    el('td', {}, ago(w.last_seen, data.time)))));
}

function progress(j) {
  const p = j.progress;
  if (p === null || p === undefined) return el('span', {class: 'zero'}, '–');
  return el('span', {}, el('span', {class: 'bar'}, el('span', {style: `width:${p}%`})),
            `${p}%`, j.progress_message ? ' ' + j.progress_message : '');
}

function renderRunning(page) {
  replaceRows($('#running tbody'), page.jobs.map((j) => el('tr', {'data-job-id': j.id},
    el('td', {}, jobLink(j.id)), el('td', {}, j.queue), el('td', {class: 'n'}, j.attempts),
    el('td', {}, j.worker || ''), el('td', {}, progress(j)))));
}

async function act(id, action, button) {
  button.disabled = true;
  const msg = $('#action-msg');
  try {
    await api(`/api/jobs/${id}/${action}`, {method: 'POST', headers: {'X-Errand-Token': TOKEN}});
    msg.textContent = `job ${id}: ${action === 'retry' ? 'retried' : 'cancelled'}`;
  } catch (e) {
    msg.textContent = `job ${id}: ${action} failed: ${e.message}`;
  }
  refresh();
}

function renderFailed(dead, retrying) {
  const rows = [...retrying.jobs, ...dead.jobs].sort((a, b) => b.id - a.id);
  replaceRows($('#failed tbody'), rows.map((j) => el('tr', {'data-job-id': j.id, 'data-state': j.state},
    el('td', {}, jobLink(j.id)), el('td', {}, j.queue),
    el('td', {}, el('span', {class: 'state ' + j.state}, j.state)),
    el('td', {class: 'n'}, `${j.attempts}/${j.max_attempts}`),
    el('td', {class: 'err', title: j.error || ''}, j.error || ''),
    el('td', {},
       !TOKEN ? null
       : j.state === 'dead'
         ? el('button', {class: 'retry', type: 'button', 'data-job': j.id,
                         onclick: (ev) => act(j.id, 'retry', ev.target)}, 'Retry')
         : el('button', {class: 'cancel', type: 'button', 'data-job': j.id,
                         onclick: (ev) => act(j.id, 'cancel', ev.target)}, 'Cancel')))));
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

let detailId = null;
async function showJob(id) {
  detailId = id;
  const j = await api(`/api/jobs/${id}`).catch((e) => ({error: e.message}));
  if (detailId !== id) return;
  const panel = $('#detail');
  panel.hidden = false;
  $('#detail-id').textContent = id;
  if (j.error && !j.id) {
    $('#detail-fields').replaceChildren(el('dt', {}, 'error'), el('dd', {}, j.error));
    $('#history tbody').replaceChildren();
    return;
  }
  const fields = ['queue', 'state', 'attempts', 'max_attempts', 'worker', 'exit_code', 'error',
                  'result', 'priority', 'created_at', 'started_at', 'finished_at', 'progress'];
  $('#detail-fields').replaceChildren(...fields.flatMap((f) => [
    el('dt', {}, f),
    el('dd', {'data-field': f}, f.endsWith('_at') ? time(j[f]) : (j[f] === null ? '–' : j[f]))]));
  replaceRows($('#history tbody'), j.events.map((e) => el('tr', {},
    el('td', {}, time(e.at)), el('td', {}, e.from || '–'), el('td', {}, e.to),
    el('td', {class: 'n'}, e.attempt), el('td', {}, e.worker || ''), el('td', {}, e.reason))));
}
$('#detail-close').addEventListener('click', () => { detailId = null; $('#detail').hidden = true; });

// ---- polling -------------------------------------------------------------------------------

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const [queues, workers, stats, running, dead, retrying, events] = await Promise.all([
      api('/api/queues'), api('/api/workers'), api('/api/stats'),
      api('/api/jobs?state=running&limit=50'), api('/api/jobs?state=dead&limit=50'),
      api('/api/jobs?state=retrying&limit=50'), api(`/api/events?after=${lastSeq}`)]);
    recordSample(queues.queues, Date.parse(queues.time));
    renderSummary(stats);
    renderQueues(queues);
    renderWorkers(workers);
    renderRunning(running);
    renderFailed(dead, retrying);
    renderEvents(events);
    drawChart();
    if (detailId !== null) showJob(detailId);
    const health = await fetch('/healthz', {cache: 'no-store'}).then((r) => r.ok).catch(() => false);
    $('#health').textContent = health ? 'live' : 'broker stalled';
    $('#health').className = 'pill ' + (health ? 'ok' : 'bad');
    document.body.dataset.updated = String(queues.time);
  } catch (e) {
    $('#health').textContent = 'unreachable';
    $('#health').className = 'pill bad';
  } finally {
    busy = false;
  }
}

refresh();
setInterval(refresh, POLL_MS);
window.addEventListener('resize', drawChart);
