"""The run report: every section (or its "not available" reason), self-contained, robust to missing pieces,
correct ViT attention, and it renders in headless Chromium with its plots visible and no console errors."""
import base64
import io
import os
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.report import write_report
from selfsup.report.context import RunContext
from selfsup.report.page import REPORT_FILE
from selfsup.report.sections import SECTIONS
from selfsup.report.svg import PALETTE, line_chart, nice_ticks, scatter_plot, tick_labels

TINY = ["backbone.options={widths: [8, 16, 16, 32], stem_stride: 2}", "method_options.projector_hidden_dim=32",
        "train.budget=null", "train.max_steps=6", "train.batch_size=32", "train.progress=false", "data.num_workers=0",
        "train.log_every=1", "train.monitor_every=2", "eval.protocols=[knn]"]
SECTION_IDS = [anchor for anchor, _, _ in SECTIONS]
TEST_IMAGES = 80


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """400 labelled digits (320 train, 80 test) as an .npz: a real-looking run that evaluates in seconds."""
    from selfsup.data import open_data

    digits = open_data("digits")
    path = tmp_path_factory.mktemp("data") / "digits_small.npz"
    np.savez(path, images=digits.train.images[:320], labels=digits.train.labels[:320],
             test_images=digits.test.images[:TEST_IMAGES], test_labels=digits.test.labels[:TEST_IMAGES],
             classes=np.array(digits.train.classes))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, small_data):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", "demo", "--name", "tiny", f"runs_dir={runs}", f"data.source={small_data}", *TINY]) == 0
    return runs / "tiny"


def sections_of(html: str) -> dict[str, str]:
    """Section id -> its inner HTML."""
    found = dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', html, flags=re.S))
    assert list(found) == SECTION_IDS, f"sections {list(found)}"
    return found


def not_available(section_html: str) -> str | None:
    match = re.search(r'class="not-available">not available: ([^<]*)<', section_html)
    return match.group(1) if match else None


def test_report_of_a_finished_run_has_every_section(tiny_run):
    html = (tiny_run / REPORT_FILE).read_text()  # written by the run itself (eval.report defaults to true)
    sections = sections_of(html)
    assert "small_resnet" in sections["overview"] and "simclr" in sections["overview"]
    for anchor in ("training", "monitors", "results", "embedding-map", "retrieval", "views"):
        assert not_available(sections[anchor]) is None, (anchor, not_available(sections[anchor]))
    assert sections["training"].count("<svg") >= 2 and 'aria-label="loss"' in sections["training"]
    assert 'aria-label="learning rate"' in sections["training"]
    assert "effective rank" in sections["monitors"] and "normalized std" in sections["monitors"]
    for row in ("pretrained", "random-init", "raw pixels", "knn@20", "knn@200"):
        assert row in sections["results"]
    assert sections["results"].count('class="bar"') == 6  # 2 metrics x 3 rows
    assert sections["embedding-map"].count("<circle") >= TEST_IMAGES  # every test point (+ legend dots)
    assert sections["retrieval"].count('class="grid-row"') == 6 and sections["retrieval"].count("<img") == 36
    assert sections["views"].count("<img") == 4 * 3  # 4 samples: image + SimCLR's 2 views
    assert "reconstructions.png" in not_available(sections["reconstructions"])
    assert not_available(sections["attention"]) == "the backbone (small_resnet) is not a ViT"


def test_report_is_self_contained(tiny_run):
    html = (tiny_run / REPORT_FILE).read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, flags=re.I)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "url(" not in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    for source in sources[:5]:  # the inline images really are PNGs
        Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).verify()
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', html))


