// The atopen studio: sign in with an API token, look at blocks as any reader would,
// edit and save them, read their stats and copy their snippet for an email service.
// Plain ES modules with Preact and htm (vendored under vendor/): no build step.
import { h, render } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import htm from 'htm';

const html = htm.bind(h);

// Session storage: the token lasts as long as the tab, is never in a URL, and is not
// shared with other tabs or kept after the browser closes.
const TOKEN_KEY = 'atopen.studio.token';
const CLIENTS = [
  { kind: 'browser', label: "Reader's own client" },
  { kind: 'apple_mpp', label: 'Apple Mail prefetch' },
  { kind: 'gmail_proxy', label: 'Gmail image proxy' },
  // Outlook for Windows shows only an animated GIF's first frame: shown as a still.
  { kind: 'outlook_desktop', label: 'Outlook (first frame)', still: true },
];
const SERVICES = [
  ['braze', 'Braze'],
  ['sfmc', 'Salesforce Marketing Cloud'],
  ['klaviyo', 'Klaviyo'],
  ['mailchimp', 'Mailchimp'],
  ['iterable', 'Iterable'],
  ['hubspot', 'HubSpot'],
  ['generic', 'Any other service'],
];
const READER_FIELDS = ['recipient', 'params', 'tz', 'location'];
const MAX_PREVIEWS = 48;
const PREVIEWS_AT_ONCE = 4;
const STATS_DAYS = 30;

class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.details = error.details || [];
  }
}

async function call(token, path, { method = 'GET', body, accept = 'application/json' } = {}) {
  const headers = { Authorization: `Bearer ${token}`, Accept: accept };
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload, cache: 'no-store' });
  if (!response.ok) {
    let error = { code: `http_${response.status}`, message: response.statusText };
    try {
      const answer = await response.json();
      if (answer && answer.error) error = answer.error;
    } catch {
      // Not a JSON error: the status says enough.
    }
    throw new ApiError(response.status, error);
  }
  return response;
}

async function json(token, path, options) {
  return (await call(token, path, options)).json();
}

// Who the token belongs to. Servers without scoped tokens have no /api/v1/me: their
// tokens have full access.
async function whoAmI(token) {
  try {
    const me = await json(token, '/api/v1/me');
    const scopes = me.scopes || [];
    return { name: me.name, scopes, canSave: scopes.includes('blocks') || scopes.includes('admin') };
  } catch (error) {
    if (error.status === 404) return { name: null, scopes: null, canSave: true };
    throw error;
  }
}

function App() {
  const [token, setToken] = useState(() => sessionStorage.getItem(TOKEN_KEY));
  const [me, setMe] = useState(null);
  const [problem, setProblem] = useState(null);
  const [blockId, setBlockId] = useState(null);

  useEffect(() => {
    if (!token || me) return;
    whoAmI(token).then(setMe, (error) => {
      signOut(error.status === 401 ? 'That token is no longer accepted: sign in again.' : error.message);
    });
  }, [token, me]);

  function signIn(newToken, identity) {
    sessionStorage.setItem(TOKEN_KEY, newToken);
    setProblem(null);
    setMe(identity);
    setToken(newToken);
  }

  function signOut(message = null) {
    sessionStorage.removeItem(TOKEN_KEY);
    setToken(null);
    setMe(null);
    setBlockId(null);
    setProblem(message);
  }

  if (!token) return html`<${SignIn} onSignedIn=${signIn} problem=${problem} />`;
  if (!me) return html`<p class="loading">Signing in…</p>`;
  return html`
    <header class="top">
      <h1><button class="link" onClick=${() => setBlockId(null)}>atopen studio</button></h1>
      <span class="who">
        ${me.name ? html`Signed in as <strong>${me.name}</strong>` : 'Signed in'}
        ${!me.canSave && html` <span class="badge" id="read-only">read-only</span>`}
      </span>
      <button id="sign-out" onClick=${() => signOut()}>Sign out</button>
    </header>
    ${!me.canSave &&
    html`<p class="notice">This token can look at blocks and previews but not save them.</p>`}
    ${blockId
      ? html`<${BlockView} key=${blockId} token=${token} id=${blockId} canSave=${me.canSave}
          onBack=${() => setBlockId(null)} />`
      : html`<${BlockList} token=${token} onOpen=${setBlockId} />`}
  `;
}

