/* itemvec item map: a canvas scatter of items with hover, zoom, pan and highlights.
 * No dependencies and no network: used inline by `itemvec plot --out map.html` and by the
 * explorer page. Data: {ids, x, y, color|null, legend, column, values|null, title|null}. */
(function (global) {
  "use strict";

  function ItemMap(container, data, options) {
    this.options = options || {};
    this.data = data;
    this.n = data.ids.length;
    this.container = container;
    container.classList.add("itemmap");
    this.canvas = document.createElement("canvas");
    this.canvas.className = "itemmap-canvas";
    this.tip = document.createElement("div");
    this.tip.className = "itemmap-tip";
    this.legend = document.createElement("div");
    this.legend.className = "itemmap-legend";
    container.appendChild(this.canvas);
    container.appendChild(this.tip);
    container.appendChild(this.legend);
    this.index = new Map();
    for (var i = 0; i < this.n; i++) this.index.set(String(data.ids[i]), i);
    this.marks = new Map(); // point index -> "focus" | "neighbour"
    this.bounds = this._bounds();
    this.reset();
    this._drawLegend();
    this._listen();
    this.resize();
  }

  ItemMap.prototype._bounds = function () {
    var d = this.data, minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    for (var i = 0; i < this.n; i++) {
      if (d.x[i] < minX) minX = d.x[i];
      if (d.x[i] > maxX) maxX = d.x[i];
      if (d.y[i] < minY) minY = d.y[i];
      if (d.y[i] > maxY) maxY = d.y[i];
    }
    if (!isFinite(minX)) { minX = 0; maxX = 1; minY = 0; maxY = 1; }
    return { minX: minX, maxX: maxX, minY: minY, maxY: maxY };
  };

  ItemMap.prototype.reset = function () {
    this.view = { scale: 1, dx: 0, dy: 0 };
  };

  ItemMap.prototype.resize = function () {
    var ratio = global.devicePixelRatio || 1;
    var width = Math.max(this.container.clientWidth, 200);
    var height = Math.max(this.container.clientHeight, 200);
    this.width = width;
    this.height = height;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    this.canvas.style.width = width + "px";
    this.canvas.style.height = height + "px";
    this.ctx = this.canvas.getContext("2d");
    this.ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    this.draw();
  };

  // data coordinates -> screen pixels (aspect ratio kept, 12px margin)
  ItemMap.prototype._screen = function (i) {
    var b = this.bounds, m = 12;
    var spanX = b.maxX - b.minX || 1, spanY = b.maxY - b.minY || 1;
    var s = Math.min((this.width - 2 * m) / spanX, (this.height - 2 * m) / spanY);
    var ox = (this.width - s * spanX) / 2, oy = (this.height - s * spanY) / 2;
    var x = ox + (this.data.x[i] - b.minX) * s, y = this.height - (oy + (this.data.y[i] - b.minY) * s);
    return [x * this.view.scale + this.view.dx, y * this.view.scale + this.view.dy];
  };

  ItemMap.prototype.draw = function () {
    var ctx = this.ctx, d = this.data;
    if (!ctx) return;
    ctx.clearRect(0, 0, this.width, this.height);
    var r = Math.max(1.2, Math.min(4, 900 / Math.sqrt(this.n + 1))) * Math.sqrt(this.view.scale);
    var dim = this.marks.size > 0;
    ctx.globalAlpha = dim ? 0.25 : 0.8;
    for (var i = 0; i < this.n; i++) {
      var p = this._screen(i);
      if (p[0] < -r || p[1] < -r || p[0] > this.width + r || p[1] > this.height + r) continue;
      ctx.fillStyle = d.color ? d.color[i] : "#1f77b4";
      ctx.fillRect(p[0] - r, p[1] - r, 2 * r, 2 * r);
    }
    ctx.globalAlpha = 1;
    var self = this;
    this.marks.forEach(function (kind, j) {
      var q = self._screen(j);
      ctx.beginPath();
      ctx.arc(q[0], q[1], kind === "focus" ? 7 : 5, 0, 2 * Math.PI);
      ctx.fillStyle = kind === "focus" ? "#d62728" : (d.color ? d.color[j] : "#1f77b4");
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#000";
      ctx.stroke();
    });
  };

  ItemMap.prototype._drawLegend = function () {
    var legend = this.legend, d = this.data;
    legend.textContent = "";
    if (!d.column) return;
    var head = document.createElement("div");
    head.className = "itemmap-legend-title";
    head.textContent = d.column;
    legend.appendChild(head);
    (d.legend || []).forEach(function (entry) {
      var row = document.createElement("div");
      var swatch = document.createElement("span");
      swatch.className = "itemmap-swatch";
      swatch.style.background = entry.color;
      row.appendChild(swatch);
      row.appendChild(document.createTextNode(entry.name));
      legend.appendChild(row);
    });
  };

  // nearest point within 10px of the mouse, or -1
  ItemMap.prototype.nearest = function (mx, my) {
    var best = -1, bestDist = 100;
    for (var i = 0; i < this.n; i++) {
      var p = this._screen(i), dx = p[0] - mx, dy = p[1] - my, dist = dx * dx + dy * dy;
      if (dist < bestDist) { bestDist = dist; best = i; }
    }
    return best;
  };

  ItemMap.prototype.describe = function (i) {
    var d = this.data, lines = ["id: " + d.ids[i]];
    if (d.title && d.title[i] != null) lines.push(d.title[i]);
    if (d.column && d.values && d.values[i] != null) lines.push(d.column + ": " + d.values[i]);
    return lines;
  };

  ItemMap.prototype._showTip = function (i, mx, my) {
    if (i < 0) { this.tip.style.display = "none"; return; }
    this.tip.textContent = "";
    this.describe(i).forEach(function (line, k) {
      var div = document.createElement("div");
      if (k === 0) div.className = "itemmap-tip-id";
      div.textContent = line;
      this.tip.appendChild(div);
    }, this);
    this.tip.style.display = "block";
    this.tip.style.left = Math.min(mx + 12, this.width - 160) + "px";
    this.tip.style.top = (my + 12) + "px";
  };

  ItemMap.prototype._listen = function () {
    var self = this, canvas = this.canvas, drag = null;
    function local(ev) {
      var rect = canvas.getBoundingClientRect();
      return [ev.clientX - rect.left, ev.clientY - rect.top];
    }
    canvas.addEventListener("mousemove", function (ev) {
      var m = local(ev);
      if (drag) {
        self.view.dx = drag.dx + m[0] - drag.x;
        self.view.dy = drag.dy + m[1] - drag.y;
        drag.moved = true;
        self.draw();
        return;
      }
      var i = self.nearest(m[0], m[1]);
      self.hovered = i;
      self._showTip(i, m[0], m[1]);
    });
    canvas.addEventListener("mouseleave", function () { self._showTip(-1); drag = null; });
    canvas.addEventListener("mousedown", function (ev) {
      var m = local(ev);
      drag = { x: m[0], y: m[1], dx: self.view.dx, dy: self.view.dy, moved: false };
    });
    canvas.addEventListener("mouseup", function (ev) {
      var m = local(ev), moved = drag && drag.moved;
      drag = null;
      if (!moved && self.options.onClick) {
        var i = self.nearest(m[0], m[1]);
        if (i >= 0) self.options.onClick(self.data.ids[i]);
      }
    });
    canvas.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var m = local(ev), factor = ev.deltaY < 0 ? 1.25 : 0.8;
      var scale = Math.min(Math.max(self.view.scale * factor, 0.5), 200);
      factor = scale / self.view.scale;
      self.view.dx = m[0] - (m[0] - self.view.dx) * factor;
      self.view.dy = m[1] - (m[1] - self.view.dy) * factor;
      self.view.scale = scale;
      self.draw();
    }, { passive: false });
    canvas.addEventListener("dblclick", function () { self.reset(); self.draw(); });
    global.addEventListener("resize", function () { self.resize(); });
  };

  // Mark one focus item and its neighbours (ids not on the map are ignored).
  ItemMap.prototype.highlight = function (focus, neighbours) {
    this.marks = new Map();
    var self = this;
    (neighbours || []).forEach(function (id) {
      var i = self.index.get(String(id));
      if (i !== undefined) self.marks.set(i, "neighbour");
    });
    if (focus != null && this.index.has(String(focus))) this.marks.set(this.index.get(String(focus)), "focus");
    this.draw();
  };

  global.ItemMap = ItemMap;
})(window);
