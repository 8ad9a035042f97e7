// kiln review: one crawled image at a time, keep or reject, least sure first.
// The server owns every decision (files in the labels folder); this page only walks the queue.
'use strict';

const BASE = location.pathname.replace(/\/+$/, '');   // .../review, wherever the router is mounted
const HISTORY_SHOWN = 16;
const UPCOMING_SHOWN = 8;

const view = {
  state: null,          // /api/state
  cls: null,            // the class under review
  items: [],            // its queue, review order
  current: null,        // the item on screen
  skipped: new Set(),   // ids skipped this visit (they come back once nothing else is left)
  history: [],          // ids decided on this page, newest last
  byId: new Map(),      // id -> item, every class loaded so far
  busy: false,          // a decision in flight: keys wait for it
};

const $ = (id) => document.getElementById(id);

async function api(path, options) {
  const response = await fetch(BASE + '/api/' + path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.detail || body.error || `${response.status} ${response.statusText}`);
  }
  return body;
}

function fmt(value, digits = 3) {
  return value === null || value === undefined ? '–' : Number(value).toFixed(digits);
}

// Text with `code` spans as <code>, built from text nodes (no HTML from the server is parsed).
function setTextWithCode(element, text) {
  element.replaceChildren(...text.split('`').map((part, k) => {
    if (k % 2 === 0) return document.createTextNode(part);
    const code = document.createElement('code');
    code.textContent = part;
    return code;
  }));
}

function showStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

// --- header, note, footer, tabs --------------------------------------------------------
function renderState() {
  const s = view.state;
  $('filter-name').textContent = `· filter ${s.filter}`;
  $('heldout').textContent = heldoutText(s.heldout);
  $('note').hidden = !s.note;
  setTextWithCode($('note'), s.note ? `${s.note}.` : '');
  $('order').textContent = s.order === 'uncertainty'
    ? `Least sure first: ordered by ${s.scored_by} (${s.vote} vote; keeps at score ≥ ${s.threshold}).`
    : `No trained ensemble to order by${s.scores_error ? ` (${s.scores_error})` : ''}: crawl order.`;
  $('folder').textContent = `Decisions are files in ${s.folder}/keep and ${s.folder}/reject.`;
  setTextWithCode($('retrain'), `To retrain the filter on them: ${s.retrain}.`);
  renderTabs();
}

function heldoutText(h) {
  if (!h) return 'held-out scores: none yet (no metrics/filter.json for this filter: it has not been trained)';
  if (!h.n) return `held-out scores: none (trained on ${h.n_train} labelled images, too few to hold any out)`;
  return `held-out scores (reject is positive; ${h.n} images, ${h.n_reject} rejects; trained on ${h.n_train}): ` +
    `precision ${fmt(h.precision)} · recall ${fmt(h.recall)} · F1 ${fmt(h.f1)} · ` +
    `share of keeps it keeps ${fmt(h.keep_recall)}`;
}

function renderTabs() {
  const nav = $('classes');
  nav.replaceChildren();
  Object.entries(view.state.counts).forEach(([cls, c], k) => {
    const tab = document.createElement('button');
    tab.type = 'button';
    tab.className = 'tab' + (cls === view.cls ? ' active' : '');
    tab.dataset.cls = cls;
    tab.innerHTML = `<b></b> <span class="count"></span>`;
    tab.querySelector('b').textContent = `${k + 1} ${cls}`;
    tab.querySelector('.count').textContent =
      `${c.reviewed}/${c.total} reviewed · ${c.kept} kept · ${c.rejected} rejected`;
    tab.addEventListener('click', () => openClass(cls));
    nav.append(tab);
  });
}

// --- the queue --------------------------------------------------------------------------
async function openClass(cls) {
  view.cls = cls;
  view.skipped.clear();
  renderTabs();
  showStatus('loading…');
  const queue = await api('queue/' + encodeURIComponent(cls));
  view.items = queue.items;
  queue.items.forEach((item) => view.byId.set(item.id, item));
  showStatus('');
  show(nextUndecided());
}

function nextUndecided() {
  const open = view.items.filter((item) => !item.decision);
  const fresh = open.filter((item) => !view.skipped.has(item.id));
  if (!fresh.length) view.skipped.clear();
  return (fresh.length ? fresh : open)[0] || null;
}

