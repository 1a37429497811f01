"""`jenga demo --quick`: the README's main job runs end to end."""

from jenga.cli import main


def test_demo_quick(capsys):
    assert main(["demo", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "Paris" in out                               # real SmolLM2 weights answer
    for allocator in ("| jenga |", "| max-page |", "| uniform |"):
        assert allocator in out


def test_verdict_says_only_what_the_numbers_show():
    from jenga.demo import AllocatorRun, verdict
    j = AllocatorRun("jenga", 10, 6.0, 8, (), 0, 1.0)
    m = AllocatorRun("max-page", 20, 3.0, 4, (), 2, 1.0)
    assert verdict([j, m]).startswith("With the same pool, Jenga ran 6.0 requests per step against max-page's 3.0")
    tie = AllocatorRun("max-page", 10, 6.0, 8, (), 0, 0.9)
    assert "did not beat" in verdict([j, tie])
    assert "nothing to compare" in verdict([j, AllocatorRun("max-page", 0, 0, 0, (), 0, 0, "refused")])
