// edgefleet hub dashboard: a single page over the dashboard's read-only
// JSON endpoints (/api/...), refreshed by server-sent events (/api/events)
// or, where those are unavailable, by polling. No libraries: DOM built with
// createElement (text only, never innerHTML), charts drawn as SVG by hand.
'use strict';

(function () {
  const params = new URLSearchParams(location.search);
  const LIVE = params.get('live') || 'sse'; // sse | poll | off
  const STREAM_MAX = params.get('stream'); // seconds per event stream
  const POLL_MS = 5000;
  const PALETTE = ['#2563eb', '#16a34a', '#d97706', '#9333ea', '#dc2626', '#0891b2', '#db2777', '#65a30d'];
  const SVGNS = 'http://www.w3.org/2000/svg';

  // ---- DOM helpers ---------------------------------------------------

  // h builds an element: h('td', {class: 'num'}, 'text', childNode, ...).
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }
  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') el.textContent = v;
      else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  function append(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === undefined || k === null || k === false) continue;
      el.appendChild(k instanceof Node ? k : document.createTextNode(String(k)));
    }
  }
  function badge(state, text) { return h('span', {class: 'badge ' + (state || ''), 'data-state': state}, text || state || '—'); }
  function chip(text, cls) { return h('span', {class: 'chip ' + (cls || '')}, text); }
  function bar(frac, cls, marker) {
    const b = h('div', {class: 'bar'});
    const f = Math.max(0, Math.min(1, frac || 0));
    b.appendChild(h('span', {class: cls || '', style: {width: (100 * f).toFixed(1) + '%'}}));
    if (marker !== undefined) b.appendChild(h('i', {style: {left: (100 * Math.min(1, marker)).toFixed(1) + '%'}}));
    return b;
  }
  function stat(label, value, sub, cls, key) {
    return h('div', {class: 'card stat ' + (cls || '')},
      h('div', {class: 'label'}, label),
      h('div', {class: 'value', 'data-k': key}, value),
      sub ? h('div', {class: 'sub'}, sub) : null);
  }
  // table builds a table in a container that scrolls sideways when narrow.
  function table(head, rows, attrs) {
    return h('div', {class: 'tscroll'}, h('table', attrs || {},
      h('thead', {}, h('tr', {}, head.map(c => typeof c === 'string' ? h('th', {}, c) : c))),
      h('tbody', {}, rows)));
  }
  function deviceLink(id) { return h('a', {href: '#/devices/' + encodeURIComponent(id), 'data-device': id}, id); }
  function rolloutLink(id) { return h('a', {href: '#/rollouts/' + encodeURIComponent(id)}, id); }

  // ---- formatting ----------------------------------------------------

  function fmtNum(v, digits) {
    if (v === undefined || v === null || !isFinite(v)) return '—';
    if (digits === undefined) digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
    return Number(v).toLocaleString('en-US', {maximumFractionDigits: digits, minimumFractionDigits: 0});
  }
  function fmtMs(v) { return v ? fmtNum(v, v < 1 ? 3 : v < 10 ? 2 : 1) + ' ms' : '—'; }
  function fmtPct(v, digits) { return fmtNum(100 * (v || 0), digits === undefined ? 2 : digits) + '%'; }
  function fmtBytes(n) {
    if (!n) return '—';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return fmtNum(n, n < 10 ? 1 : 0) + ' ' + u[i];
  }
  function isZeroTime(t) { return !t || t.startsWith('0001-'); }
  function fmtTime(t) {
    if (isZeroTime(t)) return '—';
    const d = new Date(t);
    return d.toLocaleString('sv-SE', {hour12: false}).replace('T', ' ');
  }
  function fmtClock(ms) {
    const d = new Date(ms);
    return String(d.getHours()).padStart(2, '0') + ':' + String(d.getMinutes()).padStart(2, '0');
  }
  function ago(t) {
    if (isZeroTime(t)) return 'never';
    const sec = Math.round((Date.now() - new Date(t).getTime()) / 1000);
    if (sec < 0) return 'just now';
    if (sec < 60) return sec + ' s ago';
    if (sec < 3600) return Math.round(sec / 60) + ' min ago';
    if (sec < 86400) return fmtNum(sec / 3600, 1) + ' h ago';
    return fmtNum(sec / 86400, 1) + ' d ago';
  }
  function short(digest) {
    if (!digest) return '—';
    const i = digest.indexOf(':');
    return digest.slice(i + 1, i + 13);
  }
  // bake formats a spec's bake time (Go duration text; negative: none).
  function bake(d) { return !d || String(d).startsWith('-') ? 'none' : String(d).replace(/(\d)m0s$/, '$1m').replace(/(\d)h0m$/, '$1h'); }

  // gateValue formats a gate's value or limit in its unit.
  function gateFmt(name, v) {
    switch (name) {
      case 'activation_failures': return fmtNum(v, 1) + '%';
      case 'p99_ratio': return Number(v || 0).toFixed(2) + '×';
      default: return fmtPct(v, 2);
    }
  }
  const GATE_NAMES = {
    activation_failures: 'Activation failures', error_rate: 'Error rate', nan_rate: 'NaN/Inf outputs',
    p99_ratio: 'p99 latency vs previous', fallback_rate: 'GPU→CPU fallbacks',
  };

  // quantile follows wire.Histogram.Quantile (seconds).
  function quantile(hist, q) {
    if (!hist || !hist.count || !hist.buckets || !hist.buckets.length) return 0;
    const rank = q * hist.count;
    let cum = 0, lower = 0;
    for (const b of hist.buckets) {
      if (b.n > 0 && cum + b.n >= rank) {
        const frac = Math.min(Math.max((rank - cum) / b.n, 0), 1);
        return lower + (b.le - lower) * frac;
      }
      cum += b.n;
      lower = b.le;
    }
    return hist.buckets[hist.buckets.length - 1].le;
  }

  // ---- charts --------------------------------------------------------

  function niceStep(range, ticks) {
    const raw = range / Math.max(1, ticks);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const n = raw / mag;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
  }

  // lineChart draws series [{label, color, dashed, points: [[tMs, v|null]]}]
  // as an SVG line chart; null values leave gaps.
  function lineChart(series, opts) {
    opts = opts || {};
    const W = opts.width || 640, H = opts.height || 200;
    const m = {l: 52, r: 12, t: 10, b: 24};
    const iw = W - m.l - m.r, ih = H - m.t - m.b;
    let t0 = Infinity, t1 = -Infinity, vmax = 0;
    for (const se of series) {
      for (const [t, v] of se.points) {
        t0 = Math.min(t0, t); t1 = Math.max(t1, t);
        if (v !== null && isFinite(v)) vmax = Math.max(vmax, v);
      }
    }
    if (opts.from) t0 = opts.from;
    if (opts.to) t1 = opts.to;
    const wrap = h('div', {class: 'chart', 'data-chart': opts.key || ''});
    const svg = s('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': opts.title || 'chart'});
    wrap.appendChild(svg);
    const hasData = series.some(se => se.points.some(p => p[1] !== null && p[1] > 0));
    if (!isFinite(t0) || t1 <= t0) { t0 = Date.now() - 30 * 60e3; t1 = Date.now(); }
    if (vmax <= 0) vmax = 1;
    const step = niceStep(vmax, 4);
    const ytop = Math.ceil(vmax / step) * step;
    const x = t => m.l + (t - t0) / (t1 - t0) * iw;
    const y = v => m.t + ih - v / ytop * ih;
    for (let v = 0; v <= ytop + step / 2; v += step) {
      svg.appendChild(s('line', {class: 'grid', x1: m.l, x2: m.l + iw, y1: y(v), y2: y(v)}));
      svg.appendChild(s('text', {x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end'}, (opts.yFmt || fmtNum)(v)));
    }
    svg.appendChild(s('line', {class: 'axis', x1: m.l, x2: m.l + iw, y1: m.t + ih, y2: m.t + ih}));
    const span = t1 - t0;
    const tstep = [60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 21600e3].find(st => span / st <= 7) || 86400e3;
    for (let t = Math.ceil(t0 / tstep) * tstep; t <= t1; t += tstep) {
      svg.appendChild(s('line', {class: 'axis', x1: x(t), x2: x(t), y1: m.t + ih, y2: m.t + ih + 4}));
      svg.appendChild(s('text', {x: x(t), y: H - 6, 'text-anchor': 'middle'}, fmtClock(t)));
    }
    if (!hasData) {
      svg.appendChild(s('text', {class: 'empty', x: m.l + iw / 2, y: m.t + ih / 2, 'text-anchor': 'middle'}, opts.empty || 'no data in this period'));
    }
    for (const se of series) {
      let d = '', pen = false;
      for (const [t, v] of se.points) {
        if (v === null || !isFinite(v)) { pen = false; continue; }
        d += (pen ? 'L' : 'M') + x(t).toFixed(1) + ',' + y(v).toFixed(1);
        pen = true;
      }
      if (d) {
        const path = s('path', {class: 'line' + (se.dashed ? ' dashed' : ''), d: d, 'data-series': se.label});
        path.style.stroke = se.color;
        svg.appendChild(path);
      }
      // Lone points (a single step with data) get a dot.
      se.points.forEach(([t, v], i) => {
        const prev = se.points[i - 1], next = se.points[i + 1];
        if (v !== null && (!prev || prev[1] === null) && (!next || next[1] === null)) {
          const c = s('circle', {cx: x(t), cy: y(v), r: 2.5});
          c.style.fill = se.color;
          svg.appendChild(c);
        }
      });
    }
    // Hover: a cursor line and the values at the nearest time.
    const cursor = s('line', {class: 'cursor', y1: m.t, y2: m.t + ih, visibility: 'hidden'});
    svg.appendChild(cursor);
    const tip = h('div', {class: 'tip muted'}, '\u00a0');
    const hit = s('rect', {x: m.l, y: m.t, width: iw, height: ih, fill: 'transparent'});
    hit.addEventListener('mousemove', ev => {
      const r = svg.getBoundingClientRect();
      const t = t0 + ((ev.clientX - r.left) * W / r.width - m.l) / iw * (t1 - t0);
      cursor.setAttribute('x1', x(t)); cursor.setAttribute('x2', x(t));
      cursor.setAttribute('visibility', 'visible');
      const parts = [fmtClock(t)];
      for (const se of series) {
        let best = null;
        for (const p of se.points) if (best === null || Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
        if (best && best[1] !== null) parts.push(se.label + ' ' + (opts.yFmt || fmtNum)(best[1]));
      }
      tip.textContent = parts.join(' · ');
    });
    hit.addEventListener('mouseleave', () => { cursor.setAttribute('visibility', 'hidden'); tip.textContent = '\u00a0'; });
    svg.appendChild(hit);
    const legend = h('div', {class: 'legend'}, series.map(se => {
      const sw = h('span', {class: 'sw' + (se.dashed ? ' dashed' : '')});
      sw.style.background = se.color;
      sw.style.borderColor = se.color;
      return h('span', {}, sw, se.label);
    }));
    wrap.appendChild(legend);
    wrap.appendChild(tip);
    return wrap;
  }

  // colorOf gives each model version a stable color.
  const colors = new Map();
  function colorOf(model, version) {
    const k = model + '\u0000' + version;
    if (!colors.has(k)) {
      const n = [...colors.keys()].filter(x => x.startsWith(model + '\u0000')).length;
      colors.set(k, PALETTE[n % PALETTE.length]);
    }
    return colors.get(k);
  }

  // versionCharts draws latency (p50 dashed, p99 solid) and throughput of
  // every version of one model.
  function versionCharts(model, series, from, to, small) {
    const mine = series.filter(se => se.model === model);
    const mk = (field, dashed, suffix) => mine.map(se => ({
      label: 'v' + se.version + (suffix || ''), color: colorOf(model, se.version), dashed: dashed,
      points: se.points.map(p => [Date.parse(p.time), p.requests > 0 ? p[field] : null]),
    }));
    const tput = mine.map(se => ({
      label: 'v' + se.version, color: colorOf(model, se.version),
      points: se.points.map(p => [Date.parse(p.time), p.reports > 0 ? p.rps : null]),
    }));
    const opts = {from: from, to: to, height: small ? 150 : 200};
    return [
      h('div', {}, h('h3', {}, 'Latency p99 (solid) and p50 (dashed)'),
        lineChart(mk('p99_ms', false, ' p99').concat(mk('p50_ms', true, ' p50')),
          Object.assign({key: 'latency-' + model, yFmt: v => fmtNum(v) + ' ms', title: model + ' latency'}, opts))),
      h('div', {}, h('h3', {}, 'Throughput (requests/s)'),
        lineChart(tput, Object.assign({key: 'throughput-' + model, title: model + ' throughput'}, opts))),
    ];
  }

  // ---- data ----------------------------------------------------------

  async function get(path) {
    const r = await fetch(path, {headers: {Accept: 'application/json'}, cache: 'no-store'});
    if (!r.ok) {
      let msg = r.status + ' ' + r.statusText;
      try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
      const err = new Error(msg);
      err.status = r.status;
      throw err;
    }
    return r.json();
  }

  // ---- pages ---------------------------------------------------------

  function route() {
    const [path, query] = (location.hash.replace(/^#/, '') || '/').split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    const q = new URLSearchParams(query || '');
    if (parts[0] === 'rollouts' && parts[1]) return {page: 'rollout', id: parts[1], nav: 'rollouts', q};
    if (parts[0] === 'rollouts') return {page: 'rollouts', nav: 'rollouts', q};
    if (parts[0] === 'models') return {page: 'models', nav: 'models', q};
    if (parts[0] === 'devices' && parts[1]) return {page: 'device', id: parts[1], nav: 'devices', q};
    if (parts[0] === 'devices') return {page: 'devices', nav: 'devices', q};
    return {page: 'overview', nav: 'overview', q};
  }

  const pages = {
    async overview() {
      const [o, devs, ms] = await Promise.all([get('/api/overview'), get('/api/devices?limit=200&q=' + encodeURIComponent(filter)), get('/api/models?minutes=30')]);
      const d = o.devices;
      const out = [h('h1', {}, 'Fleet overview')];
      out.push(h('div', {class: 'cards'},
        stat('Devices', d.total, d.revoked ? d.revoked + ' revoked' : 'registered', '', 'devices-total'),
        stat('Online', d.online, d.total ? fmtPct(d.online / d.total, 0) + ' of the fleet' : '', 'ok', 'devices-online'),
        stat('Offline', d.offline, '', d.offline ? 'bad' : 'off', 'devices-offline'),
        stat('Reporting telemetry', o.telemetry.reporting, 'of ' + o.telemetry.devices + ' that reported', '', 'telemetry-reporting'),
        stat('Active rollouts', o.rollouts.active.length, o.rollouts.total + ' in all', '', 'rollouts-active'),
      ));

      // Models and providers.
      const models = h('div', {class: 'grid2'});
      if (!o.models.length) models.appendChild(h('div', {class: 'panel muted'}, 'No device reports a model yet.'));
      for (const m of o.models) models.appendChild(modelPanel(m, ms, true));
      out.push(h('h2', {}, 'Models and versions'), models);

      const provRows = o.providers.map(p => h('tr', {'data-provider': p.name},
        h('td', {}, chip(p.name, 'provider')),
        h('td', {class: 'num', 'data-k': 'provider-in-use'}, p.in_use),
        h('td', {}, bar(d.total ? p.in_use / d.total : 0)),
        h('td', {class: 'num'}, p.available)));
      out.push(h('div', {class: 'grid2'},
        h('div', {}, h('h2', {}, 'Execution providers'),
          h('div', {class: 'panel'}, o.providers.length
            ? table(['Provider', h('th', {class: 'num'}, 'In use'), '', h('th', {class: 'num'}, 'Available')], provRows, {'data-k': 'providers'})
            : h('span', {class: 'muted'}, 'No provider reported yet.'))),
        h('div', {}, h('h2', {}, 'Active rollouts'),
          o.rollouts.active.length ? o.rollouts.active.map(r => rolloutPanel(r, true))
            : h('div', {class: 'panel muted'}, 'No rollout in progress. ', h('a', {href: '#/rollouts'}, 'All rollouts')))));

      out.push(h('h2', {}, 'Devices'), deviceTable(devs));
      return out;
    },

    async rollouts() {
      const l = await get('/api/rollouts');
      const out = [h('h1', {}, 'Rollouts')];
      if (!l.rollouts.length) out.push(h('div', {class: 'panel muted'}, 'No rollouts yet. Create one with `edgefleet rollout create`.'));
      for (const r of l.rollouts) out.push(rolloutPanel(r, false));
      return out;
    },

    async rollout(rt) {
      const r = await get('/api/rollouts/' + encodeURIComponent(rt.id));
      const rows = (r.devices || []).map(dv => h('tr', {'data-device-row': dv.id},
        h('td', {}, deviceLink(dv.id)),
        h('td', {class: 'num'}, dv.wave + 1),
        h('td', {}, badge(dv.phase)),
        h('td', {class: 'mono'}, dv.prev_version ? 'v' + dv.prev_version : '—'),
        h('td', {class: 'num'}, fmtNum(dv.health.requests, 0)),
        h('td', {class: 'num'}, dv.health.requests ? fmtPct(dv.health.errors / dv.health.requests) : '—'),
        h('td', {class: 'num'}, fmtMs(dv.health.p99_ms)),
        h('td', {class: 'num'}, fmtMs(dv.prev_p99_ms)),
        h('td', {class: 'error'}, dv.error || '')));
      return [
        h('p', {}, h('a', {href: '#/rollouts'}, '← all rollouts')),
        rolloutPanel(r, false),
        h('h2', {}, 'Devices'),
        h('div', {class: 'panel'}, rows.length ? table(['Device', h('th', {class: 'num'}, 'Wave'), 'Phase', 'Previous',
          h('th', {class: 'num'}, 'Requests'), h('th', {class: 'num'}, 'Errors'), h('th', {class: 'num'}, 'p99'),
          h('th', {class: 'num'}, 'Prev p99'), 'Error'], rows) : h('span', {class: 'muted'}, 'No device taken in yet.')),
      ];
    },

    async models(rt) {
      const minutes = Number(rt.q.get('minutes')) || 30;
      const [o, ms] = await Promise.all([get('/api/overview'), get('/api/models?minutes=' + minutes)]);
      const out = [h('h1', {}, 'Models: latency and throughput per version'),
        h('div', {class: 'toolbar'}, h('span', {class: 'muted'}, 'Period'),
          h('span', {class: 'seg'}, [15, 30, 60].map(n =>
            h('a', {href: '#/models?minutes=' + n, class: n === minutes ? 'on' : ''}, n + ' min'))))];
      const names = new Set(o.models.map(m => m.model));
      for (const se of ms.series) names.add(se.model);
      if (!names.size) out.push(h('div', {class: 'panel muted'}, 'No model telemetry yet.'));
      for (const name of [...names].sort()) {
        const m = o.models.find(x => x.model === name) || {model: name, devices: 0, states: {}, versions: []};
        out.push(modelPanel(m, ms, false));
      }
      return out;
    },

    async devices() {
      const devs = await get('/api/devices?limit=1000&q=' + encodeURIComponent(filter));
      return [h('h1', {}, 'Devices'), deviceTable(devs)];
    },

    async device(rt) {
      let dd;
      try {
        dd = await get('/api/devices/' + encodeURIComponent(rt.id) + '?window=60');
      } catch (e) {
        if (e.status === 404) return [h('h1', {}, rt.id), h('div', {class: 'callout bad'}, 'No such device.')];
        throw e;
      }
      return devicePage(dd);
    },
  };

  // modelPanel shows a model's versions with their devices, providers and
  // recent numbers, and its charts.
  function modelPanel(m, ms, small) {
    const total = m.devices || m.versions.reduce((a, v) => a + v.devices, 0);
    const rows = m.versions.map(v => {
      const sw = h('span', {class: 'dot'});
      sw.style.background = colorOf(m.model, v.version);
      const rc = v.recent || {};
      return h('tr', {'data-version': m.model + ':' + v.version},
        h('td', {class: 'mono'}, sw, 'v' + v.version),
        h('td', {class: 'num', 'data-k': 'version-devices'}, v.devices),
        small ? null : h('td', {}, bar(total ? v.devices / total : 0)),
        h('td', {}, Object.entries(v.providers || {}).map(([p, n]) => chip(p + ' ' + n, 'provider'))),
        h('td', {class: 'num'}, rc.reports ? fmtNum(rc.rps) : '—'),
        h('td', {class: 'num'}, rc.requests ? fmtMs(rc.p50_ms) : '—'),
        h('td', {class: 'num'}, rc.requests ? fmtMs(rc.p99_ms) : '—'),
        h('td', {class: 'num'}, rc.requests ? fmtPct(rc.error_rate) : '—'));
    });
    const states = Object.entries(m.states || {}).sort().map(([st, n]) => badge(st, st + ' ' + n));
    const charts = versionCharts(m.model, ms.series, Date.parse(ms.from), Date.parse(ms.to), small);
    return h('div', {class: 'panel', 'data-model': m.model},
      h('header', {}, h('h3', {}, m.model), h('span', {class: 'muted'}, total + ' device' + (total === 1 ? '' : 's')), states),
      rows.length ? table(['Version', h('th', {class: 'num'}, 'Devices'), small ? null : '', 'Providers', h('th', {class: 'num', title: 'requests per second over the last 5 minutes'}, 'req/s'),
        h('th', {class: 'num'}, 'p50'), h('th', {class: 'num'}, 'p99'), h('th', {class: 'num'}, 'Errors')], rows)
        : h('p', {class: 'muted'}, 'No version active.'),
      small ? charts[0] : h('div', {class: 'grid2'}, charts));
  }

  // rolloutPanel shows a rollout's state, waves and gates.
  function rolloutPanel(r, compact) {
    const spec = r.spec, c = r.counts;
    const final = ['completed', 'rolled_back', 'aborted'].includes(r.state);
    const head = h('header', {},
      h('h3', {}, rolloutLink(r.id)),
      h('span', {class: 'mono'}, spec.model + ' → v' + (spec.version || '?')),
      badge(r.state),
      spec.selector ? chip(spec.selector) : h('span', {class: 'muted'}, 'all devices'),
      h('span', {class: 'muted'}, 'created ' + ago(r.created)));
    const out = h('div', {class: 'panel rollout', 'data-rollout': r.id, 'data-state': r.state}, head);
    if (r.reason) {
      const cls = r.state === 'halted' || r.state === 'rolled_back' ? 'bad' : 'warn';
      out.appendChild(h('div', {class: 'callout ' + cls, 'data-k': 'reason'},
        h('b', {}, r.state === 'aborted' ? 'Aborted: ' : 'Halted: '), r.reason));
    }
    // Waves.
    const waves = h('div', {class: 'waves'});
    r.waves.forEach((w, i) => {
      const done = i < r.wave || r.state === 'completed';
      const current = i === r.wave && !final;
      let st = done ? 'promoted' : current ? (isZeroTime(r.settled) ? 'waiting for devices' : 'baking since ' + fmtTime(r.settled).slice(11)) : 'pending';
      if (r.state === 'halted' || r.state === 'rolled_back') st = i <= r.wave ? 'halted' : 'not started';
      const prev = i ? r.waves[i - 1].target : 0;
      const size = Math.max(0, w.target - prev);
      waves.appendChild(h('div', {class: 'wave' + (done ? ' done' : current ? ' current' : ''), 'data-wave': i + 1},
        h('div', {class: 'title'}, 'Wave ' + (i + 1) + ' · ' + fmtNum(w.percent, 1) + '%'),
        h('div', {class: 'state'}, st),
        h('div', {class: 'bar'},
          h('span', {style: {width: (size ? 100 * Math.min(1, w.updated / size) : 0) + '%'}}),
          w.failed ? h('span', {class: 'fail', style: {left: (size ? 100 * w.updated / size : 0) + '%', width: (size ? 100 * w.failed / size : 0) + '%'}}) : null),
        h('div', {class: 'nums'}, `${w.updated}/${size} updated · ${w.assigned} assigned · target ${w.target}` + (w.failed ? ` · ${w.failed} failed` : ''))));
    });
    out.appendChild(waves);
    out.appendChild(h('div', {class: 'muted'},
      `${c.matching} matching · ${c.assigned} assigned · ${c.updated} updated · ${c.updating} updating · ${c.failed} failed` +
      (c.reverting || c.reverted || c.revert_failed ? ` · ${c.reverting} reverting · ${c.reverted} reverted · ${c.revert_failed} revert failed` : '') +
      (c.offline ? ` · ${c.offline} offline` : '') + ` · bake ${bake(spec.bake)} · max failures ${fmtNum(spec.max_failures || 0, 1)}%`));
    // Gates.
    const rows = (r.gates || []).map(g => {
      const verdict = !g.judged ? h('span', {class: 'gate-nj'}, 'not judged') : g.ok ? h('span', {class: 'gate-ok'}, 'ok') : h('span', {class: 'gate-bad'}, 'breached');
      const frac = g.limit > 0 ? g.value / g.limit : (g.value > 0 ? 2 : 0);
      return h('tr', {'data-gate': g.name, 'data-ok': String(g.ok), 'data-judged': String(g.judged)},
        h('td', {}, GATE_NAMES[g.name] || g.name),
        h('td', {class: 'num', 'data-k': 'gate-value'}, g.judged || g.value ? gateFmt(g.name, g.value) : '—'),
        h('td', {class: 'num'}, gateFmt(g.name, g.limit)),
        h('td', {}, bar(frac / 2, g.ok ? 'gauge-ok' : 'gauge-bad', 0.5)),
        h('td', {}, verdict),
        compact ? null : h('td', {class: 'muted'}, g.detail || ''));
    });
    if (rows.length) {
      const head = ['Gate', h('th', {class: 'num'}, 'Value'), h('th', {class: 'num'}, 'Limit'), '', 'Verdict'];
      if (!compact) head.push('Detail');
      out.appendChild(table(head, rows, {class: 'gates'}));
    }
    return out;
  }

  let filter = '';
  function deviceTable(devs) {
    const input = h('input', {type: 'search', placeholder: 'filter: id, label (site=berlin), model:version', value: filter});
    let timer;
    input.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => { filter = input.value; refresh(true); }, 250);
    });
    const rows = devs.devices.map(d => h('tr', {'data-device-row': d.id, 'data-online': String(d.online)},
      h('td', {}, h('span', {class: 'dot' + (d.online ? ' on' : '')}), deviceLink(d.id), d.revoked ? [' ', badge('revoked')] : null),
      h('td', {}, Object.entries(d.labels).sort().map(([k, v]) => chip(k + '=' + v))),
      h('td', {}, Object.entries(d.models || {}).sort().map(([n, m]) =>
        chip(n + ':' + (m.active_version ? 'v' + m.active_version : '—') + (m.provider ? ' (' + m.provider + ')' : ''), m.state === 'failed' ? '' : 'model'))),
      h('td', {class: 'mono'}, d.hardware.gpu ? d.hardware.gpu : (d.hardware.cores ? d.hardware.cores + ' cores' : '—')),
      h('td', {class: 'mono'}, d.agent_version || '—'),
      h('td', {}, d.online ? ago(d.last_seen) : h('span', {class: 'muted'}, ago(d.last_seen))),
      h('td', {}, d.reporting ? badge('ok', 'reporting') : badge('idle', isZeroTime(d.last_report) ? 'none' : ago(d.last_report)))));
    const more = devs.total > devs.devices.length ? h('p', {class: 'muted'}, `Showing ${devs.devices.length} of ${devs.total}; narrow the filter.`) : null;
    return h('div', {class: 'panel'},
      h('div', {class: 'toolbar'}, input, h('span', {class: 'muted', 'data-k': 'device-count'}, devs.total + ' device' + (devs.total === 1 ? '' : 's'))),
      rows.length ? table(['Device', 'Labels', 'Models', 'Hardware', 'Agent', 'Last seen', 'Telemetry'], rows, {'data-k': 'devices'})
        : h('p', {class: 'muted'}, 'No devices match.'),
      more);
  }

  function devicePage(dd) {
    const d = dd.device, hw = d.hardware, t = dd.telemetry;
    const out = [h('p', {}, h('a', {href: '#/devices'}, '← all devices')),
      h('h1', {'data-k': 'device-id'}, h('span', {class: 'dot' + (d.online ? ' on' : '')}), d.id, ' ',
        badge(d.revoked ? 'revoked' : d.online ? 'online' : 'offline'))];
    const labels = Object.entries(d.labels).sort().map(([k, v]) => chip(k + '=' + v));
    out.push(h('div', {class: 'grid2'},
      h('div', {class: 'panel'}, h('h3', {}, 'Device'),
        h('dl', {class: 'kv'},
          h('dt', {}, 'Labels'), h('dd', {'data-k': 'labels'}, labels.length ? labels : '—'),
          h('dt', {}, 'Agent'), h('dd', {class: 'mono'}, d.agent_version || '—'),
          h('dt', {}, 'Last seen'), h('dd', {'data-k': 'last-seen'}, ago(d.last_seen), ' ', h('span', {class: 'muted'}, fmtTime(d.last_seen))),
          h('dt', {}, 'Heartbeat'), h('dd', {}, d.heartbeat_s ? 'every ' + d.heartbeat_s + ' s' : '—'),
          h('dt', {}, 'Enrolled'), h('dd', {}, fmtTime(d.enrolled)),
          h('dt', {}, 'Desired state'), h('dd', {}, 'revision ' + d.desired_revision + ', applied ' + d.applied_revision +
            (d.failed_revision ? ', failed ' + d.failed_revision : '')),
          d.last_error ? [h('dt', {}, 'Last error'), h('dd', {class: 'error'}, d.last_error)] : null)),
      h('div', {class: 'panel'}, h('h3', {}, 'Hardware'),
        h('dl', {class: 'kv', 'data-k': 'hardware'},
          h('dt', {}, 'CPU'), h('dd', {}, (hw.cpu || '—') + (hw.cores ? ' · ' + hw.cores + ' cores' : '')),
          h('dt', {}, 'Memory'), h('dd', {}, fmtBytes(hw.mem_bytes)),
          h('dt', {}, 'GPU'), h('dd', {}, hw.gpu || 'none'),
          h('dt', {}, 'Providers'), h('dd', {}, (hw.providers || []).map(p => chip(p, 'provider'))),
          h('dt', {}, 'Platform'), h('dd', {class: 'mono'}, (hw.os || '?') + '/' + (hw.arch || '?'))))));

    // Models: reported and desired.
    const desired = (dd.desired && dd.desired.models) || {};
    const names = new Set([...Object.keys(d.models || {}), ...Object.keys(desired)]);
    const rows = [...names].sort().map(n => {
      const m = (d.models || {})[n] || {}, want = desired[n] || {}, hl = m.health || {};
      return h('tr', {'data-model-row': n},
        h('td', {class: 'mono'}, n),
        h('td', {class: 'mono', 'data-k': 'active-version'}, m.active_version ? 'v' + m.active_version : '—'),
        h('td', {}, badge(m.state || 'unknown')),
        h('td', {}, m.provider ? chip(m.provider, 'provider') : '—'),
        h('td', {class: 'mono'}, want.version ? 'v' + want.version : '—'),
        h('td', {class: 'mono'}, m.previous_version ? 'v' + m.previous_version : '—'),
        h('td', {class: 'mono'}, short(m.active_digest)),
        h('td', {class: 'num'}, fmtNum(hl.requests || 0, 0)),
        h('td', {class: 'num'}, fmtMs(hl.p99_ms)),
        h('td', {class: 'error'}, m.last_error || ''));
    });
    out.push(h('h2', {}, 'Models'), h('div', {class: 'panel'}, rows.length
      ? table(['Model', 'Active', 'State', 'Provider', 'Desired', 'Previous', 'Digest', h('th', {class: 'num'}, 'Requests'), h('th', {class: 'num'}, 'p99'), 'Error'], rows)
      : h('span', {class: 'muted'}, 'No models.')));

    // Telemetry window.
    out.push(h('h2', {}, 'Recent telemetry'));
    if (!t) {
      out.push(h('div', {class: 'panel muted'}, 'This device has not reported telemetry.'));
    } else {
      out.push(h('div', {class: 'cards'},
        stat('Last report', ago(t.last_report), t.reporting ? 'reporting' : 'not reporting', t.reporting ? 'ok' : 'off', 'last-report'),
        stat('Snapshots stored', fmtNum(t.stored, 0), t.duplicates + ' duplicates', '', 'snapshots'),
        stat('Dropped on device', fmtNum(t.dropped, 0), 'queue over budget', t.dropped ? 'bad' : 'off'),
        stat('Streams', (t.streams || []).length, (t.streams || []).map(st => '#' + st.seq).join(' '))));
      const win = dd.window;
      const mvs = new Map();
      for (const e of win) for (const m of e.models || []) mvs.set(m.model + ':' + m.version, m);
      const rpsSeries = [...mvs.keys()].sort().map(k => {
        const [model, version] = k.split(':');
        return {label: k, color: colorOf(model, version), points: win.map(e => {
          const m = (e.models || []).find(x => x.model + ':' + x.version === k);
          return [Date.parse(e.time), m ? m.requests / Math.max(0.001, e.interval_ms / 1000) : null];
        })};
      });
      const p99Series = [...mvs.keys()].sort().map(k => {
        const [model, version] = k.split(':');
        return {label: k + ' p99', color: colorOf(model, version), points: win.map(e => {
          const m = (e.models || []).find(x => x.model + ':' + x.version === k);
          return [Date.parse(e.time), m && m.requests ? 1000 * quantile(m.latency, 0.99) : null];
        })};
      });
      const cpu = [{label: 'agent CPU (cores)', color: PALETTE[0], points: win.map(e => [Date.parse(e.time), e.box.process_cpu])},
        {label: 'system CPU (fraction)', color: PALETTE[2], dashed: true, points: win.map(e => [Date.parse(e.time), e.box.system_cpu])}];
      const rss = [{label: 'agent RSS (MiB)', color: PALETTE[3], points: win.map(e => [Date.parse(e.time), e.box.rss_bytes / 1048576])}];
      out.push(h('div', {class: 'grid2'},
        h('div', {class: 'panel'}, h('h3', {}, 'Requests/s by model version'), lineChart(rpsSeries, {key: 'device-rps', height: 170})),
        h('div', {class: 'panel'}, h('h3', {}, 'Latency p99 (ms)'), lineChart(p99Series, {key: 'device-p99', height: 170, yFmt: v => fmtNum(v) + ' ms'})),
        h('div', {class: 'panel'}, h('h3', {}, 'CPU'), lineChart(cpu, {key: 'device-cpu', height: 150})),
        h('div', {class: 'panel'}, h('h3', {}, 'Memory'), lineChart(rss, {key: 'device-rss', height: 150, yFmt: v => fmtNum(v) + ' MiB'}))));
      const recent = win.slice(-10).reverse().map(e => {
        let req = 0, err = 0;
        for (const m of e.models || []) { req += m.requests; err += m.errors || 0; }
        return h('tr', {'data-seq': e.seq},
          h('td', {}, fmtTime(e.time)), h('td', {class: 'num'}, e.seq), h('td', {}, e.transport || '—'),
          h('td', {class: 'num'}, fmtNum(e.box.process_cpu, 2)), h('td', {class: 'num'}, fmtBytes(e.box.rss_bytes)),
          h('td', {class: 'num'}, fmtBytes(e.box.disk_free_bytes)),
          h('td', {class: 'num'}, req), h('td', {class: 'num'}, err),
          h('td', {}, (e.models || []).map(m => chip(m.model + ':v' + m.version + (m.provider ? ' ' + m.provider : ''), 'model'))));
      });
      out.push(h('div', {class: 'panel'}, h('h3', {}, 'Latest snapshots'),
        table(['Time', h('th', {class: 'num'}, 'Seq'), 'Via', h('th', {class: 'num'}, 'CPU'), h('th', {class: 'num'}, 'RSS'),
          h('th', {class: 'num'}, 'Disk free'), h('th', {class: 'num'}, 'Requests'), h('th', {class: 'num'}, 'Errors'), 'Models'], recent, {'data-k': 'window'})));
    }
    if (dd.rollouts.length) {
      out.push(h('h2', {}, 'Rollouts'), h('div', {class: 'panel'}, table(['Rollout', 'Model', 'State', 'Phase', h('th', {class: 'num'}, 'Wave')],
        dd.rollouts.map(r => h('tr', {}, h('td', {}, rolloutLink(r.id)), h('td', {class: 'mono'}, r.model + ' → v' + r.version),
          h('td', {}, badge(r.state)), h('td', {}, badge(r.phase)), h('td', {class: 'num'}, r.wave + 1))))));
    }
    return out;
  }

  // ---- rendering and live updates -----------------------------------

  const view = document.getElementById('view');
  const liveEl = document.getElementById('live');
  const updatedEl = document.getElementById('updated');
  const MIN_GAP_MS = 2000; // between refreshes caused by events
  let seq = 0, pending = null, inflight = false, again = false, lastRefresh = 0;

  // refresh renders the current page; concurrent calls collapse into one
  // more run once the running one ends.
  async function refresh(keepFocus) {
    if (inflight) { again = true; return; }
    inflight = true;
    const my = ++seq;
    lastRefresh = Date.now();
    const rt = route();
    for (const a of document.querySelectorAll('header.top nav a')) a.classList.toggle('active', a.dataset.nav === rt.nav);
    try {
      const nodes = await pages[rt.page](rt);
      if (my !== seq) return;
      const focused = keepFocus && document.activeElement && document.activeElement.type === 'search';
      const caret = focused ? document.activeElement.selectionStart : 0;
      const y = window.scrollY;
      const frag = h('div', {'data-page': rt.page, 'data-loaded': 'true'}, nodes);
      view.replaceChildren(frag);
      window.scrollTo(0, y);
      if (focused) {
        const inp = view.querySelector('input[type="search"]');
        if (inp) { inp.focus(); inp.setSelectionRange(caret, caret); }
      }
      updatedEl.textContent = 'updated ' + new Date().toLocaleTimeString('en-GB', {hour12: false});
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    } catch (e) {
      view.replaceChildren(h('div', {'data-page': rt.page, 'data-error': 'true'}, h('div', {class: 'callout bad'}, 'Could not load: ' + e.message)));
    } finally {
      inflight = false;
      if (again) { again = false; refresh(); }
    }
  }

  // schedule refreshes soon, but not more often than every MIN_GAP_MS:
  // a large fleet changes all the time.
  function schedule() {
    if (pending) return;
    const wait = Math.max(250, lastRefresh + MIN_GAP_MS - Date.now());
    pending = setTimeout(() => { pending = null; refresh(true); }, wait);
  }

  // concerns tells whether a change event touches the page shown.
  function concerns(c) {
    const rt = route();
    const devs = (c.devices || []).concat(c.telemetry || []);
    switch (rt.page) {
      case 'rollouts': case 'rollout': return c.rollouts || devs.length > 0 || c.all;
      case 'models': return (c.telemetry || []).length > 0 || c.all;
      case 'device': return c.all || c.rollouts || devs.includes(rt.id);
      default: return true;
    }
  }

  function setLive(state, text) {
    liveEl.dataset.state = state;
    liveEl.textContent = text || state;
  }

  let pollTimer = null;
  function startPolling(why) {
    if (pollTimer) return;
    setLive('polling', why ? 'polling (' + why + ')' : 'polling');
    pollTimer = setInterval(() => refresh(true), POLL_MS);
  }

  function startLive() {
    if (LIVE === 'off') { setLive('off', 'updates off'); return; }
    if (LIVE === 'poll' || typeof EventSource === 'undefined') { startPolling(LIVE === 'poll' ? '' : 'no event stream'); return; }
    const es = new EventSource('/api/events' + (STREAM_MAX ? '?max=' + encodeURIComponent(STREAM_MAX) : ''));
    let failures = 0, first = true;
    es.addEventListener('hello', () => {
      failures = 0;
      setLive('live');
      // A reconnection may have missed changes.
      if (!first) schedule();
      first = false;
    });
    es.addEventListener('change', ev => {
      liveEl.dataset.events = String(Number(liveEl.dataset.events) + 1);
      let c = {all: true};
      try { c = JSON.parse(ev.data); } catch (e) { /* refresh anyway */ }
      if (concerns(c)) schedule();
    });
    es.onerror = () => {
      failures++;
      if (es.readyState === EventSource.CLOSED || failures > 5) {
        es.close();
        startPolling('event stream unavailable');
      } else {
        setLive('reconnecting');
      }
    };
  }

  window.addEventListener('hashchange', () => { window.scrollTo(0, 0); refresh(); });
  refresh();
  startLive();
})();
