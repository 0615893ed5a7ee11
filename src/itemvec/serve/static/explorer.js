/* itemvec explorer: talks to the API of `itemvec serve` (same origin), no dependencies. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var known = new Map(); // item id -> {title, category}
  var itemMap = null;
  var current = null;

  function status(text) { $("status").textContent = text || ""; }

  function api(path, body) {
    var headers = { "Accept": "application/json" };
    var key = window.sessionStorage && sessionStorage.getItem("itemvec-api-key");
    if (key) headers["X-API-Key"] = key;
    var options = { headers: headers };
    if (body !== undefined) {
      options.method = "POST";
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(path, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.status === 401) askKey();
        if (!response.ok) {
          var error = new Error(data.error || ("HTTP " + response.status));
          error.status = response.status;
          throw error;
        }
        return data;
      });
    });
  }

  function askKey() {
    var key = window.prompt("This server needs an API key (X-API-Key):");
    if (key) sessionStorage.setItem("itemvec-api-key", key.trim());
  }

  function describe(ids) {
    var missing = ids.filter(function (id) { return !known.has(String(id)); });
    if (missing.length === 0) return Promise.resolve();
    var query = missing.map(function (id) { return "id=" + encodeURIComponent(id); }).join("&");
    return api("/explorer/items?" + query).then(function (data) {
      data.items.forEach(function (item) { known.set(String(item.item_id), item); });
    }).catch(function () { /* names are a nicety: show bare ids */ });
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function itemCell(id) {
    var td = el("td");
    var link = el("span", "id", id);
    link.title = "show the neighbours of " + id;
    link.addEventListener("click", function () { select(id); });
    td.appendChild(link);
    var info = known.get(String(id));
    if (info && info.title) { td.appendChild(el("br")); td.appendChild(el("span", "dim", info.title)); }
    return td;
  }

  function categoryCell(id) {
    var td = el("td"), info = known.get(String(id));
    if (info && info.category) td.appendChild(el("span", "tag", info.category));
    return td;
  }

  // A result row: rank, item (with title; "cold" when it has no behaviour, only features),
  // category, score; callers append their own cells.
  function resultRow(item, i, score, cold) {
    var tr = el("tr");
    tr.dataset.item = item;
    tr.appendChild(el("td", "dim", String(i + 1)));
    var cell = itemCell(item);
    if (cold) {
      tr.classList.add("cold");
      cell.appendChild(document.createTextNode(" "));
      cell.appendChild(el("span", "tag cold", "cold"));
    }
    tr.appendChild(cell);
    tr.appendChild(categoryCell(item));
    tr.appendChild(el("td", null, score.toFixed(3)));
    return tr;
  }

  function addToBasket(id) {
    var box = $("basket");
    var items = parseBasket(box.value);
    if (items.indexOf(id) < 0) items.push(id);
    box.value = items.join(", ");
  }

  function basketButton(id) {
    var button = el("button", "small", "+ basket");
    button.type = "button";
    button.title = "add " + id + " to the basket";
    button.addEventListener("click", function () { addToBasket(id); });
    return button;
  }

  function fill(table, rows) {
    var body = table.querySelector("tbody");
    body.textContent = "";
    rows.forEach(function (row) { body.appendChild(row); });
    table.hidden = false;
  }

  function select(id) {
    id = String(id);
    status("");
    $("suggestions").textContent = "";
    $("search").value = id;
    return api("/similar/" + encodeURIComponent(id) + "?n=10").then(function (data) {
      current = id;
      return describe([id].concat(data.items)).then(function () {
        var head = $("selected");
        head.textContent = "";
        head.appendChild(document.createTextNode("Neighbours of "));
        head.appendChild(el("strong", null, id));
        var info = known.get(id);
        if (info && info.title) head.appendChild(el("span", "dim", " " + info.title));
        if (info && info.category) { head.appendChild(document.createTextNode(" ")); head.appendChild(el("span", "tag", info.category)); }
        head.appendChild(document.createTextNode(" "));
        head.appendChild(basketButton(id));
        fill($("neighbours"), data.items.map(function (item, i) {
          var tr = resultRow(item, i, data.scores[i], data.cold && data.cold[i]);
          var action = el("td");
          action.appendChild(basketButton(item));
          tr.appendChild(action);
          return tr;
        }));
        if (itemMap) itemMap.highlight(id, data.items);
      });
    }).catch(function (error) { status(error.message); });
  }

  function suggest(items) {
    var list = $("suggestions");
    list.textContent = "";
    items.forEach(function (item) {
      var li = el("li");
      li.appendChild(el("strong", null, item.item_id));
      if (item.title) li.appendChild(el("span", "dim", " " + item.title));
      if (item.category) { li.appendChild(document.createTextNode(" ")); li.appendChild(el("span", "tag", item.category)); }
      li.addEventListener("click", function () { select(item.item_id); });
      list.appendChild(li);
    });
  }

  function lookup(text) {
    return api("/explorer/lookup?n=10&q=" + encodeURIComponent(text)).then(function (data) {
      data.items.forEach(function (item) { known.set(String(item.item_id), item); });
      return data.items;
    });
  }

  function search(event) {
    if (event) event.preventDefault();
    var text = $("search").value.trim();
    if (!text) return;
    lookup(text).then(function (items) {
      if (items.length && (items[0].item_id === text || items.length === 1)) return select(items[0].item_id);
      if (!items.length) { status("no item id or title matches " + JSON.stringify(text)); return; }
      status(items.length + " items match; pick one");
      suggest(items);
    }).catch(function (error) { status(error.message); });
  }

  var typing = null;
  function onType() {
    clearTimeout(typing);
    var text = $("search").value.trim();
    if (text.length < 2) { $("suggestions").textContent = ""; return; }
    typing = setTimeout(function () {
      lookup(text).then(function (items) {
        if ($("search").value.trim() === text && text !== current) suggest(items);
      }).catch(function () {});
    }, 250);
  }

  function parseBasket(text) {
    return text.split(/[\s,;]+/).map(function (s) { return s.trim(); }).filter(Boolean);
  }

  function because(explanation) {
    if (!explanation || !explanation.history) return "";
    var parts = explanation.history.filter(function (p) { return p.contribution > 0; });
    var total = parts.reduce(function (sum, p) { return sum + p.contribution; }, 0);
    return parts.slice(0, 3).map(function (p) {
      return p.item_id + " " + Math.round(100 * p.contribution / (total || 1)) + "%";
    }).join(", ");
  }

  function recommend(event) {
    if (event) event.preventDefault();
    var history = parseBasket($("basket").value);
    if (!history.length) { status("enter one or more item ids in the basket"); return; }
    status("");
    var body = { history: history, n: 10, explain: true };
    api("/recommend", body).catch(function (error) {
      if (error.status === 422) { delete body.explain; return api("/recommend", body); }
      throw error;
    }).then(function (data) {
      return describe(data.items.concat(history)).then(function () {
        var rows = data.items.map(function (item, i) {
          var tr = resultRow(item, i, data.scores[i], data.cold && data.cold[i]);
          tr.appendChild(el("td", "why", because(data.explanations && data.explanations[i])));
          return tr;
        });
        fill($("recommendations"), rows);
        if (data.skipped) status("skipped " + data.skipped + " unknown basket item(s)");
        if (!data.items.length) status("no recommendations: none of the basket items is known");
        if (itemMap) itemMap.highlight(null, history.concat(data.items));
      });
    }).catch(function (error) { status(error.message); });
  }

  function loadInfo() {
    api("/info").then(function (info) {
      var parts = [info.bundle, info.items + " items", "dim " + info.dim];
      if (info.index) parts.push("index " + info.index);
      if (info.created) parts.push("trained " + info.created);
      $("info").textContent = parts.join(" \u00b7 ");
    }).catch(function (error) { $("info").textContent = "model information unavailable: " + error.message; });
  }

  function loadMap() {
    api("/map.json").then(function (data) {
      var note = data.ids.length + " items" + (data.sampled ? " (a sample)" : "") + ", " + data.method +
        " projection" + (data.column ? ", coloured by " + data.column : "") +
        ". Hover for details, click to select, scroll to zoom, drag to pan, double-click to reset.";
      $("map-note").textContent = note;
      itemMap = new window.ItemMap($("map"), data, { onClick: select });
    }).catch(function (error) { $("map-note").textContent = "map unavailable: " + error.message; });
  }

  $("search-form").addEventListener("submit", search);
  $("search").addEventListener("input", onType);
  $("basket-form").addEventListener("submit", recommend);
  loadInfo();
  loadMap();
  var start = new URLSearchParams(window.location.search).get("item");
  if (start) select(start);
})();
