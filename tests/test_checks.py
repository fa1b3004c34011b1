import numpy as np
import pytest

from gnn_tt.common.checks import check_positive_int


@pytest.mark.parametrize("value", [1, 7, np.int64(3)])
def test_positive_integers_pass(value):
    check_positive_int("batch_size", value)
    check_positive_int("batch_size", value, "GraphSAGE")


@pytest.mark.parametrize("value", [0, -2, True, 2.0, "3", None])
def test_everything_else_names_the_argument_and_value(value):
    with pytest.raises(ValueError, match=rf"^batch_size must be >= 1, got {value!r}$"):
        check_positive_int("batch_size", value)
    with pytest.raises(ValueError, match=rf"^'GraphSAGE' needs a positive integer batch_size, "
                                         rf"got {value!r}$"):
        check_positive_int("batch_size", value, "GraphSAGE")