function SignIn({ onSignedIn, problem }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState(problem);
  const [busy, setBusy] = useState(false);

  async function submit(event) {
    event.preventDefault();
    const token = value.trim();
    if (!token) return setError('Paste an API token first.');
    setBusy(true);
    try {
      await call(token, '/api/v1/blocks');
      onSignedIn(token, await whoAmI(token));
    } catch (failure) {
      setError(failure.status === 401 ? 'That token was not accepted.' : failure.message);
      setBusy(false);
    }
  }

  return html`
    <form class="sign-in" onSubmit=${submit}>
      <h1>atopen studio</h1>
      <label for="token">API token</label>
      <input id="token" type="password" autocomplete="off" value=${value}
        onInput=${(e) => setValue(e.target.value)} />
      <p class="hint">Kept in this tab only (session storage), never in the address bar.</p>
      ${error && html`<p class="error" id="sign-in-error">${error}</p>`}
      <button type="submit" disabled=${busy}>Sign in</button>
    </form>
  `;
}

function BlockList({ token, onOpen }) {
  const [blocks, setBlocks] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    json(token, '/api/v1/blocks').then((answer) => setBlocks(answer.blocks), (e) => setError(e.message));
  }, [token]);

  if (error) return html`<p class="error">${error}</p>`;
  if (!blocks) return html`<p class="loading">Loading blocks…</p>`;
  if (!blocks.length) return html`<p>No blocks yet: register one with <code>PUT /api/v1/blocks/ID</code>.</p>`;
  return html`
    <table class="blocks" id="blocks">
      <thead><tr><th>Block</th><th>Variants</th><th>Last change</th></tr></thead>
      <tbody>
        ${blocks.map((block) => html`
          <tr key=${block.id} data-block=${block.id}>
            <td><button class="link open-block" onClick=${() => onOpen(block.id)}>${block.id}</button>
              <div class="hint">${block.definition.description || ''}</div></td>
            <td>${variantNames(block.definition).join(', ')}</td>
            <td>${when(block.updated_at)} <span class="hint">(version ${block.version})</span></td>
          </tr>`)}
      </tbody>
    </table>
  `;
}

function variantNames(definition) {
  return [...(definition.variants || []).map((variant) => variant.name), 'default'];
}

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function BlockView({ token, id, canSave, onBack }) {
  const [block, setBlock] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    json(token, `/api/v1/blocks/${encodeURIComponent(id)}`).then(setBlock, (e) => setError(e.message));
  }, [token, id]);

  if (error) return html`<p class="error">${error}</p>`;
  if (!block) return html`<p class="loading">Loading ${id}…</p>`;
  return html`
    <p><button class="link" onClick=${onBack}>← All blocks</button></p>
    <h2 id="block-title">${block.id} <span class="hint">version ${block.version}, changed ${when(block.updated_at)}</span></h2>
    <${Previews} token=${token} block=${block} />
    <${Editor} token=${token} block=${block} canSave=${canSave} onSaved=${setBlock} />
    <${Stats} token=${token} id=${block.id} />
    <${SnippetPanel} token=${token} id=${block.id} />
  `;
}

// ----- previews -----

function parseReaders(text) {
  const readers = [];
  const problems = [];
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (!line) return;
    if (!line.startsWith('{')) {
      readers.push({ label: line, fields: { recipient: line } });
      return;
    }
    try {
      const fields = JSON.parse(line);
      const unknown = Object.keys(fields).filter((name) => !READER_FIELDS.includes(name));
      if (unknown.length) throw new Error(`unknown field ${unknown.join(', ')} (use ${READER_FIELDS.join(', ')})`);
      readers.push({ label: fields.recipient || `reader on line ${index + 1}`, fields });
    } catch (failure) {
      problems.push(`line ${index + 1}: ${failure.message}`);
    }
  });
  if (!readers.length) readers.push({ label: 'anyone (no recipient data)', fields: {} });
  return { readers, problems };
}

// Countdown ends written as fixed times (not templates), for "after the countdown".
function countdownEnds(definition) {
  const variants = [...(definition.variants || []), definition.default || {}];
  const ends = [];
  for (const variant of variants) {
    for (const layer of variant.layers || []) {
      if (layer.type !== 'countdown' || typeof layer.until !== 'string' || layer.until.includes('{')) continue;
      const end = Date.parse(layer.until);
      if (Number.isNaN(end)) continue;
      // A time without an offset is the reader's wall clock: past it in every zone.
      const zoned = /([zZ]|[+-]\d\d:?\d\d)$/.test(layer.until);
      const hours = (layer.plus_hours || 0) + (zoned ? 0 : 14);
      ends.push(end + hours * 3_600_000 + 60_000);
    }
  }
  return ends.length ? Math.max(...ends) : null;
}