def test_report_command_embeds_saved_images_and_draws_requested_maps(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    Image.fromarray(np.full((40, 120, 3), 200, np.uint8)).save(run / "reconstructions.png")
    (run / "bad.png").write_bytes(b"\x89PNG truncated")
    assert main(["report", str(run), "--maps", "pca,tsne,umap", "--out", str(tmp_path / "r.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r.html")
    sections = sections_of((tmp_path / "r.html").read_text())
    saved = sections["reconstructions"]
    assert "reconstructions.png" in saved and "data:image/png;base64," in saved
    assert "bad.png cannot be read" in saved  # a broken file is named, the others still shown
    maps = sections["embedding-map"]
    assert "PCA of 80 test features" in maps and "TSNE of 80 test features" in maps
    try:
        import umap  # noqa: F401
        assert "UMAP of 80 test features" in maps
    except ImportError:
        assert "not available: umap map: UMAP needs the optional package umap-learn" in maps


def test_missing_pieces_give_reasons_not_crashes(tiny_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    sections = sections_of(write_report(empty).read_text())
    assert all(not_available(sections[a]) for a in SECTION_IDS if a != "overview"), sections
    assert "config.yaml is not in the run directory" in sections["overview"]

    partial = tmp_path / "partial"  # a run killed before it finished: config and a torn metrics log
    partial.mkdir()
    shutil.copy(tiny_run / "config.yaml", partial)
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    (partial / "metrics.jsonl").write_text("\n".join(lines + [lines[0], '{"step": 7, "loss": NaN', "garbage"]))
    sections = sections_of(write_report(partial).read_text())
    assert not_available(sections["training"]) is None and "2 unreadable line(s)" in sections["training"]
    assert "results.json is not in the run directory" in not_available(sections["results"])
    for anchor in ("embedding-map", "retrieval", "attention"):
        assert "backbone.safetensors is not in the run directory" in not_available(sections[anchor])
    assert not_available(sections["views"]) is None  # needs only the config and the data
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nowhere")


def test_unlabelled_data_gets_an_uncoloured_map_and_retrieval_without_the_query_itself(tiny_run, small_data,
                                                                                       tmp_path):
    from selfsup.data.sources import ArraySource, DataSplits

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("features", "results.json"))
    images = np.load(small_data)["images"]
    splits = DataSplits(train=ArraySource(images, channels=3))  # no labels, no test split
    sections = sections_of(write_report(run, splits=splits).read_text())
    assert "the data has no labels" in sections["embedding-map"]
    assert "PCA of 320 train features" in sections["embedding-map"]
    retrieval = sections["retrieval"]
    assert not_available(retrieval) is None and "outline" not in retrieval  # no labels: no right/wrong frames
    queries = re.findall(r"query #(\d+)</figcaption></figure>(.*?)</div>", retrieval)
    assert len(queries) == 6
    for query, neighbours in queries:
        found = re.findall(r"<figcaption>#(\d+) · ", neighbours)
        assert len(found) == 5 and query not in found  # the query itself is never its own neighbour


def test_a_report_failure_never_fails_the_run(tmp_path, monkeypatch, capsys):
    import selfsup.run
    from selfsup.run import write_run_report

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(selfsup.run, "write_report", broken)  # as run.py imported it
    assert write_run_report(tmp_path) is None
    assert "could not write the run report: RuntimeError: disk on fire" in capsys.readouterr().err


def test_vit_run_report_shows_class_token_attention(small_data, tmp_path):
    runs = tmp_path / "runs"
    assert main(["train", "demo", "--name", "vit", f"runs_dir={runs}", f"data.source={small_data}",
                 "backbone.name=vit_micro_cpu", "backbone.options={}", "train.budget=null", "train.max_steps=2",
                 "train.batch_size=32", "train.progress=false", "data.num_workers=0", "eval.enabled=false",
                 "eval.report=false", "method_options.projector_hidden_dim=32"]) == 0
    assert not (runs / "vit" / REPORT_FILE).exists()  # eval.report=false
    sections = sections_of(write_report(runs / "vit").read_text())
    attention = sections["attention"]
    assert not_available(attention) is None and "8x8 patch grid" in attention
    assert attention.count('class="pair"') == 6 and attention.count("<img") == 12
    assert "results.json is not in the run directory" in not_available(sections["results"])
    assert not_available(sections["embedding-map"]) is None  # features extracted by the report itself


def test_class_token_attention_is_the_attention_timm_computes():
    """Recomputed attention times the values, through the output projection, gives the block's own output."""
    from selfsup.backbones import build_backbone
    from selfsup.report.attention import class_token_attention, last_block_attention

    torch.manual_seed(0)
    backbone = build_backbone("vit_micro_cpu", 3, reg_tokens=2).eval()
    images = torch.randn(2, 3, 32, 32)
    module = backbone.model.blocks[-1].attn
    seen = {}

    def record(mod, args, output):
        seen["input"], seen["output"] = args[0], output

    handle = module.register_forward_hook(record)
    with torch.no_grad():
        attention = last_block_attention(backbone, images)
        handle.remove()
        tokens = seen["input"]
        b, n, c = tokens.shape
        values = module.qkv(tokens).reshape(b, n, 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4)[2]
        rebuilt = module.proj((attention @ values).transpose(1, 2).reshape(b, n, c))
    assert attention.shape == (2, 4, 67, 67)  # 4 heads; class + 2 registers + 64 patches
    torch.testing.assert_close(rebuilt, seen["output"], atol=1e-5, rtol=1e-5)
    maps = class_token_attention(backbone, images)
    assert maps.shape == (2, 8, 8) and bool((maps >= 0).all()) and bool((maps.sum((1, 2)) < 1).all())
    no_cls = build_backbone("vit_micro_cpu", 3, class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="no class token"):
        class_token_attention(no_cls, images)


def test_masked_views_are_shown_with_their_masks(tiny_run, tmp_path, request):
    """A masked-image method's view is also drawn with its hidden patches greyed out."""
    import torch.nn as nn
    from pydantic import ConfigDict

    import selfsup.methods as methods
    from selfsup.report.sections import augmented_views
    from selfsup.views import CropSpec, MaskSpec, RandomMask, ViewSpec

    class MaskedToy(methods.Method):
        class Options(methods.MethodOptions):
            model_config = ConfigDict(extra="ignore")  # the run's config holds SimCLR's options

        def __init__(self, backbone, options):
            super().__init__()
            self.backbone = backbone
            self.views = ViewSpec(crops=(CropSpec(count=1, jitter_p=0.0, grayscale_p=0.0),),
                                  masks=MaskSpec(RandomMask(ratio=0.75), patch_size=8, views=0))

    methods.METHODS.add("masked_toy", MaskedToy)
    request.addfinalizer(lambda: methods.METHODS.remove("masked_toy"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text((tiny_run / "config.yaml").read_text().replace("method: simclr",
                                                                                     "method: masked_toy"))
    html = augmented_views(RunContext(run))
    assert "view 1 masked" in html and html.count("<img") == 4 * 3
    masked = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)[2]  # first sample's masked view
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(masked))))
    patches = pixels.reshape(4, 8, 4, 8, 3).transpose(0, 2, 1, 3, 4).reshape(16, -1)
    grey = (np.abs(patches.astype(int) - 128) <= 1).all(axis=1)
    assert grey.sum() == 12  # 75% of the 16 patches hidden


def test_svg_helpers():
    assert nice_ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(-3, 130) == [0, 50, 100]
    assert nice_ticks(3, 3) == [3]
    assert nice_ticks(2, 6, integer=True) == [2, 3, 4, 5, 6]
    assert tick_labels([0, 0.0005, 0.001]) == ["0", "5.0e-04", "1.0e-03"]
    chart = line_chart({"loss": [(0, 1.0), (1, float("nan")), (2, 0.5)]}, title="loss")
    assert chart.count("<circle") == 2 and "last: 0.5" in chart  # the NaN is a gap, not a crash
    with pytest.raises(ValueError):
        line_chart({"loss": [(0, float("nan"))]}, title="loss")
    many = line_chart({"loss": [(i, float(i % 7)) for i in range(200)]}, title="loss", smooth=True)
    assert 'class="trend"' in many
    scatter = scatter_plot([(0, 0), (1, 1), (2, 0)], [0, 1, 1], title="map", class_names=["a", "b"])
    assert scatter.count(PALETTE[1]) == 3  # two points and the legend dot of class "b"


# ---------------------------------------------------------------------------------------- Chromium
@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium; installed with apt-get when missing and this is root (once, with a time limit)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get): "
                    "`apt-get install -y chromium`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "install", "-y", "chromium"], env=env, capture_output=True, timeout=900, check=True)
    except (subprocess.SubprocessError, OSError) as error:
        pytest.skip(f"installing chromium with apt-get failed: {error}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get install chromium succeeded but no chromium binary is on PATH")
    return found


