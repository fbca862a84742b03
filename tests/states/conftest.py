"""The ``policy`` fixture: a policy name from ``@pytest.mark.parametrize("policy", ...,
indirect=True)``, with the toy policy registered while the test runs."""

import pytest

import moopt
from moopt.states.policy import POLICIES
from tests.states.toy_policy import ToyPolicy


@pytest.fixture
def policy(request):
    name = request.param
    if name != "toy":
        yield name
        return
    moopt.register_policy("toy", overwrite=True)(ToyPolicy)
    try:
        yield name
    finally:
        POLICIES.unregister("toy")
