"""What a workflow declares for flow control: its answers, overridden by the environment
variables the generated `flow_control.py` reads, refused where the app would refuse them."""

from __future__ import annotations

import pytest
from lobeflow.errors import InvalidSettingError
from lobeflow.spec import FlowControl, FlowControlAnswer, WorkflowSpec

SPEC = WorkflowSpec.build(
    "user",
    workflow="welcome-placeholder",
    verb="generate",
    flow_control={"execute": FlowControlAnswer(parallelism=7, rate=0)},
)


def test_the_answers_when_the_environment_says_nothing() -> None:
    assert SPEC.declared_flow_control({}) == (
        FlowControl("welcome-placeholder.process", 1, 1, 1),
        FlowControl("welcome-placeholder.paginate", 20, 5, 1),
        FlowControl("welcome-placeholder.execute", 7, 0, 1),
    )


def test_the_generated_apps_overrides_apply() -> None:
    environ = {
        "WELCOME_PLACEHOLDER_EXECUTE_PARALLELISM": " 25 ",
        "WELCOME_PLACEHOLDER_EXECUTE_RATE": "50",
        "WELCOME_PLACEHOLDER_EXECUTE_PERIOD": "60",
        "WELCOME_PLACEHOLDER_PAGINATE_FLOW_KEY": "shared.pages",
        "WELCOME_PLACEHOLDER_PROCESS_RATE": "",  # empty: the answer stands, as in the app
        "OTHER_EXECUTE_PARALLELISM": "99",
    }
    process, paginate, execute = SPEC.declared_flow_control(environ)
    assert process == FlowControl("welcome-placeholder.process", 1, 1, 1)
    assert paginate == FlowControl("shared.pages", 20, 5, 1)
    assert execute == FlowControl("welcome-placeholder.execute", 25, 50, 60)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "WELCOME_PLACEHOLDER_EXECUTE_RATE",
            "fast",
            "WELCOME_PLACEHOLDER_EXECUTE_RATE='fast' is not an integer.",
        ),
        (
            "WELCOME_PLACEHOLDER_PAGINATE_PARALLELISM",
            "0",
            "WELCOME_PLACEHOLDER_PAGINATE_*: Flow control of 'welcome-placeholder.paginate' "
            "needs parallelism 1-1000, rate 0-10000 and period 1-604800 s (got 0, 5, 1).",
        ),
        (
            "WELCOME_PLACEHOLDER_PROCESS_PERIOD",
            "-1",
            "WELCOME_PLACEHOLDER_PROCESS_PERIOD='-1' must be at least 0.",
        ),
        (
            "WELCOME_PLACEHOLDER_EXECUTE_FLOW_KEY",
            "a key",
            "WELCOME_PLACEHOLDER_EXECUTE_*: Flow-control key 'a key' may only contain",
        ),
    ],
)
def test_what_the_app_would_refuse_is_a_clear_error(name: str, value: str, message: str) -> None:
    with pytest.raises(InvalidSettingError) as raised:
        SPEC.declared_flow_control({name: value})
    assert message in str(raised.value)
