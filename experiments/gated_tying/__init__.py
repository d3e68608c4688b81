"""Does tying the weights across time change the kernel of a gated RNN? (issue 24, item 5)."""
