"""Citizens: what subscribers do themselves or have done for them (opt-outs, ...)."""
