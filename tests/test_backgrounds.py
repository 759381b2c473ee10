"""Backgrounds of steps 4-5 (style_transfer/backgrounds.py, make_backgrounds.py): patches cut from
the researcher's photos around the annotated animals, and the generated savanna scenes.

Photos are drawn here in tmp folders: a textured scene (no pixel above 200) with a bright square
(255) wherever the COCO file says an animal stands, so a patch that touches an animal shows it.
"""
import json
import sys

import conftest
import numpy as np
import pytest
from PIL import Image

from pasyn.files import REPO, UserError

ST = REPO / "style_transfer"
sys.path.insert(0, str(ST))
import backgrounds  # noqa: E402


def _load(name):
    """style_transfer/<name>.py by path: VAE/ has a train.py too."""
    return conftest.load_script(f"style_transfer/{name}.py")


make_backgrounds = _load("make_backgrounds")
BRIGHT = 240  # the scenes stay at or below 200; the animals are 255


def scene(rng, w, h):
    return rng.integers(20, 200, (h, w, 3), dtype=np.uint8)


def write_photos(folder, sizes, boxes_per_photo, seed=0):
    """Photos with a bright square at each box, and their COCO file (two categories)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, ((w, h), boxes) in enumerate(zip(sizes, boxes_per_photo)):
        img = scene(rng, w, h)
        for x, y, bw, bh in boxes:
            img[y:y + bh, x:x + bw] = 255
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1 + len(annotations) % 2,
                                "bbox": [x, y, bw, bh]})
        name = f"photo{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(img).save(folder / name, **({"quality": 95} if i % 2 else {}))
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
    ann = folder.parent / "labels.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "zebra"}, {"id": 2, "name": "lion"}]}))
    return folder, ann


def run(photos, out, *flags):
    return make_backgrounds.main(["--photos", str(photos), "--out_dir", str(out), "--size", "32", *flags])


def patches(out):
    return [np.asarray(Image.open(p)) for p in sorted(out.glob("photo_*.png"))]


def test_photo_patches_avoid_every_annotated_animal(tmp_path):
    photos, ann = write_photos(tmp_path / "photos", [(400, 300), (300, 500), (640, 480)],
                               [[(150, 100, 80, 60)], [(20, 30, 100, 80), (150, 300, 120, 150)],
                                [(0, 0, 200, 480), (500, 200, 60, 60)]])
    run(photos, tmp_path / "out", "--annotations", str(ann), "--n", "60")
    got = patches(tmp_path / "out")
    assert len(got) == 60 and all(p.shape == (32, 32, 3) for p in got)
    assert max(int(p.max()) for p in got) < BRIGHT          # no patch touches an animal
    run(photos, tmp_path / "blind", "--n", "60")            # without the COCO file some do
    assert max(int(p.max()) for p in patches(tmp_path / "blind")) >= BRIGHT


def test_boxes_follow_the_photo_as_shown_with_its_exif_orientation(tmp_path):
    rng = np.random.default_rng(1)
    shown = scene(rng, 300, 500)                            # portrait, as a phone shows it
    shown[350:470, 20:140] = 255
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)  # landscape on disk...
    exif = Image.Exif()
    exif[0x0112] = 6                                        # ...with "turn 90 degrees to show"
    (tmp_path / "photos").mkdir()
    stored.save(tmp_path / "photos" / "phone.jpg", exif=exif, quality=95)
    ann = tmp_path / "labels.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "phone.jpg", "width": 300, "height": 500}],
                               "annotations": [{"id": 1, "image_id": 1, "bbox": [20, 350, 120, 120]}]}))
    run(tmp_path / "photos", tmp_path / "out", "--annotations", str(ann), "--n", "30")
    assert max(int(p.max()) for p in patches(tmp_path / "out")) < BRIGHT


def test_same_seed_same_bytes_and_a_smaller_run_leaves_no_stale_patch(tmp_path):
    photos, ann = write_photos(tmp_path / "photos", [(200, 150), (160, 160)], [[], [(10, 10, 20, 20)]])
    run(photos, tmp_path / "a", "--annotations", str(ann), "--n", "7", "--seed", "3")
    run(photos, tmp_path / "b", "--annotations", str(ann), "--n", "7", "--seed", "3")
    run(photos, tmp_path / "c", "--annotations", str(ann), "--n", "7", "--seed", "4")
    read = lambda d: [p.read_bytes() for p in sorted(d.glob("*.png"))]  # noqa: E731
    assert len(read(tmp_path / "a")) == 7 and read(tmp_path / "a") == read(tmp_path / "b") != read(tmp_path / "c")
    run(photos, tmp_path / "a", "--annotations", str(ann), "--n", "3", "--seed", "3")
    assert sorted(p.name for p in (tmp_path / "a").glob("*.png")) == [f"photo_{i:05d}.png" for i in range(3)]


def test_nothing_is_ever_written_into_the_photo_folder(tmp_path):
    photos, _ = write_photos(tmp_path / "photos", [(200, 200)], [[]])
    before = sorted(p.name for p in photos.rglob("*"))
    for out in (photos, photos / "patches", tmp_path):
        with pytest.raises(UserError, match="overlap"):
            run(photos, out, "--n", "2")
    run(photos, tmp_path / "out", "--n", "2")
    assert sorted(p.name for p in photos.rglob("*")) == before


@pytest.mark.parametrize("case, words", [("empty", "no images in"), ("unreadable", "cannot read image"),
                                         ("too small", "has room for"), ("full of animals", "clear of the annotated")])
def test_bad_photo_folders_are_one_line(tmp_path, case, words):
    photos = tmp_path / "photos"
    photos.mkdir()
    flags = []
    if case == "unreadable":
        write_photos(photos, [(200, 200)], [[]])
        (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    elif case == "too small":
        write_photos(photos, [(60, 40), (50, 50)], [[], []])
    elif case == "full of animals":
        _, ann = write_photos(photos, [(200, 200)], [[(20, 20, 160, 160)]])
        flags = ["--annotations", str(ann)]
    with pytest.raises(UserError) as e:
        run(photos, tmp_path / "out", *flags)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not list((tmp_path / "out").glob("*.png"))       # nothing half-made


def test_help_warns_that_photos_may_hold_animals_nobody_annotated(capsys):
    with pytest.raises(SystemExit):
        make_backgrounds.main(["--help"])
    assert "animals nobody annotated" in " ".join(capsys.readouterr().out.split())


# ---------------------------------------------------------------- generated scenes

def test_generated_backgrounds_are_distinct_and_seeded():
    imgs = [backgrounds.make_background(np.random.default_rng([0, i]), 32) for i in range(4)]
    assert np.array_equal(imgs[0], backgrounds.make_background(np.random.default_rng([0, 0]), 32))
    assert len({im.tobytes() for im in imgs}) == 4
    sky, ground = imgs[0][:4].reshape(-1, 3).mean(0), imgs[0][-4:].reshape(-1, 3).mean(0)
    assert not np.allclose(sky, ground, atol=10)


def test_your_own_images_replace_the_generated_backgrounds(tmp_path, capsys):
    backgrounds.write_backgrounds(tmp_path, 3, 16, 0)
    assert len(backgrounds.background_files(tmp_path)) == 3
    Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "my_photo.jpg")
    assert [p.name for p in backgrounds.background_files(tmp_path)] == ["my_photo.jpg"]
    # make_backgrounds.py (generated mode) beside your images writes nothing and says so
    make_backgrounds.main(["--out_dir", str(tmp_path), "--n", "2", "--size", "16", "--seed", "5"])
    assert len(list(tmp_path.glob("savanna_*.png"))) == 3 and "nothing written" in capsys.readouterr().out


def test_an_empty_default_folder_is_filled_with_generated_backgrounds(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(backgrounds, "N_DEFAULT", 3)     # the seed's 120 at 256 px take ~10 s
    monkeypatch.setattr(backgrounds, "SIZE_DEFAULT", 24)
    folder = tmp_path / "backgrounds"
    files = backgrounds.background_files(folder, default_folder=folder)
    assert [f.name for f in files] == [f"savanna_{i:05d}.png" for i in range(3)]
    assert "generating 3" in capsys.readouterr().err
    with pytest.raises(UserError, match="missing image folder"):  # any other folder: no generating
        backgrounds.background_files(tmp_path / "elsewhere", default_folder=folder)
