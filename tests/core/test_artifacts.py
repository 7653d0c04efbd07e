"""Per-example artifacts are gzipped deterministically and read back in either form (bench.artifacts)."""
import json

from bench.artifacts import compress, compress_csvs, open_text, relocate_records, unreferenced
from bench.records import cell_folder, problem

TEXT = "index,result\n0,Successful\n1,Failed\n"


def test_compression_is_byte_identical_and_readable(tmp_path):
    first, second = tmp_path / "a" / "results.csv", tmp_path / "b" / "results.csv"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text(TEXT)
    assert compress(first).read_bytes() == compress(second).read_bytes()  # mtime 0, no file name
    assert not first.exists() and first.with_name("results.csv.gz").is_file()
    with open_text(first) as fh:  # the plain name finds the compressed file
        assert fh.read() == TEXT
    plain = tmp_path / "plain.csv"
    plain.write_text(TEXT)
    with open_text(plain) as fh:
        assert fh.read() == TEXT
    assert compress_csvs(tmp_path) == [plain.with_name("plain.csv.gz")]


KEPT = "1" * 16 + "rest-of-the-key"


def _record(artifacts):
    return {"schema": "bench.record/1", "key": KEPT, "config_id": "c", "status": "failed", "track": "t",
            "profile": "smoke", "seed": 0, "dataset": {"name": "d"}, "defense": {"name": "x"},
            "attack": {"name": "a"}, "metrics": [], "artifacts": artifacts}


def test_unreferenced_eval_folders(tmp_path):
    for key in (KEPT[:16], "stale"):
        (tmp_path / "artifacts" / "eval" / key).mkdir(parents=True)
    records = tmp_path / "records"
    records.mkdir()
    (records / "r.json").write_text(json.dumps(_record(cell_folder(KEPT))))
    assert unreferenced(tmp_path) == [tmp_path / "artifacts" / "eval" / "stale"]


def test_a_record_names_its_own_folder_relative_to_the_results(tmp_path):
    """A record whose artifacts path is where some run happened to be (absolute) or another cell's folder is not
    trusted; the one-off rewrite fixes the first kind and leaves the second alone."""
    assert problem(_record(cell_folder(KEPT))) is None
    moved, foreign = _record(f"/tmp/gpu-results/artifacts/eval/{KEPT[:16]}"), _record("artifacts/eval/" + "2" * 16)
    assert "not the cell's own folder" in problem(moved) and "not the cell's own folder" in problem(foreign)
    for name, record in (("moved", moved), ("foreign", foreign)):
        path = tmp_path / "records" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(record))
    assert relocate_records(tmp_path) == [tmp_path / "records" / "moved.json"]
    assert json.loads((tmp_path / "records" / "moved.json").read_text()) == _record(cell_folder(KEPT))
    assert problem(json.loads((tmp_path / "records" / "foreign.json").read_text())) is not None
