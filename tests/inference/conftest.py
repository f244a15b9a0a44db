"""Share the evaluated run of the evaluation tests with the inference tests."""

from tests.evaluation.conftest import evaluated_run, folded_run

__all__ = ["evaluated_run", "folded_run"]
