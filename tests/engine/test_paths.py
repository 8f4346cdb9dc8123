"""Each method kind has its path through the stages."""

from __future__ import annotations

import pytest
import torch

import gradsurg
from gradsurg._engine.loss_space import DoubleBackwardPath, LossPath
from gradsurg._engine.paths import path_for
from gradsurg._engine.per_task import GramPath, MatrixPath


@pytest.mark.parametrize("name", gradsurg.available_methods())
def test_every_registered_method_has_the_path_of_its_kind(name):
    method = gradsurg.methods.method_class(name)
    expected = {
        gradsurg.methods.GramMethod: GramPath,
        gradsurg.methods.MatrixMethod: MatrixPath,
        gradsurg.methods.LossWeighting: LossPath,
        gradsurg.methods.DoubleBackwardMethod: DoubleBackwardPath,
    }
    kind = next(k for k in expected if issubclass(method, k))
    assert type(path_for(gradsurg.build_method(name, num_tasks=2, layer=[torch.nn.Parameter(torch.ones(2))]))) is expected[kind]


def test_a_method_of_no_known_kind_is_refused():
    class Odd(gradsurg.Method):
        name = ""

    with pytest.raises(TypeError, match="method: Odd is of no known kind"):
        path_for(Odd())
