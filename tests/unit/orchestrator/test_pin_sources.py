"""Where a pin's version comes from: pip's own words in the build log, when they are plain."""

from __future__ import annotations

from moonmind.workflows.orchestrator.steps.pins import logged_version

PIP_LOG = """\
Step 5/8 : RUN pip install --no-index --find-links /wheels -r requirements.txt
 ---> Running in 1c2d3e4f5a6b
Looking in links: /wheels
Processing /wheels/PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.whl
Installing collected packages: six, PyYAML, zope.interface
Successfully installed PyYAML-6.0.2 six-1.17.0 zope.interface-7.1.1
Removing intermediate container 1c2d3e4f5a6b
"""


def test_the_version_pip_printed_is_read_under_any_spelling_of_the_name() -> None:
    assert logged_version(PIP_LOG, "pyyaml") == "6.0.2"
    assert logged_version(PIP_LOG, "PyYAML") == "6.0.2"
    assert logged_version(PIP_LOG, "zope-interface") == "7.1.1"
    assert logged_version(PIP_LOG, "six") == "1.17.0"


def test_a_package_the_log_does_not_name_is_left_to_the_image() -> None:
    assert logged_version(PIP_LOG, "requests") is None
    cached = "Step 5/8 : RUN pip install -r requirements.txt\n ---> Using cache\n"
    assert logged_version(cached, "six") is None
    assert logged_version("", "six") is None


def test_two_versions_in_one_build_are_left_to_the_image() -> None:
    """A later layer upgraded it: the log alone cannot say which one the image holds."""
    upgraded = PIP_LOG + "Successfully installed six-1.16.0\n"
    assert logged_version(upgraded, "six") is None
    assert logged_version(upgraded, "pyyaml") == "6.0.2"


def test_a_name_that_only_shares_a_prefix_is_not_taken() -> None:
    log = "Successfully installed six-extra-2.0.0 sixer-3.1\n"
    assert logged_version(log, "six") is None
    assert logged_version(log, "six-extra") == "2.0.0"
