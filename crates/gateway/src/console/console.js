// tenantry console: sorts and filters the tenant table and refreshes the page
// every 5 seconds from its data-endpoint (same origin). The page is complete
// without this script. Data is never parsed as HTML: every node is built with
// createElement and text nodes.
(function () {
  'use strict';

  var SVG_NS = 'http://www.w3.org/2000/svg';
  var STATUSES = ['active', 'suspended', 'moving', 'unavailable'];
  var EVERY_MS = 5000;
  var STORE = 'tenantry.console';

  var body = document.body;
  var page = body.getAttribute('data-page');
  var endpoint = body.getAttribute('data-endpoint');
  var root = document.documentElement;
  root.classList.remove('no-js');
  root.classList.add('js');

  // ---- DOM building --------------------------------------------------------

  function build(el, attrs, kids) {
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === 'style') Object.keys(v).forEach(function (p) { el.style[p] = v[p]; });
      else el.setAttribute(k, String(v));
    });
    (kids || []).forEach(function add(kid) {
      if (kid === null || kid === undefined || kid === false) return;
      if (Array.isArray(kid)) kid.forEach(add);
      else el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    });
    return el;
  }
  function h(tag, attrs) {
    return build(document.createElement(tag), attrs, [].slice.call(arguments, 2));
  }
  function s(tag, attrs) {
    return build(document.createElementNS(SVG_NS, tag), attrs, [].slice.call(arguments, 2));
  }
  function fill(el, kids) {
    while (el.firstChild) el.removeChild(el.firstChild);
    build(el, null, kids);
  }

  // ---- Formatting (the same as console.rs) ---------------------------------

  function num(v) { return typeof v === 'number' && isFinite(v) ? v : null; }
  function decimal(v) { return v.toFixed(1).replace(/\.0$/, ''); }
  function thousands(n) { return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ','); }
  function bytes(n) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], v = n, u = 0;
    while (v >= 1023.95 && u < units.length - 1) { v /= 1024; u++; }
    return decimal(v) + ' ' + units[u];
  }
  function percent(share) {
    var p = (num(share) || 0) * 100;
    if (p <= 0) return '0%';
    if (p < 0.01) return '<0.01%';
    if (p < 1) return p.toFixed(2) + '%';
    return decimal(p) + '%';
  }
  function rate(v) { return v < 100 ? decimal(v) : thousands(v); }
  function ms(v) {
    v = num(v);
    if (v === null) return '—';
    return (v < 10 ? decimal(v) : thousands(v)) + ' ms';
  }
  function width(p) { return decimal(Math.min(100, Math.max(0, num(p) || 0))) + '%'; }
  function ratio(part, whole) { return whole > 0 ? part * 100 / whole : 0; }
  function plural(n, one, many) { return n === 1 ? one : many; }
  function timeOk(at) { return typeof at === 'string' && at.length >= 19 && /[Tt ]/.test(at[10]); }
  function clock(at) { return timeOk(at) ? at.slice(11, 19) + ' UTC' : String(at); }
  function stamp(at) { return timeOk(at) ? at.slice(0, 10) + ' ' + at.slice(11, 19) + ' UTC' : String(at); }
  function statusClass(st) { return 's-' + (STATUSES.indexOf(st) >= 0 ? st : 'other'); }
  function pill(st) { return h('span', { class: 'pill ' + statusClass(st) }, st); }
  function maxLevel(ws) { return (ws || []).reduce(function (m, w) { return Math.max(m, w.level || 0); }, -1); }
  function warnClass(ws) { var l = maxLevel(ws); return l < 0 ? '' : l >= 95 ? 'warn crit' : 'warn'; }
  function level(p) { return p >= 95 ? ' crit' : p >= 80 ? ' warn' : ''; }
  function errorClass(rate) { var r = num(rate) || 0; return r >= 0.05 ? ' crit' : r >= 0.01 ? ' warn' : ''; }
  function sum(xs) { return xs.reduce(function (a, b) { return a + b; }, 0); }
  function peak(xs) { return xs.reduce(function (a, b) { return Math.max(a, b); }, 0); }
  function nice(top) {
    var m = 1;
    while (m * 10 <= top) m *= 10;
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * m >= top) return Math.max(1, steps[i] * m);
    return Math.max(1, top);
  }
  function sortValue(v) { return v === null || v === undefined ? '' : String(v); }

  function quota(q, unit) {
    q = q || {};
    var used = num(q.used), limit = num(q.limit), p = num(q.percent);
    var text = used !== null && limit !== null ? unit(used) + ' / ' + unit(limit)
      : used !== null ? unit(used)
      : limit !== null ? '— / ' + unit(limit) : '—';
    var cls = p !== null ? level(p) : ' none';
    var title = p !== null ? decimal(p) + '% of the limit'
      : used === null ? 'not measured yet' : 'no limit on this plan';
    return [
      h('div', { class: 'bar' + cls, title: title }, h('span', { style: { width: width(p) } })),
      h('span', { class: 'qt' }, text)
    ];
  }

  function dualBar(open, inUse, whole, title) {
    return h('div', { class: 'bar dual', title: title },
      h('span', { class: 'open', style: { width: width(ratio(open, whole)) } }),
      h('span', { style: { width: width(ratio(inUse, whole)) } }));
  }

  // ---- Charts --------------------------------------------------------------

  function sparkline(series) {
    var w = 120, ht = 28, pad = 3, top = peak(series);
    var step = w / Math.max(1, series.length - 1);
    var pts = series.map(function (v, i) {
      var y = top === 0 ? ht - pad : ht - pad - v / top * (ht - 2 * pad);
      return (i * step).toFixed(1) + ',' + y.toFixed(1);
    });
    var svg = s('svg', { class: 'spark', viewBox: '0 0 ' + w + ' ' + ht, width: w, height: ht,
      role: 'img', 'aria-label': 'requests per minute' },
      s('title', null, thousands(sum(series)) + ' requests in the last ' + series.length +
        ' min, peak ' + thousands(top) + '/min'));
    if (pts.length) {
      var line = pts.join(' '), first = pts[0].split(','), last = pts[pts.length - 1].split(',');
      build(svg, null, [
        s('path', { class: 'area', d: 'M' + first[0] + ',' + ht + ' L' + line + ' L' + last[0] + ',' + ht + ' Z' }),
        s('polyline', { points: line }),
        s('circle', { cx: last[0], cy: last[1], r: 2 })
      ]);
    }
    return svg;
  }

  function chart(series) {
    var w = 960, ht = 220, left = 48, right = 8, top = 12, bottom = 26;
    var plotW = w - left - right, plotH = ht - top - bottom, base = ht - bottom;
    var scale = nice(peak(series)), mid = top + plotH / 2, n = series.length;
    var slot = plotW / Math.max(1, n);
    var svg = s('svg', { class: 'chart', viewBox: '0 0 ' + w + ' ' + ht, role: 'img', 'aria-label': 'requests per minute' },
      s('line', { class: 'grid', x1: left, y1: top, x2: w - right, y2: top }),
      s('line', { class: 'grid', x1: left, y1: mid, x2: w - right, y2: mid }),
      s('text', { class: 'y', x: left - 8, y: top + 4 }, thousands(scale)),
      s('text', { class: 'y', x: left - 8, y: mid + 4 }, decimal(scale / 2)),
      s('text', { class: 'y', x: left - 8, y: base + 4 }, '0'));
    series.forEach(function (v, i) {
      var barH = v / scale * plotH, ago = n - 1 - i;
      svg.appendChild(s('rect', { class: 'b', x: (left + i * slot + slot * 0.15).toFixed(1),
        y: (base - barH).toFixed(1), width: (slot * 0.7).toFixed(1), height: barH.toFixed(1) },
        s('title', null, thousands(v) + ' requests, ' + (ago === 0 ? 'now' : ago + ' min ago'))));
    });
    if (n === 0) svg.appendChild(s('text', { class: 'none', x: left + plotW / 2, y: mid }, 'no requests recorded'));
    build(svg, null, [
      s('line', { class: 'axis', x1: left, y1: base, x2: w - right, y2: base }),
      s('text', { class: 'x start', x: left, y: ht - 6 }, n + ' min ago'),
      s('text', { class: 'x end', x: w - right, y: ht - 6 }, 'now')
    ]);
    return svg;
  }

  // ---- Freshness -----------------------------------------------------------

  var updatedEl = document.getElementById('updated');
  var staleEl = document.getElementById('stale');
  var staleSince = null;

  function updated(at) {
    if (!updatedEl) return;
    var t = updatedEl.querySelector('time');
    t.setAttribute('datetime', at);
    t.textContent = clock(at);
    updatedEl.hidden = false;
  }
  function fresh() {
    staleSince = null;
    root.classList.remove('is-stale');
    if (staleEl) staleEl.hidden = true;
  }
  function stale(err) {
    if (!staleSince) staleSince = new Date().toISOString();
    root.classList.add('is-stale');
    if (!staleEl) return;
    var t = staleEl.querySelector('time');
    t.setAttribute('datetime', staleSince);
    t.textContent = clock(staleSince);
    staleEl.title = 'The last refresh failed: ' + (err && err.message ? err.message : String(err)) +
      '. Showing the data from before; retrying every 5 seconds.';
    staleEl.hidden = false;
  }

  // ---- Fleet page ----------------------------------------------------------

  function stat(cls, n, label) {
    return h('span', { class: 'stat' + cls }, h('b', null, thousands(n)), ' ' + label);
  }

  function summary(f) {
    var up = f.servers.filter(function (x) { return x.state === 'up'; }).length;
    var down = f.servers.length - up;
    var warnings = sum(f.tenants.map(function (t) { return (t.warnings || []).length; }));
    var n = f.tenants.length;
    return [
      stat('', n, plural(n, 'tenant', 'tenants')),
      stat('', up, plural(up, 'server up', 'servers up')),
      stat(down > 0 ? ' bad' : ' zero', down, 'down'),
      stat(warnings > 0 ? ' warn' : ' zero', warnings, plural(warnings, 'warning', 'warnings'))
    ];
  }

  function serverCard(x) {
    var state = x.state === 'up' ? 'up' : 'down';
    return h('article', { class: 'server ' + state, 'data-server': x.name },
      h('div', { class: 'server-head' }, h('h2', null, x.name), h('span', { class: 'pill s-' + state }, x.state)),
      x.down_reason ? h('p', { class: 'reason', title: x.down_reason }, x.down_reason) : null,
      h('dl', { class: 'facts' },
        h('div', null, h('dt', null, 'Tenants'), h('dd', null, thousands(x.tenants))),
        h('div', null, h('dt', null, 'Connections'),
          h('dd', null, x.connections_in_use + '/' + x.connections_open + ' of ' + x.connections_budget))),
      dualBar(x.connections_open, x.connections_in_use, x.connections_budget, "in use / open of the server's budget"));
  }

  function row(t) {
    var ws = t.warnings || [], series = t.requests_per_minute || [], c = t.connections || {};
    var total = sum(series), cls = warnClass(ws);
    var name = h('td', { class: 'c-name', 'data-sort': t.name },
      h('a', { href: '/tenants/' + encodeURIComponent(t.name) }, t.name),
      ws.length ? h('span', { class: 'wicon', title: ws.map(function (w) { return w.message; }).join('\n'),
        'aria-hidden': 'true' }, '!') : null,
      t.display_name ? h('small', null, t.display_name) : null,
      ws.map(function (w) { return h('span', { class: 'wmsg ' + warnClass([w]) }, w.message); }));
    return h('tr', { class: cls || null, 'data-tenant': t.name, 'data-display': t.display_name,
      'data-status': t.status, 'data-server': t.server },
      name,
      h('td', { 'data-sort': t.server }, t.server),
      h('td', { 'data-sort': t.plan }, t.plan),
      h('td', { 'data-sort': t.status }, pill(t.status)),
      h('td', { class: 'c-num c-schema', 'data-sort': sortValue(t.schema_version) },
        t.schema_version === null || t.schema_version === undefined ? '—' : String(t.schema_version)),
      h('td', { class: 'c-quota', 'data-sort': sortValue((t.storage || {}).used) }, quota(t.storage, bytes)),
      h('td', { class: 'c-quota', 'data-sort': sortValue((t.requests_today || {}).used) },
        quota(t.requests_today, thousands)),
      h('td', { class: 'c-spark', 'data-sort': total }, sparkline(series),
        h('span', { class: 'rate' }, series.length ? rate(total / series.length) + '/min' : '—')),
      h('td', { class: 'c-num' + errorClass(t.error_rate), 'data-sort': num(t.error_rate) || 0 }, percent(t.error_rate)),
      h('td', { class: 'c-num', 'data-sort': sortValue(num(t.p99_ms)) }, ms(t.p99_ms)),
      h('td', { class: 'c-num', 'data-sort': c.in_use },
        c.in_use + '/' + c.open + ' ', h('small', null, 'of ' + c.limit)));
  }

  function fleetPage() {
    var table = document.getElementById('table');
    var tbody = document.getElementById('rows');
    var nameBox = document.getElementById('f-name');
    var statusSel = document.getElementById('f-status');
    var serverSel = document.getElementById('f-server');
    var countEl = document.getElementById('count');
    var serversEl = document.getElementById('servers');
    var heads = [].slice.call(table.querySelectorAll('thead th'));
    var sort = null; // { col, dir }: dir 1 ascending, -1 descending

    try {
      var saved = JSON.parse(sessionStorage.getItem(STORE) || 'null');
      if (saved) {
        nameBox.value = saved.q || '';
        statusSel.value = saved.st || '';
        ensureOption(serverSel, saved.sv || '');
        serverSel.value = saved.sv || '';
        sort = saved.sort || null;
      }
    } catch (e) { /* no storage: start afresh */ }

    function save() {
      try {
        sessionStorage.setItem(STORE, JSON.stringify({ q: nameBox.value, st: statusSel.value, sv: serverSel.value, sort: sort }));
      } catch (e) { /* ignore */ }
    }

    function ensureOption(sel, value) {
      if (!value) return;
      for (var i = 0; i < sel.options.length; i++) if (sel.options[i].value === value) return;
      sel.appendChild(h('option', { value: value }, value));
    }

    function rows() { return [].slice.call(tbody.querySelectorAll('tr[data-tenant]')); }

    function applySort() {
      heads.forEach(function (th, i) {
        if (sort && sort.col === i) th.setAttribute('aria-sort', sort.dir > 0 ? 'ascending' : 'descending');
        else th.removeAttribute('aria-sort');
      });
      if (!sort || !heads[sort.col]) return;
      var numeric = heads[sort.col].getAttribute('data-type') === 'num', col = sort.col, dir = sort.dir;
      var keyed = rows().map(function (tr) {
        var v = tr.cells[col] ? tr.cells[col].getAttribute('data-sort') : '';
        var k = numeric ? parseFloat(v) : (v || '').toLowerCase();
        var missing = v === '' || v === null || (numeric && isNaN(k));
        return { tr: tr, k: k, missing: missing, name: tr.getAttribute('data-tenant') };
      });
      keyed.sort(function (a, b) {
        if (a.missing !== b.missing) return a.missing ? 1 : -1; // unknown last, either way
        var c = 0;
        if (!a.missing) c = numeric ? a.k - b.k : a.k.localeCompare(b.k, undefined, { numeric: true });
        return c * dir || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
      });
      keyed.forEach(function (x) { tbody.appendChild(x.tr); });
      var tail = tbody.querySelector('tr.nomatch, tr.empty');
      if (tail) tbody.appendChild(tail);
    }

    function applyFilter() {
      var q = nameBox.value.trim().toLowerCase(), st = statusSel.value, sv = serverSel.value;
      var all = rows(), shown = 0;
      all.forEach(function (tr) {
        var name = (tr.getAttribute('data-tenant') || '').toLowerCase();
        var display = (tr.getAttribute('data-display') || '').toLowerCase();
        var ok = (!q || name.indexOf(q) >= 0 || display.indexOf(q) >= 0) &&
          (!st || tr.getAttribute('data-status') === st) && (!sv || tr.getAttribute('data-server') === sv);
        tr.hidden = !ok;
        if (ok) shown++;
      });
      var nomatch = tbody.querySelector('tr.nomatch');
      if (all.length && !shown && !nomatch) {
        tbody.appendChild(h('tr', { class: 'nomatch' },
          h('td', { colspan: heads.length }, 'No tenants match the filters.')));
      } else if ((shown || !all.length) && nomatch) {
        tbody.removeChild(nomatch);
      }
      countEl.textContent = shown === all.length
        ? thousands(all.length) + ' ' + plural(all.length, 'tenant', 'tenants')
        : thousands(shown) + ' of ' + thousands(all.length) + ' tenants';
      [].slice.call(serversEl.querySelectorAll('.server')).forEach(function (card) {
        card.classList.toggle('selected', !!sv && card.getAttribute('data-server') === sv);
      });
      save();
    }

    function serverOptions(f) {
      var names = {};
      f.servers.forEach(function (x) { names[x.name] = true; });
      f.tenants.forEach(function (t) { names[t.server] = true; });
      var current = serverSel.value;
      var list = Object.keys(names).sort();
      if (current && list.indexOf(current) < 0) list.push(current);
      var have = [].slice.call(serverSel.options, 1).map(function (o) { return o.value; });
      if (have.join('\n') === list.join('\n')) return; // unchanged: leave an open list alone
      fill(serverSel, [h('option', { value: '' }, 'All servers')].concat(list.map(function (n) {
        return h('option', { value: n }, n);
      })));
      serverSel.value = current;
    }

    function render(f) {
      fill(document.getElementById('summary'), summary(f));
      fill(serversEl, f.servers.length ? f.servers.map(serverCard) : h('p', { class: 'muted' }, 'No servers configured.'));
      serverOptions(f);
      fill(tbody, f.tenants.length ? f.tenants.map(row) : h('tr', { class: 'empty' },
        h('td', { colspan: heads.length },
          'No tenants in the fleet yet. Add one to the manifest and apply it; it shows up here on the next refresh.')));
      applySort();
      applyFilter();
      updated(f.generated_at);
    }

    heads.forEach(function (th, i) {
      var button = th.querySelector('button');
      if (!button) return;
      button.title = 'Sort by ' + button.textContent.toLowerCase();
      button.addEventListener('click', function () {
        var numeric = th.getAttribute('data-type') === 'num';
        sort = sort && sort.col === i ? { col: i, dir: -sort.dir } : { col: i, dir: numeric ? -1 : 1 };
        applySort();
        save();
      });
    });
    nameBox.addEventListener('input', applyFilter);
    statusSel.addEventListener('change', applyFilter);
    serverSel.addEventListener('change', applyFilter);
    serversEl.addEventListener('click', function (ev) {
      var card = ev.target.closest('.server');
      if (!card) return;
      var name = card.getAttribute('data-server');
      ensureOption(serverSel, name);
      serverSel.value = serverSel.value === name ? '' : name;
      applyFilter();
    });
    serversEl.title = 'Click a server to show its tenants';

    applySort();
    applyFilter();
    return render;
  }

  // ---- Tenant page ---------------------------------------------------------

  function fact(label, value) { return h('div', null, h('dt', null, label), h('dd', null, value)); }

  function quotaCard(title, q, unit) {
    q = q || {};
    var p = num(q.percent);
    var figure = p !== null ? decimal(p) + '%' : num(q.used) !== null ? unit(q.used) : '—';
    return h('section', { class: 'card' }, h('h2', null, title), h('p', { class: 'figure' }, figure), quota(q, unit));
  }

  function auditBlock(entries, error) {
    var out = [];
    if (error) out.push(h('p', { class: 'error' }, 'Could not read the audit log: ' + error));
    else if (!entries.length) out.push(h('p', { class: 'muted' }, 'No entries yet.'));
    if (!entries.length) return out;
    out.push(h('div', { class: 'table-wrap' }, h('table', { class: 'audit' },
      h('thead', null, h('tr', null, ['Time', 'Action', 'Actor', 'Detail'].map(function (c) {
        return h('th', { scope: 'col' }, c);
      }))),
      h('tbody', null, entries.map(function (e) {
        return h('tr', null,
          h('td', { class: 'when' }, h('time', { datetime: e.at }, stamp(e.at))),
          h('td', null, h('span', { class: 'tag' }, e.action)),
          h('td', null, e.actor),
          h('td', null, h('code', null, JSON.stringify(e.detail === undefined ? null : e.detail))));
      })))));
    return out;
  }

  function tenantBody(p) {
    var t = p.tenant, ws = t.warnings || [], series = t.requests_per_minute || [];
    var health = p.health || {}, c = t.connections || {};
    return [
      h('section', { class: 'hero' },
        h('div', null, h('h1', null, t.name), t.display_name ? h('p', { class: 'display' }, t.display_name) : null),
        h('dl', { class: 'facts' },
          fact('Server', t.server), fact('Plan', t.plan), fact('Status', pill(t.status)),
          fact('Schema', t.schema_version === null || t.schema_version === undefined ? '—' : String(t.schema_version)),
          fact('Last request', t.last_request_at ? stamp(t.last_request_at) : 'never'))),
      ws.length ? h('ul', { class: 'warnings' }, ws.map(function (w) {
        return h('li', { class: warnClass([w]) }, h('span', { class: 'wicon', 'aria-hidden': 'true' }, '!'), w.message);
      })) : null,
      h('div', { class: 'cards' },
        h('section', { class: 'card' }, h('h2', null, 'Health'),
          h('p', { class: 'figure' }, h('span', { class: 'pill ' + (health.ok ? 's-ok' : 's-failing') }, health.ok ? 'ok' : 'failing')),
          h('p', { class: 'sub' }, 'round trip ' + ms(health.round_trip_ms)),
          health.error ? h('p', { class: 'error' }, health.error) : null),
        quotaCard('Storage', t.storage, bytes),
        quotaCard('Requests today', t.requests_today, thousands),
        h('section', { class: 'card' }, h('h2', null, 'Errors and latency'),
          h('div', { class: 'pair' },
            h('div', null, h('p', { class: 'figure' + errorClass(t.error_rate) }, percent(t.error_rate)),
              h('p', { class: 'sub' }, 'answered 5xx, last hour')),
            h('div', null, h('p', { class: 'figure' }, ms(t.p99_ms)), h('p', { class: 'sub' }, 'p99, last hour')))),
        h('section', { class: 'card' }, h('h2', null, 'Connections'),
          h('p', { class: 'figure' }, c.in_use + ' / ' + c.open),
          dualBar(c.open, c.in_use, c.limit, null),
          h('p', { class: 'sub' }, 'in use / open, pool of ' + c.limit))),
      h('section', { class: 'card wide' },
        h('div', { class: 'card-head' }, h('h2', null, 'Requests per minute'),
          h('p', { class: 'sub' }, 'last ' + series.length + ' min · ' + thousands(sum(series)) +
            ' requests · peak ' + thousands(peak(series)) + '/min')),
        chart(series)),
      h('section', { class: 'card wide' }, h('h2', null, 'Recent audit entries'), auditBlock(p.audit || [], p.audit_error))
    ];
  }

  function tenantPage() {
    updated(new Date().toISOString());
    return function (p) {
      fill(document.getElementById('tenant'), tenantBody(p));
      updated(new Date().toISOString());
    };
  }

  // ---- Refresh -------------------------------------------------------------

  var render = page === 'fleet' ? fleetPage() : page === 'tenant' ? tenantPage() : null;
  if (!render || !endpoint) return;

  var timer = null, busy = false;
  function schedule() {
    clearTimeout(timer);
    if (!document.hidden) timer = setTimeout(refresh, EVERY_MS);
  }
  function refresh() {
    if (busy) return;
    busy = true;
    fetch(endpoint, { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } })
      .then(function (r) {
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.json();
      })
      .then(function (data) { render(data); fresh(); })
      .catch(stale)
      .then(function () { busy = false; schedule(); });
  }
  document.addEventListener('visibilitychange', function () {
    if (document.hidden) clearTimeout(timer);
    else refresh();
  });
  schedule();
})();
