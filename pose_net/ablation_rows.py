"""The rows of ablate.py: the baseline pipeline and, per row, the flags that differ from it.

A row names the stages it changes and the flags it gives them; a flag replaces the baseline's flag of
the same name (`--alpha=0` replaces `--alpha=0.5`), any other flag is added. Stages a row does not
name are shared with the baseline (no re-render for a stylize-only lever). The AdaIN decoder is
re-trained only for a row that changes its flags or the backgrounds, on that row's renders and
backgrounds; every other row stylizes with the baseline's decoder. Step 6 (`pose_net/train.py`)
always runs with its own defaults: it is the judge, not a lever.

Fields in braces are filled in by ablate.py: {frames} (--frames), {frames_x3}, {frames_x10},
{pasyn_poses} (--pasyn_poses DIR), {background_photos} and {background_ann} (--background_photos DIR
ANN). A row whose field has no value is skipped, and says which flag it needs. A flag that a stage
does not (yet) have skips its row too, naming the flag: renaming a switch is one edit below.
"""

# stage: (folder, the command as a user runs it there)
STAGES = {
    "vae": ("VAE", "python train.py"),
    "generate": ("VAE", "python generate.py"),
    "render": ("blender", "bash render.sh"),
    "backgrounds": ("style_transfer", "python make_backgrounds.py"),
    "adain": ("style_transfer", "python train.py"),
    "stylize": ("style_transfer", "python stylize.py"),
    "pose_net": ("pose_net", "python train.py"),
}

# The Quick Start's numbered commands (README), at --frames N; ablate.py adds the input and output paths.
BASELINE = {
    "vae": "--epochs=250 --batch_size=64 --lr=0.001 --w1=0.005 --w2=0.01",
    "generate": "--n_frames={frames}",
    "render": "--n_frames={frames} --height=64 --width=64",
    "backgrounds": "",
    "adain": "--epochs 10 --height=64 --width=64 --lr 0.01 --batch_size 64 --alpha=0.5 "
             "--l_content_weight=5 --l_style_weight=10 --content_dir=synthetic_images",
    "stylize": "--height=64 --width=64 --alpha=0.5",
    "pose_net": "",
}

# --smoke: the harness end to end in minutes (never the real table)
SMOKE = {"vae": "--epochs=3", "adain": "--epochs 1", "pose_net": "--epochs 1"}
SMOKE_FRAMES = 60

SIZE_128 = "--height=128 --width=128"

ROWS = [
    # name               lever                                                flags that differ, per stage
    ("baseline",         "the Quick Start's pipeline",                        {}),
    ("alpha_0",          "AdaIN alpha 0 (the render composited as is)",      {"stylize": "--alpha=0"}),
    ("alpha_1",          "AdaIN alpha 1 (the full change)",                   {"stylize": "--alpha=1"}),
    ("style_weight_50",  "AdaIN style weight 50 (baseline 10)",               {"adain": "--l_style_weight=50"}),
    ("no_relight",       "relighting off",                                    {"stylize": "--no-relight"}),
    ("no_occluders",     "occluders off",                                     {"render": "--occluder_prob 0"}),
    ("no_cut_frames",    "cut frames off",                                    {"render": "--truncation_prob 0"}),
    ("one_coat",         "per-zebra coats off (the classic coat on every zebra)", {"render": "--coat_variety 0"}),
    ("grazing",          "35 % of zebras grazing (head down)",                {"render": "--grazing_prob 0.35"}),
    ("herd_3",           "herds of up to 3 zebras",                           {"generate": "--n_frames={frames_x3}", "render": "--herd 3"}),  # each zebra its own pose row
    ("no_shadow",        "ground shadow off",                                 {"stylize": "--shadow_strength 0"}),
    ("no_camera",        "camera off (zebra and frame blur, noise, JPEG)",    {"stylize": "--no_camera"}),
    ("photo_backgrounds", "backgrounds cut from photos (not the test photos)",
     {"backgrounds": "--photos {background_photos} --annotations {background_ann}"}),
    ("size_128",         "render at 128x128 (AdaIN and stylize at 128 too)",
     {"render": SIZE_128, "adain": SIZE_128, "stylize": SIZE_128}),
    ("uniform_poses",    "uniform leg angles instead of the learned prior",   {"generate": "--mode uniform"}),
    ("pasyn_prior",      "prior trained on PASyn's own real pose files",      {"vae": "--data_dir {pasyn_poses}"}),
    ("frames_x3",        "3x the frames",
     {"generate": "--n_frames={frames_x3}", "render": "--n_frames={frames_x3}"}),
    ("frames_x10",       "10x the frames",
     {"generate": "--n_frames={frames_x10}", "render": "--n_frames={frames_x10}"}),
    # the levers that each moved real PCK up, together
    ("combined",         "style weight 50, relighting off, occluders off",
     {"adain": "--l_style_weight=50", "stylize": "--no-relight", "render": "--occluder_prob 0"}),
    ("combined_herd",    "style weight 50, relighting off, occluders off, herds of up to 3",
     {"adain": "--l_style_weight=50", "stylize": "--no-relight",
      "generate": "--n_frames={frames_x3}", "render": "--occluder_prob 0 --herd 3"}),
]