function previewTimes(choice, block) {
  const now = Date.now();
  const times = [];
  if (choice.now) times.push({ key: 'now', label: 'Now', at: null });
  if (choice.hour) times.push({ key: 'hour', label: 'In an hour', at: new Date(now + 3_600_000).toISOString() });
  const end = countdownEnds(block.definition);
  if (choice.countdown && end !== null) {
    times.push({ key: 'countdown', label: 'After the countdown ends', at: new Date(end).toISOString() });
  }
  if (choice.moment && choice.momentValue) {
    const at = new Date(choice.momentValue);
    if (!Number.isNaN(at.getTime())) times.push({ key: 'moment', label: at.toLocaleString(), at: at.toISOString() });
  }
  return times;
}

async function inTurns(jobs, atOnce) {
  let next = 0;
  async function worker() {
    while (next < jobs.length) await jobs[next++]();
  }
  await Promise.all(Array.from({ length: Math.min(atOnce, jobs.length) }, worker));
}

function Previews({ token, block }) {
  const [readersText, setReadersText] = useState('');
  const [times, setTimes] = useState({ now: true, hour: false, countdown: false, moment: false, momentValue: '' });
  const [clients, setClients] = useState({ browser: true });
  const [dpr, setDpr] = useState(1);
  const [cells, setCells] = useState([]);
  const [profileId, setProfileId] = useState('');
  const [profileProblem, setProfileProblem] = useState(null);
  const round = useRef(0);

  const { readers, problems } = useMemo(() => parseReaders(readersText), [readersText]);
  const hasCountdown = countdownEnds(block.definition) !== null;

  useEffect(() => {
    const mine = ++round.current;
    const chosenTimes = previewTimes(times, block);
    const chosenClients = CLIENTS.filter((client) => clients[client.kind]);
    const planned = [];
    for (const reader of readers) {
      for (const time of chosenTimes) {
        for (const client of chosenClients) {
          planned.push({ key: `${reader.label}|${time.key}|${client.kind}`, reader, time, client, version: block.version, state: 'loading' });
        }
      }
    }
    const shown = planned.slice(0, MAX_PREVIEWS);
    setCells(shown);
    const urls = [];
    const update = (key, change) => {
      if (round.current !== mine) return;
      setCells((all) => all.map((cell) => (cell.key === key ? { ...cell, ...change } : cell)));
    };
    const jobs = shown.map((cell) => async () => {
      if (round.current !== mine) return;
      const body = { ...cell.reader.fields, dpr, client: { kind: cell.client.kind } };
      if (cell.time.at) body.at = cell.time.at;
      if (cell.client.still && block.definition.format === 'gif') body.format = 'png';
      const path = `/api/v1/blocks/${encodeURIComponent(block.id)}/preview`;
      try {
        const why = await json(token, path, { method: 'POST', body });
        const image = await (await call(token, path, { method: 'POST', body, accept: 'image/*' })).blob();
        const url = URL.createObjectURL(image);
        urls.push(url);
        update(cell.key, { state: 'done', url, why });
      } catch (failure) {
        update(cell.key, { state: 'failed', error: failure.message });
      }
    });
    inTurns(jobs, PREVIEWS_AT_ONCE);
    return () => urls.forEach((url) => URL.revokeObjectURL(url));
  }, [token, block, readers, times, clients, dpr]);

  async function addProfile(event) {
    event.preventDefault();
    const rid = profileId.trim();
    if (!rid) return;
    try {
      await call(token, `/api/v1/profiles/${encodeURIComponent(rid)}`);
      setReadersText((text) => (text.trim() ? `${text.trim()}\n${rid}` : rid));
      setProfileId('');
      setProfileProblem(null);
    } catch (failure) {
      setProfileProblem(failure.status === 404 ? `No stored profile "${rid}".` : failure.message);
    }
  }

  const expectedWidth = block.definition.width * dpr;
  const expectedHeight = block.definition.height * dpr;
  return html`
    <section class="previews">
      <h3>Previews</h3>
      <div class="controls">
        <fieldset>
          <legend>Readers</legend>
          <form onSubmit=${addProfile} class="inline">
            <input id="profile-id" placeholder="stored recipient id" value=${profileId}
              onInput=${(e) => setProfileId(e.target.value)} />
            <button type="submit">Add profile</button>
          </form>
          ${profileProblem && html`<p class="error">${profileProblem}</p>`}
          <textarea id="readers" rows="4" spellcheck="false"
            placeholder=${'One a line: a recipient id, or JSON such as\n{"params": {"coupon": "SPRING"}, "tz": "Europe/Warsaw"}'}
            value=${readersText} onChange=${(e) => setReadersText(e.target.value)}></textarea>
          ${problems.map((problem) => html`<p class="error">${problem}</p>`)}
        </fieldset>
        <fieldset>
          <legend>Times</legend>
          <label><input type="checkbox" checked=${times.now} onChange=${(e) => setTimes({ ...times, now: e.target.checked })} /> Now</label>
          <label><input type="checkbox" checked=${times.hour} onChange=${(e) => setTimes({ ...times, hour: e.target.checked })} /> In an hour</label>
          <label title=${hasCountdown ? '' : 'This block has no countdown with a fixed end.'}>
            <input type="checkbox" disabled=${!hasCountdown} checked=${times.countdown && hasCountdown}
              onChange=${(e) => setTimes({ ...times, countdown: e.target.checked })} /> After the countdown ends</label>
          <label><input type="checkbox" checked=${times.moment} onChange=${(e) => setTimes({ ...times, moment: e.target.checked })} /> At
            <input type="datetime-local" value=${times.momentValue}
              onChange=${(e) => setTimes({ ...times, moment: true, momentValue: e.target.value })} /></label>
        </fieldset>
        <fieldset>
          <legend>Clients</legend>
          ${CLIENTS.map((client) => html`
            <label key=${client.kind}><input type="checkbox" name="client" value=${client.kind} checked=${!!clients[client.kind]}
              onChange=${(e) => setClients({ ...clients, [client.kind]: e.target.checked })} /> ${client.label}</label>`)}
          <label>Pixel ratio <select id="dpr" value=${dpr} onChange=${(e) => setDpr(Number(e.target.value))}>
            <option value="1">1×</option><option value="2">2× (retina)</option><option value="3">3×</option>
          </select></label>
        </fieldset>
      </div>
      ${cells.length === MAX_PREVIEWS && html`<p class="hint">Showing the first ${MAX_PREVIEWS} combinations.</p>`}
      <div class="grid" id="previews">
        ${cells.map((cell) => html`
          <figure class="preview" key=${cell.key} data-state=${cell.state} data-version=${cell.version}
            data-reader=${cell.reader.label} data-time=${cell.time.key} data-client=${cell.client.kind}
            data-variant=${cell.why ? cell.why.variant : ''}>
            <div class="frame">
              ${cell.state === 'done'
                ? html`<img src=${cell.url} alt=${`${block.id} for ${cell.reader.label}`}
                    data-expected-width=${expectedWidth} data-expected-height=${expectedHeight} />`
                : html`<span class=${cell.state === 'failed' ? 'error' : 'hint'}>${cell.state === 'failed' ? cell.error : 'Rendering…'}</span>`}
            </div>
            <figcaption>
              <div class="hint">${cell.reader.label} · ${cell.time.label} · ${cell.client.label}</div>
              ${cell.why && html`<div>Variant <strong class="variant">${cell.why.variant}</strong></div>
                <ul class="trace">${cell.why.trace.map((step) => html`<li class=${step.chosen ? 'chosen' : 'skipped'}>${explain(step)}</li>`)}</ul>`}
            </figcaption>
          </figure>`)}
      </div>
    </section>
  `;
}

