import pandas as pd
import pytest

from viscon_dagster.checks.docs_checks import check_filtered_docs

GOOD = {"doc_id": ["a", "b"], "url": ["https://x/1", "https://x/2"], "text_tokens": [10, 1999], "n_images": [1, 4]}


def test_suite_passes_on_good_docs():
    result = check_filtered_docs(pd.DataFrame(GOOD), max_text_tokens=2000, min_images=1)
    assert result.passed and result.metadata["failed_expectations"].value == 0


@pytest.mark.parametrize("column,values,expectation", [
    ("doc_id", ["a", "a"], "expect_column_values_to_be_unique"),
    ("url", ["https://x/1", None], "expect_column_values_to_not_be_null"),
    ("text_tokens", [10, 2001], "expect_column_values_to_be_between"),
    ("n_images", [1, 0], "expect_column_values_to_be_between"),
])
def test_suite_fails_on_each_kind_of_bad_data(column, values, expectation):
    result = check_filtered_docs(pd.DataFrame({**GOOD, column: values}), max_text_tokens=2000, min_images=1)
    assert not result.passed
    assert result.metadata["failed_expectations"].value == 1
    report = result.metadata["report"].value
    failed_line = next(line for line in report.splitlines() if "FAIL" in line)
    assert expectation in failed_line and column in failed_line
