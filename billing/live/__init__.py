"""Live control of calls in progress: authorization, credit granted in slices, cut-off, crash recovery."""