// A preview trace step in words.
function explain(step) {
  const reason = step.reason.replaceAll('`', '');
  return step.chosen ? `${step.variant}: chosen, ${reason}` : `${step.variant}: passed over, ${reason}`;
}

// ----- editor -----

// The line of each field path of a JSON text (`variants[0].layers[1].color`), for
// showing the server's problems where they are. The text is the one that was sent.
function fieldLines(text) {
  const lines = new Map();
  let at = 0;
  let line = 1;
  const skip = () => {
    while (at < text.length && ' \t\r\n'.includes(text[at])) {
      if (text[at] === '\n') line++;
      at++;
    }
  };
  const string = () => {
    const start = at;
    at++;
    while (at < text.length && text[at] !== '"') at += text[at] === '\\' ? 2 : 1;
    at++;
    try {
      return JSON.parse(text.slice(start, at));
    } catch {
      return text.slice(start + 1, at - 1);
    }
  };
  const value = (path, depth) => {
    if (depth > 200) throw new Error('too deep');
    skip();
    if (!lines.has(path)) lines.set(path, line);
    const c = text[at];
    if (c === '{' || c === '[') {
      at++;
      let index = 0;
      for (;;) {
        skip();
        if (at >= text.length) return;
        if (text[at] === '}' || text[at] === ']') {
          at++;
          return;
        }
        if (c === '{') {
          if (text[at] !== '"') throw new Error('expected a name');
          const keyLine = line;
          const name = string();
          const child = path ? `${path}.${name}` : name;
          lines.set(child, keyLine);
          skip();
          at++; // the colon
          value(child, depth + 1);
        } else {
          value(`${path}[${index++}]`, depth + 1);
        }
        skip();
        if (text[at] === ',') at++;
      }
    } else if (c === '"') {
      string();
    } else {
      while (at < text.length && !',}]\n'.includes(text[at])) at++;
    }
  };
  try {
    value('', 0);
  } catch {
    // A text that is not JSON: what was found so far is still right.
  }
  return lines;
}

