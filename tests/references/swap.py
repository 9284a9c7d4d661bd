"""A pytest plugin that runs a reference's own test suite with only the
functions under test swapped for nismooth's: scipy's `gaussian_filter`
family in `scipy.ndimage` (and inside `scipy.ndimage._filters`, where
scipy's own `gaussian_laplace` and friends look it up), nilearn's
`smooth_img` in `nilearn.image`. Everything else the tests use to compute
what they expect stays the reference's own.

A test counts when it called a swapped function. At the end the plugin
prints, and writes to `--swap-json FILE`, the tests that called each
function and how they went; `--swap-require` fails the session when one of
them did not pass. Run:

    python -m pytest -p swap --pyargs scipy.ndimage.tests.test_filters \
        --swap scipy --swap-require
"""
import functools
import json

import pytest

SWAPS = {
    "scipy": [("scipy.ndimage", "scipy.ndimage._filters", name) for name in (
        "gaussian_filter", "gaussian_filter1d", "gaussian_laplace", "gaussian_gradient_magnitude")],
    "nilearn": [("nilearn.image", "nilearn.image.image", "smooth_img")],
}

_called = set()
_outcomes = {}


def pytest_addoption(parser):
    g = parser.getgroup("swap", "run a reference's tests against nismooth")
    g.addoption("--swap", action="append", default=[], choices=sorted(SWAPS),
                help="which reference's functions to swap for nismooth's")
    g.addoption("--swap-json", default=None, help="write the tally here")
    g.addoption("--swap-require", action="store_true",
                help="fail unless every test that called a swapped function passed")


def _wrap(name, ours):
    @functools.wraps(ours)
    def wrapper(*args, **kwargs):
        _called.add(name)
        return ours(*args, **kwargs)
    return wrapper


def pytest_configure(config):
    import importlib

    import nismooth

    for ref in config.getoption("--swap"):
        for public, private, name in SWAPS[ref]:
            original = getattr(importlib.import_module(public), name)
            wrapped = _wrap(name, getattr(nismooth, name))
            for module in (public, private):
                setattr(importlib.import_module(module), name, wrapped)
            if ref == "scipy":
                # scipy's tests mark each function's array-API backends from
                # a table keyed by the function: ours gets scipy's entry.
                from scipy._lib._array_api import xp_capabilities_table as table
                if original in table:
                    table[wrapped] = table[original]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _called.clear()
    yield


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        for name in _called:
            seen = _outcomes.setdefault(name, {})
            if report.nodeid not in seen or report.outcome != "passed":
                seen[report.nodeid] = report.outcome


def _tally():
    return {name: {"passed": sum(o == "passed" for o in seen.values()),
                   "failed": sorted(t for t, o in seen.items() if o not in ("passed", "skipped")),
                   "skipped": sum(o == "skipped" for o in seen.values()),
                   "tests": len(seen)}
            for name, seen in sorted(_outcomes.items())}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if not config.getoption("--swap"):
        return
    tally = _tally()
    path = config.getoption("--swap-json")
    if path:
        with open(path, "w") as f:
            json.dump(tally, f, indent=1)
    if config.getoption("--swap-require") and (not tally or any(t["failed"] for t in tally.values())):
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not config.getoption("--swap"):
        return
    tally = _tally()
    terminalreporter.section("nismooth swapped in")
    if not tally:
        terminalreporter.write_line("no test called a swapped function")
    for name, t in tally.items():
        terminalreporter.write_line(f"{name}: {t['tests']} tests called it: {t['passed']} passed, "
                                    f"{len(t['failed'])} failed, {t['skipped']} skipped")
        for nodeid in t["failed"][:200]:
            terminalreporter.write_line(f"  failed: {nodeid}")
