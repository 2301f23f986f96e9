"""Without open_clip (the text extra) selfsup still imports, and what needs it says which extra to install."""
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