function lineOf(text, lines, problem) {
  const position = /at position (\d+)/.exec(problem.message || '');
  if (problem.field === 'body' && position) return text.slice(0, Number(position[1])).split('\n').length;
  let path = problem.field;
  while (path) {
    if (lines.has(path)) return lines.get(path);
    path = path.replace(/(\[\d+\]|\.?[^.[\]]*)$/, '');
  }
  return 1;
}

function Editor({ token, block, canSave, onSaved }) {
  const [text, setText] = useState(() => JSON.stringify(block.definition, null, 2));
  const [problems, setProblems] = useState([]);
  const [notice, setNotice] = useState(null);
  const [busy, setBusy] = useState(false);
  const area = useRef(null);
  const gutter = useRef(null);

  const lineCount = text.split('\n').length;
  const marked = new Map(problems.map((problem) => [problem.line, problem]));

  async function save() {
    setBusy(true);
    setNotice(null);
    try {
      const saved = await json(token, `/api/v1/blocks/${encodeURIComponent(block.id)}`, { method: 'PUT', body: text });
      setProblems([]);
      setText(JSON.stringify(saved.definition, null, 2));
      setNotice({ kind: 'ok', text: `Saved as version ${saved.version}; the previews show it.` });
      onSaved(saved);
    } catch (failure) {
      if (failure.status === 422) {
        const lines = fieldLines(text);
        setProblems(failure.details.map((detail) => ({ ...detail, line: lineOf(text, lines, detail) })));
        setNotice({ kind: 'error', text: 'Not saved: fix the fields listed above (their lines are marked in red).' });
      } else if (failure.status === 403) {
        setNotice({ kind: 'error', text: `Not saved: this token may not change blocks (${failure.message}).` });
      } else {
        setNotice({ kind: 'error', text: `Not saved: ${failure.message}` });
      }
    } finally {
      setBusy(false);
    }
  }

  function goTo(line) {
    const textarea = area.current;
    const lines = text.split('\n');
    const start = lines.slice(0, line - 1).reduce((sum, each) => sum + each.length + 1, 0);
    textarea.focus();
    textarea.setSelectionRange(start, start + lines[line - 1].length);
    const height = textarea.scrollHeight / lineCount;
    textarea.scrollTop = Math.max(0, (line - 3) * height);
  }

  return html`
    <section class="editor-panel">
      <h3>Definition</h3>
      <div class="editor">
        <div class="gutter" ref=${gutter} aria-hidden="true">
          ${Array.from({ length: lineCount }, (_, index) => {
            const problem = marked.get(index + 1);
            return html`<div class=${problem ? 'bad' : ''} data-line=${index + 1} title=${problem ? problem.message : ''}>${index + 1}</div>`;
          })}
        </div>
        <textarea id="definition" ref=${area} spellcheck="false" readOnly=${!canSave} value=${text} rows="24"
          onInput=${(e) => setText(e.target.value)}
          onScroll=${(e) => { gutter.current.scrollTop = e.target.scrollTop; }}></textarea>
      </div>
      ${problems.length > 0 && html`
        <ul class="problems" id="problems">
          ${problems.map((problem) => html`
            <li data-field=${problem.field} data-line=${problem.line}>
              <button class="link" onClick=${() => goTo(problem.line)}>line ${problem.line}</button>${' '}
              <code>${problem.field}</code>: ${problem.message}
            </li>`)}
        </ul>`}
      ${notice && html`<p class=${notice.kind === 'ok' ? 'ok' : 'error'} id="save-notice">${notice.text}</p>`}
      ${canSave && html`<button id="save" onClick=${save} disabled=${busy}>Save</button>`}
    </section>
  `;
}

