"""Sending tasks by name (apps/core/workers.py): a name finds the task its app registered, and
a name no app registered is refused naming it, before anything reaches the broker."""

from __future__ import annotations

import pytest

from apps.core.workers import task_named, task_send


def test_task_named__each_name_the_product_sends__registered() -> None:
    # Given the names the product sends work under
    names = [
        "actions.execute",
        "actions.deliver_callback",
        "killswitches.rollback",
        "ledger.backtest",
        "ledger.backtest_part",
        "runtime.run_step",
    ]
    # When each is looked up
    found = {name: task_named(name).name for name in names}
    # Then each is the task registered under it
    assert found == {name: name for name in names}


def test_task_send__unknown_name__refused_naming_it() -> None:
    # Given a name no app registers
    # When work is sent under it
    # Then it is refused, naming it
    with pytest.raises(KeyError, match=r"actions\.exeucte"):
        task_send("actions.exeucte", "00000000-0000-0000-0000-000000000000")
