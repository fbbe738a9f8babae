// The interactive flame graph (otel_alloc.profiling.flamegraph); inlined at render time.
// Names only ever reach the page through textContent: never as markup.
(function () {
  "use strict";

  var ROW = 17;       // pixels per stack level
  var MIN_PX = 0.5;   // narrower frames (and their children) are not drawn
  var LABEL_PX = 24;  // narrower frames show no text

  var data = JSON.parse(document.getElementById("flame-data").textContent);
  var chart = document.getElementById("chart");
  var details = document.getElementById("details");
  var search = document.getElementById("search");
  var matched = document.getElementById("matched");
  var reset = document.getElementById("reset");

  var nodes = [];
  var matches = null;  // null, or a set of node indexes whose label matches the search
  var zoomed = null;

  function build(raw, parent, x, depth) {
    var frame = data.frames[raw[0]];
    var node = {
      index: nodes.length, fn: frame[0], file: frame[1], line: frame[2],
      value: raw[1], x: x, depth: depth, parent: parent, children: []
    };
    node.label = node.file ? node.fn + " (" + node.file + ":" + node.line + ")" : node.fn;
    node.search = node.label.toLowerCase();
    nodes.push(node);
    var cx = x;
    for (var i = 0; i < raw[2].length; i++) {
      var child = build(raw[2][i], node, cx, depth + 1);
      node.children.push(child);
      cx += child.value;
    }
    return node;
  }

  var root = build(data.root, null, 0, 0);
  zoomed = root;

  function groupDigits(n) {
    return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  // One decimal, ties to even, as Python's "%.1f" (toFixed rounds ties up):
  // a tie is a value whose exact binary value ends in .x5, i.e. v * 4 is odd.
  function fixed1(v) {
    var quarters = v * 4;
    if (Number.isInteger(quarters) && Math.abs(quarters) % 2 === 1) {
      var tenths = Math.floor(v * 10);
      return ((tenths % 2 === 0 ? tenths : tenths + 1) / 10).toFixed(1);
    }
    return v.toFixed(1);
  }

  // As otel_alloc.units.format_bytes: B without decimals, then KiB, MiB, GiB.
  function formatValue(v) {
    if (data.unit !== "bytes") {
      return groupDigits(v) + " " + data.unit;
    }
    var units = ["B", "KiB", "MiB", "GiB"];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(v) < 1024 || i === units.length - 1) {
        return i === 0 ? v.toFixed(0) + " B" : fixed1(v) + " " + units[i];
      }
      v /= 1024;
    }
    return String(v);
  }

  function percent(part, whole) {
    return whole > 0 ? fixed1(100 * part / whole) + "%" : "0.0%";
  }

  function hue(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) {
      h = (h * 31 + name.charCodeAt(i)) | 0;
    }
    return 20 + Math.abs(h) % 40;
  }

  function describe(node) {
    var where = node.file ? node.file + ":" + node.line : "";
    return {
      fn: node.fn, where: where, value: formatValue(node.value),
      share: percent(node.value, root.value)
    };
  }

  function showDetails(node) {
    if (!node) {
      details.textContent = "";
      return;
    }
    var d = describe(node);
    details.textContent = d.fn + (d.where ? " \u2014 " + d.where : "") + " \u2014 " +
      d.value + " (" + d.share + " of the total)";
  }

  function drawFrame(node, left, width, ancestor) {
    var el = document.createElement("div");
    el.className = "frame" + (ancestor ? " ancestor" : "") +
      (matches && matches.has(node.index) ? " match" : "");
    el.style.left = left + "px";
    el.style.top = node.depth * ROW + "px";
    el.style.width = width + "px";
    el.style.background = "hsl(" + hue(node.fn) + ",90%,62%)";
    el.dataset.index = String(node.index);
    if (width >= LABEL_PX) {
      el.textContent = node.label;
    }
    chart.appendChild(el);
    return node.depth;
  }

  function render() {
    chart.textContent = "";
    if (!root.value) {
      var empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = "No samples: nothing to draw.";
      chart.appendChild(empty);
      chart.style.height = "";
      return;
    }
    var width = chart.clientWidth;
    var scale = width / zoomed.value;
    var deepest = zoomed.depth;
    for (var up = zoomed.parent; up; up = up.parent) {
      drawFrame(up, 0, width, true);
    }
    var stack = [zoomed];
    while (stack.length) {
      var node = stack.pop();
      var w = node.value * scale;
      if (w < MIN_PX) {
        continue;
      }
      deepest = Math.max(deepest, drawFrame(node, (node.x - zoomed.x) * scale, w, false));
      for (var i = 0; i < node.children.length; i++) {
        stack.push(node.children[i]);
      }
    }
    chart.style.height = (deepest + 1) * ROW + "px";
    reset.disabled = zoomed === root;
  }

  function zoom(node) {
    zoomed = node || root;
    render();
  }

  // Share of the total the matching frames account for: a matching frame
  // whose ancestor matches too is inside that ancestor's width already, so
  // each sample counts once however often a function is on its stack.
  function applySearch() {
    var query = search.value.trim().toLowerCase();
    if (!query) {
      matches = null;
      matched.textContent = "";
      delete matched.dataset.share;
      render();
      return;
    }
    matches = new Set();
    var sum = 0;
    var stack = [[root, false]];
    while (stack.length) {
      var item = stack.pop();
      var node = item[0];
      var covered = item[1];
      var hit = node !== root && node.search.indexOf(query) !== -1;
      if (hit) {
        matches.add(node.index);
        if (!covered) {
          sum += node.value;
        }
      }
      for (var i = 0; i < node.children.length; i++) {
        stack.push([node.children[i], covered || hit]);
      }
    }
    matched.dataset.share = String(root.value ? sum / root.value : 0);
    matched.dataset.value = String(sum);
    matched.textContent = matches.size ?
      "matched " + percent(sum, root.value) + " of " + formatValue(root.value) :
      "no match";
    render();
  }

  function nodeAt(target) {
    var el = target && target.closest ? target.closest(".frame") : null;
    return el ? nodes[Number(el.dataset.index)] : null;
  }

  chart.addEventListener("click", function (ev) {
    var node = nodeAt(ev.target);
    if (node) {
      zoom(node);
      showDetails(node);
    }
  });
  chart.addEventListener("mousemove", function (ev) {
    showDetails(nodeAt(ev.target));
  });
  chart.addEventListener("mouseleave", function () {
    showDetails(null);
  });
  reset.addEventListener("click", function () {
    zoom(root);
  });
  search.addEventListener("input", applySearch);
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") {
      zoom(root);
    }
  });
  window.addEventListener("resize", render);

  // For tests and the curious: the tree as drawn, and the formatting used.
  window.flamegraph = {
    root: root, nodes: nodes, zoom: zoom, formatValue: formatValue, percent: percent,
    describe: describe
  };
  render();
})();
