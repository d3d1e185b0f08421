"""make readme-check on a small fake README and a fake report: the marked numbers that differ."""
import json

from fpwb.runs import readme_check

README = """# Results

| model | accuracy |
|---|---|
| backprop | 85.2% <!-- 07_depth:backprop --> |
| best stage | **85.6%** <!-- 07_depth:best stage --> |

Backprop is 11.6x <!-- 10_efficiency:details.slowdown.4096 --> slower; 1,138 <!-- 10_efficiency:us.1 --> us.
The probe reads 0.96 <!-- 03_probe:relu --> and 12 <!-- 03_probe:missing --> neurons,
and 5 <!-- 99_gone:anything --> more. Unmarked: 86.2% and 7.
"""


def fake_report(folder):
    for name, results in {
            "07_depth": {"headline": {"backprop": 0.862, "best stage": 0.8561}},
            "10_efficiency": {"headline": {}, "details": {"slowdown": {"4096": 11.64}},
                              "us": [31.0, 1137.6]},
            "03_probe": {"headline": {"relu": 0.9649}}}.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "results.json").write_text(json.dumps(results))
    return folder


def test_quotes_are_read_with_their_source_unit_and_decimals():
    found = readme_check.quotes(README)
    assert [(q.text, q.notebook, q.key, q.decimals) for q in found] == [
        ("85.2%", "07_depth", "backprop", 1), ("85.6%", "07_depth", "best stage", 1),
        ("11.6x", "10_efficiency", "details.slowdown.4096", 1), ("1,138", "10_efficiency", "us.1", 0),
        ("0.96", "03_probe", "relu", 2), ("12", "03_probe", "missing", 0), ("5", "99_gone", "anything", 0)]
    assert found[3].number == 1138 and found[0].line == 5


def test_lists_exactly_the_numbers_that_differ_or_have_no_source(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    report = fake_report(tmp_path / "reports")
    assert readme_check.main([str(readme), "--report", str(report)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:-1] == [
        f"{readme}:5: 85.2% (07_depth:backprop): the report has 86.2% (0.862)",
        f"{readme}:9: 12 (03_probe:missing): {report / '03_probe' / 'results.json'} has no "
        f"'missing' (headline: relu)",
        f"{readme}:10: 5 (99_gone:anything): no {report / '99_gone' / 'results.json'} "
        f"(run `fpwb report 99_gone`)"]
    assert lines[-1] == f"readme-check: 7 quoted number(s) checked against {report}, 3 differ or have no source"


def test_a_readme_that_matches_its_report_passes(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("backprop 86.2% <!-- 07_depth:backprop -->, 11.6x <!-- 10_efficiency:details.slowdown.4096 -->\n")
    assert readme_check.main([str(readme), "--report", str(fake_report(tmp_path / "r"))]) == 0
    assert "2 quoted number(s) checked" in capsys.readouterr().out
    assert readme_check.main([str(readme), "--report", str(tmp_path / "none")]) == 2
