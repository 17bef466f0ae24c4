"""NetworkPolicy conformance: the upstream x/y/z x a/b/c model, and an oracle that follows the spec."""
