"""Per-example artifacts are gzipped deterministically and read back in either form (bench.artifacts)."""
import json

from bench.artifacts import compress, compress_csvs, open_text, unreferenced

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


def test_unreferenced_eval_folders(tmp_path):
    for key in ("kept", "stale"):
        (tmp_path / "artifacts" / "eval" / key).mkdir(parents=True)
    records = tmp_path / "records"
    records.mkdir()
    record = {"schema": "bench.record/1", "key": "k", "config_id": "c", "status": "failed", "track": "t",
              "profile": "smoke", "seed": 0, "dataset": {"name": "d"}, "defense": {"name": "x"},
              "attack": {"name": "a"}, "metrics": [], "artifacts": str(tmp_path / "artifacts" / "eval" / "kept")}
    (records / "r.json").write_text(json.dumps(record))
    assert unreferenced(tmp_path) == [tmp_path / "artifacts" / "eval" / "stale"]