// ----- stats and snippet -----

function Stats({ token, id }) {
  const [stats, setStats] = useState(undefined);

  useEffect(() => {
    const to = new Date();
    const from = new Date(to.getTime() - STATS_DAYS * 86_400_000);
    const query = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), by: 'variant' });
    json(token, `/api/v1/blocks/${encodeURIComponent(id)}/stats?${query}`).then(setStats, () => setStats(null));
  }, [token, id]);

  const rows = stats ? statRows(stats) : [];
  return html`
    <section class="stats" id="stats">
      <h3>Last ${STATS_DAYS} days</h3>
      ${stats === undefined ? html`<p class="loading">Loading stats…</p>`
        : !rows.length ? html`<p class="hint">No opens recorded yet.</p>`
        : html`<table>
            <thead><tr><th>Variant</th>${rows.columns.map((column) => html`<th>${column.replaceAll('_', ' ')}</th>`)}</tr></thead>
            <tbody>${rows.map((row) => html`<tr><td>${row.key}</td>${rows.columns.map((column) => html`<td>${number(row[column])}</td>`)}</tr>`)}</tbody>
          </table>`}
    </section>
  `;
}

// Rows by variant: the report's own rows, or impressions summed over its days.
function statRows(stats) {
  if (Array.isArray(stats.rows)) {
    const rows = stats.rows;
    rows.columns = ['impressions', 'human_opens', 'machine_fetches', 'unique_readers', 'clicks', 'ctr']
      .filter((column) => rows.some((row) => column in row));
    return rows;
  }
  const totals = new Map();
  for (const day of Object.values(stats.impressions || {})) {
    for (const [variant, count] of Object.entries(day)) totals.set(variant, (totals.get(variant) || 0) + count);
  }
  const rows = [...totals].map(([key, impressions]) => ({ key, impressions }));
  rows.columns = ['impressions'];
  return rows;
}

function number(value) {
  if (typeof value !== 'number') return value ?? '';
  return Number.isInteger(value) ? value.toLocaleString() : value.toFixed(3);
}

function SnippetPanel({ token, id }) {
  const [service, setService] = useState('generic');
  const [snippet, setSnippet] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    setSnippet(null);
    const query = new URLSearchParams({ esp: service });
    json(token, `/api/v1/blocks/${encodeURIComponent(id)}/snippet?${query}`).then(setSnippet, (e) => setError(e.message));
  }, [token, id, service]);

  return html`
    <section class="snippet">
      <h3>Put it in an email</h3>
      <label>Email service <select id="esp" value=${service} onChange=${(e) => setService(e.target.value)}>
        ${SERVICES.map(([name, title]) => html`<option value=${name}>${title}</option>`)}
      </select></label>
      ${error && html`<p class="error">${error}</p>`}
      ${snippet && html`
        <p class="hint">In ${snippet.title}, keep the recipient id as <strong>${snippet.fields.recipient}</strong>${' '}
          and its token as <strong>${snippet.fields.token}</strong>${' '}
          (<code>POST /api/v1/tokens</code> or <code>atopen sign --csv</code> computes the tokens).</p>
        <${Copyable} id="snippet-html" text=${snippet.html} />
        ${snippet.signed_html && html`
          <p class="hint">Or let ${snippet.title} sign each URL itself, which authenticates the URL's merge fields too:${' '}
            paste a key of its own from ATOPEN_SECRET where the snippet says.</p>
          <${Copyable} id="snippet-signed" text=${snippet.signed_html} />`}`}
    </section>
  `;
}

function Copyable({ id, text }) {
  const [copied, setCopied] = useState(false);
  const box = useRef(null);

  async function copy() {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // No clipboard permission (a page not served over HTTPS): select it for Ctrl+C.
      box.current.select();
      document.execCommand('copy');
    }
    setCopied(true);
    setTimeout(() => setCopied(false), 2000);
  }

  return html`
    <div class="copyable">
      <textarea id=${id} ref=${box} readOnly rows=${Math.min(10, text.split('\n').length + 1)} value=${text}></textarea>
      <button onClick=${copy}>${copied ? 'Copied' : 'Copy'}</button>
    </div>
  `;
}

const root = document.getElementById('studio');
root.textContent = ''; // the "Loading" line
render(html`<${App} />`, root);
