"""`jenga demo --quick`: the README's main job runs end to end."""

from jenga.cli import main


def test_demo_quick(capsys):
    assert main(["demo", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "Paris" in out                               # real SmolLM2 weights answer
    for allocator in ("| jenga |", "| max-page |", "| uniform |"):
        assert allocator in out