def render(chromium, page, out_dir, height=5000):
    """Screenshot, rendered DOM and the browser's console messages of one page."""
    screenshot = out_dir / "screenshot.png"
    proc = subprocess.run([chromium, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", f"--window-size=1400,{height}",
                           f"--screenshot={screenshot}", "--dump-dom", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return proc, screenshot, proc.stdout, console


def test_console_error_detection_works(chromium, tmp_path):
    """The check below must be able to fail: a page with a script error is caught."""
    page = tmp_path / "broken.html"
    page.write_text('<html><body><script>console.error("boom"); missing_function();</script></body></html>')
    _, _, _, console = render(chromium, page, tmp_path, height=300)
    assert any("boom" in line for line in console) and any("Uncaught" in line for line in console)


def test_report_renders_in_chromium_with_plots_and_no_console_errors(chromium, tiny_run, tmp_path):
    started = time.perf_counter()
    proc, screenshot, dom, console = render(chromium, tiny_run / REPORT_FILE, tmp_path)
    print(f"chromium rendered the report in {time.perf_counter() - started:.1f} s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console == []
    # The rendered DOM holds every section and its plots.
    for anchor in SECTION_IDS:
        assert f'id="{anchor}"' in dom
    assert dom.count("<svg") >= 6 and dom.count("<polyline") >= 6 and dom.count("<circle") >= TEST_IMAGES
    # The screenshot shows them: plot colours are drawn, and the page is not blank. Counting over the distinct
    # colours (with their pixel counts) keeps this fast on a 1400 x 5000 screenshot.
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(np.int32)
    packed, counts = np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2], return_counts=True)
    colours = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1)

    def count(hex_colour, tolerance=12):
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int(counts[np.abs(colours - rgb).max(axis=1) <= tolerance].sum())

    assert count(PALETTE[0]) > 2000  # line charts, first bars, class-0 points
    assert sum(count(c) > 20 for c in PALETTE[:10]) >= 8  # the scatter's class colours
    rows_with_ink = (pixels < 240).any(axis=2).any(axis=1).mean()
    assert rows_with_ink > 0.3, f"only {rows_with_ink:.0%} of the screenshot rows show anything"
