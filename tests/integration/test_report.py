"""The demo's report.html as a reader meets it: parsed with the standard library's html.parser,
every linked image is a PNG that matplotlib opens, every number in its tables is finite, the
captions and headers are words (no raw keys such as ``md_uncertainty``), times are human
("2 min 05 s"), an AUROC below 0.5 never appears without the words "worse than chance", and the
MD conditions and the origin of each threshold are stated. The demo prints stage lines with the
elapsed time and one line per training epoch. Optionally (``-m slow``) the page is rendered in
headless Chromium and the screenshot checked."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from ltau_md.core.calibration import DEFAULT_ALARM
from ltau_md.workflows.demo import render_report, run_demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: a number as written in the report's tables: 1,234 / 0.51 / -0.2 / 1.2e-05
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")
#: a raw snake_case key (md_uncertainty, val_ood_ads, auroc_max_uq) or statistic key
#: (novelty:max, uncertainty:max/max, novelty:max@tags=2/initial), once system ids such as
#: val_id-00000 are taken out
RAW_KEY = re.compile(r"\b[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+\b"
                     r"|\b[A-Za-z][A-Za-z0-9_]*:[A-Za-z0-9]+(?:@tags=[0-9,]+)?(?:/[A-Za-z]+)?")
SYSTEM_ID = re.compile(r"\b[a-z_]+-\d{5}\b")
HUMAN_TIME = re.compile(r"^(\d+ s|\d+ min \d\d s|\d+ h \d\d min)$")


class ReportParser(HTMLParser):
    """Images, figure captions, headings and tables (rows of cell texts) of a report."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[str] = []
        self.captions: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "figcaption":
            self._caption = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "figcaption" and self._caption is not None:
            self.captions.append(" ".join("".join(self._caption).split()))
            self._caption = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._caption is not None:
            self._caption.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def parse(html_text: str) -> ReportParser:
    p = ReportParser()
    p.feed(html_text)
    p.close()
    return p


def report_problems(html_text: str, root: Path) -> list[str]:
    """Everything a reader would trip over; [] for a good report."""
    p = parse(html_text)
    bad = []
    if not p.images:
        bad.append("no figure")
    for src in p.images:
        f = root / src
        if not f.is_file():
            bad.append(f"missing image {src}")
            continue
        if f.read_bytes()[:8] != PNG_MAGIC:
            bad.append(f"{src} is not a PNG")
            continue
        img = mpimg.imread(f)
        if img.ndim != 3 or min(img.shape[:2]) < 100 or img[..., :3].std() < 0.01:
            bad.append(f"{src} is blank or tiny: {img.shape}")
    if len(p.captions) != len(p.images):
        bad.append(f"{len(p.images)} images but {len(p.captions)} captions")
    for cap in p.captions:
        if len(cap.split()) < 15:
            bad.append(f"caption too short to explain the figure: {cap!r}")
    for i, table in enumerate(p.tables):
        head, *rows = table
        for h in head:
            if RAW_KEY.search(SYSTEM_ID.sub("", h)):
                bad.append(f"table {i}: raw key in header {h!r}")
        for row in rows:
            if len(row) != len(head):
                bad.append(f"table {i}: row {row} does not match header {head}")
            for h, cell in zip(head, row, strict=False):
                if re.search(r"\b(nan|inf|None|null)\b", cell, re.I):
                    bad.append(f"table {i}: {h!r} holds {cell!r}")
                for tok in NUMBER.findall(SYSTEM_ID.sub("", cell)):
                    if not math.isfinite(float(tok.replace(",", ""))):
                        bad.append(f"table {i}: non-finite {tok!r} in {h!r}")
                if re.search(r"\d[eE][-+]\d", cell):
                    bad.append(f"table {i}: scientific notation in {h!r}: {cell!r}")
                if "AUROC" in h:
                    m = NUMBER.search(cell)
                    if m and float(m.group()) < 0.5 and "worse than chance" not in cell:
                        bad.append(f"table {i}: AUROC {m.group()} below 0.5 not flagged")
                if h == "wall time" and not HUMAN_TIME.match(cell):
                    bad.append(f"table {i}: time {cell!r} is not human")
    for cap in p.captions:
        key = RAW_KEY.search(SYSTEM_ID.sub("", cap))
        if key:
            bad.append(f"raw key {key.group()!r} in caption {cap[:60]!r}")
    text = p.all_text
    for needed in ("Spearman rank correlation", "Å"):
        if needed not in text:
            bad.append(f"the report never says {needed!r}")
    return bad


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "demo"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        report = run_demo(out, quick=True, progress=True)
    return out, report, buf.getvalue()


