"""Coverage-guided fuzz targets (atheris) for every parser of the gateway, and their runner.

Each target is `one_input(data: bytes) -> None` and asserts the invariants that matter for its parser: never an
unhandled exception (only the parser's own refusal), never a response without a status, limits never exceeded.
`python -m fuzz.run` runs them under atheris (`make fuzz`); tests/fuzz replays the seed corpus in fuzz/corpus and
runs each target for a moment under atheris (`make test`). A crash becomes a file in fuzz/corpus/<target>/ and a
regression test.
"""
