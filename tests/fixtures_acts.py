"""Nonlinearities of a user's own module, for the ``arch.nonlinearity=module:attr`` tests
(tests/test_nonlinearities.py)."""

import torch

softplus = torch.nn.functional.softplus  # phi' by autograd
not_a_function = 3.0
