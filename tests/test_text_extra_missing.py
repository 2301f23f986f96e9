"""Without open_clip (the text extra) selfsup still imports, and what needs it says which extra to install."""
import json
import subprocess
import sys
import textwrap

# A fresh interpreter in which `import open_clip` fails (None in sys.modules), as when the extra is not installed.
SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["open_clip"] = None

    import selfsup.backbones
    import selfsup.backbones.text
    import selfsup.backbones.towers
    import selfsup.export.open_clip
    import selfsup.views.text
    from selfsup.backbones import build_backbone
    from selfsup.backbones.text import build_text_encoder
    from selfsup.config import ConfigError
    from selfsup.export.open_clip import load_open_clip_towers
    from selfsup.views.text import TEXT_EXTRA_MESSAGE, TextExtraMissing, tokenize

    assert isinstance(TextExtraMissing(""), ConfigError)
    build_backbone("small_resnet")  # image-only use is untouched
    attempts = {
        "tokenize": lambda: tokenize(["a dog"], 16),
        "text_micro_cpu": lambda: build_text_encoder("text_micro_cpu"),
        "open_clip text tower": lambda: build_text_encoder("open_clip:ViT-B-32"),
        "open_clip image tower": lambda: build_backbone("open_clip:ViT-B-32"),
        "load_open_clip_towers": lambda: load_open_clip_towers("ViT-B-32"),
    }
    for what, attempt in attempts.items():
        try:
            attempt()
        except TextExtraMissing as error:
            assert TEXT_EXTRA_MESSAGE in str(error), (what, str(error))
            assert "pip install 'selfsup[text]'" in str(error)
        else:
            raise AssertionError(f"{what} worked without open_clip")
    print("ok")
""")


def test_without_the_text_extra():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# One fresh interpreter without open_clip runs several CLI commands (one start-up, not one per command); each
# command's output and exit code follow a marker line on both streams.
CLI = textwrap.dedent("""
    import json, sys
    sys.modules["open_clip"] = None
    from selfsup.cli import main
    for i, argv in enumerate(json.loads(sys.argv[1])):
        print(f"=== {i}", flush=True)
        print(f"=== {i}", file=sys.stderr, flush=True)
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
        print(f"=== exit {code}", flush=True)
""")


def test_image_only_commands_work_and_image_text_ones_name_the_extra(tmp_path):
    tiny = ["data.image_size=16", "data.num_workers=0", "train.max_steps=2", "train.batch_size=16", "eval.report=false",
            "eval.baselines=false", "backbone.options={widths: [8, 8, 16, 16], stem_stride: 2}"]
    commands = [["train", "demo", *tiny, "name=demo"], ["list"], ["train", "clip", *tiny, "name=clip"]]
    done = subprocess.run([sys.executable, "-c", CLI, json.dumps(commands)], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    outs = [part.split("\n", 1)[1] for part in done.stdout.split("=== ")[1:] if not part.startswith("exit")]
    codes = [int(part.split()[1]) for part in done.stdout.split("=== ")[1:] if part.startswith("exit")]
    errs = [part.split("\n", 1)[1] for part in done.stderr.split("=== ")[1:]]
    (image_only, listed, image_text) = zip(codes, outs, errs)
    assert image_only[0] == 0, image_only[2][-2000:]
    assert (tmp_path / "runs" / "demo" / "results.json").exists()
    assert listed[0] == 0 and "text_micro_cpu" in listed[1] and "clip" in listed[1]
    assert image_text[0] != 0
    assert "pip install 'selfsup[text]'" in image_text[2] and "Traceback" not in image_text[2]
