"""schemathesis against the served OpenAPI spec: generated requests (valid and invalid) never get a
5xx, and every response has a documented status code, content type and body shape."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
import importlib
import pkgutil

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from textae.serve.app import create_app
from textae.serve.settings import ServeSettings

# hypothesis is a pytest plugin too; these are the modules of it this test was seen importing lazily
HYPOTHESIS_LAZY = ("hypothesis.internal.conjecture.optimiser", "hypothesis.strategies._internal.flatmapped", "hypothesis.strategies._internal.random")


def _import_lazy_plugin_modules() -> None:
    """pytest rewrites (recompiles) every module of a plugin's package as it is first imported, and
    CPython 3.11.7 raised "AST constructor recursion depth mismatch" compiling schemathesis modules
    that it imports lazily, from deep in a full suite's stack (first .specs.openapi.schemas, then
    .transport.wsgi), plausibly because the parser's depth counter is shared between threads and
    the served app's threads run meanwhile. Importing all of schemathesis (and hypothesis's lazy
    ones) here, at collection, on a shallow stack, means none is compiled while a test runs (about 1 s)."""
    names = [module.name for module in pkgutil.walk_packages(schemathesis.__path__, "schemathesis.")]
    for name in [*names, *HYPOTHESIS_LAZY]:
        try:
            importlib.import_module(name)
        except ImportError:  # an integration whose optional dependency is absent (allure), or a moved module
            pass


_import_lazy_plugin_modules()

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module", autouse=True)
def subnormal_floats() -> None:
    """Training flushes denormals to zero for the whole process (textae.training), and hypothesis
    refuses to generate floats in that state; an earlier test in the same process may have trained."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_flush_denormal(False)


@pytest.fixture(scope="module")
def app(random_export: Path):
    # small limits, so generated lists and strings reach them and their refusals are checked too
    served = create_app(ServeSettings(model=str(random_export), precision="fp32", threads=1, max_inputs=8, max_chars=200, max_decode_length=40))
    yield served
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()  # schemathesis ran the app's lifespan: stop its inference thread


schema = schemathesis.pytest.from_fixture("served_schema")


@pytest.fixture(scope="module")
def served_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_served_spec_holds(case) -> None:
    case.call_and_validate(checks=CHECKS)
