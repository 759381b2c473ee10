"""The README is the manual: its Quick Start, step commands and flag defaults must be true."""
import re
import shlex

import pytest

from conftest import load_script
from pasyn.files import REPO

README = (REPO / "README.md").read_text()
STEP_SCRIPTS = {  # README section -> the script whose flags it documents
    "Step 1: Train the VAE Model": "VAE/train.py",
    "Step 2: Generate New Poses": "VAE/generate.py",
    "Step 3: Animate 3D Model in Blender": "blender/animation_script.py",
    "Step 4: Train CNN based style transfer model": "style_transfer/train.py",
    "Step 5: Apply Style Transfer": "style_transfer/stylize.py",
    "Step 6: Train a pose network on the data set": "pose_net/train.py",
}


def section(title):
    m = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^## |^### )", README, re.S | re.M)
    assert m, f"README has no section {title!r}"
    return m.group(1)


def bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_quick_start_is_two_commands_that_exist():
    commands = [line.strip() for line in bash_blocks(section("Quick Start"))[0].splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert commands == ["bash run_pipeline.sh", "bash run_tests.sh"]
    assert (REPO / "run_pipeline.sh").is_file() and (REPO / "run_tests.sh").is_file()
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash run_tests.sh" in ci


def test_pipeline_runs_the_readme_step_commands():
    pipeline = (REPO / "run_pipeline.sh").read_text()
    expected = {  # the README's step commands with the seed's defaults, as run_pipeline.sh writes them
        "VAE/train.py": "train.py --epochs=$VAE_EPOCHS --batch_size=64 --lr=0.001 --w1=0.005 --w2=0.01",
        "VAE/generate.py": "generate.py --n_frames=$((N_FRAMES * HERD))",
        "style_transfer/train.py": "train.py --epochs $ST_EPOCHS --height=$SIZE --width=$SIZE --lr 0.01 --batch_size 64 "
                                   "--alpha=0.5 --l_content_weight=5 --l_style_weight=10 --content_dir=synthetic_images",
        "style_transfer/stylize.py": "stylize.py --height=$SIZE --width=$SIZE --alpha=$ALPHA",
    }
    settings = dict(kv.split("=") for kv in re.search(r"^N_FRAMES=.*$", pipeline, re.M).group(0).split("; "))
    assert settings["N_FRAMES"] == "3000" and settings["SIZE"] == "64" and settings["VAE_EPOCHS"] == "250"
    if settings["ALPHA"] != "0.5" or settings["ST_EPOCHS"] != "10":  # chosen by real photos: the README says so
        assert f"--alpha={settings['ALPHA']}" in README and f"--epochs {settings['ST_EPOCHS']}" in README
    if settings["HERD"] != "1":  # the seed renders one zebra a frame: the README says the Quick Start differs
        assert f"--herd {settings['HERD']}" in section("Quick Start")
    for script, line in expected.items():
        assert line in pipeline, script
        readme_form = line.replace("$((N_FRAMES * HERD))", "$N_FRAMES").replace("$VAE_EPOCHS", "250").replace("$ST_EPOCHS", "10") \
                          .replace("$N_FRAMES", "3000").replace("$SIZE", "64").replace("$ALPHA", "0.5")
        assert f"python {readme_form}" in README, script
    assert "bash render.sh --n_frames=$N_FRAMES --height=$SIZE --width=$SIZE --herd $HERD" in pipeline
    render = (REPO / "blender" / "render.sh").read_text()
    assert "blender -b custom_zebra.blend --python-exit-code 1 -P animation_script.py --" in render
    assert "blender -b custom_zebra.blend --python-exit-code 1 -P animation_script.py -- --n_frames=3000 --height=64 --width=64" in README


@pytest.mark.parametrize("title", list(STEP_SCRIPTS))
def test_every_documented_flag_exists_with_the_stated_default(title):
    module = load_script(STEP_SCRIPTS[title])
    defaults = vars(module.parse_args([]))
    text = section(title)
    params = text.split("**Parameters:**")[1].split("**Output")[0] if "**Parameters:**" in text else ""
    documented = re.findall(r"`--(\w+)`[^`\n]*?\(default: ([^)]*)\)", params)
    assert documented, f"{title}: no flags with defaults found"
    for flag, stated in documented:
        assert flag in defaults, f"{title}: README documents --{flag}, the script has no such flag"
        actual = defaults[flag]
        stated = stated.split(";")[0].strip()
        if isinstance(actual, (int, float)) and not isinstance(actual, bool):
            assert float(stated) == float(actual), f"--{flag}: README says {stated}, script says {actual}"
        else:
            assert stated == str(actual), f"--{flag}: README says {stated}, script says {actual}"


@pytest.mark.parametrize("title", list(STEP_SCRIPTS))
def test_step_commands_parse_with_the_scripts_own_flags(title):
    module = load_script(STEP_SCRIPTS[title])
    script = STEP_SCRIPTS[title].split("/")[1]
    for block in bash_blocks(section(title)):
        for line in block.replace("\\\n", " ").splitlines():  # a command continued with a backslash is one line
            words = shlex.split(line, comments=True)
            if script not in words:
                continue
            args = words[words.index("--") + 1:] if "--" in words else words[words.index(script) + 1:]
            module.parse_args(args)  # an unknown flag or bad value exits here


def test_the_readme_is_a_short_guide_that_speaks_of_the_tool_not_its_history():
    assert len(README.encode()) <= 15 * 1024
    for phrase in ("this round", "last round", "today", "previous release", "TODO"):
        assert phrase not in README, phrase
