"""The viewer's HTML/JS template (a Python string, so it ships with the package without package-data rules).

``nca.analysis.viewer.render_page`` replaces the ``/*NCA_DATA*/`` marker with the trajectories' JSON. The page
exposes ``window.ncaViewer`` (select, step, next rule, the state and the cells on the canvas) for its
browser test and for anyone poking at it from the console.
"""

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>NCA rules by complexity band</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
  .row { display: flex; gap: 1.5em; align-items: flex-start; flex-wrap: wrap; }
  canvas { border: 1px solid #999; cursor: pointer; image-rendering: pixelated; }
  .controls button, .controls select { font-size: 14px; margin: 0 0.3em 0.5em 0; }
  table { border-collapse: collapse; } td { padding: 0.1em 0.8em 0.1em 0; }
  .swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 2px; vertical-align: middle; }
  .muted { color: #666; }
</style>
</head>
<body>
<h1>NCA rules by complexity band</h1>
<p class="muted" id="about"></p>
<div class="row">
  <div>
    <canvas id="grid" title="click: another rule of this band"></canvas>
    <div class="muted">click the grid for another rule</div>
  </div>
  <div>
    <div class="controls">
      <label>band <select id="band"></select></label><br>
      <button id="play">pause</button>
      <button id="step">step</button>
      <button id="next-rule">another rule</button><br>
      <label>speed <input id="speed" type="range" min="30" max="1000" step="10" value="200"> <span id="speed-ms"></span> ms/frame</label>
    </div>
    <table>
      <tr><td>band</td><td id="band-interval"></td></tr>
      <tr><td>rule</td><td id="rule-id"></td></tr>
      <tr><td>gzip ratio</td><td id="rule-ratio"></td></tr>
      <tr><td>frame</td><td id="frame-index"></td></tr>
      <tr><td>rule in band</td><td id="rule-pos"></td></tr>
    </table>
    <p id="legend"></p>
  </div>
</div>
<script type="application/json" id="nca-data">/*NCA_DATA*/</script>
<script>
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("nca-data").textContent);
  const G = data.grid, F = data.frames, cellsPerFrame = G * G;
  const scale = Math.max(4, Math.floor(384 / G));
  const canvas = document.getElementById("grid");
  canvas.width = G * scale;
  canvas.height = G * scale;
  const ctx = canvas.getContext("2d");
  const byId = (id) => document.getElementById(id);

  function decode(b64) {
    const bin = atob(b64), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  const cells = data.bands.map((band) => band.rules.map((rule) => decode(rule.cells)));
  const state = { band: 0, rule: 0, t: 0, playing: true };

  function frameCells(b, r, t) {
    return cells[b][r].subarray(t * cellsPerFrame, (t + 1) * cellsPerFrame);
  }

  function draw() {
    const frame = frameCells(state.band, state.rule, state.t);
    for (let y = 0; y < G; y++) {
      for (let x = 0; x < G; x++) {
        ctx.fillStyle = data.palette[frame[y * G + x]];
        ctx.fillRect(x * scale, y * scale, scale, scale);
      }
    }
    const band = data.bands[state.band], rule = band.rules[state.rule];
    byId("band-interval").textContent = band.name + " " + band.interval;
    byId("rule-id").textContent = String(rule.id);
    byId("rule-ratio").textContent = rule.ratio.toFixed(3);
    byId("frame-index").textContent = state.t + " / " + (F - 1);
    byId("rule-pos").textContent = (state.rule + 1) + " of " + band.rules.length;
    byId("play").textContent = state.playing ? "pause" : "play";
  }

  function select(b, r, t) {
    if (!(b >= 0 && b < data.bands.length)) throw new RangeError("no band " + b);
    if (!(r >= 0 && r < data.bands[b].rules.length)) throw new RangeError("no rule " + r + " in band " + b);
    state.band = b; state.rule = r; state.t = t || 0;
    byId("band").value = String(b);
    draw();
  }
  function nextRule() { select(state.band, (state.rule + 1) % data.bands[state.band].rules.length, 0); }
  function step() { state.t = (state.t + 1) % F; draw(); }

  let timer = null;
  function schedule() {
    if (timer !== null) clearInterval(timer);
    const ms = Number(byId("speed").value);
    byId("speed-ms").textContent = String(ms);
    timer = state.playing ? setInterval(step, ms) : null;
  }

  data.bands.forEach((band, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = band.name + " " + band.interval + " (" + band.rules.length + " rules)";
    byId("band").appendChild(option);
  });
  byId("band").addEventListener("change", (e) => select(Number(e.target.value), 0, 0));
  byId("play").addEventListener("click", () => { state.playing = !state.playing; schedule(); draw(); });
  byId("step").addEventListener("click", () => { state.playing = false; schedule(); step(); });
  byId("next-rule").addEventListener("click", nextRule);
  canvas.addEventListener("click", nextRule);
  byId("speed").addEventListener("input", schedule);

  const c = data.config;
  byId("about").textContent = "n_states " + c.n_states + ", grid " + G + "x" + G + ", patch " + c.patch +
    ", temperature " + c.temperature + ", burn-in " + c.burn_in + ", seed " + data.seed + "; " + F +
    " frames per rule, precomputed in Python (the same rollouts as nca preview's PNG strips and GIFs).";
  byId("legend").innerHTML = data.palette.map((colour, s) =>
    '<span class="swatch" style="background:' + colour + '"></span>' + s).join(" ");

  window.ncaViewer = {
    select, step, nextRule,
    state: () => Object.assign({}, state),
    frameCells: (b, r, t) => Array.from(frameCells(b, r, t)),
    scale, grid: G, palette: data.palette.slice(),
  };
  select(0, 0, 0);
  schedule();
})();
</script>
</body>
</html>
"""
