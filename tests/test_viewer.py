"""nca.analysis.viewer: the self-contained page embeds exactly the Python rollouts, and in a real headless
Chromium it loads without errors, draws, changes rule on a click and shows each rule's frames as rolled out."""

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from nca.analysis import viewer
from nca.automaton.config import NCAConfig
from nca.automaton.rng import Domain, hash_keys
from nca.automaton.rules import sample_rules
from nca.automaton.simulate import Simulator

CFG = NCAConfig(n_states=4, grid=6, patch=2)
BANDS, RULES, FRAMES, SEED = ["0.1-0.45", "45+"], 3, 5, 2


def python_rollout(rule_id: int) -> np.ndarray:
    """The rollout the previews promise for a rule id, computed here without nca.analysis.viewer."""
    ids = torch.tensor([rule_id])
    return Simulator(sample_rules(ids, CFG, SEED), CFG).rollout(hash_keys(SEED, Domain.PREVIEW, ids), FRAMES)[0].numpy()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    return viewer.write_viewer(tmp_path_factory.mktemp("viewer"), CFG, BANDS, RULES, FRAMES, SEED)


def embedded(page_path) -> dict:
    text = page_path.read_text()
    return json.loads(re.search(r'<script type="application/json" id="nca-data">(.*?)</script>', text, re.S).group(1))


def test_page_embeds_the_python_rollouts(page):
    data = embedded(page)
    assert [b["name"] for b in data["bands"]] == BANDS and data["grid"] == 6 and data["frames"] == FRAMES
    assert len(data["palette"]) == 4 and all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in data["palette"])
    for band in data["bands"]:
        assert len(band["rules"]) == RULES
        for rule in band["rules"]:
            cells = np.frombuffer(base64.b64decode(rule["cells"]), dtype=np.uint8).reshape(FRAMES, 6, 6)
            np.testing.assert_array_equal(cells, python_rollout(rule["id"]))
    lo, hi = 0.1, 0.45
    assert all(lo < r["ratio"] < hi for r in data["bands"][0]["rules"])
    assert "http" not in page.read_text().replace("http-equiv", "")  # nothing to fetch: works offline


def test_embedded_json_cannot_close_the_script():
    html = viewer.render_page({"note": "</script><script>alert(1)</script>"})
    assert "</script><script>alert" not in html and "<\\/script>" in html


def test_refuses_to_overwrite_and_rejects_bad_bands_first(page, tmp_path):
    with pytest.raises(FileExistsError, match="already exists"):
        viewer.write_viewer(page.parent, CFG, BANDS, RULES, FRAMES, SEED)
    with pytest.raises(ValueError, match="cannot read band"):
        viewer.write_viewer(tmp_path / "v", CFG, ["30-40", "warm"], RULES, FRAMES, SEED)
    assert not (tmp_path / "v").exists()
    with pytest.raises(ValueError, match="at least one rule"):
        viewer.band_rollouts(CFG, "30-40", 0, FRAMES)


# -- in a real browser ---------------------------------------------------------------------------
ERRORS_FIRST = """<script>
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
const __consoleError = console.error;
console.error = function (...args) { window.__errors.push(args.map(String).join(" ")); __consoleError.apply(console, args); };
</script>"""

CHECKS_LAST = """<pre id="test-results"></pre><script>
window.addEventListener("load", () => {
  const out = {errors: window.__errors};
  try {
    const v = window.ncaViewer, canvas = document.getElementById("grid");
    const ctx = canvas.getContext("2d");
    if (v.state().playing) document.getElementById("play").click();
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const colours = new Set();
    let coloured = 0;
    for (let i = 0; i < px.length; i += 4) {
      colours.add(px[i] + "," + px[i + 1] + "," + px[i + 2]);
      if (px[i + 3] > 0 && !(px[i] === 255 && px[i + 1] === 255 && px[i + 2] === 255)) coloured++;
    }
    out.colours = colours.size; out.coloured = coloured; out.pixels = px.length / 4;
    const ruleText = () => document.getElementById("rule-id").textContent;
    out.rule_before = ruleText();
    canvas.click();
    out.rule_after_canvas_click = ruleText();
    document.getElementById("next-rule").click();
    out.rule_after_button = ruleText();
    const before = v.state().t;
    document.getElementById("step").click();
    out.step = [before, v.state().t];
    const hex = v.palette.map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)).join(","));
    out.shown = [];
    for (let b = 0; b < %(bands)d; b++) {
      for (let r = 0; r < %(rules)d; r++) {
        const frames = [];
        for (let t = 0; t < %(frames)d; t++) {
          v.select(b, r, t);
          const img = ctx.getImageData(0, 0, canvas.width, canvas.height).data, cells = [];
          for (let y = 0; y < v.grid; y++) for (let x = 0; x < v.grid; x++) {
            const i = 4 * ((y * v.scale + (v.scale >> 1)) * canvas.width + x * v.scale + (v.scale >> 1));
            cells.push(hex.indexOf(img[i] + "," + img[i + 1] + "," + img[i + 2]));
          }
          frames.push(cells);
        }
        out.shown.push({band: b, rule: Number(ruleText()), ratio: document.getElementById("rule-ratio").textContent, frames});
      }
    }
  } catch (e) { out.errors.push("check failed: " + e); }
  out.errors = window.__errors;
  document.getElementById("test-results").textContent = JSON.stringify(out);
});
</script>"""

BROWSER = next((b for b in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if b), None)


@pytest.fixture(scope="module")
def browser_results(page, tmp_path_factory):
    if BROWSER is None:
        pytest.skip("no Chromium found (apt-get install -y chromium); the browser checks need a real headless browser")
    root = tmp_path_factory.mktemp("browser")
    html = page.read_text().replace("<head>", "<head>" + ERRORS_FIRST, 1)
    html = html.replace("</body>", CHECKS_LAST % {"bands": len(BANDS), "rules": RULES, "frames": FRAMES} + "</body>", 1)
    (root / "checked.html").write_text(html)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={root / 'profile'}", "--virtual-time-budget=3000", "--dump-dom"]
    proc = subprocess.run([BROWSER, *flags, (root / "checked.html").as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="test-results">(.*?)</pre>', proc.stdout, re.S)
    assert found and found.group(1), f"the page wrote no results (rc {proc.returncode}): {proc.stderr[-2000:]}"
    import html as html_lib

    return json.loads(html_lib.unescape(found.group(1)))


def test_browser_loads_without_errors_and_draws(browser_results):
    assert browser_results["errors"] == []
    assert browser_results["colours"] > 1 and browser_results["coloured"] == browser_results["pixels"]


def test_browser_click_changes_rule_and_step_advances(page, browser_results):
    ids = [r["id"] for r in embedded(page)["bands"][0]["rules"]]
    assert browser_results["rule_before"] == str(ids[0])
    assert browser_results["rule_after_canvas_click"] == str(ids[1])
    assert browser_results["rule_after_button"] == str(ids[2])
    assert browser_results["step"] == [0, 1]


def test_browser_shows_the_python_rollout_of_each_rule(page, browser_results):
    data = embedded(page)
    shown = browser_results["shown"]
    assert len(shown) == len(BANDS) * RULES
    for item in shown:
        rule = data["bands"][item["band"]]["rules"][[r["id"] for r in data["bands"][item["band"]]["rules"]].index(item["rule"])]
        assert item["ratio"] == f"{rule['ratio']:.3f}"
        np.testing.assert_array_equal(np.array(item["frames"]).reshape(FRAMES, 6, 6), python_rollout(item["rule"]))
