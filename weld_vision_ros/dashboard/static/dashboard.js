// The dashboard page: polls the JSON API once a second and draws it; no framework, no build.
'use strict';

const $ = (sel) => document.querySelector(sel);
const review = { bag: '', frames: [], index: 0, labels: [] };
const state = { screen: 'live', labels: [], selectedJob: null, compare: new Set(), nodes: {} };

// --- helpers ---------------------------------------------------------------------------
function fmt(v, digits = 2) {
  if (v === null || v === undefined || v === '') return '–';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(digits);
  return String(v);
}
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
// Replace an element's content only when it changed: a table redrawn every second under
// the pointer would swallow clicks (and lose checkbox state).
function setHTML(el, html) {
  if (el.dataset.html === html) return false;
  el.dataset.html = html;
  el.innerHTML = html;
  return true;
}
function kv(table, rows) {
  setHTML(table, rows.map(([k, v, cls]) => `<tr><th>${esc(k)}</th><td class="${cls || ''}">${esc(v)}</td></tr>`).join(''));
}
function say(text, kind = 'info') {
  const m = $('#message');
  m.textContent = text;
  m.dataset.kind = kind;
}
function clock(stampS) {
  if (!stampS) return '–';
  const d = new Date(stampS * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}
function token() { return $('#token').value.trim(); }

async function api(path, opts = {}) {
  const headers = Object.assign({ 'Accept': 'application/json' }, opts.headers || {});
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.method && opts.method !== 'GET' && token()) headers['Authorization'] = 'Bearer ' + token();
  const r = await fetch(path, { method: opts.method || 'GET', headers,
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const detail = data && data.detail !== undefined ? (typeof data.detail === 'string' ? data.detail : JSON.stringify(data.detail))
      : (data && data.message) || r.statusText;
    const err = new Error(`${r.status}: ${detail}`);
    err.status = r.status; err.data = data;
    throw err;
  }
  return data;
}
async function act(label, path, opts) {
  try {
    const out = await api(path, opts);
    return out;
  } catch (e) {
    say(`${label} refused — ${e.message}`, 'error');
    throw e;
  }
}

// Our own SVG line chart: series = [{name, points: [[x, y], ...]}].
function lineChart(el, series, opts = {}) {
  const w = 640, h = opts.height || 220, pad = 40;
  const pts = series.flatMap((s) => s.points);
  if (!pts.length) { el.innerHTML = '<p class="note">no points yet</p>'; return; }
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y1 = y0 + 1; }
  const X = (x) => pad + (w - 2 * pad) * (x - x0) / (x1 - x0);
  const Y = (y) => h - pad + (2 * pad - h) * (y - y0) / (y1 - y0);
  const colors = ['#3b82f6', '#ef4444', '#10b981', '#f59e0b', '#a855f7'];
  const lines = series.map((s, i) => {
    const d = s.points.map((p, j) => `${j ? 'L' : 'M'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join('');
    const dots = s.points.length <= 60 ? s.points.map((p) => `<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="2.5" fill="${colors[i % 5]}"/>`).join('') : '';
    return `<path d="${d}" fill="none" stroke="${colors[i % 5]}" stroke-width="2"/>${dots}` +
      `<text x="${pad + 6 + 130 * i}" y="14" fill="${colors[i % 5]}" font-size="11">${esc(s.name)}</text>`;
  }).join('');
  el.innerHTML = `<svg viewBox="0 0 ${w} ${h}" class="svgchart">
    <line x1="${pad}" y1="${h - pad}" x2="${w - pad}" y2="${h - pad}" stroke="#888"/>
    <line x1="${pad}" y1="${pad}" x2="${pad}" y2="${h - pad}" stroke="#888"/>
    <text x="2" y="${Y(y1) + 4}" font-size="10">${fmt(y1, 3)}</text>
    <text x="2" y="${Y(y0) + 4}" font-size="10">${fmt(y0, 3)}</text>
    <text x="${pad}" y="${h - 8}" font-size="10">${fmt(x0, 0)}</text>
    <text x="${w - pad - 20}" y="${h - 8}" font-size="10">${fmt(x1, 0)} ${esc(opts.xlabel || '')}</text>
    ${lines}</svg>`;
}

// --- screens ---------------------------------------------------------------------------
function show(screen) {
  state.screen = screen;
  document.querySelectorAll('.screen').forEach((s) => { s.hidden = s.id !== 'screen-' + screen; });
  document.querySelectorAll('.tab').forEach((b) => b.classList.toggle('active', b.dataset.screen === screen));
  refresh();
}

async function refreshStatus() {
  const banners = [];
  try {
    const s = await api('/api/status');
    $('#foxglove-link').href = s.foxglove_url;
    state.nodes = s.ros.nodes || {};
    if (!s.ros.running) banners.push(`ROS is not connected (${s.ros.error || 'bridge not running'}): live results and capture are unavailable`);
    for (const [node, up] of Object.entries(s.ros.nodes || {})) {
      if (!up) banners.push(`node ${node} is down (not on the ROS graph)`);
    }
    if (!s.registry.reachable) banners.push(`registry not reachable: ${s.registry.problem}`);
  } catch (e) {
    banners.push(`dashboard server not reachable: ${e.message}`);
  }
  setHTML($('#banners'), banners.map((b) => `<div class="banner">${esc(b)}</div>`).join(''));
}

async function refreshLive() {
  let s;
  try { s = await api('/api/live'); } catch (e) {
    $('#conn').textContent = 'server unreachable'; $('#conn').dataset.state = 'no_frames'; return;
  }
  const conn = $('#conn');
  conn.dataset.state = s.connection.state;
  conn.textContent = s.connection.state === 'live' ? 'live' :
    (s.connection.state === 'waiting' ? 'waiting for the first verdict' : `NO FRAMES: ${s.connection.detail}`);
  const v = s.verdict;
  const vEl = $('#verdict');
  if (v) {
    vEl.textContent = v.status === 'not_inspected' ? `not inspected (${v.status_reason})` : `${v.defect_class} ${fmt(v.confidence)}`;
    vEl.dataset.action = v.action;
    kv($('#verdict-table'), [['action', `${v.action} (${v.action_reason})`], ['method', v.method],
      ['model', v.model_version || '–'], ['node latency', `${fmt(v.latency_ms, 1)} ms`],
      ['checks not made', (v.checks_not_made || []).join(', ') || 'none']]
      .concat(v.anomaly_score != null ? [['anomaly', `${fmt(v.anomaly_score)} (${v.anomaly_level || '–'}, ${v.anomaly_model_version || '–'})`]] : []));
  }
  const b = s.bead, spec = s.spec;
  if (b) {
    const tol = (val, target, t) => spec ? `${fmt(val)} mm (spec ${fmt(target)} ± ${fmt(t)})` : `${fmt(val)} mm`;
    kv($('#bead-table'), b.valid ? [
      ['width', tol(b.width_mm, spec && spec.target_width_mm, spec && spec.width_tolerance_mm)],
      ['height', tol(b.height_mm, spec && spec.target_height_mm, spec && spec.height_tolerance_mm)],
      ['undercut', `${fmt(b.undercut_depth_mm)} mm` + (spec ? ` (max ${fmt(spec.max_undercut_mm)})` : '')],
      ['within tolerance', b.within_tolerance ? 'yes' : 'NO', b.within_tolerance ? 'ok' : 'bad'],
      ['score', fmt(b.score, 0)]] : [['not measured', b.reason, 'bad']]);
  }
  kv($('#stats-table'), [['verdicts', s.verdicts_total], ['verdict rate', `${fmt(s.verdict_rate_hz, 1)} Hz`],
    ['camera→verdict p50 / p99', `${fmt(s.camera_to_verdict_ms.p50, 1)} / ${fmt(s.camera_to_verdict_ms.p99, 1)} ms`],
    ['node latency p50 / p99', `${fmt(s.node_latency_ms.p50, 1)} / ${fmt(s.node_latency_ms.p99, 1)} ms`],
    ['ML ratio', fmt(s.ml_invocation_ratio)]]);
  $('#verdict-count').textContent = s.verdicts_total;
  kv($('#counts-table'), Object.entries(s.counts).map(([c, n]) => [c, n])
    .concat(Object.entries(s.not_inspected).map(([r, n]) => [`not inspected: ${r}`, n])));
  const drops = [];
  for (const [node, reasons] of Object.entries(s.drops)) {
    for (const [r, n] of Object.entries(reasons)) if (n) drops.push([`${node.split(':')[0]} ${r}`, n]);
  }
  kv($('#drops-table'), drops.length ? drops : [['none', 0]]);
  const cs = s.cell_status;
  // weld/cell_status is latched: with its publisher gone, the last state is no longer news.
  const onnxDown = state.nodes.onnx_defect_node === false;
  const cellState = !cs ? 'unknown (no weld/cell_status)' : onnxDown ? `unknown: onnx_defect_node is down (last: ${cs.state})` : cs.state;
  kv($('#cell-table'), [['model version', s.model_version || 'none'],
    ['state', cellState, !cs || onnxDown || cs.state !== 'inspecting' ? 'bad' : ''],
    ['detail', cs ? cs.detail || '–' : '–'], ['model state', cs ? cs.model_state : '–'],
    ['model problem', cs && cs.model_problem ? cs.model_problem : '–', cs && cs.model_problem ? 'bad' : '']]);
  $('#model-version').textContent = s.model_version || 'none';
  if (s.anomaly_trend.length) {
    lineChart($('#anomaly-chart'), [{ name: 'anomaly', points: s.anomaly_trend.map((p, i) => [i, p.score]) }], { height: 120 });
  } else { $('#anomaly-chart').innerHTML = '<p class="note">no anomaly model serving</p>'; }
  const alarm = s.alarm;
  $('#alarm').hidden = !(alarm && !alarm.acknowledged);
  if (alarm) $('#alarm-text').textContent = `${alarm.defect_class}: ${alarm.reason}`;
  setHTML($('#history tbody'), s.history.map((h) => `<tr data-action="${esc(h.action)}"><td>${clock(h.stamp_s)}</td>
    <td>${esc(h.status === 'not_inspected' ? 'not inspected: ' + h.status_reason : h.defect_class)}</td><td>${fmt(h.confidence)}</td>
    <td>${esc(h.method)}</td><td>${esc(h.model_version || '')}</td><td>${esc(h.action)}</td></tr>`).join(''));
  const img = $('#debug-image');
  if (s.image_available && !img.dataset.streaming) {
    img.dataset.streaming = '1';
    img.src = '/api/live/stream.mjpeg';
  }
  $('#image-note').textContent = !s.image_available ? 'no debug image (the rule node publishes weld/debug_image when publish_debug_image is true)'
    : s.connection.state !== 'live' ? 'no new frames: the image is the last one received' : '';
}

async function refreshCapture() {
  if (!state.labels.length) {
    const l = await api('/api/capture/labels');
    state.labels = l.labels;
    $('#label-buttons').innerHTML = l.labels.map((c, i) => `<button class="label" data-label="${esc(c)}">${i + 1} · ${esc(c)}</button>`).join('');
    document.querySelectorAll('#label-buttons .label').forEach((b) => b.addEventListener('click', () => capture(b.dataset.label)));
  }
  try {
    const c = await api('/api/capture/counts');
    $('#bag-name').textContent = `${c.bag_name} · ${c.total} frames`;
    setHTML($('#capture-counts tbody'), Object.entries(c.counts).map(([cls, n]) => {
      const pct = Math.min(100, 100 * n / Math.max(1, c.min_samples_per_class));
      return `<tr data-class="${esc(cls)}"><td>${esc(cls)}</td><td class="count">${n}</td><td>${c.min_samples_per_class}</td>
        <td><div class="bar"><div style="width:${pct}%"></div></div></td></tr>`;
    }).join(''));
  } catch (e) {
    $('#bag-name').textContent = `capture node unavailable — ${e.message}`;
  }
}

async function capture(label) {
  try {
    const r = await act('capture', '/api/capture', { method: 'POST', body: { label, weld_id: $('#weld-id').value.trim() } });
    $('#capture-result').textContent = r.message;
    say(`captured ${label}`, 'ok');
  } catch (e) { $('#capture-result').textContent = e.message; }
  refreshCapture();
}

async function refreshReview() {
  const sel = $('#review-bag');
  const bags = await api('/api/review/bags').catch((e) => { $('#review-count').textContent = e.message; return []; });
  const options = bags.filter((b) => b.finished).map((b) => `<option value="${esc(b.name)}">${esc(b.name)} (${b.labelled}/${b.frames} labelled)</option>`).join('');
  if (setHTML(sel, options) && !review.bag && sel.value) openReview(sel.value);
  if (!bags.length) $('#review-count').textContent = 'no review bags (the review recorder writes them: review:=true)';
}

async function openReview(name) {
  const d = await api(`/api/review/bags/${encodeURIComponent(name)}`);
  review.bag = name; review.frames = d.frames; review.labels = d.labels;
  review.index = Math.max(0, d.frames.findIndex((f) => !f.label));
  $('#review-buttons').innerHTML = d.labels.map((c, i) => `<button class="label" data-label="${esc(c)}">${i + 1} · ${esc(c)}</button>`).join('');
  document.querySelectorAll('#review-buttons .label').forEach((b) => b.addEventListener('click', () => labelReview(b.dataset.label)));
  showReviewFrame();
}

function showReviewFrame() {
  const f = review.frames[review.index];
  $('#review-frame-card').hidden = !f;
  if (!f) return;
  $('#review-image').src = `/api/review/bags/${encodeURIComponent(review.bag)}/frames/${f.stamp_ns}.jpg`;
  $('#review-count').textContent = `frame ${review.index + 1} of ${review.frames.length}, ${review.frames.filter((x) => x.label).length} labelled`;
  kv($('#review-table'), [['stamp', clock(f.stamp_ns / 1e9)], ['reasons', f.reasons.join(', ')], ['rules said', f.rule_class || '–'],
    ['model said', f.ml_class || '–'], ['final verdict', `${f.final_class || '–'} (${fmt(f.confidence)})`], ['weld', f.weld_id || '–'],
    ['label', f.label || 'not yet', f.label ? 'ok' : '']]);
}

async function labelReview(label) {
  const f = review.frames[review.index];
  if (!f) return;
  try {
    await act('label', `/api/review/bags/${encodeURIComponent(review.bag)}/labels`, { method: 'POST', body: { stamp_ns: f.stamp_ns, label } });
    f.label = label;
    say(`frame ${review.index + 1} labelled ${label}`, 'ok');
    if (review.index < review.frames.length - 1) review.index += 1;
  } catch (e) { /* said */ }
  showReviewFrame();
}

async function refreshTraining() {
  const sel = $('#job-dataset');
  if (!sel.options.length) {
    const ds = await api('/api/training/datasets');
    sel.innerHTML = ds.map((d) => `<option value="${esc(d.name)}">${esc(d.name)} (${fmt(d.frames)} frames)</option>`).join('');
    const bags = await api('/api/training/bags');
    $('#job-bags').innerHTML = bags.map((b) => `<option value="${esc(b.name)}">${esc(b.name)}</option>`).join('');
  }
  const jobs = await api('/api/training/jobs');
  const changed = setHTML($('#jobs tbody'), jobs.map((j) => {
    const id = j.job_id || j.run_id;
    const pct = Math.round(100 * (j.progress || 0));
    const cancel = j.status === 'running' || j.status === 'starting'
      ? `<button class="cancel" data-job="${esc(j.job_id)}" ${j.job_id ? '' : 'disabled'}>cancel</button>` : '';
    return `<tr data-job="${esc(id)}" data-status="${esc(j.status)}"><td><a href="#" class="job-link" data-job="${esc(j.job_id)}" data-run="${esc(j.run_id)}">${esc(id)}</a></td>
      <td class="status">${esc(j.status)}</td><td>${j.epoch}/${j.total_epochs} <div class="bar"><div style="width:${pct}%"></div></div></td>
      <td>${j.eta_s != null ? fmt(j.eta_s / 60, 1) + ' min' : '–'}</td><td>${fmt((j.metrics || {}).val_macro_f1, 3)}</td><td>${cancel}</td></tr>`;
  }).join(''));
  if (changed) bindJobs();
  if (state.selectedJob) refreshJobDetail();
}

function bindJobs() {
  document.querySelectorAll('#jobs .cancel').forEach((b) => b.addEventListener('click', async () => {
    try { const r = await act('cancel', `/api/training/jobs/${encodeURIComponent(b.dataset.job)}/cancel`, { method: 'POST' }); say(r.detail, 'ok'); } catch (e) { /* said */ }
    refreshTraining();
  }));
  document.querySelectorAll('#jobs .job-link').forEach((a) => a.addEventListener('click', (ev) => {
    ev.preventDefault(); state.selectedJob = { job: a.dataset.job, run: a.dataset.run }; refreshJobDetail();
  }));
}

async function refreshJobDetail() {
  const sj = state.selectedJob;
  const d = sj.job ? await api(`/api/training/jobs/${encodeURIComponent(sj.job)}`) : await api(`/api/training/runs/${encodeURIComponent(sj.run)}`);
  $('#job-detail').hidden = false;
  $('#job-detail-name').textContent = `${d.job_id || d.run_id} · ${d.status} · epoch ${d.epoch}/${d.total_epochs}`;
  const c = d.curves || {};
  lineChart($('#chart-loss'), [['train/loss', 'train loss'], ['val/loss', 'val loss']]
    .filter(([t]) => c[t]).map(([t, n]) => ({ name: n, points: c[t] })), { xlabel: 'epoch' });
  lineChart($('#chart-step'), c['train/loss_step'] ? [{ name: 'train loss', points: c['train/loss_step'] }] : [], { xlabel: 'step' });
  lineChart($('#chart-val'), [['val/accuracy', 'accuracy'], ['val/macro_f1', 'macro-F1'], ['val/balanced_accuracy', 'balanced acc.']]
    .filter(([t]) => c[t]).map(([t, n]) => ({ name: n, points: c[t] })), { xlabel: 'epoch' });
  const rep = d.report;
  let report = '';
  if (rep && rep.per_class) {
    const names = rep.class_names || [];
    report = `<h3>report: accuracy ${fmt(rep.accuracy, 3)}, macro-F1 ${fmt(rep.macro_f1, 3)} (${esc(rep.split || 'test')} split)</h3>` +
      '<table class="list"><tr><th>class</th><th>precision</th><th>recall</th><th>f1</th></tr>' +
      Object.entries(rep.per_class).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${fmt(v.precision, 3)}</td><td>${fmt(v.recall, 3)}</td><td>${fmt(v.f1, 3)}</td></tr>`).join('') +
      '</table>';
    if (rep.confusion_matrix) {
      report += '<h3>confusion matrix (rows: true class, columns: predicted)</h3><table class="list">' +
        `<tr><th></th>${names.map((c) => `<th>${esc(c)}</th>`).join('')}</tr>` +
        rep.confusion_matrix.map((row, i) => `<tr><th>${esc(names[i] || '')}</th>${row.map((n) => `<td>${n}</td>`).join('')}</tr>`).join('') +
        '</table>';
    }
  } else if (d.per_class_f1 && Object.keys(d.per_class_f1).length) {
    report = '<h3>val F1 per class (last epoch)</h3><table class="list">' +
      Object.entries(d.per_class_f1).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${fmt(v, 3)}</td></tr>`).join('') + '</table>';
  }
  setHTML($('#job-report'), report);
  $('#job-log').textContent = (d.log_tail || []).join('\n');
}

async function startJob(ev) {
  ev.preventDefault();
  const body = { source: $('#job-source').value, dataset: $('#job-dataset').value,
    bags: [...$('#job-bags').selectedOptions].map((o) => o.value), model: $('#job-model').value, channels: $('#job-channels').value,
    epochs: parseInt($('#job-epochs').value, 10), name: $('#job-name').value.trim(),
    overrides: $('#job-overrides').value.split('\n').map((s) => s.trim()).filter((s) => s) };
  try {
    const j = await act('start training', '/api/training/jobs', { method: 'POST', body });
    say(`training job ${j.job_id} started`, 'ok');
    state.selectedJob = { job: j.job_id, run: '' };
  } catch (e) { /* said */ }
  refreshTraining();
}

async function refreshModels() {
  const [m, live] = await Promise.all([api('/api/models'), api('/api/live').catch(() => null)]);
  const serving = live ? live.model_version : '';
  $('#node-model').textContent = `${m.node} serves: ${serving || 'no model'}`;
  const changed = setHTML($('#models tbody'), m.models.map((x) => `<tr data-version="${esc(x.version)}" class="${x.version === serving ? 'serving' : ''}">
    <td><input type="checkbox" class="pick" data-version="${esc(x.version)}" ${state.compare.has(x.version) ? 'checked' : ''}></td>
    <td>${esc(x.version)}</td><td>${esc(x.status)}${x.version === serving ? ' · serving' : ''}</td><td>${fmt(x.metrics.macro_f1, 3)}</td><td>${fmt(x.metrics.accuracy, 3)}</td>
    <td>${x.deployed_at ? new Date(x.deployed_at * 1000).toLocaleTimeString() : '–'}</td>
    <td><button class="deploy" data-version="${esc(x.version)}">deploy</button>
        <button class="promote" data-version="${esc(x.version)}">promote</button>
        <button class="delete" data-version="${esc(x.version)}">delete</button></td></tr>`).join(''));
  if (changed) bindModels();
}

function bindModels() {
  document.querySelectorAll('#models .pick').forEach((c) => c.addEventListener('change', () => {
    if (c.checked) state.compare.add(c.dataset.version); else state.compare.delete(c.dataset.version);
  }));
  document.querySelectorAll('#models .deploy').forEach((b) => b.addEventListener('click', () => deploy(b.dataset.version)));
  document.querySelectorAll('#models .promote').forEach((b) => b.addEventListener('click', async () => {
    try { await act('promote', `/api/models/${encodeURIComponent(b.dataset.version)}/promote`, { method: 'POST' }); say(`${b.dataset.version} is the active model`, 'ok'); } catch (e) { /* said */ }
    refreshModels();
  }));
  document.querySelectorAll('#models .delete').forEach((b) => b.addEventListener('click', async () => {
    try { await act('delete', `/api/models/${encodeURIComponent(b.dataset.version)}`, { method: 'DELETE' }); say(`${b.dataset.version} deleted`, 'ok'); } catch (e) { /* said */ }
    refreshModels();
  }));
}

function showDeployAnswer(r) {
  const el = $('#deploy-answer');
  el.dataset.accepted = r.accepted ? 'true' : 'false';
  el.textContent = r.accepted ? `${r.node} accepted ${r.version}` + (r.rolled_back_from ? ` (rolled back from ${r.rolled_back_from})` : '')
    : `${r.node} REFUSED ${r.version}: ${r.reason}`;
}

async function deploy(version) {
  $('#deploy-answer').textContent = `deploying ${version}…`;
  $('#deploy-answer').dataset.accepted = '';
  try { showDeployAnswer(await act('deploy', `/api/models/${encodeURIComponent(version)}/deploy`, { method: 'POST' })); }
  catch (e) { $('#deploy-answer').textContent = `deploy of ${version} not attempted: ${e.message}`; $('#deploy-answer').dataset.accepted = 'error'; }
  refreshModels();
}

async function rollback() {
  $('#deploy-answer').textContent = 'rolling back…';
  try { showDeployAnswer(await act('roll back', '/api/models/rollback', { method: 'POST' })); }
  catch (e) { $('#deploy-answer').textContent = `roll back not done: ${e.message}`; $('#deploy-answer').dataset.accepted = 'error'; }
  refreshModels();
}

async function compare() {
  const versions = [...state.compare];
  try {
    const c = await act('compare', '/api/models/compare?' + versions.map((v) => 'versions=' + encodeURIComponent(v)).join('&'));
    $('#compare-card').hidden = false;
    $('#compare-table').innerHTML = `<tr><th>metric</th>${c.versions.map((v) => `<th>${esc(v)}</th>`).join('')}</tr>` +
      c.rows.map((r) => `<tr><td>${esc(r.metric)}</td>${r.values.map((v) => `<td>${fmt(v, 3)}</td>`).join('')}</tr>`).join('');
  } catch (e) { /* said */ }
}

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    await refreshStatus();
    if (state.screen === 'live') await refreshLive();
    else { await refreshLive().catch(() => {}); }
    if (state.screen === 'capture') await refreshCapture();
    if (state.screen === 'training') await refreshTraining();
    if (state.screen === 'review') await refreshReview();
    if (state.screen === 'models') await refreshModels();
  } catch (e) {
    say(`refresh failed: ${e.message}`, 'error');
  } finally { busy = false; }
}

window.addEventListener('DOMContentLoaded', () => {
  $('#token').value = sessionStorage.getItem('weld_token') || '';
  $('#token').addEventListener('change', () => sessionStorage.setItem('weld_token', token()));
  document.querySelectorAll('.tab').forEach((b) => b.addEventListener('click', () => show(b.dataset.screen)));
  $('#job-form').addEventListener('submit', startJob);
  $('#job-source').addEventListener('change', () => {
    const bags = $('#job-source').value === 'bags';
    $('#job-bags-label').hidden = !bags;
    $('#job-dataset-label').hidden = bags;
  });
  $('#compare').addEventListener('click', compare);
  $('#rollback').addEventListener('click', rollback);
  $('#alarm-ack').addEventListener('click', async () => { try { await act('acknowledge', '/api/live/alarm/ack', { method: 'POST' }); } catch (e) { /* said */ } });
  document.addEventListener('keydown', (ev) => {
    if (ev.target.tagName === 'INPUT' || ev.target.tagName === 'TEXTAREA') return;
    const i = parseInt(ev.key, 10);
    if (state.screen === 'capture' && i >= 1 && i <= state.labels.length) capture(state.labels[i - 1]);
    if (state.screen === 'review') {
      if (i >= 1 && i <= review.labels.length) labelReview(review.labels[i - 1]);
      if (ev.key === 'ArrowRight' && review.index < review.frames.length - 1) { review.index += 1; showReviewFrame(); }
      if (ev.key === 'ArrowLeft' && review.index > 0) { review.index -= 1; showReviewFrame(); }
    }
  });
  $('#review-bag').addEventListener('change', () => openReview($('#review-bag').value));
  $('#review-prev').addEventListener('click', () => { if (review.index > 0) { review.index -= 1; showReviewFrame(); } });
  $('#review-next').addEventListener('click', () => { if (review.index < review.frames.length - 1) { review.index += 1; showReviewFrame(); } });
  const screen = (location.hash || '#live').slice(1);
  show(['live', 'capture', 'review', 'training', 'models'].includes(screen) ? screen : 'live');
  setInterval(refresh, 1000);
});