function show(item) {
  view.current = item;
  const img = $('current');
  const left = view.items.filter((i) => !i.decision).length;
  $('progress').textContent = `${view.cls}: ${left} of ${view.items.length} left to review`;
  if (!item) {
    img.removeAttribute('src');
    img.hidden = true;
    $('caption').textContent = `Every ${view.cls} image is reviewed. ${view.state.retrain}.`;
    renderLists();
    return;
  }
  img.hidden = false;
  img.src = imageUrl(item);
  img.alt = `${item.class} ${item.name}`;
  img.className = item.decision || '';
  $('caption').replaceChildren(...captionParts(item));
  renderLists();
}

function imageUrl(item) {
  return BASE + '/api/image/' + item.id;
}

function captionParts(item) {
  const parts = [];
  const add = (text, cls) => {
    const span = document.createElement('span');
    span.textContent = text;
    if (cls) span.className = cls;
    parts.push(span);
  };
  add(`${item.class} · ${item.name}`);
  if (item.score !== null) {
    add(`ensemble score ${fmt(item.score)} → it would ${item.ensemble}`, 'ensemble ' + item.ensemble);
  }
  if (item.quality.length) add(`quality checks: ${item.quality.join(', ')}`, 'quality');
  if (item.decision) add(`your decision: ${item.decision}`, 'decided ' + item.decision);
  return parts;
}

function renderLists() {
  const recent = view.history.slice(-HISTORY_SHOWN).reverse().map((id) => view.byId.get(id));
  fillThumbs($('history'), recent, true);
  const current = view.current && view.current.id;
  const upcoming = view.items.filter((i) => !i.decision && i.id !== current).slice(0, UPCOMING_SHOWN);
  fillThumbs($('upcoming'), upcoming, false);
  upcoming.slice(0, 3).forEach((item) => { new Image().src = imageUrl(item); });   // preload
}

function fillThumbs(list, items, clickable) {
  list.replaceChildren(...items.map((item) => {
    const li = document.createElement('li');
    const img = document.createElement('img');
    img.src = imageUrl(item);
    img.alt = item.name;
    img.title = `${item.class} ${item.name}` + (item.decision ? ` · ${item.decision}` : '');
    li.className = item.decision || '';
    li.dataset.id = item.id;
    li.append(img);
    if (clickable) li.addEventListener('click', () => revisit(item.id));
    return li;
  }));
}

// --- decisions --------------------------------------------------------------------------
async function decide(decision) {
  const item = view.current;
  if (!item || view.busy) return;
  view.busy = true;
  try {
    const result = await api('decisions', {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({id: item.id, decision}),
    });
    item.decision = result.decision;
    Object.assign(view.state.counts, result.counts);
    view.history = view.history.filter((id) => id !== item.id);
    if (decision !== 'none') view.history.push(item.id);
    showStatus(result.file ? `${decision}: saved as ${result.file}` : 'decision taken back');
    renderTabs();
    return result;
  } catch (err) {
    showStatus(`not saved: ${err.message}`, true);
    return null;
  } finally {
    view.busy = false;
  }
}

async function decideAndAdvance(decision) {
  if (await decide(decision)) show(nextUndecided());
}

async function undo() {
  const id = view.history[view.history.length - 1];
  if (!id || view.busy) return;
  await revisit(id);
  if (await decide('none')) show(view.byId.get(id));
}

async function revisit(id) {
  const item = view.byId.get(id);
  if (item.class !== view.cls) await openClass(item.class);
  show(view.byId.get(id));
}

function skip() {
  if (!view.current) return;
  view.skipped.add(view.current.id);
  show(nextUndecided());
}

// --- keys and buttons -------------------------------------------------------------------
const KEYS = {
  k: () => decideAndAdvance('keep'),
  r: () => decideAndAdvance('reject'),
  u: undo, Backspace: undo, ArrowLeft: undo,
  s: skip, ArrowRight: skip,
};

document.addEventListener('keydown', (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  const classes = Object.keys(view.state ? view.state.counts : {});
  if (/^[1-9]$/.test(key) && classes[Number(key) - 1]) {
    event.preventDefault();
    openClass(classes[Number(key) - 1]);
  } else if (KEYS[key]) {
    event.preventDefault();
    KEYS[key]();
  }
});
$('keep').addEventListener('click', () => decideAndAdvance('keep'));
$('reject').addEventListener('click', () => decideAndAdvance('reject'));
$('undo').addEventListener('click', undo);
$('skip').addEventListener('click', skip);

async function start() {
  try {
    view.state = await api('state');
    renderState();
    const classes = Object.keys(view.state.counts);
    if (classes.length) await openClass(classes[0]);
    document.body.dataset.ready = 'true';    // for tests: the first image is on screen
  } catch (err) {
    showStatus(`cannot load the review: ${err.message}`, true);
  }
}

start();
