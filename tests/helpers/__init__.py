"""Constants and helpers the tests share, importable from any test folder as `helpers.x`
(pyproject's pytest `pythonpath` puts tests/ on sys.path). Fixtures stay in conftest.py files."""