def test_report_reads_well(demo):
    out, r, _ = demo
    html_text = (out / "report.html").read_text(encoding="utf-8")
    assert report_problems(html_text, out) == []
    p = parse(html_text)
    assert sorted(p.images) == sorted(r["figures"].values())
    text = p.all_text
    # MD conditions and where each threshold comes from, in numbers matching report.json
    for run in ("md_stop", "md_resample"):
        m = r[run]
        assert f"{m['temperature_K']:.0f} K" in text
        assert f"{m['threshold']:.4g}" in text
        assert f"{m['n_in_domain_frames']} held-out in-domain frames" in text
        assert f"{100 * m['alarm_rate']:.3g} % alarm rate" in text
    assert f"{r['md_stop']['timestep_fs']:g} fs time step" in text
    # every IS2RS row is explained, the pooled "ood" row included; systems by id
    for words in ("both out-of-domain sets pooled", "all three sets pooled",
                  "new adsorbates", "Cu-Pt alloys"):
        assert words in text
    assert r["relax"][0]["label"].startswith("val_id-") and r["relax"][0]["label"] in text
    assert "0000</td>" not in html_text
    # the alarm score read against its thresholds and the in-domain median
    assert "typical in-domain frame scores about 1.5" in text
    for run in ("md_stop", "md_resample"):
        assert (f"median in-domain frame's score is {r[run]['in_domain_median']:.3g}"
                in text)
    ra = r["relax_alarm"]
    assert f"threshold of the score is {ra['threshold']:.4g}" in text
    relax_table = next(t for t in p.tables if "highest alarm score" in t[0])
    col = relax_table[0].index("highest alarm score")
    for row, x in zip(relax_table[1:], r["relax"], strict=True):
        assert row[col].startswith(f"{x['alarm_max']:.3g}")
        assert ("above the alarm threshold" in row[col]) == (x["alarm_max"] > ra["threshold"])
    # steps above the resampling threshold, counted independently from steps.jsonl
    m = r["md_resample"]
    steps = [json.loads(x) for x in (out / "md_resample" / "steps.jsonl").read_text()
             .splitlines()]
    above = sum(1 for s in steps if s[DEFAULT_ALARM] > m["threshold"])
    assert (f"alarm score above the threshold at {above} of {m['n_steps_observed']} steps"
            in text)
    assert "re-arms only once the score has fallen below" in " ".join(p.captions)
    # IS2RS: the recommended statistic (adsorbate novelty) comes before the max uncertainty
    head = next(t for t in p.tables if "set of systems" in t[0])[0]
    ads = [i for i, h in enumerate(head) if "adsorbate novelty" in h]
    uq = [i for i, h in enumerate(head) if "max uncertainty" in h]
    assert len(ads) == 2 and len(uq) == 2 and max(ads) < min(uq)


def test_auroc_below_chance_is_flagged(demo):
    out, r, _ = demo
    bad = json.loads(json.dumps(r))
    bad["is2rs"]["val_id"].update(auroc_max_uq=0.42, auroc_ci=[0.2, 0.7])
    text = render_report(bad)
    assert report_problems(text, out) == []
    cell = [c for t in parse(text).tables for row in t for c in row if c.startswith("0.42")]
    assert cell and "worse than chance" in cell[0]
    assert ("AUROC below 0.5 (worse than chance) for: in-domain (its 95 % interval includes "
            "0.5") in parse(text).all_text
    bad["is2rs"]["val_id"].update(auroc_ci=[0.2, 0.45])
    page = parse(render_report(bad))
    assert "in-domain (its 95 % interval lies wholly below 0.5)" in page.all_text
    # the checker itself catches an unflagged one, a raw key, a NaN and a machine time
    assert any("not flagged" in b for b in report_problems(
        text.replace("worse than chance", ""), out))
    for raw in ("md_uncertainty", "uncertainty:max/max", "novelty:max@tags=2/initial"):
        assert any("raw key" in b for b in report_problems(
            text.replace("Figure 1. Dataset", f"Figure 1. {raw} Dataset"), out)), raw
    for junk in ("nan", "inf", "1e999"):
        assert any("non-finite" in b or "holds" in b for b in report_problems(
            re.sub(r"<td>(\d)", rf"<td>{junk} \1", text, count=1), out)), junk
    t = r["timings"]["total_s"]
    assert any("not human" in b for b in report_problems(
        text.replace(f"<td>total</td><td>{_hms_of(r)}", f"<td>total</td><td>{t:.3f} s"), out))


def _hms_of(r):
    from ltau_md.workflows.demo import human_duration

    return human_duration(r["timings"]["total_s"])


def test_progress_lines(demo):
    _, r, printed = demo
    lines = printed.splitlines()
    stage = [x for x in lines if re.match(r"\[ltau-md demo +(\d+ s|\d+ min \d\d s)\] \d/5 ", x)]
    assert [x.split("] ")[1][:3] for x in stage] == ["1/5", "2/5", "3/5", "4/5", "4/5", "4/5",
                                                     "5/5"]
    n = r["sizes"]["epochs"]
    epochs = [x for x in lines if "training: epoch" in x]
    assert [re.search(r"epoch (\d+)/(\d+)", x).groups() for x in epochs] == \
        [(str(i), str(n)) for i in range(1, n + 1)]
    assert "done in" in lines[-1]


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                 "chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.slow
def test_report_renders_in_headless_chromium(demo, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium/Chrome found on PATH")
    out, _, _ = demo
    shot = tmp_path / "report.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--screenshot={shot}", "--window-size=1280,4000",
           (out / "report.html").as_uri()]
    try:
        subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("the browser did not finish within 120 s")
    if not shot.exists():
        pytest.skip("the browser wrote no screenshot (headless mode unavailable here)")
    assert shot.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    rgb = img[..., :3]
    # not a blank page: text and figures give dark pixels and a spread of colours
    assert rgb.std() > 0.05 and (rgb.mean(axis=2) < 0.5).mean() > 0.005
